"""The prepared road graph as plain arrays: what the cache stores and the network wraps.

Nodes are intersections and dead ends (degree-2 chains are merged into one road *link* that
carries their geometry). A link joins two nodes and may be driven one way or both: each
drivable direction is one directed *edge*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

# Encoded edge weight: time in ms in the high part, distance in cm in the low part, so that one
# Dijkstra minimises time and, among equally fast paths, distance - and returns both exactly.
# Exact while a path stays under 1,000 km and ~25 h (the sum stays below 2**53).
TIME_SCALE = 1e8


@dataclass(frozen=True, slots=True)
class PreparedGraph:
    node_id: I64  # [N] OSM node ids, sorted ascending
    node_lon: F64  # [N]
    node_lat: F64  # [N]
    link_u: I32  # [L] node index where the geometry starts
    link_v: I32  # [L] node index where it ends
    link_len_cm: I64  # [L] along the geometry
    link_class: npt.NDArray[np.int16]  # [L] index into classes (highway class of most length)
    link_name: I32  # [L] index into names ("" = 0)
    geom_offsets: I64  # [L + 1] link l's points are geom[offsets[l]:offsets[l + 1]]
    geom_lon: F64  # [G]
    geom_lat: F64  # [G]
    edge_link: I32  # [E] the link an edge drives along
    edge_reversed: B  # [E] True: from link_v to link_u
    edge_time_ms: I64  # [E] travel time at min(speed limit, van top speed), rounded up
    classes: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def num_nodes(self) -> int:
        return len(self.node_id)

    @property
    def num_edges(self) -> int:
        return len(self.edge_link)

    @property
    def edge_u(self) -> I32:
        link = self.edge_link
        return np.where(self.edge_reversed, self.link_v[link], self.link_u[link])

    @property
    def edge_v(self) -> I32:
        link = self.edge_link
        return np.where(self.edge_reversed, self.link_u[link], self.link_v[link])

    @property
    def edge_len_cm(self) -> I64:
        return self.link_len_cm[self.edge_link]

    def edge_weight(self) -> F64:
        """The encoded Dijkstra weight of every edge (see :data:`TIME_SCALE`)."""
        return self.edge_time_ms.astype(np.float64) * TIME_SCALE + self.edge_len_cm.astype(
            np.float64
        )

    def without_edges(self, drop: B) -> PreparedGraph:
        """The same nodes and road geometry, minus the edges where ``drop`` is True."""
        keep = ~drop
        return PreparedGraph(
            node_id=self.node_id,
            node_lon=self.node_lon,
            node_lat=self.node_lat,
            link_u=self.link_u,
            link_v=self.link_v,
            link_len_cm=self.link_len_cm,
            link_class=self.link_class,
            link_name=self.link_name,
            geom_offsets=self.geom_offsets,
            geom_lon=self.geom_lon,
            geom_lat=self.geom_lat,
            edge_link=self.edge_link[keep],
            edge_reversed=self.edge_reversed[keep],
            edge_time_ms=self.edge_time_ms[keep],
            classes=self.classes,
            names=self.names,
        )

    def check(self) -> None:
        """Raise ``ValueError`` unless every array is consistent (used on cache reads)."""
        n, links, e = len(self.node_id), len(self.link_u), len(self.edge_link)
        shapes: dict[str, tuple[npt.NDArray[np.generic], int]] = {
            "node_lon": (self.node_lon, n),
            "node_lat": (self.node_lat, n),
            "link_v": (self.link_v, links),
            "link_len_cm": (self.link_len_cm, links),
            "link_class": (self.link_class, links),
            "link_name": (self.link_name, links),
            "geom_offsets": (self.geom_offsets, links + 1),
            "geom_lat": (self.geom_lat, len(self.geom_lon)),
            "edge_reversed": (self.edge_reversed, e),
            "edge_time_ms": (self.edge_time_ms, e),
        }
        for name, (array, size) in shapes.items():
            if array.ndim != 1 or len(array) != size:
                raise ValueError(f"{name} has shape {array.shape}, expected ({size},)")
        if n == 0 or e == 0:
            raise ValueError("empty graph")
        if np.any(np.diff(self.node_id) <= 0):
            raise ValueError("node ids are not strictly increasing")
        for name, idx, bound in (
            ("link_u", self.link_u, n),
            ("link_v", self.link_v, n),
            ("edge_link", self.edge_link, links),
            ("link_class", self.link_class, len(self.classes)),
            ("link_name", self.link_name, len(self.names)),
        ):
            if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= bound):
                raise ValueError(f"{name} indexes outside 0..{bound - 1}")
        off = self.geom_offsets
        if off[0] != 0 or off[-1] != len(self.geom_lon) or np.any(np.diff(off) < 2):
            raise ValueError("geometry offsets are inconsistent")
        if np.any(self.edge_time_ms < 1) or np.any(self.link_len_cm < 1):
            raise ValueError("non-positive edge time or length")
        if float(self.edge_weight().max()) >= 2.0**53:
            raise ValueError("edge weights overflow the exact float range")
        if not (np.all(np.isfinite(self.node_lon)) and np.all(np.isfinite(self.geom_lon))):
            raise ValueError("non-finite coordinates")
