"""`fleet broker credentials`: what is generated, for whom, and how it is written."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.cli.app import main
from fleet.model.ids import DepotId
from fleet.model.site import Site
from fleet.protocol.signing import derive_van_key
from fleet.security import CredentialsError, hash_password, verify_password
from fleet.security.acl import Identity, Role, grants, render_acl
from fleet.security.credentials import (
    CONSOLE_USERNAME,
    CONTROLLER_USERNAME,
    DISPATCHER_USERNAME,
    MANIFEST,
    CredentialSet,
    CredentialsOptions,
    build_credentials,
    site_van_ids,
    write_credentials,
)
from fleet.security.passwords import password_file_line
from tests.security.sites import NOW, make_site
from tests.support.brokers import mosquitto_binary, skip_or_fail

VANS = ["WH-TEST-01", "ST-T1-01", "ST-T1-02", "ST-T2-01"]
# Written by the real `mosquitto_passwd -b` (Mosquitto 2.0.11) for password "secret".
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$5CtSQ50tEg0Lv6th$c2NeNPHJHL874DZ3gG8lKJOExWNYDSacj8z+XlKIHHgJaa+KVxdZtwLQ"
    "Nv3NYocMXh9BWgTe/3BbdFxtBTC5WA=="
)


def counter_bytes() -> object:
    """A deterministic random source, so that two builds can be compared."""
    state = {"n": 0}

    def take(n: int) -> bytes:
        state["n"] += 1
        return (state["n"].to_bytes(4, "big") * ((n + 3) // 4))[:n]

    return take


def build(site: Site, out: Path, **kw: object) -> CredentialSet:
    return build_credentials(site, out, CredentialsOptions(**kw), now=NOW)  # type: ignore[arg-type]


def read_toml(path: Path) -> dict[str, object]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


# -- password hashes --------------------------------------------------------------------------


def test_a_hash_written_by_mosquitto_passwd_verifies() -> None:
    _, entry = MOSQUITTO_PASSWD_LINE.split(":", 1)
    assert verify_password(entry, "secret")
    assert not verify_password(entry, "Secret")


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=80), st.binary(min_size=12, max_size=12))
def test_our_hashes_verify_only_their_own_password(password: str, salt: bytes) -> None:
    entry = hash_password(password, salt=salt)
    assert entry.startswith("$7$101$")
    assert verify_password(entry, password)
    assert not verify_password(entry, password + "x")


def test_mosquitto_passwd_reads_a_file_of_our_hashes(tmp_path: Path) -> None:
    binary = mosquitto_binary()
    if binary is None:
        skip_or_fail("the mosquitto binary is not installed (apt-get install mosquitto)")
    passwd_tool = Path(binary).parent.parent / "bin" / "mosquitto_passwd"
    if not passwd_tool.exists():
        skip_or_fail(f"{passwd_tool} is missing")
    passwd = tmp_path / "passwd"
    passwd.write_text(password_file_line("van-1", "pw-1") + "\n", encoding="utf-8")
    # the tool rewrites the file after parsing every line of it; add a second user through it
    subprocess.run([str(passwd_tool), "-b", str(passwd), "van-2", "pw-2"], check=True)
    lines = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert verify_password(lines["van-1"], "pw-1")
    assert verify_password(lines["van-2"], "pw-2")


def test_a_malformed_hash_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"\$7\$"):
        verify_password("$6$rounds=5000$abc$def", "x")
    with pytest.raises(ValueError, match="username"):
        password_file_line("has space", "pw")


# -- ACL --------------------------------------------------------------------------------------


def test_each_van_is_granted_only_its_own_topics() -> None:
    for van in VANS:
        topics = [g.topic for g in grants(Identity(van, Role.VAN))]
        assert all("+" not in t and "#" not in t for t in topics)
        assert sorted(t.rsplit("/", 1)[1] for t in topics) == [
            "connection",
            "factsheet",
            "instant",
            "order",
            "state",
        ]
        assert all(t.startswith(f"fleet/v1/vans/{van}/") for t in topics)
        writes = {
            g.topic.rsplit("/", 1)[1]
            for g in grants(Identity(van, Role.VAN))
            if "write" in g.access
        }
        assert writes == {"state", "connection", "factsheet"}


def test_the_dispatcher_never_reaches_a_van_topic() -> None:
    assert all(
        not g.topic.startswith("fleet/v1/vans/")
        for g in grants(Identity(DISPATCHER_USERNAME, Role.DISPATCHER))
    )


def test_the_acl_file_grants_per_user_and_has_no_pattern_lines() -> None:
    identities = [Identity(CONTROLLER_USERNAME, Role.CONTROLLER)] + [
        Identity(v, Role.VAN) for v in VANS
    ]
    text = render_acl(identities)
    assert "pattern" not in text.split("\n#")[0]
    assert not any(line.startswith("pattern") for line in text.splitlines())
    users = [line.split()[1] for line in text.splitlines() if line.startswith("user ")]
    assert users == [CONTROLLER_USERNAME, *VANS]
    # no grant before the first user line (it would apply to anonymous clients)
    first_user = text.splitlines().index(f"user {CONTROLLER_USERNAME}")
    assert not any(line.startswith("topic") for line in text.splitlines()[:first_user])


# -- the generated set ------------------------------------------------------------------------


def test_van_ids_follow_the_site_config(site: Site) -> None:
    assert site_van_ids(site) == VANS


def _passwd(built: CredentialSet, name: str) -> dict[str, str]:
    text = built.files[f"broker/{name}"].decode()
    return dict(line.split(":", 1) for line in text.splitlines())


def test_every_identity_gets_a_distinct_password_that_the_password_file_accepts(
    site: Site, tmp_path: Path
) -> None:
    built = build(site, tmp_path / "s")
    vans, operators = _passwd(built, "passwd"), _passwd(built, "passwd-operators")
    assert sorted(vans) == sorted(VANS)  # the van listener's logins
    assert sorted(operators) == sorted([CONTROLLER_USERNAME, DISPATCHER_USERNAME, CONSOLE_USERNAME])
    passwords = set()
    for ident in built.identities:
        login = tomllib.loads(built.files[f"{ident.directory}/mqtt.toml"].decode())["mqtt"]
        assert login["username"] == ident.identity.username
        is_van = ident.identity.role is Role.VAN
        assert login["port"] == (1884 if is_van else 1883)  # the listener that knows it
        passwd = vans if is_van else operators
        assert verify_password(passwd[ident.identity.username], login["password"])
        assert len(login["password"]) >= 43  # 256 bits, base64
        passwords.add(login["password"])
    assert len(passwords) == len(built.identities)


def test_each_van_key_derives_from_the_controllers_master_secret(
    site: Site, tmp_path: Path
) -> None:
    built = build(site, tmp_path / "s", key_generation=3)
    master_file = tomllib.loads(built.files["controller/signing-master.key"].decode())
    assert master_file["generation"] == 3
    master = bytes.fromhex(master_file["secret_hex"])
    secrets = set()
    for van in VANS:
        van_file = tomllib.loads(built.files[f"vans/{van}/signing.key"].decode())
        expected = derive_van_key(master, van, generation=3)
        assert van_file["key_id"] == expected.key_id == f"{van}.k3"
        assert bytes.fromhex(van_file["secret_hex"]) == expected.secret
        secrets.add(van_file["secret_hex"])
    assert len(secrets) == len(VANS)
    # a van holds its own key only, never the master
    assert not any("signing-master" in f for f in built.files if f.startswith("vans/"))


def test_tls_material_names_each_identity_in_its_certificate(site: Site, tmp_path: Path) -> None:
    built = build(site, tmp_path / "s", tls=True, broker_hosts=("broker.example", "10.0.0.5"))
    ca = x509.load_pem_x509_certificate(built.files["ca/ca.crt"])
    server = x509.load_pem_x509_certificate(built.files["broker/server.crt"])
    alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    server.verify_directly_issued_by(ca)
    for ident in built.identities:
        cert = x509.load_pem_x509_certificate(built.files[f"{ident.directory}/client.crt"])
        cert.verify_directly_issued_by(ca)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == ident.identity.username
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    conf = built.files["broker/mosquitto.conf"].decode()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
    ):
        assert line in conf.splitlines()


def _listeners(conf: str) -> dict[str, list[str]]:
    """Each listener's settings, by its ``listener`` line."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in conf.splitlines():
        if line.startswith("listener "):
            current = blocks.setdefault(line, [])
        elif not line or line.startswith("#"):
            current = None if not line else current
        elif current is not None:
            current.append(line)
    return blocks


def test_every_listener_has_its_logins_and_binds_a_vans_client_id(
    site: Site, tmp_path: Path
) -> None:
    built = build(site, tmp_path / "s", tls=True, port=2883, van_port=2884, tls_port=2885)
    conf = built.files["broker/mosquitto.conf"].decode()
    broker = (tmp_path / "s" / "broker").absolute()
    assert "per_listener_settings true" in conf.splitlines()
    listeners = _listeners(conf)
    assert list(listeners) == [
        "listener 2883 127.0.0.1",
        "listener 2884 127.0.0.1",
        "listener 2885",
    ]
    operators, vans, tls_listener = listeners.values()
    for block in listeners.values():
        assert "allow_anonymous false" in block
        assert f"acl_file {broker / 'acl'}" in block
    assert f"password_file {broker / 'passwd-operators'}" in operators
    assert "use_username_as_clientid true" not in operators  # concurrent CLIs, the console
    assert f"password_file {broker / 'passwd'}" in vans
    assert "use_username_as_clientid true" in vans
    assert not any(line.startswith("password_file") for line in tls_listener)
    assert "use_username_as_clientid true" in tls_listener


def test_without_tls_no_certificate_or_ca_is_written(site: Site, tmp_path: Path) -> None:
    built = build(site, tmp_path / "s")
    assert not [f for f in built.files if f.endswith((".crt", "client.key", "ca.key"))]
    assert "require_certificate" not in built.files["broker/mosquitto.conf"].decode()


def test_files_are_0600_directories_0700_and_the_manifest_holds_no_secret(
    site: Site, tmp_path: Path
) -> None:
    out = tmp_path / "secrets"
    built = build(site, out, tls=True)
    write_credentials(built, out)
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    manifest = json.loads((out / MANIFEST).read_text())
    assert on_disk == manifest["files"] == sorted([*built.files, MANIFEST])
    for path in out.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    text = (out / MANIFEST).read_text()
    for ident in built.identities:
        login = read_toml(out / ident.directory / "mqtt.toml")["mqtt"]
        assert isinstance(login, dict)
        assert login["password"] not in text
    assert "secret_hex" not in text and "PRIVATE KEY" not in text


def test_an_existing_set_is_kept_unless_forced(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    write_credentials(build(site, out), out)
    before = (out / "broker" / "passwd").read_bytes()
    with pytest.raises(CredentialsError, match="--force"):
        write_credentials(build(site, out), out)
    assert (out / "broker" / "passwd").read_bytes() == before
    write_credentials(build(site, out), out, force=True)
    assert (out / "broker" / "passwd").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["secrets"]  # no staging or backup left


def test_force_never_deletes_files_it_did_not_write(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    write_credentials(build(site, out), out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CredentialsError, match=r"did not write \(notes.txt\)"):
        write_credentials(build(site, out), out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    with pytest.raises(CredentialsError, match="no readable manifest"):
        write_credentials(build(site, other), other, force=True)


def test_a_write_that_fails_half_way_leaves_the_old_set_whole(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    write_credentials(build(site, out), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = build(site, out)
    # "broker/passwd" is a file, so nothing can be written beneath it
    broken.files["broker/passwd/oops"] = b""
    with pytest.raises(CredentialsError, match="cannot write"):
        write_credentials(broken, out, force=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["secrets"]


def test_git_ignores_everything_in_the_directory(site: Site, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    out = repo / "anywhere" / "creds"
    write_credentials(build(site, out, tls=True), out)
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert status.stdout == ""


def test_bad_options_are_refused_with_the_option_named() -> None:
    with pytest.raises(CredentialsError, match="--tls-port"):
        CredentialsOptions(tls_port=70000)
    with pytest.raises(CredentialsError, match="--port and --tls-port must differ"):
        CredentialsOptions(tls=True, port=1883, tls_port=1883)
    with pytest.raises(CredentialsError, match="--port and --van-port must differ"):
        CredentialsOptions(port=1883, van_port=1883)
    with pytest.raises(CredentialsError, match="--van-port and --tls-port must differ"):
        CredentialsOptions(tls=True, van_port=8883)
    CredentialsOptions(van_port=8883)  # no TLS listener: its port is free
    with pytest.raises(CredentialsError, match="--days"):
        CredentialsOptions(days=0)
    with pytest.raises(CredentialsError, match="--host"):
        CredentialsOptions(broker_hosts=("bad host",))


def test_a_van_id_that_is_not_topic_safe_is_refused(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    bad = replace(site.stations[0], id=DepotId("ST/EVIL"))
    with pytest.raises(CredentialsError, match="topic-safe"):
        site_van_ids(replace(site, stations=(bad,)))


# -- the command ------------------------------------------------------------------------------


def _site_toml(tmp_path: Path) -> Path:
    (tmp_path / "x.osm.pbf").write_bytes(b"")
    (tmp_path / "area.geojson").write_text("{}")
    path = tmp_path / "site.toml"
    path.write_text(
        """
[site]
name = "Testville"
osm_file = "x.osm.pbf"
operating_area_file = "area.geojson"
timezone = "Europe/Lisbon"
snap_max_m = 150.0
[shift]
start = "06:00"
end = "20:00"
[warehouse]
id = "WH-TEST"
name = "w"
lon = -8.6
lat = 41.1
vans = 1
[[stations]]
id = "ST-T1"
name = "s"
lon = -8.6
lat = 41.1
vans = 2
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _fleet(
    *args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Ran:
    """Run the `fleet` entry point in-process, as a user would from ``cwd``."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["fleet", *args])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)


def test_the_command_writes_a_set_and_refuses_to_overwrite_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site_file = _site_toml(tmp_path)
    args = ("broker", "credentials", "--site", str(site_file), "--out", "secrets", "--tls")
    first = _fleet(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert first.returncode == 0, first.stderr
    assert "ST-T1-02" in first.stdout and "mosquitto -c" in first.stdout
    manifest = json.loads((tmp_path / "secrets" / MANIFEST).read_text())
    assert [i["username"] for i in manifest["identities"]] == [
        CONTROLLER_USERNAME,
        DISPATCHER_USERNAME,
        CONSOLE_USERNAME,
        "WH-TEST-01",
        "ST-T1-01",
        "ST-T1-02",
    ]
    assert manifest["tls"] is True
    again = _fleet(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert again.returncode == 1
    assert again.stderr.startswith("error:") and "--force" in again.stderr
    forced = _fleet(*args, "--force", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert forced.returncode == 0, forced.stderr


def test_the_command_names_a_bad_site_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text("[site]\nname = 1\n")
    result = _fleet(
        "broker",
        "credentials",
        "--site",
        str(bad),
        "--out",
        "s",
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert result.returncode == 1
    assert str(bad) in result.stderr and "name" in result.stderr
    assert not (tmp_path / "s").exists()


def test_the_command_has_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _fleet(
        "broker", "credentials", "--help", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 0
    assert "--tls" in result.stdout and "--force" in result.stdout


def test_certificates_are_stamped_with_the_given_time(site: Site, tmp_path: Path) -> None:
    built = build(site, tmp_path / "s", tls=True, days=10)
    cert = x509.load_pem_x509_certificate(built.files["vans/ST-T1-01/client.crt"])
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc
    assert (cert.not_valid_after_utc - NOW).days == 10
    assert built.created_utc == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert datetime.now(UTC) > NOW  # the fixture time is in the past: nothing reads a clock
