"""`fleet orders sample`'s generator: real residential doors, documented distributions, seeded."""

from __future__ import annotations

import numpy as np

from fleet.model import Parcel
from fleet.planning.sample import WINDOW_STARTS_H, sample_orders
from fleet.roads import RoadNetwork


def test_the_same_seed_gives_the_same_orders(net: RoadNetwork) -> None:
    assert sample_orders(net, 50, seed=11) == sample_orders(net, 50, seed=11)
    assert sample_orders(net, 50, seed=11) != sample_orders(net, 50, seed=12)


def test_parcels_follow_the_documented_distributions(net: RoadNetwork) -> None:
    day: list[Parcel] = sample_orders(net, 2000, seed=5)
    kg = np.array([p.weight_kg for p in day])
    m3 = np.array([p.volume_m3 for p in day])
    assert len({p.id for p in day}) == 2000
    assert 0.85 < np.mean(kg < 5.0) < 0.97  # most under 5 kg ...
    assert 0.88 < np.mean(m3 < 0.05) < 0.98  # ... and under 0.05 m3
    assert 0.03 < np.mean(kg >= 15.0) < 0.08  # a tail of bulky items
    assert kg.max() <= 80.0 and m3.max() <= 0.6
    windowed = [p for p in day if p.has_window]
    assert 0.25 < len(windowed) / len(day) < 0.35
    for p in windowed:
        assert p.earliest_s is not None and p.latest_s == p.earliest_s + 7200
        assert p.earliest_s // 3600 in WINDOW_STARTS_H


def test_every_door_is_on_a_residential_street_inside_the_area(net: RoadNetwork) -> None:
    day = sample_orders(net, 300, seed=2)
    snaps = net.snap_many(np.array([p.lon for p in day]), np.array([p.lat for p in day]))
    assert snaps.ok.all()
    assert float(snaps.dist_m.max()) < 1.0  # generated on the road itself
    residential = {u for e in net.edges_of_class(["residential", "living_street"]) for u in e}
    on_residential = np.mean([int(n) in residential for n in snaps.node])
    assert on_residential > 0.95
