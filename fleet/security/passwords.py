"""Mosquitto 2 password-file entries: ``user:$7$iterations$salt$hash`` (PBKDF2-HMAC-SHA512).

This is the format ``mosquitto_passwd`` writes and Mosquitto 2.0 reads: a 12-byte random
salt, 64 bytes of PBKDF2-HMAC-SHA512 output, both in standard base64 with padding, and the
iteration count in decimal. Mosquitto's default of 101 iterations is kept: every password
we generate is 256 random bits, which no number of iterations could make weaker or stronger
against guessing, while more iterations would cost the broker CPU on every van's reconnect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENTRY_RE = re.compile(r"^\$7\$(\d{1,9})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$...`` hash of ``password`` (a fresh random salt unless one is given)."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a salt has {SALT_BYTES} bytes, got {len(salt)}")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(entry: str, password: str) -> bool:
    """Does ``password`` match a ``$7$`` hash (as Mosquitto would check it)?"""
    match = _ENTRY_RE.match(entry)
    if match is None:
        raise ValueError(f"not a Mosquitto $7$ password hash: {entry[:12]!r}...")
    try:
        salt = base64.b64decode(match.group(2), validate=True)
        expected = base64.b64decode(match.group(3), validate=True)
    except binascii.Error as exc:
        raise ValueError("the salt or hash of a $7$ entry is not base64") from exc
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode("utf-8"), salt, int(match.group(1)), dklen=len(expected)
    )
    return hmac.compare_digest(digest, expected)


def password_file_line(username: str, password: str, *, salt: bytes | None = None) -> str:
    """One line of a Mosquitto password file (without the newline)."""
    if not _USERNAME_RE.match(username):
        raise ValueError(f"username {username!r} must match {_USERNAME_RE.pattern}")
    return f"{username}:{hash_password(password, salt=salt)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
