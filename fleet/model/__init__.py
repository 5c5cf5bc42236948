"""Pure domain types. Units are in the names (``_km``, ``_kg``, ``_m3``, ``_s``)."""

from fleet.model.ids import DepotId, NodeId, ParcelId, VanId
from fleet.model.site import Depot, Site, load_site
from fleet.model.van import VanSpec, load_van_spec

__all__ = [
    "Depot",
    "DepotId",
    "NodeId",
    "ParcelId",
    "Site",
    "VanId",
    "VanSpec",
    "load_site",
    "load_van_spec",
]
