"""The link protocol as a sans-I/O state machine: bytes and time in, bytes and events out.

:class:`LinkCore` knows nothing of ports, threads or clocks: the caller feeds received bytes
(``receive``), calls ``poll(now)`` at ``next_deadline()``, and writes ``take_output()``.
The same core runs in the bridge and in the simulated VCU. Rules (``docs/serial.md``):

* Sequenced messages carry seq 1..65535 (wrapping to 1) and are delivered in order, exactly
  once within a session; the receiver acknowledges cumulatively (every frame's header
  ``ack``), re-acknowledges duplicates without delivering them, holds frames that arrive past
  a gap and answers the gap with NAK(SEQ_GAP). Up to ``window`` frames are in flight; a
  frame's resend timer (``ack_timeout_s`` plus the line time of one largest frame) starts when
  its last byte has left the line — this side models its own paced line from the bytes it
  produced — and again at every acknowledgement of new frames; they are resent for as long
  as it takes: a frame that keeps being damaged on a noisy line never takes the link down.
  Each resend round in which the peer stayed silent doubles the wait (up to
  ``resend_max_s``); any valid frame from the peer resets it. A new session (port reopened,
  peer rebooted) resends unacknowledged messages with new numbers: across a port reopen
  delivery is at least once, so commands are idempotent above the link.
* HELLO opens a session. Each side picks a random non-zero session number at every (re)start;
  a HELLO from a new peer session restarts both sequence spaces. The link is *up* only after
  the full handshake: this side has seen the peer's session and the peer has echoed ours.
  While it is not up (before, after a peer timeout, after a HELLO of another version) only
  HELLO, EMERGENCY_STOP and ESTOP_ACK are acted on; a HELLO whose version range excludes ours
  is answered NAK(BAD_VERSION) and reported as :class:`VersionMismatch` once per change.
* Every valid frame proves the sender alive; each side sends a HEARTBEAT every
  ``heartbeat_s`` whatever else it sends (a short frame still gets through a line that
  damages most long ones). No valid frame for ``peer_timeout_s`` means the peer is lost:
  that silence is the only thing that takes an established link down.
* EMERGENCY_STOP is unsequenced: it goes out ahead of all queued bytes and is repeated every
  ``estop_retry_s`` until an ESTOP_ACK with its id returns — even while the link is down.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from firmware_bridge.errors import LinkError, WireError
from firmware_bridge.wire import (
    MAX_PAYLOAD_BYTES,
    MAX_WIRE_BYTES,
    PROTOCOL_VERSION,
    Ack,
    EmergencyStop,
    EstopAck,
    FaultKind,
    FrameDecoder,
    FrameFault,
    Heartbeat,
    Hello,
    Message,
    Nak,
    NakReason,
    Role,
    encode_frame,
)
from firmware_bridge.wire.frame import frame_bytes

SEQ_MAX = 0xFFFF
HALF = 0x8000
RX_AHEAD_MAX = 1024  # frames held past a gap (at most the largest sender window)


def next_seq(seq: int) -> int:
    """1..65535, wrapping to 1 (0 means "not sequenced")."""
    return 1 if seq >= SEQ_MAX else seq + 1


def seq_distance(a: int, b: int) -> int:
    """How many steps forward from ``a`` to ``b`` in the 1..65535 cycle (0 = same)."""
    return (b - a) % SEQ_MAX


WINDOW_PACED = 16  # frames in flight on a paced line: 16 full frames are 0.36 s at 115200 baud
WINDOW_UNPACED = 128  # on a line as fast as its transport (pty, USB CDC, socket)


def default_window(line_baud: int) -> int:
    """Frames in flight for a line paced at ``line_baud`` (0: not paced).

    On a paced line a deeper window only queues more line time ahead of the next command;
    without pacing the window has to cover the peer's scheduling delay, or the sender idles
    between acknowledgements (16 frames ≈ 1 KiB; 128 keep a pty busy between wake-ups).
    """
    return WINDOW_PACED if line_baud > 0 else WINDOW_UNPACED


@dataclass(frozen=True, slots=True)
class LinkConfig:
    role: Role
    # 20 heartbeats per peer timeout: at 5 % of bytes corrupted a 15-byte heartbeat gets
    # through 46 % of the time, and 20 in a row are lost with a chance of 4e-6
    heartbeat_s: float = 0.05
    peer_timeout_s: float = 1.0
    ack_timeout_s: float = 0.05
    # the longest wait between resend rounds while the peer is silent (doubling from the
    # first wait; never below it)
    resend_max_s: float = 0.2
    window: int = WINDOW_PACED  # see default_window()
    max_queue: int = 512
    hello_interval_s: float = 0.2
    estop_retry_s: float = 0.02
    # The line's rate (bits/s, 10 bits a byte). Resend timers add the time the bytes in
    # flight take on the line, so a slow line is not flooded with resends. 0: no allowance.
    line_baud: int = 115_200

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 1024:
            raise ValueError(f"window {self.window}: expected 1..1024")
        if not self.peer_timeout_s > self.heartbeat_s > 0:
            raise ValueError("need peer_timeout_s > heartbeat_s > 0")
        if not self.resend_max_s > 0:
            raise ValueError(f"resend_max_s {self.resend_max_s}: expected > 0")


# ---- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, init=False)
class Received:
    """An application message from the peer (sequenced ones in order, exactly once each).

    One per frame delivered: like DriveSegment it sets its slots directly instead of through
    the generated frozen ``__init__``; it is a frozen dataclass all the same."""

    message: Message
    seq: int

    def __init__(self, message: Message, seq: int) -> None:
        _set_received_message(self, message)
        _set_received_seq(self, seq)


@dataclass(frozen=True, slots=True)
class LinkUp:
    peer_session: int
    peer_restarted: bool  # the peer's session changed since the last time the link was up
    resumed: bool  # same sessions as before a peer timeout: nothing was reset


@dataclass(frozen=True, slots=True)
class LinkDown:
    reason: str


@dataclass(frozen=True, slots=True)
class Delivered:
    """The peer acknowledged the messages of ``tickets``, in the order they were sent: one
    event per acknowledgement, which covers every frame up to its number (a window of
    frames is often acknowledged at once)."""

    tickets: tuple[int, ...]


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The slot descriptor's ``__set__`` of ``cls.name`` (bypasses the frozen ``__setattr__``)."""
    setter: Callable[[object, object], None] = cls.__dict__[name].__set__
    return setter


_set_received_message = _slot_setter(Received, "message")
_set_received_seq = _slot_setter(Received, "seq")


@dataclass(frozen=True, slots=True)
class Rejected:
    """The peer refused a message for good (NAK with a non-retry reason)."""

    ticket: int
    message: Message
    reason: NakReason


@dataclass(frozen=True, slots=True)
class Discarded:
    """A queued message was dropped by :meth:`LinkCore.discard_pending`."""

    ticket: int
    message: Message


@dataclass(frozen=True, slots=True)
class EstopAcked:
    estop_id: int


@dataclass(frozen=True, slots=True)
class BadFrame:
    fault: FrameFault


@dataclass(frozen=True, slots=True)
class VersionMismatch:
    peer_min: int
    peer_max: int


LinkEvent = (
    Received
    | LinkUp
    | LinkDown
    | Delivered
    | Rejected
    | Discarded
    | EstopAcked
    | BadFrame
    | VersionMismatch
)


@dataclass(slots=True)
class LinkStats:
    """What one end of the link counted since it was made (never reset)."""

    frames_tx: int = 0
    frames_rx: int = 0
    bytes_tx: int = 0
    bytes_rx: int = 0
    retransmits: int = 0
    bad_frames: int = 0  # every chunk between delimiters that was not a usable frame
    crc_errors: int = 0  # ... of which: a checksum mismatch
    garbage: int = 0  # ... bad COBS, shorter than a header, or oversize (no delimiter)
    refused_rx: int = 0  # ... a good checksum, but unusable (version, type, payload, seq)
    refused_tx: int = 0  # our frames the peer refused for good (NAK 3-5 naming them)
    naks_tx: int = 0
    naks_rx: int = 0
    naks_tx_by_reason: dict[NakReason, int] = field(default_factory=dict)
    naks_rx_by_reason: dict[NakReason, int] = field(default_factory=dict)
    duplicates_rx: int = 0
    version_mismatches: int = 0  # HELLOs refused: their version range excludes ours
    unsessioned_rx: int = 0  # valid frames ignored: no established session with the peer
    sessions: int = 0
    estops_tx: int = 0


@dataclass(slots=True)
class _InFlight:
    ticket: int
    message: Message
    payload: bytes  # encoded once at send(); a retransmission renews only header, CRC, COBS
    sent_at: float
    size: int = 0  # bytes on the wire of the last transmission


@dataclass(slots=True)
class _Estop:
    estop_id: int
    reason: int
    next_at: float = field(default=0.0)
    superseded: bool = False  # a newer e-stop went out: this one is repeated no more


def _random_session() -> int:
    return secrets.randbits(32) or 1


class LinkCore:
    """One end of the serial link. Not thread-safe: one owner calls every method."""

    def __init__(
        self, config: LinkConfig, *, new_session: Callable[[], int] = _random_session
    ) -> None:
        self.config = config
        self.stats = LinkStats()
        self._new_session = new_session
        self._decoder = FrameDecoder()
        self._session = 0
        self._peer_session = 0
        self._peer_confirmed = False
        self._was_up_with = 0  # peer session of the last time the link was up
        self._up = False
        self._timed_out = False
        self._started = False
        # transmit side
        self._queue: deque[tuple[int, Message, bytes]] = deque()  # (ticket, message, payload)
        self._inflight: OrderedDict[int, _InFlight] = OrderedDict()
        self._inflight_bytes = 0  # sum of the in-flight frames' sizes (resend timer)
        self._tx_seq = 0  # last sequence number used
        self._ticket = 0
        self._estop_id = 0
        self._estops: dict[int, _Estop] = {}
        self._hello_due = 0.0
        self._heartbeat_due = 0.0  # a HEARTBEAT every heartbeat_s, whatever else is sent
        self._backoff = 0  # resend rounds in a row after which the peer had said nothing
        self._last_rx = 0.0
        # The line as this side paces it: every byte it produces leaves after the ones before
        # it, at the line rate. A frame's resend timer starts when its last byte has left
        # (not when it was queued behind a burst), and again at every acknowledgement of
        # new frames: the peer is keeping up, the rest of the window is on its way.
        self._line_s_per_byte = 10 / config.line_baud if config.line_baud > 0 else 0.0
        self._line_free_at = 0.0
        self._progress_at = float("-inf")  # the last ACK that acknowledged new frames
        # receive side
        self._rx_seq = 0  # last in-order sequence accepted
        self._rx_ahead: dict[int, Message] = {}  # frames past a gap, held until it is filled
        self._ack_pending = False
        self._gap_nak_for = -1  # the expected seq we last sent a SEQ_GAP NAK for
        self._gap_nak_at = float("-inf")
        self._crc_nak_at = float("-inf")
        self._nak_resend_at = float("-inf")  # the last resend a NAK asked for
        self._suspect_seq = 0  # the next seq once arrived with a good CRC and a bad payload
        self._version_nak_at = float("-inf")
        self._version_mismatch: tuple[int, int] | None = None  # the last one reported
        # e-stop ids seen from the peer → when last seen: a copy within peer_timeout_s of the
        # previous one is a repeat (the sender repeats until acknowledged, possibly with newer
        # e-stops in between); a new peer session forgets them
        self._estops_seen: dict[int, float] = {}
        # output
        self._urgent: list[bytes] = []  # EMERGENCY_STOP, ESTOP_ACK: ahead of everything
        self._control: list[bytes] = []  # ACK, NAK: ahead of frames not yet started
        self._normal: list[bytes] = []
        self._events: list[LinkEvent] = []

    # ---- state ------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    @property
    def session(self) -> int:
        return self._session

    @property
    def peer_session(self) -> int:
        return self._peer_session

    @property
    def last_estop_id(self) -> int:
        """The id of the last emergency stop this side sent (0: none)."""
        return self._estop_id

    @property
    def queued(self) -> int:
        """Sequenced messages not yet acknowledged (queued or in flight)."""
        return len(self._queue) + len(self._inflight)

    def estop_pending(self) -> bool:
        return any(not e.superseded for e in self._estops.values())

    # ---- commands ---------------------------------------------------------------------

    def start(self, now: float) -> list[LinkEvent]:
        """Open a new session (at start, after the port was reopened)."""
        self._started = True
        self._session = self._new_session()
        self.stats.sessions += 1
        self._peer_confirmed = False
        if self._up:
            self._up = False
        self._reset_sequences()
        self._last_rx = now
        self._timed_out = False
        self._send_hello(now)
        return self._take_events()

    def send(self, message: Message, now: float) -> int:
        """Queue a sequenced message and send it if the window allows; returns its ticket
        (followed later by a Delivered, Rejected or Discarded event). The payload is encoded
        here, once: a message that cannot be encoded raises WireError and nothing is queued."""
        payload = self._encode_sequenced(message, len(self._queue) + len(self._inflight))
        self._ticket += 1
        self._queue.append((self._ticket, message, payload))
        if self._up and len(self._inflight) < self.config.window:
            self._pump(now)  # (no ACK is ever owed here: every receive() and poll() pumps)
        return self._ticket

    def send_many(self, messages: Iterable[Message], now: float) -> list[int]:
        """:meth:`send` for several messages at once (a mission's segments): their tickets,
        in order. Every message is checked and encoded before any is queued: on a LinkError
        or WireError nothing is queued."""
        queued = len(self._queue) + len(self._inflight)
        items: list[tuple[int, Message, bytes]] = []
        ticket = self._ticket
        for message in messages:
            payload = self._encode_sequenced(message, queued)
            ticket += 1
            queued += 1
            items.append((ticket, message, payload))
        if not items:
            return []
        self._ticket = ticket
        self._queue.extend(items)
        if self._up and len(self._inflight) < self.config.window:
            self._pump(now)
        return list(range(items[0][0], ticket + 1))

    def _encode_sequenced(self, message: Message, queued: int) -> bytes:
        """The payload of a sequenced message about to join ``queued`` unacknowledged ones;
        LinkError or WireError when it cannot be queued (nothing is queued then)."""
        if not message.SEQUENCED:
            raise LinkError(f"{message.TYPE.name} is not a sequenced message; use send_now()")
        if queued >= self.config.max_queue:
            raise LinkError(
                f"link queue full ({self.config.max_queue} messages unacknowledged); "
                f"refusing {message.TYPE.name}"
            )
        payload = message.encode_payload()
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise WireError(f"{message.TYPE.name}: payload of {len(payload)} bytes is too long")
        return payload

    def send_now(self, message: Message, now: float) -> None:
        """Send an unsequenced message (telemetry, …) once, behind urgent traffic."""
        if message.SEQUENCED:
            raise LinkError(f"{message.TYPE.name} is sequenced; use send()")
        if isinstance(message, EmergencyStop):
            raise LinkError("use emergency_stop() for EMERGENCY_STOP")
        self._emit(message, seq=0, urgent=False, now=now)

    def emergency_stop(self, now: float, reason: int = 0) -> int:
        """Send EMERGENCY_STOP ahead of everything; repeat until acknowledged.

        An older e-stop not yet acknowledged is repeated no more: the new one supersedes it.
        A serial line keeps order, so the peer never gets an older id after a newer one, and
        the id it latches is the newest — the one a RESUME names (before, a repeat of the
        older id arriving after the newer one left the VCU latched on an id no RESUME named,
        and the van stood e-stopped for good). The newer one's acknowledgement covers it."""
        for older in self._estops.values():
            older.superseded = True
        self._estop_id = next_seq(self._estop_id)
        estop = _Estop(self._estop_id, reason, next_at=now + self._estop_retry_after_s())
        self._estops[estop.estop_id] = estop
        self.stats.estops_tx += 1
        self._emit(EmergencyStop(estop.estop_id, reason), seq=0, urgent=True, now=now)
        return estop.estop_id

    def port_lost(self, reason: str) -> list[LinkEvent]:
        """The port vanished: the link is down until :meth:`start` runs on a reopened port."""
        self._decoder = FrameDecoder()
        self._urgent.clear()
        self._control.clear()
        self._normal.clear()
        if self._up:
            self._up = False
            self._events.append(LinkDown(f"port lost: {reason}"))
        self._started = False
        return self._take_events()

    def discard_pending(self) -> list[LinkEvent]:
        """Drop every queued and in-flight sequenced message (reported as Discarded)."""
        for ticket, message, _ in self._queue:
            self._events.append(Discarded(ticket, message))
        for item in self._inflight.values():
            self._events.append(Discarded(item.ticket, item.message))
        self._queue.clear()
        self._inflight.clear()
        self._inflight_bytes = 0
        return self._take_events()

    # ---- input --------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[LinkEvent]:
        """Bytes from the line: every complete frame is handled in order; one cumulative ACK
        (or the next queued frames, which carry it) answers the whole chunk."""
        self.stats.bytes_rx += len(data)
        events = self._events
        in_order = 0
        for result in self._decoder.feed_raw(data):
            if type(result) is not tuple:
                assert isinstance(result, FrameFault)
                self._on_fault(result, now)
                continue
            seq, ack, msg = result
            rx_seq = self._rx_seq
            if seq and self._up and seq == (1 if rx_seq >= SEQ_MAX else rx_seq + 1):
                # the bulk path: the next sequenced frame from a peer the link is up with
                # (what _on_frame and _on_sequenced would do, without their dispatch)
                in_order += 1
                self._last_rx = now
                if ack and self._inflight:
                    self._on_ack(ack, now)
                self._rx_seq = seq
                self._ack_pending = True
                self._gap_nak_for = -1
                events.append(Received(msg, seq))
                if self._rx_ahead:
                    self._drain_ahead()
            else:
                self._on_frame(seq, ack, msg, now)
        self.stats.frames_rx += in_order
        self._pump(now)
        return self._take_events()

    def poll(self, now: float) -> list[LinkEvent]:
        """Run the timers: retransmissions, heartbeats, handshake, peer timeout."""
        cfg = self.config
        if not self._started:
            return []
        if self._up and now - self._last_rx > cfg.peer_timeout_s:
            self._up = False
            self._timed_out = True
            self._events.append(
                LinkDown(f"no valid frame from the peer for {now - self._last_rx:.2f} s")
            )
        for estop in self._estops.values():
            if not estop.superseded and now >= estop.next_at:
                estop.next_at = now + self._estop_retry_after_s()
                self.stats.retransmits += 1
                self._emit(EmergencyStop(estop.estop_id, estop.reason), 0, urgent=True, now=now)
        if self._inflight:
            oldest = next(iter(self._inflight.values()))
            # Resend for as long as it takes: only the peer's silence (above) takes the link
            # down, never a count of resends. A round that finds the peer silent for a
            # quarter of the peer timeout doubles the wait; a valid frame from the peer within
            # that time resets it (our frames were damaged, the peer is there: a noisy line
            # needs resends at full pace). While the link is down: the HELLO pace.
            if now - max(oldest.sent_at, self._progress_at) >= self._resend_after_s():
                if now - self._last_rx < cfg.peer_timeout_s / 4:
                    self._backoff = 0
                elif self._backoff < 16:
                    self._backoff += 1
                self._retransmit_round(now)
        if not self._up and now >= self._hello_due:
            self._send_hello(now)
        self._pump(now)
        if now >= self._heartbeat_due:
            self._heartbeat_due = now + cfg.heartbeat_s
            self._emit(Heartbeat(int(now * 1000) & 0xFFFF_FFFF), 0, urgent=False, now=now)
        return self._take_events()

    def next_deadline(self) -> float:
        """The latest time by which :meth:`poll` must run again (infinity before
        :meth:`start` and after :meth:`port_lost`: there is nothing to time)."""
        if not self._started:
            return float("inf")
        cfg = self.config
        t = self._heartbeat_due
        t = min(t, self._last_rx + cfg.peer_timeout_s if self._up else self._hello_due)
        if self._inflight:
            oldest = next(iter(self._inflight.values()))
            t = min(t, max(oldest.sent_at, self._progress_at) + self._resend_after_s())
        for estop in self._estops.values():
            t = min(t, estop.next_at)
        return t

    def take_output(self) -> bytes:
        """Bytes to write now: a leading delimiter, urgent frames, ACK/NAK, then the rest."""
        if not self._urgent and not self._control and not self._normal:
            return b""
        out = b"".join([b"\x00", *self._urgent, *self._control, *self._normal])
        self._urgent.clear()
        self._control.clear()
        self._normal.clear()
        return out

    def take_control_output(self) -> bytes:
        """Only the ACK and NAK frames (after :meth:`take_urgent_output`): a paced writer
        sends them ahead of queued frames it has not started, so an acknowledgement never
        waits behind a burst of this side's own frames."""
        if not self._control:
            return b""
        out = b"".join([b"\x00", *self._control])
        self._control.clear()
        return out

    def take_urgent_output(self) -> bytes:
        """Only the urgent bytes (emergency stop and its acknowledgement)."""
        if not self._urgent:
            return b""
        out = b"".join([b"\x00", *self._urgent])
        self._urgent.clear()
        return out

    # ---- internals ----------------------------------------------------------------------

    def _estop_retry_after_s(self) -> float:
        cfg = self.config
        line_s = 2 * 32 * 10 / cfg.line_baud if cfg.line_baud > 0 else 0.0
        return cfg.estop_retry_s + line_s

    def _resend_after_s(self) -> float:
        """How long the oldest in-flight frame waits for its acknowledgement, from the time
        its last byte left (or the last acknowledgement of new frames, if later): the ack
        timeout, plus on a paced line the time of one largest frame (the peer may finish the
        frame it is sending before it acknowledges)."""
        cfg = self.config
        if not self._up:
            return cfg.hello_interval_s
        base = cfg.ack_timeout_s + MAX_WIRE_BYTES * self._line_s_per_byte
        if not self._backoff:
            return base
        return min(base * (1 << self._backoff), max(base, cfg.resend_max_s))

    def _take_events(self) -> list[LinkEvent]:
        events, self._events = self._events, []
        return events

    def _emit(self, message: Message, seq: int, *, urgent: bool, now: float) -> int:
        data = encode_frame(message, seq=seq, ack=self._rx_seq)
        self._ack_pending = False
        if urgent:
            self._urgent.append(data)
        elif type(message) is Ack or type(message) is Nak:
            self._control.append(data)
        else:
            self._normal.append(data)
        self.stats.frames_tx += 1
        self.stats.bytes_tx += len(data)
        if self._line_s_per_byte:
            self._line_free_at = max(now, self._line_free_at) + len(data) * self._line_s_per_byte
        return len(data)

    def _emit_sequenced(self, item: _InFlight, seq: int, now: float, *, round_: bool) -> None:
        """Retransmit an in-flight frame from its kept payload, with the current ack.
        A timer round (``round_``) restarts the frame's resend timer; a resend asked for by a
        NAK does not, so NAKs answered one by one never hold back the next full round."""
        data = frame_bytes(item.message.TYPE, item.payload, seq, self._rx_seq)
        size = len(data)
        self._ack_pending = False
        self._normal.append(data)
        stats = self.stats
        stats.frames_tx += 1
        stats.bytes_tx += size
        gone_at = now
        if self._line_s_per_byte:
            gone_at = self._line_free_at = max(now, self._line_free_at) + (
                size * self._line_s_per_byte
            )
        if round_:
            item.sent_at = gone_at
        self._inflight_bytes += size - item.size
        item.size = size

    def _send_hello(self, now: float) -> None:
        self._hello_due = now + self.config.hello_interval_s
        hello = Hello(
            role=self.config.role,
            version_min=PROTOCOL_VERSION,
            version_max=PROTOCOL_VERSION,
            session=self._session,
            peer_session=self._peer_session,
            heartbeat_ms=round(self.config.heartbeat_s * 1000),
            link_up=self._up,
        )
        self._emit(hello, 0, urgent=False, now=now)

    def _reset_sequences(self) -> None:
        # Unacknowledged messages go back to the head of the queue, in order, for new numbers.
        for seq in reversed(list(self._inflight)):
            item = self._inflight[seq]
            self._queue.appendleft((item.ticket, item.message, item.payload))
        self._inflight.clear()
        self._inflight_bytes = 0
        self._backoff = 0
        self._tx_seq = 0
        self._rx_seq = 0
        self._rx_ahead.clear()
        self._ack_pending = False
        self._gap_nak_for = -1
        self._suspect_seq = 0

    def _pump(self, now: float) -> None:
        """Send queued sequenced messages while the window allows, then a bare ACK if owed."""
        if self._up and self._queue and len(self._inflight) < self.config.window:
            # the bulk path: as many queued frames as the window allows, in one go
            queue = self._queue
            inflight = self._inflight
            room = self.config.window - len(inflight)
            out = self._normal
            seq = self._tx_seq
            ack = self._rx_seq
            sent_bytes = 0
            sent = 0
            per_byte = self._line_s_per_byte
            gone_at = max(now, self._line_free_at) if per_byte else now
            while queue and sent < room:
                ticket, message, payload = queue.popleft()
                seq = 1 if seq >= SEQ_MAX else seq + 1
                data = frame_bytes(message.TYPE, payload, seq, ack)
                size = len(data)
                if per_byte:
                    gone_at += size * per_byte  # when its last byte has left
                inflight[seq] = _InFlight(ticket, message, payload, gone_at, size)
                out.append(data)
                sent_bytes += size
                sent += 1
            if per_byte:
                self._line_free_at = gone_at
            self._tx_seq = seq
            self._inflight_bytes += sent_bytes
            self._ack_pending = False  # every frame carried the ack
            stats = self.stats
            stats.frames_tx += sent
            stats.bytes_tx += sent_bytes
        if self._ack_pending:
            self._emit(Ack(), 0, urgent=False, now=now)

    def _retransmit_round(self, now: float) -> None:
        """Resend, oldest first, every in-flight frame that has left the line (one still
        queued behind the others, by this side's pacing, is on its way: not resent)."""
        for seq, item in self._inflight.items():
            if item.sent_at <= now or not self._up:
                self.stats.retransmits += 1
                self._emit_sequenced(item, seq, now, round_=True)

    def _on_ack(self, ack: int, now: float) -> None:
        inflight = self._inflight
        if not inflight or ack == 0:
            return
        first = next(iter(inflight))
        last = next(reversed(inflight))
        # ack acknowledges every in-flight seq from `first` up to and including `ack`
        span = seq_distance(first, ack)
        held = seq_distance(first, last)
        if span > held:
            return  # an old or foreign ack
        popitem = inflight.popitem
        tickets: list[int] = []
        append = tickets.append
        freed = 0
        if held == len(inflight) - 1:
            # the usual case: the numbers in flight are contiguous, so the first span + 1
            for _ in range(span + 1):
                _, item = popitem(last=False)
                freed += item.size
                append(item.ticket)
        else:
            # a frame refused for good (NAK) left a hole: go by number
            while inflight:
                seq, item = popitem(last=False)
                if seq_distance(first, seq) > span:
                    inflight[seq] = item
                    inflight.move_to_end(seq, last=False)
                    break
                freed += item.size
                append(item.ticket)
        self._inflight_bytes -= freed
        self._progress_at = now
        self._events.append(Delivered(tuple(tickets)))

    def _on_frame(self, seq: int, ack: int, msg: Message, now: float) -> None:
        self.stats.frames_rx += 1
        kind = type(msg)
        if kind is Hello:
            assert isinstance(msg, Hello)
            self._on_hello(msg, now)
            return
        if not self._up:
            # No established session (no HELLO exchange yet, or none since the peer went
            # silent, rebooted or spoke another version): the frame may come from a peer
            # that is not the one our sequence numbers belong to. Nothing brings the link
            # up but the handshake; only the e-stop and its acknowledgement count.
            if kind is EmergencyStop:
                assert isinstance(msg, EmergencyStop)
                self._on_estop(msg, now)
            elif kind is EstopAck:
                assert isinstance(msg, EstopAck)
                self._on_estop_ack(msg)
            else:
                if kind is Nak:
                    assert isinstance(msg, Nak)
                    self._count_nak_rx(msg.reason)
                self.stats.unsessioned_rx += 1
            return
        self._last_rx = now
        if kind is Nak:
            assert isinstance(msg, Nak)
            if not msg.reason.asks_retransmit:
                # the refused frame is inside this header's ack: report it as refused first
                self._on_nak(msg, now)
        if ack and self._inflight:
            self._on_ack(ack, now)
        if msg.SEQUENCED:
            self._on_sequenced(seq, msg, now)
        elif kind is EmergencyStop:
            assert isinstance(msg, EmergencyStop)
            self._on_estop(msg, now)
        elif kind is EstopAck:
            assert isinstance(msg, EstopAck)
            self._on_estop_ack(msg)
        elif kind is Nak:
            assert isinstance(msg, Nak)
            if msg.reason.asks_retransmit:
                self._on_nak(msg, now)
        elif kind is not Heartbeat and kind is not Ack:
            self._events.append(Received(msg, 0))

    def _on_estop(self, msg: EmergencyStop, now: float) -> None:
        self._emit(EstopAck(msg.estop_id), 0, urgent=True, now=now)
        seen = self._estops_seen
        window = self.config.peer_timeout_s
        last = seen.get(msg.estop_id)
        seen[msg.estop_id] = now
        if last is not None and now - last <= window:
            return  # a repeat of an e-stop already delivered: acknowledged, not acted on twice
        if len(seen) > 64:
            for estop_id, at in list(seen.items()):
                if now - at > window:
                    del seen[estop_id]
        self._events.append(Received(msg, 0))

    def _on_estop_ack(self, msg: EstopAck) -> None:
        acked = self._estops.pop(msg.estop_id, None)
        if acked is None:
            return
        self._events.append(EstopAcked(msg.estop_id))
        if not acked.superseded:  # the newest is latched: the ones it superseded are covered
            for older in [e for e in self._estops.values() if e.superseded]:
                del self._estops[older.estop_id]
                self._events.append(EstopAcked(older.estop_id))

    def _on_sequenced(self, seq: int, msg: Message, now: float) -> None:
        if not self._up:
            return  # the peer has not echoed our session yet; it will resend
        rx_seq = self._rx_seq
        if seq == (1 if rx_seq >= SEQ_MAX else rx_seq + 1):  # the next expected: the bulk
            self._rx_seq = seq
            self._ack_pending = True
            self._gap_nak_for = -1
            self._events.append(Received(msg, seq))
            if self._rx_ahead:
                self._drain_ahead()
            return
        ahead = seq_distance(rx_seq, seq)
        if ahead == 0 or ahead >= HALF:
            self.stats.duplicates_rx += 1
            self._ack_pending = True  # re-acknowledge; do not deliver twice
        elif ahead <= RX_AHEAD_MAX:
            if seq in self._rx_ahead:
                self.stats.duplicates_rx += 1
            self._rx_ahead[seq] = msg
            self._nak_gap(seq, now)
        else:
            self._nak_gap(seq, now)

    def _drain_ahead(self) -> None:
        """Deliver, in order, the held frames that follow the one just accepted."""
        while (msg := self._rx_ahead.pop(next_seq(self._rx_seq), None)) is not None:
            self._rx_seq = next_seq(self._rx_seq)
            self._events.append(Received(msg, self._rx_seq))

    def _nak_gap(self, seq: int, now: float) -> None:
        expected = next_seq(self._rx_seq)
        if self._gap_nak_for == expected and now - self._gap_nak_at < self.config.ack_timeout_s:
            return
        self._gap_nak_for = expected
        self._gap_nak_at = now
        self._send_nak(NakReason.SEQ_GAP, seq, now)

    def _send_nak(self, reason: NakReason, ref: int, now: float) -> None:
        stats = self.stats
        stats.naks_tx += 1
        stats.naks_tx_by_reason[reason] = stats.naks_tx_by_reason.get(reason, 0) + 1
        self._emit(Nak(reason, ref), 0, urgent=False, now=now)

    def _count_nak_rx(self, reason: NakReason) -> None:
        stats = self.stats
        stats.naks_rx += 1
        stats.naks_rx_by_reason[reason] = stats.naks_rx_by_reason.get(reason, 0) + 1

    def _on_nak(self, msg: Nak, now: float) -> None:
        self._count_nak_rx(msg.reason)
        if msg.reason.asks_retransmit:
            if self._inflight:
                seq, oldest = next(iter(self._inflight.items()))
                # the receiver holds what came after the gap: resend the oldest only, at most
                # once per quarter of the ack timeout
                if now - max(oldest.sent_at, self._nak_resend_at) >= self.config.ack_timeout_s / 4:
                    self._nak_resend_at = now
                    self.stats.retransmits += 1
                    self._emit_sequenced(oldest, seq, now, round_=False)
            return
        item = self._inflight.pop(msg.ref_seq, None) if self._up else None
        if item is not None:
            self._inflight_bytes -= item.size
            self.stats.refused_tx += 1
            self._events.append(Rejected(item.ticket, item.message, msg.reason))

    def _on_hello(self, hello: Hello, now: float) -> None:
        if hello.role == self.config.role:
            self.stats.refused_rx += 1
            self._events.append(
                BadFrame(
                    FrameFault(
                        FaultKind.BAD_PAYLOAD,
                        f"HELLO from a peer with our role {hello.role.name}",
                        0,
                    )
                )
            )
            return
        if not hello.version_min <= PROTOCOL_VERSION <= hello.version_max:
            self._on_version_mismatch(hello, now)
            return
        self._last_rx = now
        self._version_mismatch = None  # a later mismatch is a change, reported again
        new_peer = hello.session != self._peer_session
        if new_peer:
            self._peer_session = hello.session
            self._reset_sequences()
            self._estops_seen.clear()
            if self._up:
                self._up = False
                self._events.append(LinkDown("the peer started a new session"))
        self._peer_confirmed = hello.peer_session == self._session
        if self._peer_confirmed and not self._up:
            # the full handshake: we saw the peer's session and it echoes ours
            self._up = True
            resumed = self._timed_out and not new_peer  # same sessions: nothing was reset
            self._timed_out = False
            self._backoff = 0
            restarted = self._was_up_with not in (0, self._peer_session)
            self._was_up_with = self._peer_session
            self._events.append(LinkUp(self._peer_session, restarted, resumed=resumed))
        # Answer every HELLO whose sender still waits for our echo (it says so in link_up);
        # an answer from a side that is up carries link_up and needs no answer: no ping-pong.
        if not hello.link_up or not self._peer_confirmed:
            self._send_hello(now)

    def _on_version_mismatch(self, hello: Hello, now: float) -> None:
        """A HELLO whose version range excludes ours: NAK(BAD_VERSION) (at most one per
        HELLO interval), the link stays or goes down, VersionMismatch once per change."""
        self.stats.version_mismatches += 1
        self.stats.refused_rx += 1
        self._report_version(hello.version_min, hello.version_max)
        if self._up:
            self._up = False
            self._events.append(
                LinkDown(
                    f"the peer speaks protocol versions {hello.version_min}.."
                    f"{hello.version_max}, not {PROTOCOL_VERSION}"
                )
            )
        self._peer_confirmed = False
        self._timed_out = False
        if hello.session != self._peer_session:
            # a new peer session (it rebooted into another version): what we numbered for
            # the old one is numbered again for the next session that speaks our version
            self._peer_session = 0
            self._reset_sequences()
            self._estops_seen.clear()
        self._nak_version(0, now)

    def _report_version(self, peer_min: int, peer_max: int) -> None:
        if self._version_mismatch != (peer_min, peer_max):
            self._version_mismatch = (peer_min, peer_max)
            self._events.append(VersionMismatch(peer_min, peer_max))

    def _nak_version(self, ref: int, now: float) -> None:
        if now - self._version_nak_at >= self.config.hello_interval_s:
            self._version_nak_at = now
            self._send_nak(NakReason.BAD_VERSION, ref, now)

    def _on_fault(self, fault: FrameFault, now: float) -> None:
        stats = self.stats
        stats.bad_frames += 1
        kind = fault.kind
        if kind is FaultKind.CRC:
            stats.crc_errors += 1
        elif kind.damaged:
            stats.garbage += 1
        else:
            stats.refused_rx += 1
        self._events.append(BadFrame(fault))
        if kind is FaultKind.VERSION:
            # a good checksum and a header version we do not speak: a peer of another
            # version (its range is at least that version)
            if not self._up and fault.version is not None:
                self._report_version(fault.version, fault.version)
            self._nak_version(fault.seq or 0, now)
            return
        if not self._up:
            return
        if kind.damaged:
            if now - self._crc_nak_at >= self.config.ack_timeout_s / 4:
                self._crc_nak_at = now
                self._send_nak(NakReason.CRC, 0, now)
            return
        seq = fault.seq or 0
        if seq and seq == next_seq(self._rx_seq):
            if self._suspect_seq != seq:
                # A well-checksummed frame we cannot use may still be line damage the CRC-16
                # missed (about 1 damaged frame in 65,536): ask for it again, as for a CRC
                # error; the frames after it wait past the gap. Only a resend that is
                # refused too is refused for good.
                self._suspect_seq = seq
                if now - self._crc_nak_at >= self.config.ack_timeout_s / 4:
                    self._crc_nak_at = now
                    self._send_nak(NakReason.CRC, 0, now)
                return
            # refused twice: consume its number and refuse it for good
            self._suspect_seq = 0
            self._rx_seq = seq
            self._ack_pending = True
            reason = (
                NakReason.UNKNOWN_TYPE
                if fault.kind is FaultKind.UNKNOWN_TYPE
                else NakReason.BAD_PAYLOAD
            )
            self._send_nak(reason, seq, now)
