"""Who may use the console: per-user tokens with a role, browser sessions, CSRF tokens.

The users file (TOML, written by ``fleet console user add``; ``docs/console.md``)::

    [[user]]
    name = "alice"
    role = "dispatcher"          # or "viewer"
    token_sha256 = "9f86d0…"     # the token itself is shown once, never stored
    rate_per_s = 20              # optional: this user's request budget (burst: twice it)

A request is authenticated by ``Authorization: Bearer <token>`` (API clients) or by the
session cookie a browser gets from ``POST /api/login`` with the same token. A **viewer** may
read everything and change nothing; a **dispatcher** may also act (pause, resume, e-stop,
cancel, re-plan, add orders, acknowledge alerts). Actions made with the session cookie must
carry the session's CSRF token in ``X-CSRF-Token`` (a page on another site cannot read it).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fleet.errors import ConfigError

TOKEN_PREFIX = "fct_"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 10_000
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class Role(StrEnum):
    VIEWER = "viewer"
    DISPATCHER = "dispatcher"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    token_sha256: str
    rate_per_s: float | None = None

    @property
    def may_act(self) -> bool:
        return self.role is Role.DISPATCHER


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= NAME_CHARS:
        raise ConfigError(
            f"user name {name!r}: 1 to 64 characters of letters, digits, '_', '.' and '-'"
        )
    return name


class Users:
    """The users file, read once; lookups by token digest."""

    def __init__(self, users: list[User], source: Path | None = None) -> None:
        self.source = source
        self.by_name = {u.name: u for u in users}
        self._by_digest = {u.token_sha256: u for u in users}

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{path}: no users file (make one with `fleet console user add`)"
            ) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: not a TOML users file: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        extra = set(data) - {"user"}
        if extra:
            raise ConfigError(
                f"{path}: unknown key(s) {', '.join(sorted(extra))}; expected [[user]]"
            )
        entries = data.get("user", [])
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: 'user' must be an array of tables ([[user]])")
        users: list[User] = []
        for i, entry in enumerate(entries):
            where = f"{path}: [[user]] #{i + 1}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a table")
            unknown = set(entry) - {"name", "role", "token_sha256", "rate_per_s"}
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            name, role, digest = entry.get("name"), entry.get("role"), entry.get("token_sha256")
            if not isinstance(name, str):
                raise ConfigError(f"{where}: 'name' must be a string")
            check_name(name)
            if role not in (Role.VIEWER.value, Role.DISPATCHER.value):
                raise ConfigError(f"{where} ({name}): 'role' must be 'viewer' or 'dispatcher'")
            if (
                not isinstance(digest, str)
                or len(digest) != 64
                or set(digest) - set("0123456789abcdef")
            ):
                raise ConfigError(
                    f"{where} ({name}): 'token_sha256' must be 64 lower-case hex digits"
                )
            rate = entry.get("rate_per_s")
            if rate is not None and (
                isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0
            ):
                raise ConfigError(f"{where} ({name}): 'rate_per_s' must be a number > 0")
            if name in {u.name for u in users}:
                raise ConfigError(f"{where}: user {name!r} is listed twice")
            users.append(User(name, Role(role), digest, float(rate) if rate is not None else None))
        return cls(users, path)

    def by_token(self, token: str) -> User | None:
        digest = token_digest(token)
        user = self._by_digest.get(digest)
        if user is not None and hmac.compare_digest(user.token_sha256, digest):
            return user
        return None


def users_file_text(users: list[User]) -> str:
    lines = [
        "# fleet console users (docs/console.md). Tokens are stored as SHA-256 only.",
        "",
    ]
    for u in users:
        lines += ["[[user]]", f'name = "{u.name}"', f'role = "{u.role.value}"']
        lines.append(f'token_sha256 = "{u.token_sha256}"')
        if u.rate_per_s is not None:
            lines.append(f"rate_per_s = {u.rate_per_s:g}")
        lines.append("")
    return "\n".join(lines)


def add_user(
    path: Path, name: str, role: Role, *, rate_per_s: float | None = None, replace: bool = False
) -> str:
    """Add (or with ``replace``, renew) a user; returns the new token (shown once)."""
    check_name(name)
    existing = list(Users.load(path).by_name.values()) if path.exists() else []
    if any(u.name == name for u in existing) and not replace:
        raise ConfigError(f"{path}: user {name!r} exists (use --replace to give a new token)")
    token = new_token()
    users = [u for u in existing if u.name != name]
    users.append(User(name, role, token_digest(token), rate_per_s))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(users_file_text(users))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return token


@dataclass
class Session:
    session_id: str
    user: User
    csrf_token: str
    expires_s: float


class Sessions:
    """Browser sessions, in memory (a console restart signs everyone out)."""

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def open(self, user: User, now_s: float) -> Session:
        if len(self._sessions) >= MAX_SESSIONS:
            self.expire(now_s)
            if len(self._sessions) >= MAX_SESSIONS:  # drop the oldest
                oldest = min(self._sessions.values(), key=lambda s: s.expires_s)
                del self._sessions[oldest.session_id]
        session = Session(
            secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now_s + self.ttl_s
        )
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str, now_s: float) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_s < now_s:
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def expire(self, now_s: float) -> None:
        for sid in [s.session_id for s in self._sessions.values() if s.expires_s < now_s]:
            del self._sessions[sid]
