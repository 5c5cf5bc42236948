"""Issue 14 on the controller's side: the van's data is taken only when it is current and
plausible, refusals are noticed at once, and no restart, loss or cancel leaves work undone or
done twice. Each test plays one case of docs/controller.md, "Safety and recovery"."""

from __future__ import annotations

from fleet.protocol import (
    Connection,
    ConnectionState,
    ErrorLevel,
    ErrorReference,
    VanError,
    VanPosition,
    make_header,
)
from fleet.protocol.control_api import VanMode, VanStatus
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


# -- C5: a van whose VCU data is not live is stale, with the reason -------------------------
def test_a_van_whose_state_says_its_telemetry_is_stale_is_shown_stale_with_the_reason() -> None:
    h = Harness()
    van = h.vans["ST-A-01"]
    h.report("ST-A-01")
    assert h.core.status(["ST-A-01"], h.now_s).vans[0].mode is VanMode.IDLE
    for error_type, refs, expected in (
        ("vcu_telemetry_stale", (("telemetry_age_s", "3.2"),), "telemetry 3.2 s old"),
        ("vcu_link_lost", (), "vcu_link_lost"),
    ):
        van.errors = [
            VanError(
                error_type=error_type,
                level=ErrorLevel.WARNING,
                description="no TELEMETRY from the VCU",
                references=tuple(ErrorReference(key=k, value=v) for k, v in refs),
            )
        ]
        h.report("ST-A-01")
        (status,) = h.core.status(["ST-A-01"], h.now_s).vans
        assert status.mode is VanMode.STALE and expected in status.mode_reason
    van.errors = []
    h.report("ST-A-01")
    assert h.core.status(["ST-A-01"], h.now_s).vans[0].mode is VanMode.IDLE


def test_the_status_table_never_shows_a_stale_vans_position_or_speed_as_current() -> None:
    from fleet.cli.control import _row

    stale = VanStatus(
        van_id="ST-A-01",
        mode=VanMode.STALE,
        mode_reason="vcu_link_lost (telemetry 12 s old)",
        in_service=True,
        lon=-8.62,
        lat=41.16,
        speed_mps=11.35,
    )
    row = _row(stale, 0.0)
    assert "stale (vcu_link_lost (telemetry 12 s old))" in row[1]
    assert row[2].startswith("last ") and row[3] == "-"
