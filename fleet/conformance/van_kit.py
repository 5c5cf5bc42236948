"""``fleet conformance van``: put a van through the documented protocol, through the broker.

The kit plays the controller. It needs the van's signing key (or the master it is derived
from) and, for the restart case, a shell command that restarts the van. Cases run in order,
each building on the van as the previous ones left it (one order, ``A``, is driven stop by
stop through them); a case whose prerequisite failed is skipped with that reason. Every
case is described in ``docs/conformance.md``, "Van conformance (MQTT)".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from fleet.conformance import van_messages as vm
from fleet.conformance.report import CaseResult, Outcome, Report
from fleet.conformance.van_watch import KitError, Seen, VanWatch, describe_state
from fleet.mqtt import BrokerAddress, BrokerError
from fleet.protocol import (
    PROTOCOL_VERSION,
    ActionStatus,
    Connection,
    ConnectionState,
    ErrorReference,
    Factsheet,
    InstantActionType,
    NodeActionType,
    Order,
    SigningKey,
    State,
    Topics,
    VanTopic,
    encode,
    sign,
)
from fleet.protocol.clock import Clock, WallClock

log = logging.getLogger(__name__)

REQUIRED_ACTIONS = frozenset(
    {
        InstantActionType.PAUSE,
        InstantActionType.RESUME,
        InstantActionType.CANCEL_ORDER,
        InstantActionType.EMERGENCY_STOP,
    }
)
STOPPED_MPS = 0.1  # "standing still"
STILL_M = 1.0  # how far a held van may creep during a hold check (position noise)
OTHER_VAN = "CONFORMANCE-OTHER-VAN"


@dataclass(frozen=True, slots=True)
class VanKitSettings:
    """Where the van is and how long it is given (seconds, metres)."""

    address: BrokerAddress
    van_id: str
    key: SigningKey
    other_key: SigningKey | None = None  # a genuine key of another van (from --master)
    topics: Topics = field(default_factory=Topics)
    restart_command: str | None = None
    connect_timeout_s: float = 30.0  # the van ONLINE at start
    state_bound_s: float = 2.5  # states come at least this often (the doc says 1 s)
    reply_timeout_s: float = 5.0  # a command's effect in state
    drive_timeout_s: float = 60.0  # one leg driven
    stop_timeout_s: float = 15.0  # a paused/e-stopped van standing still
    hold_s: float = 1.5  # how long "nothing happens" is watched
    restart_timeout_s: float = 90.0  # the restart command plus the van back ONLINE
    leg_m: float = 25.0
    speed_mps: float = 5.0


Case = Callable[[], Awaitable[str]]

VAN_CASES = (
    "connection",
    "factsheet",
    "first_state",
    "order_accepted",
    "order_update_followed",
    "stale_update",
    "conflicting_update",
    "base_changed",
    "busy",
    "unsigned",
    "tampered",
    "stale_timestamp",
    "wrong_key",
    "replayed_id",
    "wrong_van",
    "pause_resume",
    "estop",
    "estop_lower_message_id",
    "estop_stamped_old",
    "estop_tampered",
    "cancel_order",
    "van_restart",
    "last_will",
    "state_sequence",
)
"""Every case of the van kit, in the order it runs them (docs/conformance.md lists each)."""


class VanKit:
    """The cases, in order, around one :class:`VanWatch`."""

    def __init__(self, settings: VanKitSettings, watch: VanWatch, clock: Clock) -> None:
        self.s = settings
        self.watch = watch
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:8]
        self.van = settings.van_id
        self._message_id = 0
        self._instant_n = 0
        self.start: vm.Start | None = None
        self.order: Order | None = None  # the last update of order A the van accepted
        self.last_accepted: tuple[Order, bytes] | None = None  # any order, as sent
        self.passed: set[str] = set()
        self.restart_saw: ConnectionState | None = None  # OFFLINE or the will, during restart
        self.restarted = False  # the restart command ran and the van said ONLINE again

    # -- helpers ----------------------------------------------------------------------------

    def next_id(self) -> int:
        """Like the controller: at least the time in microseconds, and always rising."""
        self._message_id = max(self._message_id + 1, int(self.clock.time() * 1e6))
        return self._message_id

    def action_id(self) -> str:
        self._instant_n += 1
        return f"CONF-{self.run_id}.{self._instant_n}"

    def order_id(self, name: str) -> str:
        return f"CONF-{self.run_id}-{name}"

    def build(
        self, update_id: int, released: int, order_id: str = "", start: vm.Start | None = None
    ) -> Order:
        assert self.start is not None
        return vm.build_order(
            self.van,
            order_id or self.order_id("A"),
            start or self.start,
            update_id=update_id,
            released=released,
            message_id=self.next_id(),
            now_s=self.clock.time(),
            leg_m=self.s.leg_m,
            speed_mps=self.s.speed_mps,
        )

    def instant(
        self, action: InstantActionType, *, message_id: int | None = None, age_s: float = 0.0
    ) -> tuple[str, bytes]:
        action_id = self.action_id()
        message = vm.instant(
            self.van,
            action_id,
            action,
            message_id=self.next_id() if message_id is None else message_id,
            now_s=self.clock.time() - age_s,
        )
        return action_id, encode(sign(message, self.s.key))

    async def send_order(self, payload: bytes) -> int:
        mark = self.watch.mark()
        await self.watch.publish(VanTopic.ORDER, payload)
        return mark

    async def send_instant(self, payload: bytes) -> int:
        mark = self.watch.mark()
        await self.watch.publish(VanTopic.INSTANT, payload)
        return mark

    async def state(
        self,
        check: Callable[[State], bool],
        after: int,
        what: str,
        *,
        timeout_s: float | None = None,
    ) -> State:
        return await self.watch.wait_for(
            State,
            check,
            after=after,
            timeout_s=self.s.reply_timeout_s if timeout_s is None else timeout_s,
            what=what,
        )

    def latest_state(self) -> State:
        state = self.watch.latest(State)
        if state is None:
            raise KitError("no state from the van yet")
        return state

    async def accepted(self, order: Order, payload: bytes) -> State:
        """Send ``order`` (signed ``payload``) and wait for the state that echoes it."""
        mark = await self.send_order(payload)
        state = await self.state(
            lambda s: s.order_id == order.order_id and s.order_update_id == order.order_update_id,
            mark,
            f"a state echoing order {order.order_id} update {order.order_update_id}",
        )
        if order.order_id == self.order_id("A"):
            self.order = order
        self.last_accepted = (order, payload)
        return state

    async def reached(self, sequence_id: int, after: int) -> State:
        return await self.state(
            lambda s: (s.last_node_sequence_id or -1) >= sequence_id,
            after,
            f"a state reporting node {sequence_id} reached",
            timeout_s=self.s.drive_timeout_s,
        )

    async def action_finished(
        self, action_id: str, after: int, also: Callable[[State], bool], what: str
    ) -> State:
        def done(s: State) -> bool:
            return also(s) and any(
                a.action_id == action_id and a.status is ActionStatus.FINISHED
                for a in s.action_states
            )

        return await self.state(done, after, f"{what}, with action {action_id} finished")

    async def standing(self, after: int, what: str) -> State:
        return await self.state(
            lambda s: s.speed_mps <= STOPPED_MPS and not s.driving,
            after,
            f"{what}: standing (driving false, speed ≤ {STOPPED_MPS} m/s)",
            timeout_s=self.s.stop_timeout_s,
        )

    async def holds(self, check: Callable[[State], str]) -> None:
        await self.watch.watch(State, check, for_s=self.s.hold_s)

    async def stays_still(self, at: State, also: Callable[[State], str]) -> None:
        def still(s: State) -> str:
            moved = _dist_m(at, s)
            if moved > STILL_M or s.speed_mps > STOPPED_MPS or s.driving:
                return f"moved while it must stand: {moved:.1f} m, {describe_state(s)}"
            return also(s)

        await self.holds(still)

    def refusal_baseline(self, error_type: str, reason: str) -> int:
        return _count_errors(self.latest_state(), error_type, reason)

    async def refused(
        self,
        kind: VanTopic,
        payload: bytes,
        error_type: str,
        reason: str,
        *,
        message_id: int | None = None,
        refs: dict[str, str] | None = None,
    ) -> State:
        """Send a command the van must refuse; wait for the error that reports it.

        The error is told apart from an earlier one of the same reason by a ``message_id``
        reference when the van gives one (recommended), by the order references of an
        ``order_update_error``, else by the number of such errors listed going up.
        """
        baseline = self.refusal_baseline(error_type, reason)
        mark = await (
            self.send_order(payload) if kind is VanTopic.ORDER else self.send_instant(payload)
        )

        def reported(s: State) -> bool:
            matching = [
                e
                for e in s.errors
                if e.error_type == error_type and _ref(e.references, "reason") == reason
            ]
            for e in matching:
                got = {r.key: r.value for r in e.references}
                if refs is not None and all(got.get(k) == v for k, v in refs.items()):
                    return True
                if message_id is not None and got.get("message_id") == str(message_id):
                    return True
            return refs is None and len(matching) > baseline

        return await self.state(reported, mark, f"a {error_type} with reason {reason}")

    async def not_followed(self, order: Order) -> None:
        """For a while, no state follows ``order`` (its update, or its stop beyond the base)."""
        current = self.order
        assert current is not None
        base_end = max(n.sequence_id for n in current.nodes if n.released)

        def check(s: State) -> str:
            took = (s.order_id, s.order_update_id) == (order.order_id, order.order_update_id)
            if took and (order.order_id, order.order_update_id) != (
                current.order_id,
                current.order_update_id,
            ):
                return f"the van took the refused order: {describe_state(s)}"
            if s.order_id == current.order_id and (s.last_node_sequence_id or -1) > base_end:
                return f"the van drove beyond its released base: {describe_state(s)}"
            return ""

        await self.holds(check)

    # -- the cases --------------------------------------------------------------------------

    def cases(self) -> list[tuple[str, Case, tuple[str, ...]]]:
        """(name, case, the cases it needs) in the order they run."""
        orders = ("order_accepted",)
        a1 = ("order_update_followed",)
        a2 = ("pause_resume",)
        a3 = ("estop",)
        return [
            ("connection", self.connection, ()),
            ("factsheet", self.factsheet, ()),
            ("first_state", self.first_state, ()),
            ("order_accepted", self.order_accepted, ("first_state",)),
            ("order_update_followed", self.order_update_followed, orders),
            ("stale_update", self.stale_update, a1),
            ("conflicting_update", self.conflicting_update, a1),
            ("base_changed", self.base_changed, a1),
            ("busy", self.busy, a1),
            ("unsigned", self.sig_unsigned, a1),
            ("tampered", self.sig_tampered, a1),
            ("stale_timestamp", self.sig_stale, a1),
            ("wrong_key", self.sig_wrong_key, a1),
            ("replayed_id", self.sig_replayed, a1),
            ("wrong_van", self.wrong_van, a1),
            ("pause_resume", self.pause_resume, a1),
            ("estop", self.estop, a2),
            ("estop_lower_message_id", self.estop_lower_message_id, a3),
            ("estop_stamped_old", self.estop_stamped_old, a3),
            ("estop_tampered", self.estop_tampered, a3),
            ("cancel_order", self.cancel_order, a3),
            ("van_restart", self.van_restart, ("cancel_order",)),
            ("last_will", self.last_will, ()),
            ("state_sequence", self.state_sequence, ("first_state",)),
        ]

    async def connection(self) -> str:
        online = await self.watch.wait_for(
            Connection,
            lambda c: c.connection_state is ConnectionState.ONLINE,
            after=0,
            timeout_s=self.s.connect_timeout_s,
            what=f"connection ONLINE from van {self.van}",
        )
        _problems(self.watch.seen, VanTopic.CONNECTION)
        retained = await self.watch.probe_retained(1.0)
        conns = [m for m in retained if isinstance(m, Connection)]
        if not conns or conns[-1].connection_state is not ConnectionState.ONLINE:
            got = conns[-1].connection_state.value if conns else "nothing"
            raise KitError(f"a new subscriber is handed {got}: ONLINE must be retained")
        return f"ONLINE, retained (message_id {online.header.message_id})"

    async def factsheet(self) -> str:
        _problems(self.watch.seen, VanTopic.FACTSHEET)
        retained = await self.watch.probe_retained(1.0)
        sheets = [m for m in retained if isinstance(m, Factsheet)]
        if not sheets:
            raise KitError("no retained factsheet for a new subscriber")
        sheet = sheets[-1]
        missing = sorted(REQUIRED_ACTIONS - set(sheet.instant_actions))
        if missing:
            raise KitError(f"factsheet instant_actions lacks {', '.join(missing)}")
        if PROTOCOL_VERSION not in sheet.protocol_versions:
            raise KitError(f"factsheet protocol_versions {sheet.protocol_versions} lacks 1.0")
        if sheet.max_order_nodes < vm.STOPS:
            raise KitError(f"max_order_nodes {sheet.max_order_nodes} < {vm.STOPS}")
        return f"retained: {sheet.model}, firmware {sheet.firmware_version}"

    async def first_state(self) -> str:
        mark = self.watch.mark()
        bound = self.s.state_bound_s
        first = await self.watch.wait_for(
            State, lambda s: True, after=mark, timeout_s=bound, what="a state"
        )
        then = self.watch.mark()
        await self.watch.wait_for(
            State, lambda s: True, after=then, timeout_s=bound, what="a second state"
        )
        _problems(self.watch.seen, VanTopic.STATE)
        latest = self.latest_state()
        if latest.position is None:
            raise KitError("the van reports no position: the kit cannot place an order")
        p = latest.position
        self.start = vm.Start(p.lon, p.lat, p.heading_deg)
        return (
            f"states at least every {bound:g} s; at lon {p.lon:.6f} lat {p.lat:.6f}, "
            f"order {first.order_id}"
        )

    async def order_accepted(self) -> str:
        state = self.latest_state()
        if state.driving:
            raise KitError(f"the van is driving before the kit's order: {describe_state(state)}")
        order = self.build(update_id=0, released=2)
        signed = vm.signed_bytes(order, self.s.key)
        mark = self.watch.mark()
        await self.accepted(order, signed)
        await self.reached(2, mark)
        await self.not_followed(order)  # the horizon is never driven
        return f"echoed {order.order_id}/0, reached n1, held there (end of the base)"

    async def order_update_followed(self) -> str:
        update = self.build(update_id=1, released=3)
        mark = self.watch.mark()
        await self.accepted(update, vm.signed_bytes(update, self.s.key))
        at = await self.reached(4, mark)
        on_board = set(at.load.parcel_ids)
        return f"echoed update 1, reached n2; on board {sorted(on_board)}"

    async def _order_refusal(self, order: Order, reason: str) -> str:
        await self.refused(
            VanTopic.ORDER,
            vm.signed_bytes(order, self.s.key),
            "order_update_error",
            reason,
            refs={"order_id": order.order_id, "order_update_id": str(order.order_update_id)},
        )
        await self.not_followed(order)
        return f"order_update_error {reason}; the van kept update {self._held_update()}"

    def _held_update(self) -> int:
        assert self.order is not None
        return self.order.order_update_id

    async def stale_update(self) -> str:
        return await self._order_refusal(self.build(update_id=0, released=4), "stale_update")

    async def conflicting_update(self) -> str:
        return await self._order_refusal(self.build(update_id=1, released=4), "conflicting_update")

    async def base_changed(self) -> str:
        moved = vm.moved_node(self.build(update_id=2, released=4), 1, 10.0)
        return await self._order_refusal(moved, "base_changed")

    async def busy(self) -> str:
        other = self.build(update_id=0, released=2, order_id=self.order_id("B"))
        return await self._order_refusal(other, "busy")

    def _candidate(self) -> Order:
        """A good next update of order A (releases n3): what each refusal case spoils."""
        return self.build(update_id=2, released=4)

    async def _sig_refusal(self, order: Order, payload: bytes, reason: str) -> str:
        await self.refused(
            VanTopic.ORDER, payload, "signature_error", reason, message_id=order.header.message_id
        )
        await self.not_followed(order)
        return f"signature_error {reason}; order not followed"

    async def sig_unsigned(self) -> str:
        order = self._candidate()
        return await self._sig_refusal(order, encode(order), "unsigned")

    async def sig_tampered(self) -> str:
        order = self._candidate()
        return await self._sig_refusal(order, vm.tampered(sign(order, self.s.key)), "bad_signature")

    async def sig_stale(self) -> str:
        order = vm.with_header(
            self._candidate(), message_id=self.next_id(), now_s=self.clock.time() - 120.0
        )
        return await self._sig_refusal(order, vm.signed_bytes(order, self.s.key), "stale")

    async def sig_wrong_key(self) -> str:
        order = self._candidate()
        forged = SigningKey(self.s.key.key_id, secrets.token_bytes(32))
        return await self._sig_refusal(order, vm.signed_bytes(order, forged), "bad_signature")

    async def sig_replayed(self) -> str:
        assert self.order is not None
        used = self.order.header.message_id  # the id of the last order the van accepted
        order = vm.with_header(self._candidate(), message_id=used, now_s=self.clock.time())
        return await self._sig_refusal(order, vm.signed_bytes(order, self.s.key), "replayed")

    async def wrong_van(self) -> str:
        candidate = self._candidate()
        order = candidate.model_copy(update={"van_id": OTHER_VAN})
        key = self.s.other_key or self.s.key
        payload = vm.signed_bytes(order, key)
        await self.refused(
            VanTopic.ORDER,
            payload,
            "signature_error",
            "wrong_van",
            message_id=order.header.message_id,
        )
        await self.not_followed(candidate)
        return "signature_error wrong_van; order not followed"

    async def pause_resume(self) -> str:
        update = self._candidate()
        mark = self.watch.mark()
        await self.accepted(update, vm.signed_bytes(update, self.s.key))
        with contextlib.suppress(KitError):  # a van that is quick may be there already
            await self.state(lambda s: s.driving, mark, "driving to n3", timeout_s=3.0)
        pause_id, payload = self.instant(InstantActionType.PAUSE)
        mark = await self.send_instant(payload)
        await self.action_finished(pause_id, mark, lambda s: s.paused, "paused: true")
        at = await self.standing(mark, "paused")
        await self.stays_still(at, lambda s: "" if s.paused else "paused turned false by itself")
        resume_id, payload = self.instant(InstantActionType.RESUME)
        mark = await self.send_instant(payload)
        await self.action_finished(resume_id, mark, lambda s: not s.paused, "paused: false")
        await self.reached(6, mark)
        return "paused and stood still; resumed and reached n3"

    async def estop(self) -> str:
        update = self.build(update_id=3, released=5)
        mark = self.watch.mark()
        await self.accepted(update, vm.signed_bytes(update, self.s.key))
        with contextlib.suppress(KitError):
            await self.state(lambda s: s.driving, mark, "driving to n4", timeout_s=3.0)
        estop_id, payload = self.instant(InstantActionType.EMERGENCY_STOP)
        mark = await self.send_instant(payload)
        await self.action_finished(
            estop_id, mark, lambda s: s.emergency_stop, "emergency_stop: true"
        )
        at = await self.standing(mark, "e-stopped")
        await self.stays_still(at, _still_estopped)
        await self._resume_from_estop()
        await self.reached(8, mark)
        return "stopped, stood still until resumed; reached n4"

    async def _resume_from_estop(self) -> None:
        resume_id, payload = self.instant(InstantActionType.RESUME)
        mark = await self.send_instant(payload)
        await self.action_finished(
            resume_id, mark, lambda s: not s.emergency_stop, "emergency_stop: false after resume"
        )

    async def estop_lower_message_id(self) -> str:
        """A controller restarted with a lost store: its counter starts again at 1."""
        estop_id, payload = self.instant(InstantActionType.EMERGENCY_STOP, message_id=1)
        mark = await self.send_instant(payload)
        await self.action_finished(
            estop_id, mark, lambda s: s.emergency_stop, "e-stop with message_id 1 obeyed"
        )
        _, resume = self.instant(InstantActionType.RESUME, message_id=2)
        at = await self.refused(
            VanTopic.INSTANT, resume, "signature_error", "replayed", message_id=2
        )
        await self.stays_still(at, _still_estopped)
        await self._resume_from_estop()
        return "obeyed id 1 after far higher ids; a resume with id 2 stayed refused (replayed)"

    async def estop_stamped_old(self) -> str:
        estop_id, payload = self.instant(InstantActionType.EMERGENCY_STOP, age_s=7200.0)
        mark = await self.send_instant(payload)
        await self.action_finished(
            estop_id, mark, lambda s: s.emergency_stop, "e-stop stamped 2 h ago obeyed"
        )
        await self._resume_from_estop()
        return "an e-stop stamped 2 h ago was obeyed"

    async def estop_tampered(self) -> str:
        action_id = self.action_id()
        message = vm.instant(
            self.van,
            action_id,
            InstantActionType.EMERGENCY_STOP,
            message_id=self.next_id(),
            now_s=self.clock.time(),
        )
        await self.refused(
            VanTopic.INSTANT,
            vm.tampered(sign(message, self.s.key)),
            "signature_error",
            "bad_signature",
            message_id=message.header.message_id,
        )

        def not_stopped(s: State) -> str:
            if s.emergency_stop or any(a.action_id == action_id for a in s.action_states):
                return f"the van obeyed a tampered e-stop: {describe_state(s)}"
            return ""

        await self.holds(not_stopped)
        return "signature_error bad_signature; not obeyed"

    async def van_restart(self) -> str:
        command = self.s.restart_command
        if not command:
            raise Skip("no --restart-command given: the van's restart is not checked")
        before = self.latest_state()
        if before.driving:  # stand still at a stop: what it did there is what it must keep
            await self.standing(self.watch.mark(), "before the restart")
            before = self.latest_state()
        done_before = _finished_order_actions(before)
        mark = self.watch.mark()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_shell(command)
        try:
            async with asyncio.timeout(self.s.restart_timeout_s):
                code = await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            limit = self.s.restart_timeout_s
            raise KitError(f"the restart command ran longer than {limit:g} s") from None
        if code != 0:
            raise KitError(f"the restart command exited with {code}")
        left = self.s.restart_timeout_s - (time.monotonic() - started)

        def back_online(c: Connection) -> bool:
            if c.connection_state is not ConnectionState.ONLINE:
                self.restart_saw = self.restart_saw or c.connection_state
                return False
            return True  # the van announces itself after every start (section 7)

        await self.watch.wait_for(
            Connection,
            back_online,
            after=mark,
            timeout_s=max(left, 1.0),
            what="ONLINE again after the restart",
        )
        self.restarted = True
        online_mark = self.watch.mark()
        after = await self.state(
            lambda s: True,
            online_mark,
            "a state after the restart",
            timeout_s=self.s.state_bound_s * 2,
        )
        problems = []
        if (after.order_id, after.order_update_id) != (before.order_id, before.order_update_id):
            problems.append(
                f"order {after.order_id}/{after.order_update_id}, was "
                f"{before.order_id}/{before.order_update_id}"
            )
        if (after.last_node_sequence_id or -1) < (before.last_node_sequence_id or -1):
            problems.append(
                f"last node {after.last_node_sequence_id}, was {before.last_node_sequence_id}"
            )
        lost = done_before - _finished_order_actions(after)
        if lost:
            problems.append(f"finished actions forgotten: {sorted(lost)}")
        # a stop's work may finish between the two states (a delivery at the door it stands
        # at): what those actions handed over or took aboard is expected to have moved
        expected = set(before.load.parcel_ids)
        if self.last_accepted is not None and self.last_accepted[0].order_id == after.order_id:
            actions = {a.action_id: a for n in self.last_accepted[0].nodes for a in n.actions}
            failed = {a.action_id: set(a.failed_parcel_ids) for a in after.action_states}
            for action_id in sorted(_finished_order_actions(after) - done_before):
                a = actions.get(action_id)
                if a is None:
                    continue
                moved = set(a.parcel_ids) - failed.get(action_id, set())
                if a.action_type is NodeActionType.LOAD:
                    expected |= moved
                elif a.action_type in (NodeActionType.DELIVER, NodeActionType.UNLOAD):
                    expected -= moved
        if set(after.load.parcel_ids) != expected:
            problems.append(
                f"on board {sorted(after.load.parcel_ids)}, was {sorted(before.load.parcel_ids)}"
                + (
                    f" (expected {sorted(expected)})"
                    if expected != set(before.load.parcel_ids)
                    else ""
                )
            )
        if problems:
            raise KitError("the van came back without its work: " + "; ".join(problems))
        assert self.last_accepted is not None
        accepted, replay = self.last_accepted  # the last order the van took, byte for byte
        await self.refused(
            VanTopic.ORDER,
            replay,
            "signature_error",
            "replayed",
            message_id=accepted.header.message_id,
        )
        seconds = time.monotonic() - started
        return (
            f"back ONLINE after {self.restart_saw.value if self.restart_saw else '?'} in "
            f"{seconds:.1f} s with order {after.order_id}/{after.order_update_id}, node "
            f"{after.last_node_sequence_id}, {len(after.load.parcel_ids)} parcels; "
            "a replay of its last order was refused"
        )

    async def last_will(self) -> str:
        if self.restart_saw is ConnectionState.CONNECTION_BROKEN:
            return "CONNECTION_BROKEN published for the van when its process was killed"
        if self.restart_saw is ConnectionState.OFFLINE:
            raise Skip(
                "the van said OFFLINE when restarted (a clean stop): its will was not needed; "
                "give a --restart-command that kills the van (SIGKILL) to check it"
            )
        if not self.restarted:
            raise Skip("needs van_restart: the will shows only when the van's link dies")
        raise Skip(
            "the van came back ONLINE with no OFFLINE or CONNECTION_BROKEN before it: the "
            "broker handed the old session to the new connection without publishing the will "
            "(the van was back before the broker noticed the old link was dead)"
        )

    async def cancel_order(self) -> str:
        cancel_id, payload = self.instant(InstantActionType.CANCEL_ORDER)
        mark = await self.send_instant(payload)
        await self.action_finished(cancel_id, mark, lambda s: True, "cancel_order")
        at = await self.standing(mark, "cancelled")
        late = self.build(update_id=4, released=6)
        await self.refused(
            VanTopic.ORDER,
            vm.signed_bytes(late, self.s.key),
            "order_update_error",
            "cancelled",
            refs={"order_id": late.order_id, "order_update_id": "4"},
        )
        await self.stays_still(at, lambda s: "")
        here = at.position or self.latest_state().position
        assert here is not None
        start = vm.Start(here.lon, here.lat, here.heading_deg)
        fresh = self.build(update_id=0, released=3, order_id=self.order_id("C"), start=start)
        mark = self.watch.mark()
        await self.accepted(fresh, vm.signed_bytes(fresh, self.s.key))
        await self.reached(2, mark)  # work done on the new order: what a restart must keep
        return (
            "dropped: an update of it refused (cancelled), the van stood; a new order "
            "accepted and driven to its n1"
        )

    async def state_sequence(self) -> str:
        previous: int | None = None
        count = 0
        for s in self.watch.seen:
            if isinstance(s.message, Connection):
                if s.message.connection_state is ConnectionState.ONLINE:
                    previous = None  # the one reset of the sequence
                continue
            if not isinstance(s.message, State):
                continue
            count += 1
            mid = s.message.header.message_id
            if previous is not None and mid <= previous:
                raise KitError(f"state message_id {mid} after {previous}: must rise strictly")
            previous = mid
        _problems(self.watch.seen, VanTopic.STATE)
        return f"{count} states, message_id rising (reset only by ONLINE), all valid"

    async def finish(self) -> None:
        """Leave the van without the kit's order (best effort, not a case)."""
        with contextlib.suppress(KitError, BrokerError):
            _, payload = self.instant(InstantActionType.CANCEL_ORDER)
            await self.send_instant(payload)


class Skip(Exception):
    """The case cannot be run here; the message says why."""


def _ref(refs: Iterable[ErrorReference], key: str) -> str | None:
    return next((r.value for r in refs if r.key == key), None)


def _count_errors(state: State, error_type: str, reason: str) -> int:
    return sum(
        1
        for e in state.errors
        if e.error_type == error_type and _ref(e.references, "reason") == reason
    )


def _finished_order_actions(state: State) -> set[str]:
    return {
        a.action_id
        for a in state.action_states
        if a.status is ActionStatus.FINISHED and not a.action_id.startswith("CONF-")
    }


def _still_estopped(s: State) -> str:
    if s.emergency_stop:
        return ""
    return f"emergency_stop turned false without a resume: {describe_state(s)}"


def _dist_m(a: State, b: State) -> float:
    if a.position is None or b.position is None:
        return 0.0
    dlat = (b.position.lat - a.position.lat) * vm.METRES_PER_DEG_LAT
    dlon = (b.position.lon - a.position.lon) * vm.METRES_PER_DEG_LAT * 0.75
    return float((dlat**2 + dlon**2) ** 0.5)


def _problems(seen: list[Seen], kind: VanTopic) -> None:
    for s in seen:
        if s.kind is kind and s.problem:
            raise KitError(f"the van published a bad {kind.value} message: {s.problem}")


async def run_van_conformance(
    settings: VanKitSettings,
    *,
    clock: Clock | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> Report:
    """Run every case against the van; the report lists each one's outcome."""
    report = Report()
    async with VanWatch(settings.address, settings.topics, settings.van_id) as watch:
        kit = VanKit(settings, watch, clock or WallClock())
        assert tuple(name for name, _, _ in kit.cases()) == VAN_CASES
        outcomes: dict[str, Outcome] = {}
        for name, case, needs in kit.cases():
            began = time.monotonic()
            missing = [n for n in needs if outcomes.get(n) is not Outcome.PASSED]
            if missing:
                result = CaseResult(
                    name, Outcome.SKIPPED, f"needs {', '.join(missing)}, which did not pass"
                )
            else:
                try:
                    detail = await case()
                    result = CaseResult(name, Outcome.PASSED, detail)
                except Skip as exc:
                    result = CaseResult(name, Outcome.SKIPPED, str(exc))
                except (KitError, BrokerError) as exc:
                    result = CaseResult(name, Outcome.FAILED, str(exc))
            result = CaseResult(
                result.name, result.outcome, result.detail, time.monotonic() - began
            )
            outcomes[name] = result.outcome
            report.add(result)
            log.info("%s: %s %s", name, result.outcome.value, result.detail)
            if on_result is not None:
                on_result(result)
        await kit.finish()
    return report
