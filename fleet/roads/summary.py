"""What a person checks first about a site: depots on the road, and how far apart they are."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.model import Depot, NodeId
from fleet.roads.network import RoadNetwork, Snap


@dataclass(frozen=True, slots=True)
class DepotSnap:
    depot: Depot
    is_warehouse: bool
    snap: Snap | None  # None when refused
    refused: str | None  # why it was refused


@dataclass(frozen=True, slots=True)
class DepotLeg:
    """The fastest road path between two depots."""

    source: str
    target: str
    dist_m: float
    time_s: float


@dataclass(frozen=True, slots=True)
class SiteSummary:
    depots: tuple[DepotSnap, ...]
    longest: DepotLeg | None  # the longest of the shortest paths between any two depots
    unreachable: tuple[tuple[str, str], ...]  # depot pairs with no path

    @property
    def problems(self) -> list[str]:
        """Everything that stops the site from being planned, one line each."""
        out = [f"depot {d.depot.id}: {d.refused}" for d in self.depots if d.refused]
        out += [f"no road path from {a} to {b}" for a, b in self.unreachable]
        return out


def summarize_site(net: RoadNetwork) -> SiteSummary:
    """Snap every depot, then the matrix between those that snapped."""
    site = net.site
    depots = site.depots
    batch = net.snap_many([d.lon for d in depots], [d.lat for d in depots])
    snaps = tuple(
        DepotSnap(
            depot=d,
            is_warehouse=(i == 0),
            snap=(
                Snap(
                    node=NodeId(int(batch.node[i])),
                    dist_m=float(batch.dist_m[i]),
                    lon=float(batch.lon[i]),
                    lat=float(batch.lat[i]),
                    along_m=float(batch.along_m[i]),
                )
                if batch.ok[i]
                else None
            ),
            refused=batch.reason[i],
        )
        for i, d in enumerate(depots)
    )
    placed = [s for s in snaps if s.snap is not None]
    if len(placed) < 2:
        return SiteSummary(depots=snaps, longest=None, unreachable=())
    nodes = [s.snap.node for s in placed if s.snap is not None]
    m = net.matrix(nodes, nodes)
    unreachable = tuple((placed[i].depot.id, placed[j].depot.id) for i, j in m.unreachable())
    finite = np.where(np.isfinite(m.dist_m), m.dist_m, -1.0)
    i, j = np.unravel_index(int(np.argmax(finite)), finite.shape)
    longest = (
        DepotLeg(
            source=placed[int(i)].depot.id,
            target=placed[int(j)].depot.id,
            dist_m=float(m.dist_m[i, j]),
            time_s=float(m.time_s[i, j]),
        )
        if finite[i, j] > 0
        else None
    )
    return SiteSummary(depots=snaps, longest=longest, unreachable=unreachable)
