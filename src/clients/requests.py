"""What a client application may ask for, checked, and what the charm answers (pure).

A request comes from the other side of the `database` relation, so every field is checked
before it reaches KurrentDB: the resource name, the request id (it becomes part of the
login) and the groups in `extra-user-roles`. A refusal carries the relation status the
client sees (data_interfaces v1 `RelationStatus`: code // 1000 is 4 for transitory, 5 for
fatal), naming what is wrong and what is allowed.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass

HTTP_PORT = 2113
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# dpcharmlibs makes request ids from a hash; a login is built from them, so keep them plain.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
# KurrentDB's built-in groups (src/KurrentDB.Core/Services/SystemNames.cs, SystemRoles);
# `admin` and `ops` are what data-integrator users type for them.
SYSTEM_GROUPS = {"$admins": "$admins", "$ops": "$ops", "admin": "$admins", "ops": "$ops"}
ALLOWED_ROLES = "$admins, $ops or group names of letters, digits, '-', '_' and '.'"

WAITING = 4001  # transitory: the user does not exist yet
ROLES_REFUSED = 5001
REQUEST_UNUSABLE = 5002
REFUSALS = (ROLES_REFUSED, REQUEST_UNUSABLE)


@dataclass(frozen=True)
class Refusal:
    """A relation status: what is wrong with a request and how the client can fix it."""

    code: int
    message: str
    resolution: str

    def as_status(self) -> dict[str, object]:
        """The `RelationStatus` dict dpcharmlibs writes to the relation."""
        return {"code": self.code, "message": self.message, "resolution": self.resolution}


class RefusedError(ValueError):
    """A request the charm does not serve; `refusal` is what the client is told."""

    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True)
class ClientUser:
    """The KurrentDB user one request gets."""

    login: str
    groups: tuple[str, ...]
    relation_id: int
    resource: str
    request_id: str | None

    def applied_marker(self, password: str) -> str:
        """Changes whenever KurrentDB must be told something new about this user."""
        text = "\0".join((self.login, ",".join(self.groups), password))
        return hashlib.sha256(text.encode()).hexdigest()


def client_user(
    relation_id: int, resource: object, request_id: object, extra_user_roles: object
) -> ClientUser:
    """The user for one request; RefusedError says why there is none."""
    if not isinstance(resource, str) or not NAME.fullmatch(resource):
        raise RefusedError(
            Refusal(
                REQUEST_UNUSABLE,
                f"resource {_shown(resource)} is not a usable name",
                "ask for 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
            )
        )
    if request_id is not None and (
        not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id)
    ):
        raise RefusedError(
            Refusal(
                REQUEST_UNUSABLE,
                f"request-id {_shown(request_id)} is not usable",
                "send a request-id of up to 32 letters, digits and '-'",
            )
        )
    login = f"relation-{relation_id}" + (f"-{request_id}" if request_id else "")
    return ClientUser(login, groups(extra_user_roles), relation_id, resource, request_id)


def groups(extra_user_roles: object) -> tuple[str, ...]:
    """The KurrentDB groups `extra-user-roles` asks for, in a stable order."""
    if extra_user_roles is None or extra_user_roles == "":
        return ()
    if not isinstance(extra_user_roles, str):
        raise RefusedError(
            Refusal(ROLES_REFUSED, "extra-user-roles is not text", f"use {ALLOWED_ROLES}")
        )
    chosen: set[str] = set()
    for role in (r.strip() for r in extra_user_roles.split(",")):
        if role in SYSTEM_GROUPS:
            chosen.add(SYSTEM_GROUPS[role])
        elif NAME.fullmatch(role):
            chosen.add(role)
        else:
            raise RefusedError(
                Refusal(
                    ROLES_REFUSED,
                    f"extra-user-roles: {_shown(role)} is not a KurrentDB group",
                    f"use {ALLOWED_ROLES}",
                )
            )
    return tuple(sorted(chosen))


def endpoints(hosts: list[str] | tuple[str, ...]) -> str:
    """`host:2113` of every node, comma-separated, in a stable order."""
    return ",".join(f"{host}:{HTTP_PORT}" for host in sorted(hosts))


def connection_string(login: str, password: str, hosts: list[str] | tuple[str, ...]) -> str:
    """What the official KurrentDB clients take: several hosts are gossip seeds."""
    user = urllib.parse.quote(login, safe="")
    secret = urllib.parse.quote(password, safe="")
    return f"kurrentdb://{user}:{secret}@{endpoints(hosts)}?tls=true&tlsVerifyCert=true"


def _shown(value: object) -> str:
    """A client's value, quoted and cut short, for a status message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
