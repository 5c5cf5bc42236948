"""MQTT topics of protocol v1 (documented in ``docs/protocol.md``).

Van topics::

    {prefix}fleet/v1/vans/{van_id}/order        controller → van   QoS 1  not retained, signed
    {prefix}fleet/v1/vans/{van_id}/instant      controller → van   QoS 1  not retained, signed
    {prefix}fleet/v1/vans/{van_id}/state        van → controller   QoS 0  not retained
    {prefix}fleet/v1/vans/{van_id}/connection   van → all          QoS 1  retained, last will
    {prefix}fleet/v1/vans/{van_id}/factsheet    van → all          QoS 1  retained

The controller's own topics (the dispatcher CLI talks to the controller through them)::

    {prefix}fleet/v1/controller/connection      controller → all   QoS 1  retained, last will
    {prefix}fleet/v1/controller/request         CLI → controller   QoS 1  not retained
    {prefix}fleet/v1/controller/reply/{client}  controller → CLI   QoS 1  not retained
    {prefix}fleet/v1/controller/events          controller → all   QoS 1  not retained

``prefix`` is empty in production; tests use a unique one per test so that tests sharing a
broker never see each other's messages (it must end with ``/`` when set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from fleet.identifiers import ID_PATTERN
from fleet.protocol.errors import TopicError

ROOT = "fleet/v1"
VAN_ID_PATTERN = ID_PATTERN  # the one identifier rule (fleet/identifiers.py)
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_VAN_ID_RE = re.compile(VAN_ID_PATTERN)
_CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)


class VanTopic(StrEnum):
    """The last level of a van topic."""

    ORDER = "order"
    INSTANT = "instant"
    STATE = "state"
    CONNECTION = "connection"
    FACTSHEET = "factsheet"


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds and parses every topic under one optional prefix."""

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and (not self.prefix.endswith("/") or any(c in self.prefix for c in "+#")):
            raise TopicError(
                "bad_prefix",
                f"a topic prefix must end with '/' and hold no wildcard, got {self.prefix!r}",
            )

    @property
    def root(self) -> str:
        return f"{self.prefix}{ROOT}"

    # -- van topics ----------------------------------------------------------------------
    def van(self, van_id: str, kind: VanTopic) -> str:
        check_van_id(van_id)
        return f"{self.root}/vans/{van_id}/{kind.value}"

    def all_vans(self, kind: VanTopic) -> str:
        """The subscription filter for one kind of message from every van."""
        return f"{self.root}/vans/+/{kind.value}"

    def parse_van(self, topic: str) -> tuple[str, VanTopic]:
        """``topic`` → ``(van_id, kind)``; anything else is a :class:`TopicError`."""
        head = f"{self.root}/vans/"
        if not topic.startswith(head):
            raise TopicError("wrong_topic", f"expected a topic under {head}", topic=topic)
        parts = topic[len(head) :].split("/")
        if len(parts) != 2:
            raise TopicError("wrong_topic", f"expected {head}<van_id>/<kind>", topic=topic)
        van_id, kind = parts
        if not _VAN_ID_RE.fullmatch(van_id):
            raise TopicError("bad_van_id", f"van id must match {VAN_ID_PATTERN}", topic=topic)
        try:
            return van_id, VanTopic(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in VanTopic)
            detail = f"unknown message kind {kind!r}; expected one of {kinds}"
            raise TopicError("wrong_topic", detail, topic=topic) from None

    # -- controller topics ---------------------------------------------------------------
    @property
    def controller_connection(self) -> str:
        return f"{self.root}/controller/connection"

    @property
    def controller_request(self) -> str:
        return f"{self.root}/controller/request"

    @property
    def controller_events(self) -> str:
        return f"{self.root}/controller/events"

    def controller_reply(self, client_id: str) -> str:
        if not _CLIENT_ID_RE.fullmatch(client_id):
            raise TopicError("bad_client_id", f"client id must match {CLIENT_ID_PATTERN}")
        return f"{self.root}/controller/reply/{client_id}"


def check_van_id(van_id: str) -> str:
    """Return ``van_id`` if it is topic-safe, else raise :class:`TopicError`."""
    if not _VAN_ID_RE.fullmatch(van_id):
        raise TopicError("bad_van_id", f"van id {van_id!r} must match {VAN_ID_PATTERN}")
    return van_id
