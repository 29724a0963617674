"""System users' passwords: generate them, read the user's `system-users` secret, rotate.

KurrentDB takes `KURRENTDB_DEFAULT_*_PASSWORD` only when it first creates its users, so a
later change goes through the users API (`reset-password`) and never through the Pebble
environment, which would restart the node.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import ops

from config import ConfigError
from state import SYSTEM_USERS, SystemPasswords

if TYPE_CHECKING:
    from kurrentdb_api import KurrentDBClient

logger = logging.getLogger(__name__)

_ALPHABET = string.ascii_letters + string.digits
_PASSWORD_LENGTH = 32


def generate_password() -> str:
    """A random password of letters and digits (safe in URLs, shells and YAML)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(_PASSWORD_LENGTH))


def initial_passwords(chosen: Mapping[str, str]) -> SystemPasswords:
    """Passwords for a new deployment: the user's where given, generated otherwise."""
    passwords = {user: chosen.get(user) or generate_password() for user in SYSTEM_USERS}
    return SystemPasswords(current=dict(passwords), initial=dict(passwords))


def read_system_users(model: ops.Model, secret_id: str | None) -> dict[str, str]:
    """The passwords the user chose in the `system-users` secret (empty when unset)."""
    if not secret_id:
        return {}
    try:
        content = model.get_secret(id=secret_id).get_content(refresh=True)
    except (ops.SecretNotFoundError, ops.ModelError):
        raise ConfigError(
            "system-users",
            secret_id,
            "secret not found or not granted; run "
            f"`juju grant-secret {secret_id} {model.app.name}`",
        ) from None
    unknown = sorted(set(content) - set(SYSTEM_USERS))
    if unknown:
        raise ConfigError(
            "system-users", f"keys {', '.join(unknown)}", "the secret may hold keys admin, ops"
        )
    empty = sorted(user for user, password in content.items() if not password.strip())
    if empty:
        raise ConfigError(
            "system-users", f"empty {', '.join(empty)}", "passwords must not be empty"
        )
    return dict(content)


def rotate_passwords(
    passwords: SystemPasswords,
    wanted: Mapping[str, str],
    client_for: Callable[[str], KurrentDBClient],
    save: Callable[[SystemPasswords], None],
) -> SystemPasswords:
    """Reset the passwords that differ from `wanted` through the users API.

    `client_for(admin_password)` gives an API client authenticated as admin. `ops` goes
    first and `admin` last, so the admin password used to authenticate is the stored one
    for as long as possible; each success is saved at once so a failure halfway keeps
    what was done. Raises the client's `KurrentDBError` on failure.
    """
    for user in sorted(wanted, key=lambda u: u == "admin"):
        if passwords.current[user] == wanted[user]:
            continue
        client_for(passwords.current["admin"]).reset_password(user, wanted[user])
        passwords = passwords.with_password(user, wanted[user])
        save(passwords)
        logger.info("Rotated the password of the KurrentDB user %r", user)
    return passwords
