"""Who may publish and subscribe to what: the Mosquitto ACL file for one site.

Three roles, one MQTT identity each (``docs/security.md``, "Who can publish what"):

* a **van** writes only its own ``state``, ``connection`` and ``factsheet`` and reads only its
  own ``order`` and ``instant`` topics;
* the **controller** reads every van's ``state``, ``connection`` and ``factsheet``, writes
  every van's ``order`` and ``instant``, and owns ``fleet/v1/controller/#``;
* the **dispatcher** (the ``fleet`` CLI) writes requests to the controller and reads its
  replies, events and liveness — it never talks to a van directly;
* the **console** (``fleet console``) is a dispatcher that also reads every van's ``state``,
  ``connection``, ``factsheet`` and ``order`` (to draw them); it writes to no van either.

Every grant is spelt out per user (no ``pattern`` lines), so an identity that is not in the
file gets nothing, and a controller or dispatcher username can never be mistaken for a van.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from fleet.protocol.topics import Topics, VanTopic


class Role(StrEnum):
    VAN = "van"
    CONTROLLER = "controller"
    DISPATCHER = "dispatcher"
    CONSOLE = "console"


@dataclass(frozen=True, slots=True)
class Identity:
    """One MQTT login: its username (a van logs in with its van id) and its role."""

    username: str
    role: Role


@dataclass(frozen=True, slots=True)
class Grant:
    access: str  # "read", "write" or "readwrite", as Mosquitto spells them
    topic: str


def grants(identity: Identity, topics: Topics | None = None) -> tuple[Grant, ...]:
    """The topics ``identity`` may use, in ACL order."""
    t = topics or Topics()
    controller = f"{t.root}/controller"
    if identity.role is Role.VAN:
        van = identity.username
        return (
            Grant("write", t.van(van, VanTopic.STATE)),
            Grant("write", t.van(van, VanTopic.CONNECTION)),
            Grant("write", t.van(van, VanTopic.FACTSHEET)),
            Grant("read", t.van(van, VanTopic.ORDER)),
            Grant("read", t.van(van, VanTopic.INSTANT)),
        )
    if identity.role is Role.CONTROLLER:
        return (
            Grant("read", t.all_vans(VanTopic.STATE)),
            Grant("read", t.all_vans(VanTopic.CONNECTION)),
            Grant("read", t.all_vans(VanTopic.FACTSHEET)),
            Grant("write", t.all_vans(VanTopic.ORDER)),
            Grant("write", t.all_vans(VanTopic.INSTANT)),
            Grant("readwrite", f"{controller}/#"),
        )
    dispatcher = (
        Grant("write", t.controller_request),
        Grant("read", f"{controller}/reply/+"),
        Grant("read", t.controller_events),
        Grant("read", t.controller_connection),
    )
    if identity.role is Role.CONSOLE:
        return (
            *dispatcher,
            Grant("read", t.all_vans(VanTopic.STATE)),
            Grant("read", t.all_vans(VanTopic.CONNECTION)),
            Grant("read", t.all_vans(VanTopic.FACTSHEET)),
            Grant("read", t.all_vans(VanTopic.ORDER)),
        )
    return dispatcher


def render_acl(identities: Iterable[Identity], *, header: str = "") -> str:
    """The ACL file's text: one ``user`` block per identity, nothing for anyone else."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [
        "# Mosquitto ACL: every grant is listed per user; anything not listed is refused.",
        "# Anonymous clients get nothing (and the broker config refuses them anyway).",
        "",
    ]
    for identity in identities:
        lines.append(f"# {identity.role.value}")
        lines.append(f"user {identity.username}")
        lines += [f"topic {g.access} {g.topic}" for g in grants(identity)]
        lines.append("")
    return "\n".join(lines)
