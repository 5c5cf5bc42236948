"""Pure domain types. Units are in the names (``_km``, ``_kg``, ``_m3``, ``_s``)."""

from fleet.model.ids import DepotId, NodeId, ParcelId, VanId
from fleet.model.parcel import Parcel
from fleet.model.plan import (
    Leg,
    Plan,
    PlanSummary,
    Stop,
    StopKind,
    Trip,
    Unserved,
    UnservedReason,
    VanRoute,
    VanSummary,
)
from fleet.model.site import Depot, Site, load_site
from fleet.model.van import VanSpec, load_van_spec

__all__ = [
    "Depot",
    "DepotId",
    "Leg",
    "NodeId",
    "Parcel",
    "ParcelId",
    "Plan",
    "PlanSummary",
    "Site",
    "Stop",
    "StopKind",
    "Trip",
    "Unserved",
    "UnservedReason",
    "VanId",
    "VanRoute",
    "VanSpec",
    "VanSummary",
    "load_site",
    "load_van_spec",
]
