"""The console's HTTP API without a broker: who may do what, the gate's limits, order checks.

Actions that reach the controller are played against a real one in ``test_live_day.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fleet.console.app import ConsoleContext, build_app
from fleet.console.auth import Role, Sessions, User, Users, add_user, token_digest
from fleet.console.gate import Limits
from fleet.console.live import Broadcaster
from fleet.console.view import FleetView, ViewConfig
from fleet.errors import ConfigError
from fleet.model.site import load_site
from fleet.protocol.clock import WallClock
from tests.support.protocol_examples import NOW_S, order

DISPATCHER, VIEWER, SLOW = "fct_dispatcher-token", "fct_viewer-token", "fct_slow-token"


@pytest.fixture
def ctx(configs_dir: Path) -> ConsoleContext:
    users = Users(
        [
            User("dora", Role.DISPATCHER, token_digest(DISPATCHER)),
            User("vic", Role.VIEWER, token_digest(VIEWER)),
            User("slow", Role.VIEWER, token_digest(SLOW), rate_per_s=1.0),
        ]
    )
    clock = WallClock()
    view = FleetView(ViewConfig())
    return ConsoleContext(
        view=view,
        feed=None,
        broadcaster=Broadcaster(view, clock),
        users=users,
        sessions=Sessions(),
        clock=clock,
        site=load_site(configs_dir / "sites" / "poa.toml"),
        map_json=b'{"layers":[]}',
    )


@pytest.fixture
def client(ctx: ConsoleContext) -> Iterator[TestClient]:
    with TestClient(build_app(ctx, Limits()), base_url="http://console.test") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_reads_need_a_login_and_an_unknown_token_is_refused(client: TestClient) -> None:
    assert client.get("/api/vans").status_code == 401
    assert client.get("/api/vans", headers=bearer("fct_nobody")).status_code == 401
    assert client.get("/api/vans", headers={"authorization": "Basic x"}).status_code == 401
    r = client.get("/api/vans", headers=bearer(VIEWER))
    assert r.status_code == 200 and r.json() == {"vans": []}


def test_a_viewer_is_refused_every_action_by_the_server(client: TestClient) -> None:
    for path, body in (
        ("/api/vans/ST-A-01/estop", None),
        ("/api/vans/ST-A-01/pause", None),
        ("/api/fleet/estop", {"confirm": True}),
        ("/api/parcels/P1/cancel", None),
        ("/api/replan", {"reason": "x"}),
        (
            "/api/orders",
            {
                "parcels": [
                    {
                        "parcel_id": "U1",
                        "lon": -51.2,
                        "lat": -30.03,
                        "weight_kg": 1,
                        "volume_m3": 0.01,
                    }
                ]
            },
        ),
        ("/api/alerts/1/ack", None),
    ):
        r = client.post(path, json=body, headers=bearer(VIEWER))
        assert r.status_code == 403, path
        assert r.json()["error"] == "vic is a viewer: only a dispatcher may act"


def test_a_dispatchers_action_without_a_controller_says_nothing_was_sent(
    client: TestClient,
) -> None:
    r = client.post("/api/vans/ST-A-01/estop", headers=bearer(DISPATCHER))
    assert r.status_code == 503
    assert "nothing was sent" in r.json()["error"]


def test_the_whole_fleet_needs_an_explicit_confirmation(client: TestClient) -> None:
    r = client.post("/api/fleet/estop", json={"confirm": False}, headers=bearer(DISPATCHER))
    assert r.status_code == 422 and "confirm" in r.json()["error"]
    r = client.post("/api/fleet/estop", json={}, headers=bearer(DISPATCHER))
    assert r.status_code == 422 and "confirm" in r.json()["error"]


def test_bad_ids_are_refused_before_anything_is_sent(client: TestClient) -> None:
    r = client.post("/api/vans/A%2B%23/estop", headers=bearer(DISPATCHER))
    assert r.status_code == 422 and "van_id" in r.json()["error"]
    r = client.post("/api/vans/ST-A-01/selfdestruct", headers=bearer(DISPATCHER))
    assert r.status_code == 422


def test_a_browser_session_needs_the_csrf_token_and_its_own_origin(client: TestClient) -> None:
    r = client.post("/api/login", json={"token": DISPATCHER})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    session = client.get("/api/session").json()
    assert session["user"] == "dora" and session["may_act"] and len(session["csrf_token"]) > 20
    r = client.post("/api/vans/ST-A-01/pause")
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
    r = client.post("/api/vans/ST-A-01/pause", headers={"x-csrf-token": "wrong"})
    assert r.status_code == 403
    csrf = {"x-csrf-token": session["csrf_token"]}
    r = client.post("/api/vans/ST-A-01/pause", headers={**csrf, "origin": "http://evil.test"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    r = client.post("/api/vans/ST-A-01/pause", headers={**csrf, "origin": "http://console.test"})
    assert r.status_code == 503  # past the gate: no controller in this test
    assert client.post("/api/logout", headers=csrf).status_code == 200
    assert client.get("/api/session").status_code == 401


def test_login_with_an_unknown_token_is_refused(client: TestClient) -> None:
    r = client.post("/api/login", json={"token": "fct_guess"})
    assert r.status_code == 401 and "set-cookie" not in r.headers


def test_requests_over_the_users_budget_get_429_with_retry_after(client: TestClient) -> None:
    codes = [client.get("/api/kpis", headers=bearer(SLOW)).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429
    r = client.get("/api/kpis", headers=bearer(SLOW))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_token_guessing_spends_the_addresss_budget(client: TestClient) -> None:
    codes = [
        client.get("/api/kpis", headers=bearer(f"fct_guess{i}")).status_code for i in range(14)
    ]
    assert codes[0] == 401 and 429 in codes


def test_bodies_over_the_bound_are_refused_before_they_are_read(client: TestClient) -> None:
    big = b"x" * (64 * 1024 + 1)
    r = client.post(
        "/api/replan",
        content=big,
        headers={**bearer(DISPATCHER), "content-type": "application/json"},
    )
    assert r.status_code == 413
    huge = b"x" * (2 * 1024 * 1024 + 1)
    r = client.post(
        "/api/orders",
        content=huge,
        headers={**bearer(DISPATCHER), "content-type": "application/json"},
    )
    assert r.status_code == 413


def test_orders_get_the_orders_csv_checks_with_each_problem_named(client: TestClient) -> None:
    good = {"parcel_id": "U1", "lon": -51.2, "lat": -30.03, "weight_kg": 1, "volume_m3": 0.01}
    bad = {**good, "parcel_id": "U2", "weight_kg": -2}
    r = client.post("/api/orders", json={"parcels": [good, bad]}, headers=bearer(DISPATCHER))
    assert r.status_code == 422
    assert r.json()["error"] == "parcels[1] (U2): weight_kg: expected a weight >= 0 kg, got -2"
    r = client.post("/api/orders", json={"parcels": [good, good]}, headers=bearer(DISPATCHER))
    assert r.status_code == 422 and "duplicate id" in r.json()["error"]
    r = client.post(
        "/api/orders",
        json={"parcels": [{**good, "station": "ST-NOWHERE"}]},
        headers=bearer(DISPATCHER),
    )
    assert r.status_code == 422 and "station" in r.json()["error"]
    r = client.post(
        "/api/orders", json={"parcels": [{**good, "wieght_kg": 1}]}, headers=bearer(DISPATCHER)
    )
    assert r.status_code == 422 and "wieght_kg" in r.json()["error"]
    r = client.post("/api/orders", json={"parcels": []}, headers=bearer(DISPATCHER))
    assert r.status_code == 422


def test_an_order_for_a_parcel_already_known_is_answered_without_resending_it(
    client: TestClient, ctx: ConsoleContext
) -> None:
    ctx.view.on_order(order(), NOW_S)  # P1..P3
    known = {"parcel_id": "P1", "lon": -51.2, "lat": -30.03, "weight_kg": 1, "volume_m3": 0.01}
    r = client.post("/api/orders", json={"parcels": [known]}, headers=bearer(DISPATCHER))
    assert r.status_code == 200
    assert r.json()["created"] == [] and r.json()["already_known"] == ["P1"]


def test_a_parcel_is_found_with_its_van_and_planned_time(
    client: TestClient, ctx: ConsoleContext
) -> None:
    ctx.view.on_order(order(), NOW_S)
    r = client.get("/api/parcels/P2", headers=bearer(VIEWER))
    assert r.status_code == 200
    body = r.json()
    assert body["van_id"] == "WH-PORTO-01" and body["status"] == "planned"
    assert body["history"][0]["text"].startswith("planned on WH-PORTO-01")
    assert client.get("/api/parcels/NOPE", headers=bearer(VIEWER)).status_code == 404
    assert client.get("/api/parcels/P2").status_code == 401
    assert client.get("/api/parcels/%20P2", headers=bearer(VIEWER)).status_code == 422


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for r in (client.get("/"), client.get("/api/vans"), client.get("/static/app/console.js")):
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_api_is_described_by_openapi_and_docs_load_nothing_from_outside(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/orders",
        "/api/parcels/{parcel_id}",
        "/api/vans",
        "/api/stream",
        "/api/fleet/{action}",
    ):
        assert path in spec["paths"], path
    page = client.get("/docs").text
    assert "/static/app/swagger/swagger-ui-bundle.js" in page and "http" not in page.replace(
        "http-equiv", ""
    )


def test_the_users_file_round_trips_and_refuses_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    token = add_user(path, "alice", Role.DISPATCHER)
    users = Users.load(path)
    assert users.by_token(token) is not None and users.by_token(token + "x") is None
    assert token not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="exists"):
        add_user(path, "alice", Role.VIEWER)
    path.write_text('[[user]]\nname = "bob"\nrole = "admin"\ntoken_sha256 = "' + "0" * 64 + '"\n')
    with pytest.raises(ConfigError, match="'role' must be 'viewer' or 'dispatcher'"):
        Users.load(path)
    path.write_text(json.dumps({"x": 1}).replace("{", "").replace("}", "").replace(":", " ="))
    with pytest.raises(ConfigError, match="unknown key"):
        Users.load(path)


def test_lists_take_their_filters_and_refuse_bad_bounds(
    client: TestClient, ctx: ConsoleContext
) -> None:
    ctx.view.on_order(order(), NOW_S)
    r = client.get("/api/parcels?status=waiting&limit=2", headers=bearer(VIEWER))
    assert r.status_code == 200 and len(r.json()["parcels"]) == 2
    r = client.get("/api/parcels?van_id=ST-X-01", headers=bearer(VIEWER))
    assert r.json()["parcels"] == []
    assert client.get("/api/parcels?limit=0", headers=bearer(VIEWER)).status_code == 422
    assert client.get("/api/events?after=-1", headers=bearer(VIEWER)).status_code == 422
    assert client.get("/api/events?after=0&limit=5", headers=bearer(VIEWER)).json() == {
        "events": []
    }
