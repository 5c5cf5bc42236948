"""Typed identifiers: a van id is never confused with a parcel id."""

from typing import NewType

VanId = NewType("VanId", str)
ParcelId = NewType("ParcelId", str)
DepotId = NewType("DepotId", str)  # the warehouse or a station
NodeId = NewType("NodeId", int)  # an OpenStreetMap node id in the road graph
