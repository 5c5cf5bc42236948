"""Reading drivable ways from an OpenStreetMap extract: the only module that parses OSM files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import osmium

from fleet.errors import ConfigError
from fleet.roads.highways import is_drivable, way_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WaySet:
    """Drivable ways as flat arrays; way ``w`` owns refs ``offsets[w]:offsets[w + 1]``."""

    offsets: npt.NDArray[np.int64]  # [W + 1]
    node_ids: npt.NDArray[np.int64]  # [R] OSM node ids, in way order
    lon: npt.NDArray[np.float64]  # [R]
    lat: npt.NDArray[np.float64]  # [R]
    forward: npt.NDArray[np.bool_]  # [W] drivable along the node order
    backward: npt.NDArray[np.bool_]  # [W]
    forward_kmh: npt.NDArray[np.float64]  # [W] speed limit, before the van's cap
    backward_kmh: npt.NDArray[np.float64]
    highway: npt.NDArray[np.int16]  # [W] index into ``classes``
    name: npt.NDArray[np.int32]  # [W] index into ``names`` ("" is index 0)
    classes: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def num_ways(self) -> int:
        return len(self.offsets) - 1


class _Builder:
    def __init__(self) -> None:
        self.offsets: list[int] = [0]
        self.node_ids: list[int] = []
        self.lon: list[float] = []
        self.lat: list[float] = []
        self.forward: list[bool] = []
        self.backward: list[bool] = []
        self.forward_kmh: list[float] = []
        self.backward_kmh: list[float] = []
        self.highway: list[int] = []
        self.name: list[int] = []
        self.classes: dict[str, int] = {}
        self.names: dict[str, int] = {"": 0}

    def add_piece(
        self,
        refs: list[tuple[int, float, float]],
        tags: dict[str, str],
    ) -> None:
        rules = way_rules(tags)
        if not (rules.forward or rules.backward):
            return
        for ref, lon, lat in refs:
            self.node_ids.append(ref)
            self.lon.append(lon)
            self.lat.append(lat)
        self.offsets.append(len(self.node_ids))
        self.forward.append(rules.forward)
        self.backward.append(rules.backward)
        self.forward_kmh.append(rules.forward_speed_kmh)
        self.backward_kmh.append(rules.backward_speed_kmh)
        highway = tags["highway"]
        self.highway.append(self.classes.setdefault(highway, len(self.classes)))
        name = tags.get("name", "").strip()
        self.name.append(self.names.setdefault(name, len(self.names)))

    def build(self) -> WaySet:
        return WaySet(
            offsets=np.asarray(self.offsets, dtype=np.int64),
            node_ids=np.asarray(self.node_ids, dtype=np.int64),
            lon=np.asarray(self.lon, dtype=np.float64),
            lat=np.asarray(self.lat, dtype=np.float64),
            forward=np.asarray(self.forward, dtype=np.bool_),
            backward=np.asarray(self.backward, dtype=np.bool_),
            forward_kmh=np.asarray(self.forward_kmh, dtype=np.float64),
            backward_kmh=np.asarray(self.backward_kmh, dtype=np.float64),
            highway=np.asarray(self.highway, dtype=np.int16),
            name=np.asarray(self.name, dtype=np.int32),
            classes=tuple(self.classes),
            names=tuple(self.names),
        )


def read_drivable_ways(path: Path, excluded_classes: frozenset[str] = frozenset()) -> WaySet:
    """Every way of ``path`` (.osm.pbf, .osm, .osm.bz2, …) a delivery van may drive.

    The drivable filter, one-way rules and speeds are in :mod:`fleet.roads.highways`.
    Nodes whose location is missing from the extract split a way into the pieces between them.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: OpenStreetMap extract not found")
    builder = _Builder()
    seen = kept = 0
    try:
        processor = (
            osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
            .with_locations()
            .with_filter(osmium.filter.KeyFilter("highway"))
        )
        for obj in processor:
            if not isinstance(obj, osmium.osm.Way):
                continue
            seen += 1
            tags = {tag.k: tag.v for tag in obj.tags}
            if not is_drivable(tags, excluded_classes):
                continue
            kept += 1
            piece: list[tuple[int, float, float]] = []
            for node in obj.nodes:
                loc = node.location
                if loc.valid():
                    piece.append((node.ref, loc.lon, loc.lat))
                    continue
                if len(piece) >= 2:
                    builder.add_piece(piece, tags)
                piece = []
            if len(piece) >= 2:
                builder.add_piece(piece, tags)
    except RuntimeError as exc:  # libosmium reports unreadable or corrupt files this way
        raise ConfigError(f"{path}: cannot read the OpenStreetMap extract: {exc}") from exc
    log.info("%s: %d highway ways, %d drivable", path, seen, kept)
    ways = builder.build()
    if ways.num_ways == 0:
        raise ConfigError(f"{path}: the extract holds no drivable roads")
    return ways
