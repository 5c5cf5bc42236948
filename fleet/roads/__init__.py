"""The road network: OSM roads inside the operating area, snapping, matrices and paths.

See ``docs/roads.md`` for the drivable filter, speeds, one-way rules and the cache.
"""

from fleet.roads.area import load_operating_area
from fleet.roads.network import Matrix, RoadNetwork, RoadPath, Snap, SnapBatch, load_network

__all__ = [
    "Matrix",
    "RoadNetwork",
    "RoadPath",
    "Snap",
    "SnapBatch",
    "load_network",
    "load_operating_area",
]
