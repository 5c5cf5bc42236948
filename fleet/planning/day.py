"""``plan_day``: both legs of a day, from a list of parcels to a verified :class:`Plan`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from fleet.errors import ConfigError
from fleet.model.ids import DepotId
from fleet.model.parcel import Parcel
from fleet.model.plan import Plan, Unserved
from fleet.model.site import Site
from fleet.model.van import VanSpec
from fleet.planning.borrow import Sharing
from fleet.planning.engine import Progress, VanState, plan_fleet, van_ids
from fleet.roads import RoadNetwork


def fleet_sizes(site: Site, vans: Mapping[str, int] | None) -> dict[DepotId, int]:
    """Vans per depot: the site config, with ``vans`` overriding some depots."""
    sizes = {d.id: d.vans for d in site.depots}
    for depot, n in (vans or {}).items():
        if depot not in sizes:
            raise ConfigError(
                f"vans: site {site.name!r} has no depot {depot!r} (its depots: {', '.join(sizes)})"
            )
        if n < 0:
            raise ConfigError(f"vans: {depot}={n}: expected a number of vans >= 0")
        sizes[DepotId(depot)] = n
    return sizes


def plan_day(
    parcels: Sequence[Parcel],
    site: Site,
    van: VanSpec,
    net: RoadNetwork,
    *,
    time_limit_s: float = 30.0,
    seed: int = 1,
    progress: Progress | None = None,
    day: date | None = None,
    created_utc: str = "",
    vans: Mapping[str, int] | None = None,
    workers: int | None = None,
    max_iterations: int | None = None,
    already_unserved: Sequence[Unserved] = (),
    verify: bool = True,
    minimise_vans: bool = False,
    sharing: Sharing = Sharing.FLEET,
) -> Plan:
    """Plan both legs of a day for ``parcels``: a plan the independent verifier accepts.

    Every van starts the shift full at its depot; every parcel is at the warehouse.
    ``time_limit_s`` is the optimiser's wall-clock budget for the whole day (both legs;
    stations share it across ``workers`` processes, default: every core). ``progress(stage,
    fraction)`` follows the work. ``day`` and ``created_utc`` are stamped on the plan (pure
    code reads no clock: callers pass them). ``vans`` overrides the number of vans of some
    depots. ``already_unserved`` (e.g. skipped bad rows) is carried into the plan.
    ``max_iterations`` caps each search, for reproducible tests. ``minimise_vans`` has each
    depot use as few of its vans as serve every parcel it can (fleet sizing). Raises
    :class:`~fleet.errors.VerificationError` if the verifier rejects the result (a bug).
    ``sharing``: where a station's own vans cannot take all its doors, vans of other depots
    with time left help (``"fleet"``, the default) or not (``"depot"``); see
    :mod:`fleet.planning.borrow`.
    """
    sizes = fleet_sizes(site, vans)
    fleet = [
        VanState(vid, d.id, True, float(site.shift_start_s), 100.0, None)
        for d in site.depots
        for vid in van_ids(d.id, sizes[d.id])
    ]
    plan, _ = plan_fleet(
        parcels,
        site,
        van,
        net,
        vans=fleet,
        states={},
        now_s=float(site.shift_start_s),
        time_limit_s=time_limit_s,
        seed=seed,
        progress=progress,
        day=day,
        created_utc=created_utc,
        workers=workers,
        max_iterations=max_iterations,
        already_unserved=already_unserved,
        verify=verify,
        minimise_vans=minimise_vans,
        sharing=sharing,
    )
    return plan
