"""Broker credentials, access control and TLS material for a site (``fleet broker credentials``).

Pure builders (:mod:`~fleet.security.passwords`, :mod:`~fleet.security.acl`,
:mod:`~fleet.security.tls`) make file contents in memory; :mod:`~fleet.security.credentials`
decides who gets what and writes the set atomically. The threat model these serve is in
``docs/security.md``.
"""

from fleet.security.acl import Identity, Role, render_acl
from fleet.security.credentials import (
    CONTROLLER_USERNAME,
    DISPATCHER_USERNAME,
    CredentialSet,
    CredentialsOptions,
    build_credentials,
    site_van_ids,
    write_credentials,
)
from fleet.security.errors import CredentialsError
from fleet.security.passwords import hash_password, verify_password

__all__ = [
    "CONTROLLER_USERNAME",
    "DISPATCHER_USERNAME",
    "CredentialSet",
    "CredentialsError",
    "CredentialsOptions",
    "Identity",
    "Role",
    "build_credentials",
    "hash_password",
    "render_acl",
    "site_van_ids",
    "verify_password",
    "write_credentials",
]
