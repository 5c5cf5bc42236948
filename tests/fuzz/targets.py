"""Every parser of the project as a fuzz target: an input strategy and a crash oracle.

A target's ``check(input)`` feeds one input to the parser and returns how it ended —
``"accepted"`` or ``"rejected:<why>"`` — or raises. Raising is a **crash**: any exception
other than the parser's documented error type, a documented error without a clear message
(the file, line, topic or field must be named), or an accepted input that the parser's own
package then cannot use (it does not round-trip, its timestamps cannot be read, signing and
verifying it fails, the bridge or link falls over on it).

``tests/fuzz/test_parsers.py`` runs each target for a few hundred examples on every CI run;
``benchmarks/fuzz.py`` runs them for ≥ 100,000 inputs and reports the figures.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from firmware_bridge import wire
from firmware_bridge.bridge.config import ConfigFileError, load_signing_key
from firmware_bridge.bridge.core import BridgeCore
from firmware_bridge.errors import WireError
from firmware_bridge.link import LinkConfig, LinkCore
from firmware_bridge.link.core import RX_AHEAD_MAX
from fleet.control.config import load_controller_config
from fleet.control.keys import read_master_key
from fleet.errors import ConfigError, FleetError, InputError
from fleet.model.parcel import parcel_problem
from fleet.model.site import load_site
from fleet.model.van import load_van_spec
from fleet.mqtt import BrokerAddress
from fleet.planning.orders import parse_orders, read_orders
from fleet.planning.plan_io import plan_from_json, plan_to_json
from fleet.protocol import (
    CommandVerifier,
    Connection,
    ConnectionState,
    ControllerConnection,
    DecodeError,
    Factsheet,
    InstantActions,
    Order,
    SignatureError,
    State,
    decide_order,
    decode,
    derive_van_key,
    encode,
    make_header,
    parse_timestamp,
    sign,
)
from fleet.protocol.control_api import (
    CommandResult,
    DispatchBody,
    Event,
    EventsBody,
    InstantBody,
    Reply,
    Request,
    StatusBody,
)
from fleet.protocol.messages import InstantActionType, Strict
from fleet.protocol.signing import Rejection
from fleet.security.credentials import key_file_text, master_key_text
from sim.scenario import load_scenario
from tests.firmware_bridge import fw_strategies as fws
from tests.fuzz import mutate
from tests.fuzz.known_defects import known_defect
from tests.support import plans as sample_plans
from tests.support import protocol_examples as ex
from tests.support import strategies as sts

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
NOW_S = ex.NOW_S
TOPIC = "fleet/v1/vans/WH-PORTO-01/order"
DECODE_REASONS = {"oversized", "malformed_json", "unsupported_version", "schema"}
TIMESTAMP_KEYS = {
    "timestamp",
    "planned_arrival",
    "planned_departure",
    "time",
    "next_eta",
    "last_seen",
}


class Crash(AssertionError):
    """A parser misbehaved on an input (the message says how)."""


@dataclass(frozen=True)
class Target:
    name: str
    parses: str  # what is exercised, for the report
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], str]
    share: float = 1.0  # relative number of examples in the benchmark

    def run(self, value: Any) -> str:
        """``check``, with an input that hits a reported defect counted as ``known:<id>``."""
        try:
            return self.check(value)
        except Exception as exc:
            defect = known_defect(exc)
            if defect is None:
                raise
            return f"known:{defect.id}"


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise Crash(what)


# -- MQTT messages --------------------------------------------------------------------------
def _walk_timestamps(value: object) -> Iterable[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in TIMESTAMP_KEYS and isinstance(v, str):
                yield v
            else:
                yield from _walk_timestamps(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk_timestamps(v)


def _usable(message: Strict, model: type[Strict], topic: str) -> None:
    again = decode(model, encode(message), topic=topic)
    _require(again == message, f"{model.__name__} does not survive encode → decode")
    for stamp in _walk_timestamps(message.model_dump(mode="json")):
        try:
            parse_timestamp(stamp)
        except ValueError as exc:
            raise Crash(f"{model.__name__} accepted a timestamp nobody can read: {exc}") from exc


def _decode_check(model: type[Strict], topic: str) -> Callable[[bytes], str]:
    def check(payload: bytes) -> str:
        try:
            message = decode(model, payload, topic=topic)
        except DecodeError as exc:
            _require(exc.reason in DECODE_REASONS, f"undocumented reason {exc.reason!r}")
            _require(topic in str(exc) and bool(exc.detail), f"unclear error: {exc}")
            return f"rejected:{exc.reason}"
        _usable(message, model, topic)
        if isinstance(message, Order | InstantActions):
            _command_usable(message)
        return "accepted"

    return check


def _command_usable(message: Order | InstantActions) -> None:
    """A decoded command can be verified as it came, and signed then verified."""
    key = derive_van_key(ex.MASTER_SECRET, message.van_id)
    verifier = CommandVerifier(message.van_id, [key])
    try:
        verifier.verify(message, NOW_S)
    except SignatureError as exc:
        _require(exc.reason in set(Rejection), f"undocumented rejection {exc.reason!r}")
    fresh = CommandVerifier(message.van_id, [key], max_age_s=1e12, max_ahead_s=1e12)
    fresh.verify(sign(message, key), NOW_S)  # must not raise at all
    if isinstance(message, Order):
        decide_order(None, message, van_id=message.van_id, last_node_sequence_id=None)


POOL = 48  # valid seed inputs per message type


def _valid_bytes(strategy: st.SearchStrategy[Any], seed: int) -> list[bytes]:
    return [encode(m) for m in mutate.pool(strategy, POOL, seed)]


def _signed(strategy: st.SearchStrategy[Any], seed: int) -> list[bytes]:
    return [
        encode(sign(m, derive_van_key(ex.MASTER_SECRET, m.van_id)))
        for m in mutate.pool(strategy, POOL // 2, seed)
    ]


def _requests() -> list[Request]:
    header = make_header("cli-1", 1, NOW_S)
    plan_doc = json.loads(json.dumps(plan_to_json(sample_plans.plan())))
    bodies = [
        DispatchBody(plan=plan_doc, orders_csv="parcel_id,lon,lat,weight_kg,volume_m3\n"),
        StatusBody(van_ids=("WH-PORTO-01",)),
        InstantBody(action=InstantActionType.EMERGENCY_STOP, all_vans=True),
        EventsBody(after_id=3, limit=10, van_id="WH-PORTO-01"),
    ]
    return [
        Request(header=header, request_id=f"r{i}", client_id="cli-1", body=b)
        for i, b in enumerate(bodies)
    ]


def _replies_and_events() -> tuple[list[Reply], list[Event]]:
    header = make_header("fleet-controller", 2, NOW_S)
    replies = [
        Reply(header=header, request_id="r1", ok=False, error="no such van"),
        Reply(
            header=header,
            request_id="r2",
            ok=True,
            result=CommandResult(message="stopped", affected=("WH-PORTO-01",)),
        ),
    ]
    events = [
        Event(
            header=header,
            event_id=7,
            time=make_header("x", 1, NOW_S).timestamp,
            kind="parcel_delivered",
            van_id="WH-PORTO-01",
            parcel_id="P1",
            data={"rtt_s": 0.25, "n": 3, "ok": True, "why": None},
        )
    ]
    return replies, events


def mqtt_targets() -> list[Target]:
    replies, events = _replies_and_events()
    ctl_conn = ControllerConnection(
        header=make_header("fleet-controller", 1, NOW_S),
        connection_state=ConnectionState.ONLINE,
    )
    valid: list[tuple[type[Strict], list[bytes], float]] = [
        (Order, _valid_bytes(sts.orders(), 1) + _signed(sts.orders(), 2), 3.0),
        (
            InstantActions,
            _valid_bytes(sts.instant_actions, 3) + _signed(sts.instant_actions, 4),
            2.0,
        ),
        (State, _valid_bytes(sts.states, 5), 3.0),
        (Connection, _valid_bytes(sts.connections, 6), 1.0),
        (Factsheet, _valid_bytes(sts.factsheets, 7), 1.0),
        (ControllerConnection, [encode(ctl_conn)], 0.5),
        (Request, [encode(r) for r in _requests()], 1.5),
        (Reply, [encode(r) for r in replies], 0.5),
        (Event, [encode(e) for e in events], 0.5),
    ]
    return [
        Target(
            name=f"mqtt.{model.__name__}",
            parses=f"fleet.protocol.decode({model.__name__})",
            strategy=mutate.damaged(seeds),
            check=_decode_check(model, TOPIC),
            share=share,
        )
        for model, seeds, share in valid
    ]


# -- the bridge's command handling, end to end ----------------------------------------------
VAN = ex.VAN
VAN_KEY = derive_van_key(ex.MASTER_SECRET, VAN)


def _bridge_inputs() -> st.SearchStrategy[list[tuple[str, Any, bool]]]:
    orders = _valid_bytes(sts.orders().map(lambda o: o.model_copy(update={"van_id": VAN})), 8)
    instants = _valid_bytes(
        sts.instant_actions.map(lambda m: m.model_copy(update={"van_id": VAN})), 9
    )
    return st.lists(
        st.one_of(
            st.tuples(st.just("order"), mutate.damaged(orders), st.booleans()),
            st.tuples(st.just("instant"), mutate.damaged(instants), st.booleans()),
            st.tuples(st.just("telemetry"), fws.telemetry, st.just(False)),
            st.tuples(st.just("fault"), fws.fault_report, st.just(False)),
            st.tuples(st.just("link"), st.booleans(), st.just(False)),
        ),
        min_size=1,
        max_size=6,
    )


def _resign(kind: str, payload: bytes, message_id: int, now_s: float) -> bytes:
    """A damaged command that still decodes, stamped fresh and signed with the van's key
    (what a controller holding the key could send): it passes verification and reaches the
    bridge's order and mission logic."""
    model: type[Order] | type[InstantActions] = Order if kind == "order" else InstantActions
    try:
        message = decode(model, payload)
    except DecodeError:
        return payload
    header = make_header("fleet-controller", message_id, now_s)
    return encode(sign(message.model_copy(update={"header": header, "van_id": VAN}), VAN_KEY))


def check_bridge(steps: list[tuple[str, Any, bool]]) -> str:
    core = BridgeCore(VAN, CommandVerifier(VAN, [VAN_KEY]), mission_ids=1)
    now_s = NOW_S
    core.on_link_up()
    for i, (kind, item, resign) in enumerate(steps):
        now_s += 0.5
        if kind in ("order", "instant"):
            payload = _resign(kind, item, 1000 + i, now_s) if resign else item
            handle = core.on_order_payload if kind == "order" else core.on_instant_payload
            handle(payload, now_s, topic=TOPIC)
        elif kind == "telemetry":
            core.on_telemetry(item, now_s)
        elif kind == "fault":
            core.on_fault_report(item, now_s)
        elif item:
            core.on_link_up()
        else:
            core.on_link_down("fuzz", now_s)
        core.tick(now_s + 1.0)
    if core.accepted:
        return f"accepted:{core.accepted}/refused:{core.refused}"
    return f"rejected:{core.refused}"


# -- serial frames --------------------------------------------------------------------------
_any_message = st.one_of(*fws.BY_TYPE.values())


@st.composite
def _framed(draw: st.DrawFn) -> bytes:
    message = draw(_any_message)
    seq = draw(st.integers(1, 0xFFFF)) if message.SEQUENCED else 0
    return wire.encode_frame(message, seq=seq, ack=draw(fws.u16))


def _damaged_stream() -> st.SearchStrategy[bytes]:
    streams = mutate.pool(st.lists(_framed(), min_size=1, max_size=6).map(b"".join), POOL, 10)
    return st.one_of(
        st.sampled_from(streams),
        mutate.mutated_bytes(streams),
        mutate.mutated_bytes(streams),
        st.binary(max_size=600),
        st.just(b"\x01" * 700),
    )


def _describe(result: wire.Frame | wire.FrameFault) -> str:
    if isinstance(result, wire.FrameFault):
        _require(bool(result.detail), f"a {result.kind.value} fault without a detail")
        return f"rejected:{result.kind.value}"
    again = wire.decode_frame(wire.encode_frame(result.message, seq=result.seq, ack=result.ack))
    _require(again == result, f"{result.message.TYPE.name} does not survive decode → encode")
    return "accepted"


def check_stream(case: tuple[bytes, list[int]]) -> str:
    data, cuts = case
    whole = wire.FrameDecoder().feed(data)
    decoder = wire.FrameDecoder()
    pieces: list[wire.Frame | wire.FrameFault] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        pieces += decoder.feed(data[start:cut])
        start = max(start, cut)
    _require(pieces == whole, "the result depends on how the bytes were chunked")
    _require(decoder.pending_bytes <= wire.MAX_WIRE_BYTES, "the decoder buffers without bound")
    outcomes = [_describe(r) for r in whole]
    return max(outcomes, key=outcomes.count) if outcomes else "rejected:nothing"


def check_frame(data: bytes) -> str:
    try:
        frame = wire.decode_frame(data)
    except WireError as exc:
        _require(bool(str(exc)), "a WireError without a message")
        return "rejected:wire_error"
    return _describe(frame)


def check_payload(case: tuple[wire.MsgType, bytes]) -> str:
    kind, data = case
    cls = wire.messages.MESSAGE_CLASSES[kind]
    try:
        message = cls.decode_payload(data)
    except WireError as exc:
        _require(bool(str(exc)), "a WireError without a message")
        return "rejected:wire_error"
    again = cls.decode_payload(message.encode_payload())
    _require(again == message, f"{kind.name} payload does not survive decode → encode")
    return "accepted"


def _payloads() -> st.SearchStrategy[tuple[wire.MsgType, bytes]]:
    valid = [m.encode_payload() for m in mutate.pool(_any_message, POOL, 11)]
    return st.tuples(
        st.sampled_from(list(wire.MsgType)),
        st.one_of(st.binary(max_size=260), st.sampled_from(valid), mutate.mutated_bytes(valid)),
    )


def _link_steps() -> st.SearchStrategy[list[tuple[str, Any]]]:
    return st.lists(
        st.one_of(
            st.tuples(st.just("rx"), _damaged_stream()),
            st.tuples(st.just("poll"), st.floats(0.0, 2.0)),
            st.tuples(st.just("send"), _any_message),
            st.tuples(st.just("peer"), _any_message),
        ),
        min_size=1,
        max_size=12,
    )


def _offer(core: LinkCore, message: wire.Message, now: float) -> None:
    """Hand ``message`` to ``core`` the way its user would (or skip what a full queue refuses)."""
    if isinstance(message, wire.EmergencyStop):
        core.emergency_stop(now, message.reason)
    elif message.SEQUENCED:
        if core.queued < core.config.max_queue:
            core.send(message, now)
    else:
        core.send_now(message, now)


def check_link(steps: list[tuple[str, Any]]) -> str:
    """A VCU-side link, brought up by a real bridge-side peer over a clean line, then fed
    damaged bytes, timer runs, its own sends and well-formed frames from that peer, mixed."""
    core = LinkCore(LinkConfig(wire.Role.VCU), new_session=lambda: 0x1234)
    peer = LinkCore(LinkConfig(wire.Role.BRIDGE), new_session=lambda: 0x4321)
    now = 0.0
    received = 0

    def count(events: list[Any]) -> int:
        return sum(1 for e in events if type(e).__name__ == "Received")

    core.start(now)
    peer.start(now)
    for _ in range(8):  # the handshake
        to_core, to_peer = peer.take_output(), core.take_output()
        if not to_core and not to_peer:
            break
        received += count(core.receive(to_core, now))
        peer.receive(to_peer, now)
    for kind, item in steps:
        now += item if kind == "poll" else 0.001
        if kind == "rx":
            events = core.receive(item, now)
        elif kind == "poll":
            events = core.poll(now)
            peer.poll(now)
        elif kind == "peer":
            _offer(peer, item, now)
            events = core.receive(peer.take_output(), now)
        else:
            _offer(core, item, now)
            events = []
        received += count(events)
        out = core.take_output()
        peer.receive(out, now)
        _require(len(out) <= 64 * 1024, f"{len(out)} bytes of output from one step")
        _require(len(core._rx_ahead) <= RX_AHEAD_MAX, "frames held past a gap without bound")
    if received:
        return f"accepted:{received}"
    return f"rejected:{core.stats.bad_frames}"


def serial_targets() -> list[Target]:
    stream = _damaged_stream()
    return [
        Target(
            "serial.stream",
            "firmware_bridge.wire.FrameDecoder.feed (any chunking)",
            st.tuples(stream, st.lists(st.integers(0, 4000), max_size=6)),
            check_stream,
            3.0,
        ),
        Target("serial.frame", "firmware_bridge.wire.decode_frame", stream, check_frame),
        Target(
            "serial.payload",
            "firmware_bridge.wire.<Message>.decode_payload (12 types)",
            _payloads(),
            check_payload,
            2.0,
        ),
        Target(
            "serial.link",
            "firmware_bridge.link.LinkCore.receive/poll",
            _link_steps(),
            check_link,
            1.5,
        ),
    ]


def bridge_targets() -> list[Target]:
    return [
        Target(
            "bridge.commands",
            "firmware_bridge.bridge.BridgeCore on orders, instant actions, VCU reports",
            _bridge_inputs(),
            check_bridge,
            2.0,
        )
    ]


# -- files: TOML configs, key and login files, orders CSV, plan JSON ------------------------
class Workdir:
    """A private copy of the shipped configs (with empty map data) for file-based targets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        configs = root / "configs"
        if not configs.exists():
            (configs / "sites" / "data").mkdir(parents=True)
            (configs / "scenarios").mkdir()
            for name in ("van.toml", "controller.toml"):
                shutil.copy(CONFIGS / name, configs / name)
            for src in (CONFIGS / "sites").glob("*.*"):
                shutil.copy(src, configs / "sites" / src.name)
            for pbf in (CONFIGS / "sites" / "data").glob("*.pbf"):
                (configs / "sites" / "data" / pbf.name).write_bytes(b"")  # never opened
            for src in (CONFIGS / "scenarios").glob("*.toml"):
                shutil.copy(src, configs / "scenarios" / src.name)
        self.configs = configs
        self.site = load_site(configs / "sites" / "porto.toml")

    def write(self, relative: str, data: str | bytes) -> Path:
        path = self.configs / relative
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path


def _config_check(
    work: Workdir,
    relative: str,
    load: Callable[[Path], object],
    errors: tuple[type[Exception], ...],
) -> Callable[[str], str]:
    def check(text: str) -> str:
        path = work.write(relative, text)
        try:
            load(path)
        except errors as exc:
            message = str(exc)
            _require(
                str(work.configs) in message or path.name in message,
                f"{type(exc).__name__} does not name the file: {message}",
            )
            return f"rejected:{type(exc).__name__}"
        return "accepted"

    return check


def _texts(*paths: Path) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in paths]


def config_targets(work: Workdir) -> list[Target]:
    c = work.configs
    toml = lambda seeds: mutate.mutated_text(  # noqa: E731
        seeds, mutate.TOML_VALUES, mutate.TOML_LINES, sep="="
    )
    key_text = key_file_text(VAN, VAN_KEY.key_id, VAN_KEY.secret)
    master_text = master_key_text(ex.MASTER_SECRET, 1)
    login_text = (
        '[mqtt]\nhost = "localhost"\nport = 1883\nusername = "WH-PORTO-01"\n'
        'password = "pw"\n\n[tls]\nport = 8883\nca_file = "ca.crt"\n'
        'cert_file = "client.crt"\nkey_file = "client.key"\n'
    )
    return [
        Target(
            "toml.van",
            "fleet.model.load_van_spec",
            toml(_texts(c / "van.toml")),
            _config_check(work, "van-fuzz.toml", load_van_spec, (ConfigError,)),
        ),
        Target(
            "toml.site",
            "fleet.model.load_site",
            toml(_texts(c / "sites" / "porto.toml", c / "sites" / "poa.toml")),
            _config_check(work, "sites/fuzz.toml", load_site, (ConfigError,)),
        ),
        Target(
            "toml.controller",
            "fleet.control.config.load_controller_config",
            toml(_texts(c / "controller.toml")),
            _config_check(work, "controller-fuzz.toml", load_controller_config, (ConfigError,)),
        ),
        Target(
            "toml.scenario",
            "sim.scenario.load_scenario",
            toml(_texts(*sorted((c / "scenarios").glob("*.toml")))),
            _config_check(work, "scenarios/fuzz.toml", load_scenario, (FleetError,)),
        ),
        Target(
            "toml.signing_key",
            "firmware_bridge.bridge.config.load_signing_key",
            toml([key_text]),
            _config_check(work, "signing.key", load_signing_key, (ConfigFileError,)),
            0.5,
        ),
        Target(
            "toml.master_key",
            "fleet.control.keys.read_master_key",
            toml([master_text]),
            _config_check(work, "signing-master.key", read_master_key, (ConfigError,)),
            0.5,
        ),
        Target(
            "toml.mqtt_login.bridge",
            "fleet.mqtt.BrokerAddress.from_login (tls=None, as the bridge reads it)",
            toml([login_text]),
            _config_check(
                work, "mqtt.toml", lambda p: BrokerAddress.from_login(p, tls=None), (ConfigError,)
            ),
            0.5,
        ),
        Target(
            "toml.mqtt_login.controller",
            "fleet.mqtt.BrokerAddress.from_login",
            toml([login_text]),
            _config_check(
                work, "mqtt-c.toml", lambda p: BrokerAddress.from_login(p, tls=True), (ConfigError,)
            ),
            0.5,
        ),
    ]


ORDERS_SEED = (
    "parcel_id,lon,lat,weight_kg,volume_m3,earliest,latest,service_s,station\n"
    "P1,-8.6110,41.1496,2.5,0.01,09:00,12:00,60,ST-BOAVISTA\n"
    "P2,-8.6100,41.1500,12,0.2,,,,\n"
    "P3,-8.6090,41.1505,0.4,0.002,2026-11-23T10:00,2026-11-23T18:00+00:00,,ST-BAIXA\n"
    '"P 4",-8.6080,41.1510,30,0.25,14:00,24:00,,\n'
)
ORDERS_SEED_SHORT = "parcel_id,lon,lat,weight_kg,volume_m3\nP1,-8.6,41.1,1,0.01\n"


def check_orders_text(work: Workdir) -> Callable[[str], str]:
    def check(text: str) -> str:
        file = Path("orders.csv")
        try:
            orders = parse_orders(text.splitlines(keepends=True), file, work.site)
        except (InputError, ConfigError) as exc:
            _require(str(file) in str(exc), f"the error does not name the file: {exc}")
            return f"rejected:{type(exc).__name__}"
        ids = [p.id for p in orders.parcels]
        _require(len(ids) == len(set(ids)), "a parcel id accepted twice")
        for p in orders.parcels:
            _require(parcel_problem(p) is None, f"an invalid parcel accepted: {p}")
            _require(
                all(math.isfinite(x) for x in (p.lon, p.lat, p.weight_kg, p.volume_m3)),
                f"a non-finite number accepted: {p}",
            )
        for bad in orders.bad_rows:
            _require(
                bad.line >= 2 and bool(bad.field) and bool(bad.message),
                f"an unclear bad row: {bad!r}",
            )
        return f"accepted:{len(orders.parcels)}/bad:{len(orders.bad_rows)}"

    return check


def check_orders_file(work: Workdir) -> Callable[[bytes], str]:
    text_check = check_orders_text(work)

    def check(data: bytes) -> str:
        path = work.write("orders.csv", data)
        try:
            read_orders(path, work.site)
        except (InputError, ConfigError) as exc:
            _require(str(path) in str(exc), f"the error does not name the file: {exc}")
            return f"rejected:{type(exc).__name__}"
        return text_check(data.decode("utf-8-sig"))

    return check


def check_plan(document: bytes) -> str:
    file = Path("plan.json")
    try:
        parsed = json.loads(document)
    except (ValueError, RecursionError):
        return "rejected:not_json"
    try:
        plan = plan_from_json(parsed, file)
    except InputError as exc:
        _require(str(file) in str(exc), f"the error does not name the file: {exc}")
        return "rejected:InputError"
    again = plan_from_json(json.loads(json.dumps(plan_to_json(plan))), file)
    _require(again == plan, "a plan does not survive read → write → read")
    return "accepted"


def file_targets(work: Workdir) -> list[Target]:
    csv_text = mutate.mutated_text(
        [ORDERS_SEED, ORDERS_SEED_SHORT], mutate.CSV_VALUES, mutate.CSV_LINES, sep=","
    )
    plan_seed = json.dumps(plan_to_json(sample_plans.plan())).encode()
    return [
        Target(
            "csv.orders",
            "fleet.planning.orders.parse_orders",
            csv_text,
            check_orders_text(work),
            3.0,
        ),
        Target(
            "csv.orders_file",
            "fleet.planning.orders.read_orders (bytes: encodings, BOM)",
            csv_text.map(lambda t: t.encode("utf-8", "surrogatepass"))
            | mutate.mutated_bytes([ORDERS_SEED.encode()]),
            check_orders_file(work),
        ),
        Target(
            "json.plan",
            "fleet.planning.plan_io.plan_from_json",
            mutate.damaged([plan_seed]),
            check_plan,
            1.5,
        ),
    ]


def all_targets(workdir: Path) -> list[Target]:
    from tests.fuzz.entry_targets import entry_targets  # it builds on this module

    work = Workdir(workdir)
    return [
        *mqtt_targets(),
        *bridge_targets(),
        *serial_targets(),
        *config_targets(work),
        *file_targets(work),
        *entry_targets(work),
    ]
