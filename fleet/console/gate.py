"""The console's front gate, one ASGI middleware in front of every route.

For each HTTP request, in this order: bounded body size (``413``), who is asking (bearer token
or session cookie; an unknown token is ``401`` at once), the request budget of that user or,
before login, of that address (``429`` with ``Retry-After``), and for an action made with the
session cookie the CSRF token and the page's origin (``403``). Every response gets the
security headers (a strict Content-Security-Policy: scripts and styles only from the console
itself, no frames, no inline script).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from fleet.console.auth import Session, Sessions, User, Users

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "fleet_console"
CSRF_HEADER = b"x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Request bounds (``docs/api.md``, "Limits")."""

    max_body_bytes: int = 64 * 1024  # any request
    max_orders_bytes: int = 2 * 1024 * 1024  # POST /api/orders
    default_rate_per_s: float = 20.0  # per user, burst twice that
    anonymous_rate_per_s: float = 2.0  # per address before login (token guessing), burst 10
    max_buckets: int = 100_000


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> float:
        """0 if a request may pass now, else the seconds to wait."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str, rate: float, burst: float) -> float:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= self.limits.max_buckets:
                self._buckets.clear()  # a flood of addresses: start over rather than grow
            bucket = self._buckets[key] = _Bucket(rate, burst, now)
        return bucket.take(now)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _reply(
    send: Send, status: int, error: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        users: Users,
        sessions: Sessions,
        limits: Limits,
        wall: Callable[[], float] = time.time,
        rate_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.users = users
        self.sessions = sessions
        self.limits = limits
        self.wall = wall
        self.rates = RateLimiter(limits, rate_clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        # 1. size
        limit = (
            self.limits.max_orders_bytes if path == "/api/orders" else self.limits.max_body_bytes
        )
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await _reply(send, 400, "bad Content-Length")
                return
            if int(length) > limit:
                await _reply(send, 413, f"request body over {limit} bytes")
                return
        # 2. who
        user: User | None = None
        session: Session | None = None
        auth = _header(scope, b"authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token:
                await _reply(send, 401, "Authorization must be 'Bearer <token>'")
                return
            user = self.users.by_token(token.strip())
            if user is None:
                if not await self._limited(scope, send, None):  # guessing costs the budget
                    await _reply(send, 401, "unknown token")
                return
        else:
            cookie = _header(scope, b"cookie")
            if cookie:
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(cookie)
                except Exception:
                    jar = SimpleCookie()
                morsel = jar.get(COOKIE)
                if morsel is not None:
                    session = self.sessions.get(morsel.value, self.wall())
                    user = session.user if session else None
        # 3. budget
        if await self._limited(scope, send, user):
            return
        # 4. cross-site requests
        if method not in SAFE_METHODS:
            origin = _header(scope, b"origin")
            if origin is not None and origin != _own_origin(scope):
                await _reply(send, 403, f"cross-origin request from {origin[:100]} refused")
                return
            if session is not None:
                sent = _header(scope, CSRF_HEADER) or ""
                if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
                    await _reply(send, 403, "missing or wrong X-CSRF-Token")
                    return
        scope["fleet.user"] = user
        scope["fleet.session"] = session

        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {k for k, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, bounded_receive, secured_send)
        except BodyTooLarge as exc:
            if not started:
                await _reply(send, 413, f"request body over {exc.limit} bytes")

    async def _limited(self, scope: Scope, send: Send, user: User | None) -> bool:
        if user is not None:
            rate = user.rate_per_s or self.limits.default_rate_per_s
            wait = self.rates.check("u:" + user.name, rate, 2.0 * rate)
        else:
            client = scope.get("client") or ("?", 0)
            rate = self.limits.anonymous_rate_per_s
            wait = self.rates.check("a:" + str(client[0]), rate, 10.0)
        if wait > 0:
            retry = str(max(1, int(wait + 0.999))).encode()
            await _reply(send, 429, "too many requests; slow down", ((b"retry-after", retry),))
            return True
        return False


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def _own_origin(scope: Scope) -> str:
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    host = _header(scope, b"host")
    if host is None:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}"
