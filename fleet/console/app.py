"""The console's HTTP side: the page, the JSON API (OpenAPI at ``/docs``), the live stream.

Every route is documented in ``docs/api.md``. Reads need a viewer or a dispatcher; actions
need a dispatcher and are control API requests to the controller (the CLI's own client and
the controller's own checks), never messages to a van.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from fleet.console.auth import Sessions, User, Users
from fleet.console.gate import COOKIE, Gate, Limits
from fleet.console.live import HEARTBEAT_S, Broadcaster, Feed
from fleet.console.view import FleetView
from fleet.errors import ControlError, FleetError
from fleet.identifiers import ID_PATTERN
from fleet.model.parcel import Parcel
from fleet.model.site import Site
from fleet.mqtt import BrokerError
from fleet.planning.orders import COLUMNS, parse_orders
from fleet.protocol import ConnectionState, InstantActionType
from fleet.protocol.clock import Clock
from fleet.protocol.control_api import (
    AcknowledgeBody,
    AddParcelsBody,
    CancelParcelsBody,
    CancelVansBody,
    CommandResult,
    InstantBody,
    ReplanBody,
    RequestBody,
)
from fleet.protocol.topics import VAN_ID_PATTERN

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAP_STATIC = Path(__file__).parent.parent / "viz" / "static"
MAX_ORDER_PARCELS = 5000
PARCEL_ID_PATTERN = ID_PATTERN  # the one identifier rule (docs/limits.md)

VanIdParam = Annotated[str, PathParam(pattern=VAN_ID_PATTERN, description="A van id.")]
ParcelIdParam = Annotated[
    str, PathParam(pattern=PARCEL_ID_PATTERN, max_length=64, description="A parcel id.")
]


# ---------------------------------------------------------------- request and reply bodies
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_In):
    token: str = Field(min_length=1, max_length=200, description="Your console token.")


Cell = float | int | str | None


class ParcelIn(_In):
    """One order: the columns of the orders CSV (``docs/orders.md``), checked the same way."""

    parcel_id: str = Field(max_length=200)
    lon: Cell
    lat: Cell
    weight_kg: Cell
    volume_m3: Cell
    earliest: Cell = None
    latest: Cell = None
    service_s: Cell = None
    station: Cell = None


class OrdersIn(_In):
    parcels: list[ParcelIn] = Field(min_length=1, max_length=MAX_ORDER_PARCELS)


class OrdersOut(BaseModel):
    created: list[str] = Field(description="Parcels the controller took on now.")
    already_known: list[str] = Field(
        description="Parcels it already had (a repeated POST changes nothing)."
    )
    message: str


class ConfirmIn(_In):
    confirm: bool = Field(
        description="Must be true: an action on the whole fleet is confirmed explicitly."
    )


class ReplanIn(_In):
    reason: str = Field(default="", max_length=400)


class ActionOut(BaseModel):
    message: str
    affected: list[str]


class ErrorOut(BaseModel):
    error: str


class ParcelOut(BaseModel):
    parcel_id: str
    status: str = Field(
        description="The controller's: planned, loaded, at_station, delivered, failed, "
        "cancelled, unserved."
    )
    display_status: str = Field(
        description="As the map colours it: waiting, loaded, delivered, late, failed, "
        "cancelled, unserved."
    )
    late: bool
    van_id: str | None
    lon: float | None
    lat: float | None
    planned_eta: str | None = Field(description="Planned arrival at the door (current plan).")
    first_planned_eta: str | None
    predicted_eta: str | None = Field(
        description="From the van's position and remaining route (null once delivered)."
    )
    delivered: str | None
    detail: str
    history: list[dict[str, str]] = []


ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "a viewer, or a cross-site request"},
    429: {"model": ErrorOut, "description": "over the request budget"},
}
ACTION_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    409: {"model": ErrorOut, "description": "the controller refused it (its reason)"},
    503: {"model": ErrorOut, "description": "the controller cannot be reached"},
}


async def viewer(request: Request) -> User:
    user: User | None = request.scope.get("fleet.user")
    if user is None:
        raise HTTPException(401, "log in: a Bearer token or the console's session")
    return user


async def dispatcher(user: Annotated[User, Depends(viewer)]) -> User:
    if not user.may_act:
        raise HTTPException(403, f"{user.name} is a viewer: only a dispatcher may act")
    return user


Viewer = Annotated[User, Depends(viewer)]
Dispatcher = Annotated[User, Depends(dispatcher)]


@dataclass
class ConsoleContext:
    """What the routes work with; the server makes one."""

    view: FleetView
    feed: Feed | None
    broadcaster: Broadcaster
    users: Users
    sessions: Sessions
    clock: Clock
    site: Site
    map_json: bytes
    secure_cookies: bool = False
    title: str = "fleet console"
    parcel_cache: dict[str, tuple[tuple[int, int, int], bytes]] = field(default_factory=dict)


def _json(data: object, status: int = 200) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def build_app(ctx: ConsoleContext, limits: Limits) -> Gate:
    """The ASGI application: the gate in front of the FastAPI app."""
    app = FastAPI(
        title="fleet console API",
        version="1",
        description="The dispatcher's console and HTTP API of fleet (docs/api.md). "
        "Authenticate with `Authorization: Bearer <token>`.",
        docs_url=None,
        redoc_url=None,
    )
    map_gz = gzip.compress(ctx.map_json, 6)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return _json({"error": str(exc.detail)}, exc.status_code)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors()[:20]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return _json({"error": "; ".join(problems) or "invalid request"}, 422)

    async def act(user: User, body: RequestBody, what: str) -> Response:
        feed = ctx.feed
        if ctx.view.controller is not ConnectionState.ONLINE or feed is None or feed.client is None:
            state = ctx.view.controller.value if ctx.view.controller else "not heard from"
            return _json({"error": f"the controller is {state}; nothing was sent"}, 503)
        try:
            result = await feed.client.request(body)
        except BrokerError as exc:
            return _json({"error": f"the broker is unreachable: {exc}"}, 503)
        except ControlError as exc:
            log.info("console: %s asked %s: refused: %s", user.name, what, exc)
            status = 503 if str(exc).startswith("no reply from the controller") else 409
            return _json({"error": str(exc)}, status)
        assert isinstance(result, CommandResult)
        log.warning("console: %s: %s -> %s", user.name, what, result.message)
        return _json({"message": result.message, "affected": list(result.affected)})

    # ------------------------------------------------------------ pages and session
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return HTMLResponse((STATIC / "index.html").read_bytes())

    @app.get("/login", include_in_schema=False)
    async def login_page() -> Response:
        return HTMLResponse((STATIC / "login.html").read_bytes())

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> Response:
        return HTMLResponse((STATIC / "docs.html").read_bytes())

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return _json(
            {"ok": True, "controller": ctx.view.controller.value if ctx.view.controller else None}
        )

    @app.post("/api/login", tags=["session"], responses={401: {"model": ErrorOut}})
    async def login(body: LoginIn) -> Response:
        """Trade a token for a browser session (an HttpOnly, SameSite=Strict cookie)."""
        user = ctx.users.by_token(body.token)
        if user is None:
            return _json({"error": "unknown token"}, 401)
        session = ctx.sessions.open(user, time.time())
        response = _json({"user": user.name, "role": user.role.value})
        response.set_cookie(
            COOKIE,
            session.session_id,
            max_age=int(ctx.sessions.ttl_s),
            httponly=True,
            samesite="strict",
            secure=ctx.secure_cookies,
            path="/",
        )
        return response

    @app.post("/api/logout", tags=["session"])
    async def logout(request: Request) -> Response:
        """End this browser session."""
        session = request.scope.get("fleet.session")
        if session is not None:
            ctx.sessions.close(session.session_id)
        response = _json({"ok": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/api/session", tags=["session"], responses=ERRORS)
    async def session_info(request: Request, user: Viewer) -> Response:
        """Who you are, what you may do, the CSRF token for actions, the site's time zone."""
        session = request.scope.get("fleet.session")
        return _json(
            {
                "user": user.name,
                "role": user.role.value,
                "may_act": user.may_act,
                "csrf_token": session.csrf_token if session is not None else None,
                "site": ctx.site.name,
                "timezone": ctx.site.timezone,
                "stale_after_s": ctx.view.config.stale_after_s,
                "late_after_s": ctx.view.config.late_after_s,
            }
        )

    # ------------------------------------------------------------ reading
    @app.get("/api/map", tags=["fleet"], responses=ERRORS)
    async def base_map(request: Request, user: Viewer) -> Response:
        """The site's roads (from its own OSM graph), operating area and depots, in the layer
        format of fleet's map code (`fleet/viz/static/fleetmap.js`)."""
        if "gzip" in (request.headers.get("accept-encoding") or ""):
            return Response(
                map_gz,
                media_type="application/json",
                headers={"content-encoding": "gzip", "vary": "accept-encoding"},
            )
        return Response(ctx.map_json, media_type="application/json")

    @app.get("/api/vans", tags=["fleet"], responses=ERRORS)
    async def vans(user: Viewer) -> Response:
        """Every van: mode (stale when its data is older than the controller's bound),
        position, heading, charge and range, load, current and next stop with ETA."""
        now_s = ctx.clock.time()
        return _json({"vans": [ctx.view.van_json(v, now_s) for v in ctx.view.vans.values()]})

    @app.get("/api/vans/{van_id}", tags=["fleet"], responses={**ERRORS, 404: {"model": ErrorOut}})
    async def van(van_id: VanIdParam, user: Viewer) -> Response:
        """One van with its route: stops (planned and predicted arrival, done or not,
        released or horizon) and legs with their road geometry."""
        v = ctx.view.vans.get(van_id)
        if v is None:
            return _json({"error": f"no van {van_id}"}, 404)
        now_s = ctx.clock.time()
        return _json({**ctx.view.van_json(v, now_s), "route": ctx.view.route_json(v, now_s)})

    @app.get("/api/routes", tags=["fleet"], responses=ERRORS)
    async def routes(user: Viewer) -> Response:
        """Every van's route (base and horizon), for the map's routes layer."""
        now_s = ctx.clock.time()
        return _json(
            {
                "routes_version": ctx.view.routes_version,
                "routes": [
                    ctx.view.route_json(v, now_s)
                    for v in ctx.view.vans.values()
                    if v.order is not None
                ],
            }
        )

    @app.get("/api/parcels", tags=["parcels"], responses=ERRORS)
    async def parcels(
        user: Viewer,
        status: Annotated[str | None, Field(max_length=32)] = None,
        van_id: Annotated[str | None, Field(max_length=64)] = None,
        limit: Annotated[int, Field(ge=1, le=10_000)] = 1000,
    ) -> Response:
        """Parcels, optionally of one status (the controller's or the map's) or one van."""
        now_s = ctx.clock.time()
        out = []
        for p in ctx.view.parcels.values():
            if status is not None and status not in (p.status, ctx_display(p)):
                continue
            if van_id is not None and p.van_id != van_id:
                continue
            out.append(ctx.view.parcel_json(p, now_s))
            if len(out) >= limit:
                break
        return _json({"parcels": out})

    @app.get(
        "/api/parcels/{parcel_id}",
        tags=["parcels"],
        responses={**ERRORS, 200: {"model": ParcelOut}, 404: {"model": ErrorOut}},
    )
    async def parcel(parcel_id: ParcelIdParam, user: Viewer) -> Response:
        """Where a parcel is: status, van, planned and predicted ETA, delivered time, history."""
        status, body = parcel_reply(ctx, parcel_id)
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/api/events", tags=["fleet"], responses=ERRORS)
    async def events(
        user: Viewer,
        after: Annotated[int, Field(ge=0)] = 0,
        limit: Annotated[int, Field(ge=1, le=2000)] = 200,
    ) -> Response:
        """The controller's event log as the console holds it (the last 2,000 events)."""
        out = [e for e in ctx.view.events if int(e["id"]) > after]  # type: ignore[call-overload]
        return _json({"events": out[:limit]})

    @app.get("/api/alerts", tags=["alerts"], responses=ERRORS)
    async def alerts(user: Viewer) -> Response:
        """Breakdowns, low charge, lost links, e-stops, late parcels, failed re-plans."""
        return _json({"alerts": [a.json() for a in ctx.view.alerts.values()]})

    @app.get("/api/kpis", tags=["fleet"], responses=ERRORS)
    async def kpis(user: Viewer) -> Response:
        """Delivered, on time, late, failed, km driven, energy used."""
        return _json(ctx.view.kpis())

    @app.get("/api/stream", tags=["fleet"], responses=ERRORS)
    async def stream(request: Request, user: Viewer) -> Response:
        """Server-sent events: a `snapshot`, then a `delta` with what changed every push
        interval (vans, parcels, new events, alerts, KPIs)."""
        queue, first = ctx.broadcaster.connect()

        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n\n" + first
                while True:
                    try:
                        data = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        yield b'data: {"type":"ping"}\n\n'
                        continue
                    if data is None:
                        return
                    yield data
            finally:
                ctx.broadcaster.disconnect(queue)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # ------------------------------------------------------------ acting
    @app.post(
        "/api/orders",
        tags=["parcels"],
        responses={
            **ACTION_ERRORS,
            200: {"model": OrdersOut},
            201: {"model": OrdersOut},
            422: {"model": ErrorOut},
        },
    )
    async def post_orders(body: OrdersIn, user: Dispatcher) -> Response:
        """Add orders (urgent parcels), the orders CSV's columns and checks; idempotent by
        parcel id: a parcel the fleet already has is reported under `already_known` and not
        sent again. Created parcels are re-planned onto the running fleet."""
        rows = [p.model_dump() for p in body.parcels]
        _, parsed, errors = _orders_csv(rows, ctx.site)
        if errors:
            return _json({"error": "; ".join(errors[:50])}, 422)
        known = [r["parcel_id"] for r in rows if r["parcel_id"] in ctx.view.parcels]
        new_rows = [r for r in rows if r["parcel_id"] not in ctx.view.parcels]
        if not new_rows:
            return _json(
                {
                    "created": [],
                    "already_known": known,
                    "message": "nothing new: every parcel is already known",
                }
            )
        new_csv, _, _ = _orders_csv(new_rows, ctx.site)
        response = await act(
            user,
            AddParcelsBody(orders_csv=new_csv, orders_name="console-api.csv"),
            f"add {len(new_rows)} parcel(s)",
        )
        if response.status_code != 200:
            return response
        created = [str(r["parcel_id"]) for r in new_rows]
        now_s = ctx.clock.time()
        doors: dict[str, tuple[float, float]] = {p.id: (p.lon, p.lat) for p in parsed}
        for pid in created:
            entry = ctx.view.parcel_entry(pid)
            entry.history.append((now_s, f"ordered by {user.name} (API)"))
            if entry.door is None:
                entry.door = doors.get(pid)
            ctx.view.touch_parcel(entry)
        message = json.loads(bytes(response.body))["message"]
        return _json({"created": created, "already_known": known, "message": message}, 201)

    @app.post("/api/vans/{van_id}/{action}", tags=["actions"], responses=ACTION_ERRORS)
    async def van_action(
        van_id: VanIdParam,
        action: Literal["pause", "resume", "estop", "cancel"],
        user: Dispatcher,
    ) -> Response:
        """Pause, resume or emergency-stop one van, or cancel its order (out of service, its
        parcels re-planned; `resume` brings it back)."""
        if action == "cancel":
            return await act(user, CancelVansBody(van_ids=(van_id,)), f"cancel van {van_id}")
        kind = {
            "pause": InstantActionType.PAUSE,
            "resume": InstantActionType.RESUME,
            "estop": InstantActionType.EMERGENCY_STOP,
        }[action]
        return await act(user, InstantBody(action=kind, van_ids=(van_id,)), f"{action} {van_id}")

    @app.post("/api/fleet/{action}", tags=["actions"], responses=ACTION_ERRORS)
    async def fleet_action(
        action: Literal["pause", "resume", "estop"], body: ConfirmIn, user: Dispatcher
    ) -> Response:
        """Pause, resume or emergency-stop every van; needs `{"confirm": true}`."""
        if not body.confirm:
            return _json({"error": f'{action} of the whole fleet needs "confirm": true'}, 422)
        kind = {
            "pause": InstantActionType.PAUSE,
            "resume": InstantActionType.RESUME,
            "estop": InstantActionType.EMERGENCY_STOP,
        }[action]
        return await act(user, InstantBody(action=kind, all_vans=True), f"{action} all vans")

    @app.post("/api/parcels/{parcel_id}/cancel", tags=["actions"], responses=ACTION_ERRORS)
    async def cancel_parcel(parcel_id: ParcelIdParam, user: Dispatcher) -> Response:
        """Take a parcel out of every van's horizon (refused once it is in a released stop:
        cancel the van to stop it)."""
        return await act(
            user, CancelParcelsBody(parcel_ids=(parcel_id,)), f"cancel parcel {parcel_id}"
        )

    @app.post("/api/replan", tags=["actions"], responses=ACTION_ERRORS)
    async def replan(body: ReplanIn, user: Dispatcher) -> Response:
        """Re-plan everything not in a van's released base, from the fleet as it is now."""
        reason = f"{body.reason} (console: {user.name})" if body.reason else f"console: {user.name}"
        return await act(user, ReplanBody(reason=reason[:500]), "re-plan")

    @app.post(
        "/api/alerts/{alert_id}/ack",
        tags=["alerts"],
        responses={**ERRORS, 404: {"model": ErrorOut}},
    )
    async def ack(alert_id: int, user: Dispatcher) -> Response:
        """Acknowledge an alert, with who and when. It is recorded in the controller's event
        log (`alert_acknowledged`), so every console shows it, a restarted one too;
        `recorded` is false when the controller could not be reached (then only this console
        knows, until it restarts)."""
        alert = ctx.view.alerts.get(alert_id)
        if alert is None:
            return _json({"error": f"no alert {alert_id}"}, 404)
        first = alert.acknowledged_by is None
        ctx.view.acknowledge(alert_id, user.name, ctx.clock.time())
        recorded = not first
        if first:
            body = AcknowledgeBody(
                alert=alert.kind, van_id=alert.van_id, parcel_id=alert.parcel_id, by=user.name
            )
            recorded = (await act(user, body, f"acknowledge alert {alert_id}")).status_code == 200
        return _json({**alert.json(), "recorded": recorded})

    def ctx_display(p: object) -> str:
        from fleet.console.view import ParcelView, display_status

        assert isinstance(p, ParcelView)
        return display_status(p)

    app.mount("/static/map", StaticFiles(directory=MAP_STATIC), name="map-static")
    app.mount("/static/app", StaticFiles(directory=STATIC), name="app-static")
    return Gate(ParcelLane(app, ctx), users=ctx.users, sessions=ctx.sessions, limits=limits)


_PARCEL_PATH = re.compile(PARCEL_ID_PATTERN)
_JSON_HEADERS = [(b"content-type", b"application/json")]


def parcel_reply(ctx: ConsoleContext, parcel_id: str) -> tuple[int, bytes]:
    """``GET /api/parcels/{id}``'s answer. A shop asks this a lot: the JSON is kept per
    parcel, per change of the parcel or its van, and per second of the clock (the predicted
    arrival moves with time)."""
    p = ctx.view.parcels.get(parcel_id)
    if p is None:
        return 404, json.dumps({"error": f"no parcel {parcel_id}"}).encode()
    now_s = ctx.clock.time()
    van = ctx.view.vans.get(p.van_id) if p.van_id else None
    key = (p.version, van.version if van else -1, int(now_s))
    cached = ctx.parcel_cache.get(parcel_id)
    if cached is not None and cached[0] == key:
        return 200, cached[1]
    body = json.dumps(ctx.view.parcel_json(p, now_s, history=True), separators=(",", ":"))
    data = body.encode()
    if len(ctx.parcel_cache) > 100_000:
        ctx.parcel_cache.clear()
    ctx.parcel_cache[parcel_id] = (key, data)
    return 200, data


class ParcelLane:
    """``GET /api/parcels/{id}`` straight to :func:`parcel_reply`, past FastAPI's routing
    (the same answer as the documented route, at a fraction of the cost). Anything else, or
    a request without a user, goes on to the app (which answers 401, 422 ...)."""

    def __init__(self, app: FastAPI, ctx: ConsoleContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and path.startswith("/api/parcels/")
            and scope.get("fleet.user") is not None
        ):
            parcel_id = path[13:]  # ASGI paths arrive percent-decoded
            if _PARCEL_PATH.fullmatch(parcel_id) and not scope.get("query_string"):
                status, body = parcel_reply(self.ctx, parcel_id)
                headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _orders_csv(
    rows: list[dict[str, object]], site: Site
) -> tuple[str, tuple[Parcel, ...], list[str]]:
    """The rows as orders CSV text, and what the orders CSV reader says is wrong with them
    (each problem named by its place in the request: ``parcels[2].weight_kg: ...``)."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _cell(row.get(c)) for c in COLUMNS])
    text = buf.getvalue()
    try:
        orders = parse_orders(io.StringIO(text), Path("request"), site)
    except FleetError as exc:
        return text, (), [str(exc)]
    problems = [
        f"parcels[{bad.line - 2}] ({bad.parcel_id}): {bad.field}: {bad.message}"
        for bad in orders.bad_rows
    ]
    return text, orders.parcels, problems


def _cell(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)
