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
import re
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
# A node's answers are small JSON documents; anything larger is not what the contract says.
MAX_BODY_BYTES = 8 * 2**20
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
    # The node's own HTTP endpoint (`NodeHostAdvertiseAs`), whatever it advertises to
    # clients in `http_host` (`AdvertiseHostToClientAs`): ClientClusterInfo.cs.
    internal_http_host: str | None = None
    internal_http_port: int = 0
    db_version: str = ""  # `esVersion` on the wire

    @property
    def node_host(self) -> str:
        """The name the node knows itself by, which the charm identifies nodes with."""
        return self.internal_http_host or self.http_host

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


@dataclass(frozen=True)
class LastScavenge:
    """`GET /admin/scavenge/last`: the node's latest scavenge since it started.

    `result` is Unknown (none yet), InProgress, Success, Stopped or Errored
    (`ClientMessage.ScavengeDatabaseGetLastResponse.ScavengeResult`); `scavenge_id` is
    None while no scavenge ran (the server sends the empty GUID then).
    """

    scavenge_id: str | None
    result: str


@dataclass(frozen=True)
class AutoScavengeStatus:
    """`GET /auto-scavenge/status`: the cluster's auto-scavenge process, as its leader runs it.

    `state` is NotConfigured, Waiting, InProgress, Pausing or Paused
    (`src/KurrentDB.AutoScavenge/Domain/AutoScavengeStatusResponse.cs`); `schedule` the
    CRON expression, None until configured; `seconds_until_next_cycle` None when there is
    no next cycle, 0 while one runs.
    """

    state: str
    schedule: str | None
    seconds_until_next_cycle: float | None

    @property
    def paused(self) -> bool:
        """Paused: no node scavenge runs and none will start until resumed."""
        return self.state == "Paused"


# The scavenge states a node reports (ScavengeDatabaseGetLastResponse.ScavengeResult), and
# the auto-scavenge process's (AutoScavengeStatusResponse.Status), both sent as names.
SCAVENGE_RESULTS = ("Unknown", "InProgress", "Success", "Stopped", "Errored")
AUTO_SCAVENGE_STATES = ("NotConfigured", "Waiting", "InProgress", "Pausing", "Paused")
# Scavenge ids are `Guid.NewGuid().ToString()` (TFChunkScavengerLogManager.cs l.44-45).
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
# A .NET TimeSpan as System.Text.Json writes it: [-][d.]hh:mm:ss[.fffffff].
_TIMESPAN = re.compile(r"(-)?(?:(\d{1,8})\.)?(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?")


def _scavenge_id(value: Any, key: str) -> str | None:
    """A scavenge id (a GUID), or None for the empty string or the empty GUID."""
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    if value in ("", _EMPTY_GUID):
        return None
    if not _GUID.fullmatch(value):
        raise ValueError(f"{key} is not a scavenge id")
    return value.lower()


def _current_scavenge(body: Any) -> str | None:
    return _scavenge_id(body["scavengeId"], "scavengeId")


def _last_scavenge(body: Any) -> LastScavenge:
    result = _text(body, "scavengeResult")
    if result not in SCAVENGE_RESULTS:
        raise ValueError("scavengeResult is not one KurrentDB sends")
    return LastScavenge(_scavenge_id(body["scavengeId"], "scavengeId"), result)


def _stopped_scavenge(body: Any) -> str | None:
    """`DELETE /admin/scavenge/{id}` answers with the stopped id as a JSON string."""
    return _scavenge_id(body, "the stopped scavenge id")


def _auto_scavenge_enabled(body: Any) -> bool:
    return _bool(body, "enabled")


def _auto_scavenge_status(body: Any) -> AutoScavengeStatus:
    state = _text(body, "state")
    if state not in AUTO_SCAVENGE_STATES:
        raise ValueError("state is not one the auto-scavenge process sends")
    until = _optional_text(body, "timeUntilNextCycle")
    return AutoScavengeStatus(
        state, _optional_text(body, "schedule"), None if until is None else _seconds(until)
    )


def _seconds(timespan: str) -> float:
    match = _TIMESPAN.fullmatch(timespan)
    if not match:
        raise ValueError("timeUntilNextCycle is not a TimeSpan")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
        raise ValueError("timeUntilNextCycle is not a TimeSpan")
    total = float(int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds))
    total += int((fraction or "0").ljust(7, "0")) / 10**7
    return -total if sign else total


def _node_info(body: Any) -> NodeInfo:
    state = _text(body, "state")
    features = body.get("features") or {}
    auth = body.get("authentication")  # null when insecure
    if not isinstance(features, dict) or not (auth is None or isinstance(auth, dict)):
        raise TypeError("features and authentication must be objects")
    return NodeInfo(
        db_version=_text(body, "dbVersion"),
        state=_state(state),
        features={str(k): _strict_bool(v, f"features.{k}") for k, v in features.items()},
        authentication_type=_optional_text(auth or {}, "type"),
    )


def _gossip(body: Any) -> ClusterGossip:
    def member(m: Any) -> GossipMember:
        if not isinstance(m, dict):
            raise TypeError("a gossip member must be an object")
        return GossipMember(
            _text(m, "instanceId"), _state(_text(m, "state")), _bool(m, "isAlive"),
            _text(m, "httpEndPointIp"), _int(m, "httpEndPointPort"),
            _optional_text(m, "internalTcpIp"), _int(m, "internalTcpPort", 0),
            _int(m, "internalSecureTcpPort", 0), _int(m, "writerCheckpoint"),
            _int(m, "chaserCheckpoint"), _int(m, "lastCommitPosition"), _int(m, "epochPosition"),
            _int(m, "epochNumber"), _text(m, "epochId"), _int(m, "nodePriority"),
            _bool(m, "isReadOnlyReplica"), _optional_text(m, "timeStamp") or "",
            _optional_text(m, "internalHttpEndPointIp"), _int(m, "internalHttpEndPointPort", 0),
            _optional_text(m, "esVersion") or "",
        )  # fmt: skip

    members = body["members"]
    if not isinstance(members, list):
        raise TypeError("members must be a list")
    return ClusterGossip(
        tuple(member(m) for m in members), _text(body, "serverIp"), _int(body, "serverPort")
    )


# .NET's Int64 bounds: checkpoints and positions are longs on the server.
_INT64 = (-(2**63), 2**63 - 1)


def _int(body: dict[str, Any], key: str, default: int | None = None) -> int:
    """A JSON integer within Int64 (never a bool, a float or a string)."""
    value = body.get(key) if default is not None else body[key]
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, not {type(value).__name__}")
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{key} is out of range")
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    return _strict_bool(body[key], key)


def _strict_bool(value: Any, key: str) -> bool:
    """A JSON boolean: the string "false" is not False, and not True either."""
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be a boolean, not {type(value).__name__}")
    return value


def _text(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _state(state: str) -> str:
    """A VNodeState in its own spelling; an unknown one is kept (a newer server), never empty."""
    if not state.strip():
        raise ValueError("state is empty")
    return _STATE_BY_LOWER.get(state.lower(), state)


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
        redact_also: tuple[str, ...] = (),
    ):
        """`redact_also`: secrets this client never sends that no answer may show either."""
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
            token = basic_token(username, password or "")
            self._auth, self._secrets = f"Basic {token}", (password or "", token)
        self._secrets += tuple(redact_also)
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

    def update_user(self, login: str, full_name: str, groups: list[str]) -> None:
        """Replace a user's full name and groups ($admins); KurrentDBNotFound if no user."""
        body = {"FullName": full_name, "Groups": groups}
        self._request("PUT", f"/users/{_quote(login)}", body=body)

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

    # -- scavenges (a backup never copies files while one runs: backup.md) -----------------
    # AdminController.cs registers these (v26.1.0, l.55-66); the storage scavenger allows
    # them to $admins and $ops only (StorageScavenger.cs l.203-210, and the default policy,
    # LegacyPolicySelectorFactory.cs l.95-97), others get 401. A node with DisableAdminUi
    # has none of them (KurrentDBNotFound).

    def current_scavenge(self) -> str | None:
        """The id of the scavenge running on this node, or None.

        `GET /admin/scavenge/current` answers `{"scavengeId": "", "scavengeLink": ""}`
        with both filled only while one is in progress (AdminController.cs l.261-286).
        """
        return self._get("/admin/scavenge/current", _current_scavenge)

    def last_scavenge(self) -> LastScavenge:
        """This node's latest scavenge and how it ended (`GET /admin/scavenge/last`)."""
        return self._get("/admin/scavenge/last", _last_scavenge)

    def stop_scavenge(self, scavenge_id: str = "current", *, timeout: float = 60.0) -> str | None:
        """Stop a scavenge (by id, or whichever runs); return its id, or None if none ran.

        The server answers only once the scavenge has stopped (StorageScavenger.cs
        l.97-114: the reply follows the scavenge task), hence the longer `timeout`; 404
        "Scavenge Id does not exist" when that scavenge is not the running one. A node
        still initialising never answers (ClusterVNodeController.cs l.138-139 ignore the
        request): KurrentDBUnreachable with reason "timeout".
        """
        path = f"/admin/scavenge/{_quote(scavenge_id)}"
        try:
            return self._call("DELETE", path, _stopped_scavenge, timeout=timeout, scalar=True)
        except KurrentDBNotFound:
            return None

    # -- auto-scavenge: a licensed plugin, cluster-wide, run by the leader ---------------------
    # src/KurrentDB.AutoScavenge/AutoScavengePlugin.cs l.116-131: `enabled` and `status`
    # need an authenticated user, `pause` and `resume` $admins or $ops. Without a licence
    # the plugin is disabled: `enabled` says false and the others answer 503. On a
    # follower, requests are proxied to the leader (ProxyAutoScavengeClient.cs), which
    # answers 202 for pause and resume whatever the leader did.

    def auto_scavenge_enabled(self) -> bool:
        """Whether auto-scavenge runs in this cluster (False where the plugin is absent)."""
        try:
            return self._get("/auto-scavenge/enabled", _auto_scavenge_enabled)
        except KurrentDBNotFound:
            return False

    def auto_scavenge_status(self) -> AutoScavengeStatus:
        """The auto-scavenge process's state (`GET /auto-scavenge/status`)."""
        return self._get("/auto-scavenge/status", _auto_scavenge_status)

    def pause_auto_scavenge(self) -> bool:
        """Pause auto-scavenge; True once paused, False while still pausing.

        200: paused, no node scavenge runs; 202: no new node scavenge starts, but one
        that runs is still being stopped (AutoScavengeProcessManager.cs l.458-487; the
        docs' operations/auto-scavenge.md): poll `auto_scavenge_status` until `paused`.
        """
        return self._request("POST", "/auto-scavenge/pause")[0] == 200

    def resume_auto_scavenge(self) -> None:
        """Resume a paused auto-scavenge; a no-op when it was not paused.

        KurrentDBAPIError (400) while it is still pausing
        (AutoScavengeProcessManager.cs l.492-516).
        """
        self._request("POST", "/auto-scavenge/resume")

    def _get(self, path: str, parse: Callable[[Any], _T]) -> _T:
        return self._call("GET", path, parse)

    def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], _T],
        *,
        timeout: float | None = None,
        scalar: bool = False,
    ) -> _T:
        """Send one request and parse its JSON answer: an object, or any JSON if `scalar`."""
        status, raw = self._request(method, path, timeout=timeout)
        # A proxy's HTML page or some other server: say so here rather than fail later.
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python parses
            message = f"{method} {path}: HTTP {status} with a body that is not JSON (or too deep)"
            raise KurrentDBAPIError(message, method=method, path=path, status=status) from None
        try:
            if not scalar and not isinstance(body, dict):
                raise TypeError(f"the body is a {type(body).__name__}, not an object")
            return parse(body)
        except (
            KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError,
            RecursionError,
        ) as e:  # fmt: skip
            message = f"{method} {path}: HTTP {status} with JSON of an unexpected shape ({e})"
            raise KurrentDBAPIError(message, method=method, path=path, status=status) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ok: tuple[int, ...] = (),
        secrets: tuple[str, ...] = (),
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body) on 2xx or a status in `ok`, else raise."""
        timeout = self.timeout if timeout is None else timeout
        headers = {"Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn = (
            http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
            if self._ssl
            else http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        )
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            status, raw = response.status, response.read(MAX_BODY_BYTES + 1)
        except (OSError, http.client.HTTPException) as e:
            reason, why = _why_unreachable(e, timeout)
            message = f"{method} {path} on {self._host}:{self._port}: {why}"
            raise KurrentDBUnreachable(message, reason=reason, method=method, path=path) from e
        finally:
            conn.close()
        if len(raw) > MAX_BODY_BYTES:
            message = f"{method} {path}: HTTP {status} with a body over {MAX_BODY_BYTES} bytes"
            raise KurrentDBAPIError(message, method=method, path=path, status=status)
        if 200 <= status < 300 or status in ok:
            return status, raw
        error = _ERROR_BY_STATUS.get(status, KurrentDBAPIError)
        # In case a server or proxy echoes the request: every encoding of every secret sent
        # goes before the text is cut or folded, so no part of one is left.
        detail = redact(raw[:4096].decode(errors="replace"), (*self._secrets, *secrets))
        detail = " ".join(detail.split())[:200]  # one line: statuses show it
        message = f"{method} {path}: HTTP {status}" + (f": {detail}" if detail else "")
        if error is KurrentDBAuthError and self.username is None:
            message += " (no credentials given)"
        elif error is KurrentDBAuthError:
            message += f" (user {self.username!r} was rejected or lacks the required group)"
        raise error(message, method=method, path=path, status=status)


def basic_token(user: str, password: str) -> str:
    """What HTTP Basic auth sends for this user: base64 of `user:password`."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret replaced by ***, in each encoding a request may carry it.

    Raw, JSON-escaped (with and without unicode escapes), URL-encoded (path and
    form), and base64 (Basic auth carries `user:password`, itself in `secrets`).
    """
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms |= {
            secret,
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret),
            base64.b64encode(secret.encode()).decode(),
        }
    for form in sorted(forms, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(form, "***")
    return text


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
