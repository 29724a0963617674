"""The one HTTP client the charm uses to talk to a KurrentDB node (contract §4, §6).

Standard library only: every hook pays the import cost of what the charm imports, and a few
small JSON requests do not need an HTTP framework. Each call opens one connection and closes it,
so a hook never leaves a socket behind. Errors form a small tree under `KurrentDBError` so that
callers can tell "node not up yet" from "wrong password" from "server said no". No message or
repr ever carries a password or the Authorization header.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

# VNodeState spellings (contract §4.2); /info sends them lower-cased and we map them back.
VNODE_STATES = (
    "Initializing", "DiscoverLeader", "Unknown", "PreReplica", "CatchingUp", "Clone", "Follower",
    "PreLeader", "Leader", "Manager", "ShuttingDown", "Shutdown", "ReadOnlyLeaderless",
    "PreReadOnlyReplica", "ReadOnlyReplica", "ResigningLeader",
)  # fmt: skip
_STATE_BY_LOWER = {s.lower(): s for s in VNODE_STATES}
_T = TypeVar("_T")


class KurrentDBError(Exception):
    """Any failure talking to KurrentDB; `method`, `path` and `status` say where it happened."""

    def __init__(self, message: str, *, method: str, path: str, status: int | None = None):
        super().__init__(message)
        self.method, self.path, self.status = method, path, status


class KurrentDBUnreachable(KurrentDBError):  # noqa: N818 (the name reads better than ...Error)
    """No HTTP answer at all; `reason` is refused, timeout, dns, tls or connection."""

    def __init__(self, message: str, *, reason: str, method: str, path: str):
        super().__init__(message, method=method, path=path)
        self.reason = reason


class KurrentDBAuthError(KurrentDBError):
    """401/403: bad credentials, or the user lacks the group the endpoint needs."""


class KurrentDBNotFound(KurrentDBError):  # noqa: N818
    """404: no such user, or the endpoint is not registered (e.g. DisableAdminUi)."""


class KurrentDBConflict(KurrentDBError):  # noqa: N818
    """409: e.g. creating a user that already exists."""


class KurrentDBAPIError(KurrentDBError):
    """Any other non-2xx answer, or a 2xx answer whose body is not what the contract says."""


_ERROR_BY_STATUS: dict[int, type[KurrentDBError]] = {
    401: KurrentDBAuthError,
    403: KurrentDBAuthError,
    404: KurrentDBNotFound,
    409: KurrentDBConflict,
}


@dataclass(frozen=True)
class NodeInfo:
    """`GET /info`; `state` uses the VNodeState spelling ("Leader", not "leader")."""

    db_version: str
    state: str
    features: dict[str, bool]
    authentication_type: str | None


@dataclass(frozen=True)
class GossipMember:
    """One `members[]` entry of `GET /gossip`."""

    instance_id: str
    state: str
    is_alive: bool
    http_host: str
    http_port: int
    internal_tcp_host: str | None
    internal_tcp_port: int
    internal_secure_tcp_port: int
    writer_checkpoint: int
    chaser_checkpoint: int
    last_commit_position: int
    epoch_position: int
    epoch_number: int
    epoch_id: str
    node_priority: int
    is_read_only_replica: bool
    timestamp: str

    @property
    def replication_port(self) -> int:
        """The replication port: the secure one in a secure cluster, where the plain one is 0."""
        return self.internal_secure_tcp_port or self.internal_tcp_port


@dataclass(frozen=True)
class ClusterGossip:
    """`GET /gossip`: the cluster as the answering node sees it."""

    members: tuple[GossipMember, ...]
    server_ip: str
    server_port: int

    @property
    def alive_members(self) -> tuple[GossipMember, ...]:
        """The members the answering node currently considers alive."""
        return tuple(m for m in self.members if m.is_alive)

    @property
    def leader(self) -> GossipMember | None:
        """The alive Leader, or None while there is none (election, no quorum)."""
        return next((m for m in self.alive_members if m.state == "Leader"), None)


@dataclass(frozen=True)
class User:
    """A user from `GET /users/{login}`."""

    login_name: str
    full_name: str
    groups: tuple[str, ...]
    disabled: bool


def _node_info(body: Any) -> NodeInfo:
    state = str(body["state"])
    return NodeInfo(
        db_version=str(body["dbVersion"]),
        state=_STATE_BY_LOWER.get(state.lower(), state),
        features={str(k): bool(v) for k, v in (body.get("features") or {}).items()},
        authentication_type=(body.get("authentication") or {}).get("type"),  # null when insecure
    )


def _gossip(body: Any) -> ClusterGossip:
    def member(m: dict[str, Any]) -> GossipMember:
        return GossipMember(
            m["instanceId"], m["state"], bool(m["isAlive"]), m["httpEndPointIp"],
            int(m["httpEndPointPort"]), m.get("internalTcpIp"), int(m.get("internalTcpPort") or 0),
            int(m.get("internalSecureTcpPort") or 0), int(m["writerCheckpoint"]),
            int(m["chaserCheckpoint"]), int(m["lastCommitPosition"]), int(m["epochPosition"]),
            int(m["epochNumber"]), str(m["epochId"]), int(m["nodePriority"]),
            bool(m["isReadOnlyReplica"]), str(m.get("timeStamp") or ""),
        )  # fmt: skip

    members = tuple(member(m) for m in body["members"])
    return ClusterGossip(members, str(body["serverIp"]), int(body["serverPort"]))


def _user(body: Any) -> User:
    d = body["data"]  # the server wraps the user: {"data": {...}, "success": true, ...}
    groups = tuple(str(g) for g in d["groups"] or ())
    return User(str(d["loginName"]), str(d["fullName"] or ""), groups, bool(d["disabled"]))


class KurrentDBClient:
    """A client for one node; cheap to build, holds no connection between calls."""

    def __init__(
        self,
        url: str = "https://localhost:2113",
        *,
        ca_pem: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ):
        parts = urllib.parse.urlsplit(url)
        if parts.username or parts.password:  # never echo such a url: it holds a secret
            raise ValueError("pass credentials as username/password, not in the url")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like https://host:2113, not {url!r}")
        self.url, self.username, self.timeout = url.rstrip("/"), username, timeout
        self._host, self._port = parts.hostname, parts.port or 2113
        self._auth: str | None = None
        self._secrets: tuple[str, ...] = ()
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._auth, self._secrets = f"Basic {token}", (password or "", token)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:  # with cadata, trust exactly that CA; hostname checking stays on
                self._ssl = ssl.create_default_context(cadata=ca_pem or None)
            except ssl.SSLError as e:
                raise ValueError(f"ca_pem holds no usable CA certificate ({e.reason})") from None

    def __repr__(self) -> str:
        return f"KurrentDBClient(url={self.url!r}, username={self.username!r})"

    def info(self) -> NodeInfo:
        """Version, role and features of the node (anonymous)."""
        return self._get("/info", _node_info)

    def gossip(self) -> ClusterGossip:
        """Cluster membership as this node sees it (anonymous by default)."""
        return self._get("/gossip", _gossip)

    def is_live(self) -> bool:
        """`/health/live`: True on 204, False on 503 (still starting, or shutting down)."""
        return self._request("GET", "/health/live", ok=(204, 503))[0] == 204

    def get_user(self, login: str) -> User | None:
        """Return the user, or None if there is none ($admins, or the user itself)."""
        try:
            return self._get(f"/users/{_quote(login)}", _user)
        except KurrentDBNotFound:
            return None

    def create_user(self, login: str, full_name: str, groups: list[str], password: str) -> None:
        """Create a user ($admins); KurrentDBConflict if it already exists."""
        body = {"LoginName": login, "FullName": full_name, "Groups": groups, "Password": password}
        self._request("POST", "/users", body=body, secrets=(password,))

    def reset_password(self, login: str, new_password: str) -> None:
        """Set a password without knowing the old one ($admins); KurrentDBNotFound if no user."""
        path = f"/users/{_quote(login)}/command/reset-password"
        self._request("POST", path, body={"NewPassword": new_password}, secrets=(new_password,))

    def delete_user(self, login: str) -> None:
        """Delete a user ($admins); KurrentDBNotFound if there is none."""
        self._request("DELETE", f"/users/{_quote(login)}")

    def resign_node(self) -> None:
        """Ask the leader to step down; other nodes ignore it and still answer 200 (§4.5)."""
        self._request("POST", "/admin/node/resign")

    def set_node_priority(self, priority: int) -> None:
        """Set the election priority, in memory only: a restart reverts to the config."""
        self._request("POST", f"/admin/node/priority/{int(priority)}")

    def reload_config(self) -> None:
        """Reload log level and certificates, as SIGHUP does (§6.4)."""
        self._request("POST", "/admin/reloadconfig")

    def shutdown(self) -> None:
        """Ask the node process to exit."""
        self._request("POST", "/admin/shutdown")

    def _get(self, path: str, parse: Callable[[Any], _T]) -> _T:
        status, raw = self._request("GET", path)
        # A proxy's HTML page or some other server: say so here rather than fail later.
        try:
            body = json.loads(raw)
        except ValueError:
            message = f"GET {path}: HTTP {status} with a body that is not JSON"
            raise KurrentDBAPIError(message, method="GET", path=path, status=status) from None
        try:
            return parse(body)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            message = f"GET {path}: HTTP {status} with JSON of an unexpected shape ({e!r})"
            raise KurrentDBAPIError(message, method="GET", path=path, status=status) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ok: tuple[int, ...] = (),
        secrets: tuple[str, ...] = (),
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body) on 2xx or a status in `ok`, else raise."""
        headers = {"Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn = (
            http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl
            )
            if self._ssl
            else http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        )
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as e:
            reason, why = _why_unreachable(e, self.timeout)
            message = f"{method} {path} on {self._host}:{self._port}: {why}"
            raise KurrentDBUnreachable(message, reason=reason, method=method, path=path) from e
        finally:
            conn.close()
        if 200 <= status < 300 or status in ok:
            return status, raw
        error = _ERROR_BY_STATUS.get(status, KurrentDBAPIError)
        detail = raw[:4096].decode(errors="replace")
        for secret in (*self._secrets, *secrets):  # in case a server or proxy echoes the request
            detail = detail.replace(secret, "***") if secret else detail
        detail = detail.strip()[:200]  # redact before cutting, so no partial secret is left
        message = f"{method} {path}: HTTP {status}" + (f": {detail}" if detail else "")
        if error is KurrentDBAuthError and self.username is None:
            message += " (no credentials given)"
        elif error is KurrentDBAuthError:
            message += f" (user {self.username!r} was rejected or lacks the required group)"
        raise error(message, method=method, path=path, status=status)


def _why_unreachable(e: Exception, timeout: float) -> tuple[str, str]:
    """Name the transport failure; the order matters, as these are all OSError subclasses."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return "tls", f"TLS verification failed ({e.verify_message})"
    if isinstance(e, ssl.SSLError):
        return "tls", f"TLS handshake failed ({e.reason or e})"
    if isinstance(e, TimeoutError):
        return "timeout", f"timed out after {timeout}s"
    if isinstance(e, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(e, socket.gaierror):
        return "dns", f"DNS lookup failed ({e.strerror})"
    return "connection", f"connection failed ({type(e).__name__}: {e})"


def _quote(login: str) -> str:
    return urllib.parse.quote(login, safe="")
