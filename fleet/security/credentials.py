"""Who logs in to the broker, with what, and where each secret goes (``fleet broker credentials``).

:func:`build_credentials` makes every file in memory — per-identity MQTT passwords, the
Mosquitto password file and ACL, a broker config that uses them, the signing keys, and with
TLS a throwaway CA and certificates; :func:`write_credentials` then writes the whole set into
one directory atomically (a staging directory renamed into place), every file ``0600`` and
every directory ``0700``, refusing to replace an existing set unless told to.

Layout of the output directory (``docs/security.md``, "Credentials")::

    manifest.json                    what was generated, for whom (no secrets)
    .gitignore                       "*": the directory never reaches a commit
    broker/passwd                    the vans' passwords ($7$), for the van listener
    broker/passwd-operators          the controller's, dispatcher's and console's passwords
    broker/acl                       the Mosquitto ACL (every listener)
    broker/mosquitto.conf            a broker config that uses them (runs as is)
    broker/ca.crt, server.crt, server.key                        (--tls)
    ca/ca.crt, ca/ca.key             the CA; keep ca.key offline      (--tls)
    controller/mqtt.toml             the controller's login
    controller/signing-master.key    the master secret every van key derives from
    dispatcher/mqtt.toml             the CLI's login (talks to the controller only)
    console/mqtt.toml                `fleet console`'s login (the CLI's, and reads the vans)
    vans/<van_id>/mqtt.toml          each van's login
    vans/<van_id>/signing.key        each van's own command-signing key
    <identity>/ca.crt, client.crt, client.key                    (--tls)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fleet.model.site import Site
from fleet.protocol.errors import TopicError
from fleet.protocol.signing import MIN_KEY_BYTES, derive_van_key
from fleet.protocol.topics import check_van_id
from fleet.security import tls
from fleet.security.acl import Identity, Role, render_acl
from fleet.security.errors import CredentialsError
from fleet.security.passwords import password_file_line

CONTROLLER_USERNAME = "fleet-controller"
DISPATCHER_USERNAME = "fleet-dispatcher"
CONSOLE_USERNAME = "fleet-console"
PASSWORD_BYTES = 32  # 256 random bits per password
MASTER_SECRET_BYTES = 32
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FILE_MODE = 0o600
DIR_MODE = 0o700

DEFAULT_BROKER_HOSTS = ("localhost", "127.0.0.1")

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class CredentialsOptions:
    """What to generate; the defaults suit a broker on this machine."""

    tls: bool = False
    broker_hosts: tuple[str, ...] = DEFAULT_BROKER_HOSTS  # names clients use for it
    port: int = 1883  # operator listener: controller, dispatcher, console (passwords)
    listen: str = "127.0.0.1"  # address of the operator listener
    van_port: int = 1884  # van listener (passwords; client id forced to the van id)
    van_listen: str = "127.0.0.1"  # address of the van listener; "" = every interface
    tls_port: int = 8883  # TLS listener (client certificates)
    tls_listen: str = ""  # address of the TLS listener; "" = every interface
    days: int = 365  # validity of certificates
    key_generation: int = 1  # raise to rotate every van's signing key

    def __post_init__(self) -> None:
        ports = {"port": self.port, "van_port": self.van_port, "tls_port": self.tls_port}
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise CredentialsError(f"--{name.replace('_', '-')} must be 1..65535, got {port}")
        used = ports if self.tls else {k: v for k, v in ports.items() if k != "tls_port"}
        names = sorted(used, key=list(ports).index)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                if used[first] == used[second]:
                    raise CredentialsError(
                        f"--{first.replace('_', '-')} and --{second.replace('_', '-')} must "
                        f"differ (both {used[first]}): each listener needs its own port"
                    )
        if not self.broker_hosts or any(
            not h or any(c.isspace() for c in h) for h in self.broker_hosts
        ):
            raise CredentialsError(
                f"--host must name the broker (a DNS name or address), got {self.broker_hosts}"
            )
        if not 1 <= self.days <= 3650:
            raise CredentialsError(f"--days must be 1..3650, got {self.days}")
        if self.key_generation < 1:
            raise CredentialsError(f"--key-generation must be >= 1, got {self.key_generation}")


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    identity: Identity
    directory: str  # relative to the output directory
    files: tuple[str, ...]  # relative to the output directory


@dataclass(frozen=True)
class CredentialSet:
    """Every file of one generation, in memory: relative path → bytes."""

    site: str
    created_utc: str
    tls: bool
    identities: tuple[IdentityFiles, ...]
    files: dict[str, bytes] = field(repr=False)

    def manifest(self) -> dict[str, object]:
        return {
            "format": MANIFEST_VERSION,
            "generator": "fleet broker credentials",
            "site": self.site,
            "created_utc": self.created_utc,
            "tls": self.tls,
            "identities": [
                {
                    "username": i.identity.username,
                    "role": i.identity.role.value,
                    "directory": i.directory,
                    "files": list(i.files),
                }
                for i in self.identities
            ],
            "files": sorted([*self.files, MANIFEST]),
        }


def site_van_ids(site: Site) -> list[str]:
    """Every van of the site, ``f"{depot_id}-{k:02d}"``: the warehouse's first, then by station."""
    ids = [f"{d.id}-{k:02d}" for d in site.depots for k in range(1, d.vans + 1)]
    for van_id in ids:
        try:
            check_van_id(van_id)
        except TopicError as exc:
            raise CredentialsError(
                f"{site.config_file}: van id {van_id!r} is not topic-safe: {exc}"
            ) from exc
    return ids


def key_file_text(van_id: str, key_id: str, secret: bytes) -> str:
    """A van's signing key file (read by the firmware bridge's ``--key-file``)."""
    return (
        f"# Command-signing key of van {van_id} (HMAC-SHA256; docs/security.md).\n"
        "# Secret: keep it 0600 on the van only, never commit it.\n"
        f'key_id = "{key_id}"\n'
        f'secret_hex = "{secret.hex()}"\n'
    )


def master_key_text(secret: bytes, generation: int) -> str:
    """The controller's master secret: every van's key is derived from it."""
    return (
        "# Master command-signing secret of the controller (docs/security.md).\n"
        "# Every van key is HMAC-SHA256(master, van id, generation); whoever holds this\n"
        "# can command every van. Secret: 0600 on the controller host only, never commit it.\n"
        f"generation = {generation}\n"
        f'secret_hex = "{secret.hex()}"\n'
    )


def _mqtt_toml(identity: Identity, password: str, options: CredentialsOptions, site: str) -> str:
    lines = [
        f"# MQTT login of {identity.username} ({identity.role.value}) for site {site}.",
        "# Secret: keep it 0600, never commit it. Paths are relative to this file.",
        *(
            [
                "# Client id: your van id (the broker forces it to the username on the van",
                "# and TLS listeners; docs/protocol.md section 1.1).",
            ]
            if identity.role is Role.VAN
            else [
                "# Client id: your own, unique per connection (e.g. cli-<16 hex digits>);",
                "# on the TLS listener the broker forces it to the username.",
            ]
        ),
        "[mqtt]",
        f'host = "{options.broker_hosts[0]}"',
        f"port = {options.van_port if identity.role is Role.VAN else options.port}",
        f'username = "{identity.username}"',
        f'password = "{password}"',
    ]
    if options.tls:
        lines += [
            "",
            "# The TLS listener takes the identity from client.crt (no password needed there).",
            "[tls]",
            f"port = {options.tls_port}",
            'ca_file = "ca.crt"',
            'cert_file = "client.crt"',
            'key_file = "client.key"',
        ]
    return "\n".join(lines) + "\n"


def _listener_security(broker_dir: Path, passwd: str | None) -> list[str]:
    """The per-listener settings every listener repeats (``per_listener_settings true``)."""
    return [
        "allow_anonymous false",
        *([f"password_file {broker_dir / passwd}"] if passwd else []),
        f"acl_file {broker_dir / 'acl'}",
    ]


def _broker_conf(
    options: CredentialsOptions, broker_dir: Path, site: str, created: str, *, as_root: bool
) -> str:
    lines = [
        f"# Mosquitto 2 config for site {site}, generated by `fleet broker credentials`",
        f"# on {created}. Run: mosquitto -c {broker_dir / 'mosquitto.conf'}",
        "# Every client logs in; each user reaches only the topics the ACL lists. Client ids",
        "# are one namespace across listeners: whoever connects with a client id in use throws",
        "# its holder off (and may take its session), so a van's login only ever gets a client",
        "# id equal to its user name (docs/security.md, 'Client ids').",
        *(
            [
                "# Generated as root: these 0600 files are root's, so the broker stays root",
                "# (without this line it drops to user 'mosquitto' and cannot read them; or",
                "# chown them to that user and delete this line; docs/security.md).",
                "user root",
            ]
            if as_root
            else []
        ),
        "# Logins, ACL and anonymous access are set for each listener below.",
        "per_listener_settings true",
        "persistence false",
        "set_tcp_nodelay true",
        # the limits of docs/security.md: the largest message is a dispatcher's plan
        "max_packet_size 67108864",
        "max_queued_messages 200000",
        "max_queued_bytes 268435456",
        "max_keepalive 120",
        "",
        "# Operators: the controller, the dispatcher CLI and the console. Their client ids are",
        "# their own (concurrent CLIs, the console's two connections); no van's password opens",
        "# this listener, so no van can claim one of these ids or any other here.",
        f"listener {options.port} {options.listen}".rstrip(),
        *_listener_security(broker_dir, "passwd-operators"),
        "",
        "# Vans with passwords: the client id is forced to the user name (the van id), so a",
        "# van can neither throw another client off nor take over another van's session.",
        f"listener {options.van_port} {options.van_listen}".rstrip(),
        *_listener_security(broker_dir, "passwd"),
        "use_username_as_clientid true",
    ]
    if options.tls:
        lines += [
            "",
            "# TLS with client certificates: vans over cellular. The certificate's CN is the",
            "# username (no password is asked), and the client id is forced to the username, so",
            "# here too no client can take over another's session (one session per identity).",
            f"listener {options.tls_port} {options.tls_listen}".rstrip(),
            *_listener_security(broker_dir, None),
            f"cafile {broker_dir / 'ca.crt'}",
            f"certfile {broker_dir / 'server.crt'}",
            f"keyfile {broker_dir / 'server.key'}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
        ]
    return "\n".join(lines) + "\n"


def _password(random_bytes: RandomBytes) -> str:
    return base64.urlsafe_b64encode(random_bytes(PASSWORD_BYTES)).decode("ascii").rstrip("=")


def build_credentials(
    site: Site,
    out_dir: Path,
    options: CredentialsOptions,
    *,
    now: datetime,
    random_bytes: RandomBytes = os.urandom,
    progress: Callable[[str, float], None] | None = None,
    run_as_root: bool | None = None,
) -> CredentialSet:
    """Every file for ``site``, in memory. ``out_dir`` is only used to write absolute paths
    into the broker config; ``now`` stamps the manifest and the certificates. ``run_as_root``
    (default: whether this process is root) adds ``user root`` to the broker config, so that
    the printed ``mosquitto -c`` command works as printed (docs/security.md)."""
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    van_ids = site_van_ids(site)
    identities = [
        Identity(CONTROLLER_USERNAME, Role.CONTROLLER),
        Identity(DISPATCHER_USERNAME, Role.DISPATCHER),
        Identity(CONSOLE_USERNAME, Role.CONSOLE),
        *(Identity(v, Role.VAN) for v in van_ids),
    ]
    if len({i.username for i in identities}) != len(identities):
        raise CredentialsError(
            f"{site.config_file}: a van id clashes with {CONTROLLER_USERNAME!r}, "
            f"{DISPATCHER_USERNAME!r} or {CONSOLE_USERNAME!r}, or two vans share an id"
        )
    broker_dir = out_dir.absolute() / "broker"
    files: dict[str, bytes] = {".gitignore": b"# secrets: never commit anything here\n*\n"}
    master = random_bytes(MASTER_SECRET_BYTES)
    if len(master) < MIN_KEY_BYTES:
        raise CredentialsError(f"the random source gave {len(master)} bytes for the master key")

    ca: tls.CertificateAuthority | None = None
    if options.tls:
        ca = tls.make_ca(site.name, now, days=options.days)
        server = tls.issue_server_cert(ca, options.broker_hosts, now, days=options.days)
        files["ca/ca.crt"] = ca.cert_pem
        files["ca/ca.key"] = ca.key_pem
        files["broker/ca.crt"] = ca.cert_pem
        files["broker/server.crt"] = server.cert_pem
        files["broker/server.key"] = server.key_pem

    van_passwd: list[str] = []  # the van listener's logins
    operator_passwd: list[str] = []  # the operator listener's
    listed: list[IdentityFiles] = []
    for n, identity in enumerate(identities):
        if progress is not None:
            progress(f"credentials for {identity.username}", n / len(identities))
        if identity.role is Role.VAN:
            directory = f"vans/{identity.username}"
        else:
            directory = identity.role.value
        password = _password(random_bytes)
        passwd = van_passwd if identity.role is Role.VAN else operator_passwd
        passwd.append(password_file_line(identity.username, password))
        own = {
            f"{directory}/mqtt.toml": _mqtt_toml(identity, password, options, site.name).encode()
        }
        if identity.role is Role.CONTROLLER:
            own[f"{directory}/signing-master.key"] = master_key_text(
                master, options.key_generation
            ).encode()
        elif identity.role is Role.VAN:
            key = derive_van_key(master, identity.username, generation=options.key_generation)
            own[f"{directory}/signing.key"] = key_file_text(
                identity.username, key.key_id, key.secret
            ).encode()
        if ca is not None:
            client = tls.issue_client_cert(ca, identity.username, now, days=options.days)
            own[f"{directory}/ca.crt"] = ca.cert_pem
            own[f"{directory}/client.crt"] = client.cert_pem
            own[f"{directory}/client.key"] = client.key_pem
        files.update(own)
        listed.append(IdentityFiles(identity, directory, tuple(own)))

    files["broker/passwd"] = ("\n".join(van_passwd) + "\n").encode()
    files["broker/passwd-operators"] = ("\n".join(operator_passwd) + "\n").encode()
    files["broker/acl"] = render_acl(
        identities, header=f"site {site.name}, generated {created} by `fleet broker credentials`"
    ).encode()
    as_root = os.geteuid() == 0 if run_as_root is None else run_as_root
    files["broker/mosquitto.conf"] = _broker_conf(
        options, broker_dir, site.name, created, as_root=as_root
    ).encode()
    if progress is not None:
        progress("credentials built", 1.0)
    return CredentialSet(site.name, created, options.tls, tuple(listed), files)


# -- writing ------------------------------------------------------------------------------


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _make_dirs(root: Path, directory: Path) -> None:
    """Create ``directory`` under ``root`` one level at a time, each ``0700``."""
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        if not current.is_dir():
            current.mkdir(mode=DIR_MODE)


def _existing_files(out_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if not p.is_dir())


def _check_replaceable(out_dir: Path, force: bool) -> bool:
    """True when ``out_dir`` exists and will be replaced; raises when it must not be."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise CredentialsError(f"{out_dir}: exists and is not a directory")
    existing = _existing_files(out_dir)
    if not existing:
        return True
    if not force:
        raise CredentialsError(
            f"{out_dir}: already holds {len(existing)} file(s) (e.g. {existing[0]}); "
            "pass --force to replace the credentials there, or choose another --out"
        )
    manifest_file = out_dir / MANIFEST
    try:
        listed = set(json.loads(manifest_file.read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(
            f"{manifest_file}: --force replaces only a directory made by `fleet broker "
            f"credentials`, and this one has no readable manifest ({exc})"
        ) from exc
    foreign = [f for f in existing if f not in listed]
    if foreign:
        raise CredentialsError(
            f"{out_dir}: holds files `fleet broker credentials` did not write "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "move them away or choose another --out"
        )
    return True


def write_credentials(credentials: CredentialSet, out_dir: Path, *, force: bool = False) -> Path:
    """Write the set into ``out_dir`` all at once; returns the directory written.

    The files go into a private staging directory beside ``out_dir`` which is then renamed
    into place, so a reader sees either the old set or the new one, never a mix; an existing
    set is replaced only with ``force`` and only if it holds nothing but our own files.
    """
    out_dir = out_dir.absolute()
    replace = _check_replaceable(out_dir, force)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    except OSError as exc:
        raise CredentialsError(f"{out_dir.parent}: cannot create a directory there: {exc}") from exc
    backup: Path | None = None
    try:
        os.chmod(staging, DIR_MODE)
        manifest = json.dumps(credentials.manifest(), indent=2) + "\n"
        for rel, data in [*credentials.files.items(), (MANIFEST, manifest.encode())]:
            path = staging / rel
            _make_dirs(staging, path.parent)
            _write_file(path, data)
        if replace:
            backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, backup / "set")
        try:
            os.rename(staging, out_dir)
        except OSError:
            if backup is not None:
                os.rename(backup / "set", out_dir)
                backup.rmdir()
                backup = None
            raise
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise CredentialsError(f"{out_dir}: cannot write the credentials: {exc}") from exc
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return out_dir


def identity_summary(credentials: CredentialSet) -> Sequence[tuple[str, str, str]]:
    """(username, role, directory) for each identity, for the CLI's table."""
    return [
        (i.identity.username, i.identity.role.value, i.directory) for i in credentials.identities
    ]
