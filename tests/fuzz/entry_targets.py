"""Fuzz targets for every entry point of issue 15: the CLI's arguments through the real typer
app, the control API's requests run against a controller core, plan.json files with extreme
numbers and nesting, ids with every Unicode category, binary config and key files, orders
CSV from a grammar, TOML edited as a tree, and van states with skewed clocks.

The oracle is the house rule: an input ends accepted, or refused with the documented error
type and a message that names where — any other exception is a crash.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from typer.testing import CliRunner

from firmware_bridge.bridge.config import ConfigFileError, load_signing_key
from fleet.cli.app import app
from fleet.control.config import ControllerConfig, load_controller_config
from fleet.control.core import ControllerCore, check_plan
from fleet.control.intake import decode_request
from fleet.control.keys import read_master_key
from fleet.errors import ConfigError, FleetError, InputError
from fleet.identifiers import ID_PATTERN, depot_id_problem, id_problem
from fleet.model.site import load_site
from fleet.model.van import load_van_spec
from fleet.mqtt import BrokerAddress
from fleet.planning.orders import parse_orders
from fleet.planning.plan_io import plan_and_parcels_from_json, plan_to_json, read_plan_and_parcels
from fleet.protocol import (
    DecodeError,
    ProtocolError,
    State,
    Topics,
    VanTopic,
    check_van_id,
    decode,
    encode,
    format_timestamp,
)
from fleet.protocol.control_api import (
    AddParcelsBody,
    CancelParcelsBody,
    CancelVansBody,
    DispatchBody,
    EventsBody,
    InstantBody,
    ReplanBody,
    StatusBody,
)
from fleet.security.credentials import key_file_text, master_key_text
from fleet.store import SqliteStore
from fleet.store.records import Snapshot
from sim.scenario import load_scenario
from tests.fuzz import mutate
from tests.fuzz.targets import (
    ORDERS_SEED,
    VAN,
    VAN_KEY,
    Crash,
    Target,
    Workdir,
    _config_check,
    _requests,
    _require,
    _texts,
    check_orders_text,
)
from tests.support import plans as sample_plans
from tests.support import protocol_examples as ex
from tests.support import strategies as sts

CLOSED_BROKER = ["--broker", "mqtt://127.0.0.1:9", "--timeout", "0.3"]  # refused at once
LOGIN_TEXT = '[mqtt]\nhost = "localhost"\nport = 1883\nusername = "WH-PORTO-01"\npassword = "pw"\n'


# -- identifiers ----------------------------------------------------------------------------


def bridge_login(path: Path) -> BrokerAddress:
    """The login file as ``firmware-bridge run --mqtt-config`` reads it (TLS if present)."""
    return BrokerAddress.from_login(path, tls=None)


def check_id_rule(value: str) -> str:
    problem = id_problem(value)
    depot = depot_id_problem(value)
    if problem is not None:
        _require(
            "\n" not in problem and problem.isprintable(), f"an unprintable refusal: {problem!r}"
        )
        _require(depot is not None, "a depot id accepted that is not an id")
        return "rejected:id"
    # what the rule accepts is safe everywhere an id goes
    _require(all(c not in value for c in "/+#: \"',\\") and value.isascii(), f"unsafe {value!r}")
    _require(value not in (".", ".."), "a path component accepted")
    check_van_id(value)
    topics = Topics()
    _require(topics.parse_van(topics.van(value, VanTopic.STATE))[0] == value, "no round trip")
    return "accepted"


def id_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda n: mutate.Mutator(n).unicode_id(), mutate.SEEDS),
        st.text(max_size=70),
        st.from_regex(ID_PATTERN, fullmatch=True),
    )


# -- the CLI through the real typer app ------------------------------------------------------
NUMBER_TOKENS = [
    "-5",
    "-1",
    "0",
    "0.05",
    "0.1",
    "1",
    "1e309",
    "nan",
    "inf",
    "-inf",
    "99999999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "86401",
    "",
]


def _tokens(options: list[str]) -> st.SearchStrategy[list[str]]:
    token = st.one_of(
        st.sampled_from(options or ["--help"]),
        st.sampled_from(NUMBER_TOKENS),
        st.builds(lambda n: mutate.Mutator(n).unicode_id(), mutate.SEEDS),
        st.sampled_from(["WH-PORTO-01", "P1", "A/+/#", "X/+/#", "P\x01", "--", "-"]),
    )
    return st.lists(token, max_size=6)


class CliCheck:
    """Runs ``fleet <command> <args>`` in-process, as the entry point would."""

    def __init__(self, work: Workdir, command: list[str], *, broker: bool = True) -> None:
        self.runner = CliRunner(env={"FLEET_BROKER": None, "FLEET_MQTT_LOGIN": None})
        self.command = command
        self.broker = broker
        self.work = work

    def __call__(self, args: list[str]) -> str:
        argv = [*self.command, *args, *(CLOSED_BROKER if self.broker else [])]
        result = self.runner.invoke(app, argv, catch_exceptions=True)
        exc = result.exception
        if exc is None:
            return "accepted"
        if isinstance(exc, SystemExit):
            _require(result.exit_code in (0, 1, 2), f"exit code {result.exit_code}: {argv!r}")
            return f"rejected:exit{result.exit_code}"
        if isinstance(exc, FleetError):
            _require(bool(str(exc).strip()), f"an empty error for {argv!r}")
            return f"rejected:{type(exc).__name__}"
        raise Crash(f"fleet {' '.join(map(repr, argv))}: {type(exc).__name__}: {exc}") from exc


class CliFiles(CliCheck):
    """A command whose arguments are files: their contents are fuzzed too."""

    def __init__(
        self, work: Workdir, command: list[str], layout: Callable[[Path, Path], list[str]]
    ):
        super().__init__(work, command)
        self.layout = layout

    def files(self, case: tuple[bytes, bytes, list[str]]) -> str:
        plan_bytes, orders_bytes, extra = case
        plan = self.work.write("cli-plan.json", plan_bytes)
        orders = self.work.write("cli-orders.csv", orders_bytes)
        return self(self.layout(plan, orders) + extra)


def cli_targets(work: Workdir) -> list[Target]:
    plan_seed = json.dumps(plan_to_json(sample_plans.plan())).encode()
    orders_seed = ORDERS_SEED.encode()
    csv_bytes = mutate.mutated_bytes([orders_seed]) | st.builds(
        lambda n: grammar_csv(mutate.Mutator(n)).encode("utf-8", "surrogatepass"), mutate.SEEDS
    )
    site = str(work.configs / "sites" / "porto.toml")
    simple: list[tuple[str, list[str], list[str]]] = [
        ("status", ["status"], ["--watch", "--interval", "-w"]),
        ("pause", ["pause"], []),
        ("resume", ["resume"], []),
        ("estop", ["estop"], ["--all", "--wait"]),
        ("cancel", ["cancel"], ["--van"]),
        ("events", ["events"], ["--limit", "--after", "--van", "--parcel", "--follow"]),
        ("replan", ["replan"], ["--reason"]),
    ]
    targets = [
        Target(
            f"cli.{name}",
            f"fleet {' '.join(cmd)} <args> (typer app)",
            _tokens([*options, "--help"]),
            CliCheck(work, cmd),
            0.1,  # ~20 inputs/s: click and rich render every usage error
        )
        for name, cmd, options in simple
    ]
    dispatch = CliFiles(work, ["dispatch"], lambda p, o: [str(p), "--orders", str(o)])
    add = CliFiles(work, ["add"], lambda p, o: [str(o)])
    check = CliFiles(work, ["orders", "check"], lambda p, o: [str(o), "--site", site])
    check.broker = False
    files = st.tuples(mutate.damaged([plan_seed]), csv_bytes, _tokens([]).map(lambda t: t[:1]))
    targets += [
        Target("cli.dispatch", "fleet dispatch <plan> --orders <csv>", files, dispatch.files, 0.15),
        Target("cli.add", "fleet add <csv>", files, add.files, 0.15),
        Target("cli.orders_check", "fleet orders check <csv> --site", files, check.files, 0.15),
    ]
    return targets


# -- the control API: requests decoded and carried out by a controller core -----------------
class ControlApi:
    """What ``ControllerService._execute`` does with a request, minus the broker: decode (with
    the intake's bounds), then the core's command, the store's events, the plan reader."""

    def __init__(self, work: Workdir) -> None:
        self.work = work
        self.loop = asyncio.new_event_loop()
        self.store = SqliteStore(work.root / "fuzz-fleet.db")
        self.now_s = ex.NOW_S
        self.core = ControllerCore(
            config=ControllerConfig(release_ahead_stops=1),
            van=load_van_spec(work.configs / "van.toml"),
            roster=sample_plans.ROSTER,
            snapshot=Snapshot(),
            now_s=self.now_s,
        )
        self.topic = Topics().controller_request

    def __call__(self, payload: bytes) -> str:
        try:
            request = self.loop.run_until_complete(decode_request(payload, self.topic))
        except DecodeError as exc:
            _require(exc.topic == self.topic, f"a refusal that does not name the topic: {exc}")
            return f"rejected:{exc.reason}"
        self.now_s += 1.0
        body, core, now = request.body, self.core, self.now_s
        try:
            if isinstance(body, StatusBody):
                core.status(body.van_ids, now)
            elif isinstance(body, InstantBody):
                targets = core.all_van_ids() if body.all_vans else list(body.van_ids)
                core.instant(body.action, targets, now, reason="dispatcher")
            elif isinstance(body, CancelParcelsBody):
                core.cancel_parcels(body.parcel_ids, now)
            elif isinstance(body, CancelVansBody):
                core.cancel_vans(body.van_ids, now)
            elif isinstance(body, ReplanBody):
                core.request_replan(body.reason, now)
            elif isinstance(body, EventsBody):
                self.store.events(
                    after_id=body.after_id,
                    limit=body.limit,
                    van_id=body.van_id,
                    parcel_id=body.parcel_id,
                )
            elif isinstance(body, DispatchBody):
                plan, parcels = plan_and_parcels_from_json(body.plan, Path("plan.json"))
                core.dispatch(
                    check_plan(plan, parcels, json.dumps(body.plan), lambda p, q: []), now
                )
            elif isinstance(body, AddParcelsBody):
                orders = parse_orders(
                    body.orders_csv.splitlines(keepends=True),
                    Path(body.orders_name),
                    self.work.site,
                )
                orders.require_clean()
                core.add_parcels(orders.parcels, now)
        except FleetError as exc:
            _require(bool(str(exc)), "an empty refusal")
            return f"rejected:{type(exc).__name__}"
        finally:
            self.store.commit(core.drain().changes)
        return "accepted"


def control_targets(work: Workdir) -> list[Target]:
    seeds = [encode(r) for r in _requests()]
    api = ControlApi(work)
    return [
        Target(
            "control.request",
            "controller intake + core commands + store (every request kind)",
            mutate.damaged(seeds),
            api,
            2.0,
        ),
        Target(
            "control.van_state",
            "decode(State) + ControllerCore.on_state (clock skew, stale ids)",
            st.tuples(
                sts.states,
                st.sampled_from([0.0, 1.0, -60.0, 299.0, 301.0, -86_399.0, -86_401.0, 4e9, -1e9]),
            ),
            VanStates(work),
            1.0,
        ),
    ]


class VanStates:
    def __init__(self, work: Workdir) -> None:
        self.core = ControllerCore(
            config=ControllerConfig(release_ahead_stops=1),
            van=load_van_spec(work.configs / "van.toml"),
            roster={},
            snapshot=Snapshot(),
            now_s=ex.NOW_S,
        )
        self.now_s = ex.NOW_S

    def __call__(self, case: tuple[State, float]) -> str:
        state, offset_s = case
        self.now_s += 1.0
        now_s = self.now_s
        stamp = format_timestamp(max(0.0, now_s + offset_s))
        header = state.header.model_copy(update={"timestamp": stamp})
        payload = encode(state.model_copy(update={"header": header}))
        try:
            decoded = decode(State, payload, topic="t")
            before = self.core.counters["rejected_clock_skew"]
            self.core.on_state(decoded.van_id, decoded, now_s, payload)
        except ProtocolError as exc:
            return f"rejected:{exc.reason}"
        self.core.drain()
        if self.core.counters["rejected_clock_skew"] > before:
            return "rejected:clock_skew"
        return "accepted"


# -- files: plan.json with extremes, binary configs, TOML trees, CSV from a grammar ----------
def check_plan_file(work: Workdir) -> Callable[[bytes], str]:
    def check(data: bytes) -> str:
        path = work.write("fuzz-plan.json", data)
        try:
            plan, _ = read_plan_and_parcels(path)
        except InputError as exc:
            _require(str(path) in str(exc), f"the error does not name the file: {exc}")
            return "rejected:InputError"
        for route in plan.routes:
            for stop in route.stops():
                _require(-(2**63) <= stop.node < 2**63, f"node id {stop.node} accepted")
        return "accepted"

    return check


CSV_FIELDS = [
    "parcel_id",
    "lon",
    "lat",
    "weight_kg",
    "volume_m3",
    "earliest",
    "latest",
    "service_s",
    "station",
]


def grammar_csv(m: mutate.Mutator) -> str:
    """An orders CSV built from its grammar: a header (columns in any order, some missing or
    doubled), rows whose cells are ids of any Unicode category, extreme numbers, times."""
    columns = CSV_FIELDS[:5] + m.sample(CSV_FIELDS[5:], m.randint(0, 4))
    m.shuffle(columns)
    if m.random() < 0.1:
        columns.append(m.choice([*CSV_FIELDS, "extra"]))
    cells: dict[str, Callable[[], str]] = {
        "parcel_id": lambda: m.unicode_id() if m.random() < 0.4 else f"P{m.randint(0, 50)}",
        "lon": lambda: str(m.choice([-8.61, -8.6, -180.0001, 181, "nan", "1e309", "-0", "x"])),
        "lat": lambda: str(m.choice([41.15, 41.1, 91, "-91", "inf", "", "41,1"])),
        "weight_kg": lambda: str(m.choice([1, 0, -1, 1e9, "1e400", "2**80", "0x10"])),
        "volume_m3": lambda: str(m.choice([0.01, 0, -0.0, 1e300, "nan"])),
        "earliest": lambda: m.choice(
            ["09:00", "24:00", "25:00", "2026-11-23T10:00", "", "9999-12-31T23:59"]
        ),
        "latest": lambda: m.choice(["12:00", "00:00", "2026-11-24T00:00", "", "23:59:60"]),
        "service_s": lambda: str(m.choice([60, 0, -5, 86400, 86401, 99999999999, "inf", ""])),
        "station": lambda: m.choice(["ST-BOAVISTA", "ST-BAIXA", "", "ST/+#", m.unicode_id()]),
        "extra": lambda: "?",
    }
    lines = [",".join(columns)]
    for _ in range(m.choice([0, 1, 3, 20])):
        row = [cells.get(c, lambda: "")() for c in columns]
        row = ['"' + c.replace('"', '""') + '"' if any(x in c for x in ',"\n') else c for c in row]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def file_entry_targets(work: Workdir) -> list[Target]:
    c = work.configs
    plan_seed = json.dumps(plan_to_json(sample_plans.plan())).encode()
    key_text = key_file_text(VAN, VAN_KEY.key_id, VAN_KEY.secret)
    master_text = master_key_text(ex.MASTER_SECRET, 1)
    configs: list[
        tuple[str, list[str], str, Callable[[Path], object], tuple[type[Exception], ...]]
    ] = [
        ("van", _texts(c / "van.toml"), "van-fz.toml", load_van_spec, (ConfigError,)),
        ("site", _texts(c / "sites" / "porto.toml"), "sites/fz.toml", load_site, (ConfigError,)),
        (
            "controller",
            _texts(c / "controller.toml"),
            "ctl-fz.toml",
            load_controller_config,
            (ConfigError,),
        ),
        (
            "scenario",
            _texts(*sorted((c / "scenarios").glob("*.toml")))[:2],
            "scenarios/fz.toml",
            load_scenario,
            (FleetError,),
        ),
        ("signing_key", [key_text], "fz-signing.key", load_signing_key, (ConfigFileError,)),
        ("master_key", [master_text], "fz-master.key", read_master_key, (ConfigError,)),
        (
            "mqtt_login.bridge",
            [LOGIN_TEXT],
            "fz-mqtt.toml",
            bridge_login,
            (ConfigError,),
        ),
        (
            "mqtt_login.controller",
            [LOGIN_TEXT],
            "fz-mqtt-c.toml",
            BrokerAddress.from_login,
            (ConfigError,),
        ),
    ]
    targets = [
        Target(
            "ids.rule",
            "fleet.identifiers.id_problem (every Unicode category)",
            id_strings(),
            check_id_rule,
        ),
        Target(
            "json.plan_file",
            "fleet.planning.plan_io.read_plan_and_parcels (size, depth, extremes)",
            mutate.damaged([plan_seed]),
            check_plan_file(work),
            1.5,
        ),
        Target(
            "csv.orders_grammar",
            "fleet.planning.orders.parse_orders (grammar-built CSV)",
            st.builds(lambda n: grammar_csv(mutate.Mutator(n)), mutate.SEEDS),
            check_orders_text(work),
            1.5,
        ),
    ]
    for name, seeds, rel, load, errors in configs:
        raw = [s.encode() for s in seeds]
        targets.append(
            Target(
                f"binary.{name}",
                f"{getattr(load, '__qualname__', name)} (bytes)",
                mutate.mutated_bytes(raw) | st.binary(max_size=300),
                _config_check(work, rel, load, errors),
                0.4,
            )
        )
        if name in ("van", "site", "controller", "scenario", "signing_key", "mqtt_login.bridge"):
            targets.append(
                Target(
                    f"toml_tree.{name}",
                    f"{getattr(load, '__qualname__', name)} (TOML edited as a tree)",
                    mutate.mutated_toml(seeds),
                    _config_check(work, rel, load, errors),
                    0.5,
                )
            )
    return targets


def entry_targets(work: Workdir) -> list[Any]:
    return [*cli_targets(work), *control_targets(work), *file_entry_targets(work)]
