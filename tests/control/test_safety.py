"""Issue 14 on the controller's side: the van's data is taken only when it is current and
plausible, refusals are noticed at once, and no restart, loss or cancel leaves work undone or
done twice. Each test plays one case of docs/controller.md, "Safety and recovery"."""

from __future__ import annotations

from fleet.protocol import Connection, ConnectionState, VanPosition, make_header
from tests.control.harness import Harness


def _connection(h: Harness, van_id: str, state: ConnectionState) -> None:
    message = Connection(
        header=make_header(van_id, 1, h.now_s), van_id=van_id, connection_state=state
    )
    h.core.on_connection(van_id, message, h.now_s)
    if state is ConnectionState.ONLINE:
        h.connected.add(van_id)
    else:
        h.connected.discard(van_id)
    h.pump()


# -- C4: a state older than the last one taken is dropped -----------------------------------
def test_a_state_with_a_lower_or_repeated_message_id_is_dropped_until_the_van_is_online() -> None:
    h = Harness()
    van = h.vans["ST-A-01"]
    older = van.state(h.now_s)  # made first, arrives last
    van.lon, van.lat = -8.6250, 41.1620
    newer = van.state(h.now_s)
    h.core.on_state("ST-A-01", newer, h.now_s)
    h.core.on_state("ST-A-01", older, h.now_s + 0.1)
    h.core.on_state("ST-A-01", newer, h.now_s + 0.2)  # a duplicate
    h.pump()
    (status,) = h.core.status(["ST-A-01"], h.now_s).vans
    assert (status.lon, status.lat) == (-8.6250, 41.1620)  # the newer position stands
    assert h.core.counters["rejected_stale_state"] == 2
    assert [e.data["reason"] for e in h.events if e.kind == "bad_message"] == ["stale_state"]
    # the van restarts: its connection says ONLINE, and its ids may start again
    _connection(h, "ST-A-01", ConnectionState.ONLINE)
    restarted = older.model_copy(
        update={"position": VanPosition(lon=-8.6300, lat=41.1610, heading_deg=0.0)}
    )
    h.core.on_state("ST-A-01", restarted, h.now_s + 1)
    (status,) = h.core.status(["ST-A-01"], h.now_s + 1).vans
    assert (status.lon, status.lat) == (-8.6300, 41.1610)
    assert h.core.counters["rejected_stale_state"] == 2
