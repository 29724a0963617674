"""A loopback test double of one KurrentDB node's HTTP API, answering as the contract says.

`/work/shared/kurrentdb-contract.md` §4 (endpoints, JSON field names, status codes) and §6.1
(default users) are the specification. The double serves HTTPS on 127.0.0.1 with a node
certificate signed by a CA from `src/tls.py`, so clients are tested with real TLS verification.

What it answers comes from plain mutable state that tests drive:
- `double.node` (`NodeState`): role, version, liveness, checkpoints, priority, whether the
  node runs with AllowAnonymousEndpointAccess (who may read /metrics and /stats)... A cluster
  simulator can keep one `NodeState` per node and feed the others into `double.members`.
- `double.users` (`FakeUser` by login), `double.members` (gossip `members[]` dicts, or None for
  "just this node"), `double.fail_with` / `double.delay` / `double.down()` for faults.
- `double.requests` records every request; `resign_count`, `reload_count`, `shutdown_count`.
- Scavenges: `double.start_scavenge()` starts one on the node (`scavenge_id`, `last_scavenge_*`);
  `double.auto_scavenge` (`FakeAutoScavenge`) is the cluster's licensed auto-scavenge process,
  disabled (no licence) by default.

Usage::

    with KurrentDBDouble(admin_password="pw") as double:
        client = KurrentDBClient(double.url, ca_pem=double.ca_pem, username="admin", password="pw")
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
import re
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tls import KeyPair, generate_ca, issue_node_certificate

DEFAULT_PASSWORD = "changeit"  # KurrentDB's default for admin and ops (contract §6.1)
DEFAULT_SANS = ("localhost", "127.0.0.1")


def _now_iso() -> str:
    # Newtonsoft writes DateTime as ISO 8601 with 7 fractional digits and a Z.
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


@dataclass
class NodeState:
    """One node as gossip and /info describe it; everything a test may want to steer."""

    state: str = "Leader"  # VNodeState spelling; /info lower-cases it
    version: str = "26.1.0"
    live: bool = True  # /health/live: 204 if True, else 503
    is_alive: bool = True  # as other nodes see it in gossip
    instance_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    http_host: str = "127.0.0.1"
    http_port: int = 2113  # the double sets its own node's port when it starts
    advertise_host_to_client_as: str | None = None  # what clients are told to use
    replication_port: int = 1112  # secure cluster: internalSecureTcpPort, internalTcpPort is 0
    writer_checkpoint: int = 0
    chaser_checkpoint: int = 0
    last_commit_position: int = -1
    epoch_position: int = 0
    epoch_number: int = 0
    epoch_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    node_priority: int = 0
    is_read_only_replica: bool = False
    features: dict[str, bool] = field(
        default_factory=lambda: {"projections": False, "userManagement": True, "atomPub": False}
    )
    authentication_type: str | None = "internal"
    # The node's AllowAnonymousEndpointAccess, as it started: the ENDPOINT routes below.
    allow_anonymous_endpoint_access: bool = False

    def gossip_json(self) -> dict[str, Any]:
        """This node as a `/gossip` `members[]` entry: `ClientMemberInfo`'s fields.

        `src/KurrentDB.Core/Cluster/ClientClusterInfo.cs` (v25.1.4 to v26.1.0): the node's
        own endpoint is `internalHttpEndPoint*`; `httpEndPoint*` and `externalTcp*` show what
        it advertises to clients (`AdvertiseHostToClientAs` and friends, which are not
        fields of their own); `esVersion` is the node's version.
        """
        client_host = self.advertise_host_to_client_as or self.http_host
        return {
            "instanceId": self.instance_id,
            "timeStamp": _now_iso(),
            "state": self.state,
            "isAlive": self.is_alive,
            "internalTcpIp": self.http_host,
            "internalTcpPort": 0,
            "internalSecureTcpPort": self.replication_port,
            "externalTcpIp": client_host,
            "externalTcpPort": 0,
            "externalSecureTcpPort": 0,
            "internalHttpEndPointIp": self.http_host,
            "internalHttpEndPointPort": self.http_port,
            "httpEndPointIp": client_host,
            "httpEndPointPort": self.http_port,
            "esVersion": self.version,
            "lastCommitPosition": self.last_commit_position,
            "writerCheckpoint": self.writer_checkpoint,
            "chaserCheckpoint": self.chaser_checkpoint,
            "epochPosition": self.epoch_position,
            "epochNumber": self.epoch_number,
            "epochId": self.epoch_id,
            "nodePriority": self.node_priority,
            "isReadOnlyReplica": self.is_read_only_replica,
        }

    def info_json(self) -> dict[str, Any]:
        """`GET /info` (contract §4.3): note the lower-cased state."""
        auth = self.authentication_type
        return {
            "dbVersion": self.version,
            "esVersion": self.version,
            "state": self.state.lower(),
            "features": dict(self.features),
            "authentication": None if auth is None else {"type": auth, "properties": {}},
        }


@dataclass
class FakeUser:
    """A user as the internal authentication provider stores it."""

    login_name: str
    password: str
    groups: list[str] = field(default_factory=list)
    full_name: str = ""
    disabled: bool = False
    date_last_updated: str = field(default_factory=_now_iso)

    def json(self, base_url: str) -> dict[str, Any]:
        """The `data` object of `GET /users/{login}`."""
        url = f"{base_url}/users/{urllib.parse.quote(self.login_name, safe='')}"
        toggle = "enable" if self.disabled else "disable"
        return {
            "loginName": self.login_name,
            "fullName": self.full_name,
            "groups": list(self.groups),
            "dateLastUpdated": self.date_last_updated,
            "disabled": self.disabled,
            "links": [
                {"href": f"{url}/command/reset-password", "rel": "reset-password"},
                {"href": f"{url}/command/change-password", "rel": "change-password"},
                {"href": url, "rel": "edit"},
                {"href": url, "rel": "delete"},
                {"href": f"{url}/command/{toggle}", "rel": toggle},
            ],
        }


# AutoScavengeStatus (the process's own states) -> what /auto-scavenge/status reports
# (src/KurrentDB.AutoScavenge/Domain/AutoScavengeProcessManager.cs l.548-568).
AUTO_SCAVENGE_REPORTED = {
    "NotConfigured": "NotConfigured",
    "Waiting": "Waiting",
    "ContinuingClusterScavenge": "InProgress",
    "StartingNodeScavenge": "InProgress",
    "MonitoringNodeScavenge": "InProgress",
    "Pausing": "Pausing",
    "PausedWhileIdle": "Paused",
    "PausedWhileScavengingCluster": "Paused",
}


@dataclass
class FakeAutoScavenge:
    """The cluster's auto-scavenge process, as the leader runs it (AutoScavengeProcessManager.cs).

    `enabled` False is the plugin without a licence (or with `AutoScavenge: Enabled: false`):
    `/auto-scavenge/enabled` says so and the other endpoints answer 503. `status` is the
    process's own state (a key of AUTO_SCAVENGE_REPORTED); a pause requested while a node
    scavenge runs stays Pausing for `pausing_polls` status reads, then that scavenge stops.
    """

    enabled: bool = False
    status: str = "NotConfigured"
    schedule: str | None = None
    next_cycle: str = "1.13:14:32.6299115"  # the docs' sample TimeSpan
    pausing_polls: int = 1
    _polls: int = 0

    @property
    def cluster_scavenge_running(self) -> bool:
        """A cluster scavenge started and is not finished (paused or not)."""
        return self.status in (
            "ContinuingClusterScavenge", "StartingNodeScavenge", "MonitoringNodeScavenge",
            "Pausing", "PausedWhileScavengingCluster",
        )  # fmt: skip

    def status_json(self) -> dict[str, Any]:
        """`AutoScavengeStatusResponse` in camelCase (AutoScavengePlugin.cs l.31-38)."""
        reported = AUTO_SCAVENGE_REPORTED[self.status]
        if reported in ("InProgress", "Pausing") or self.status == "PausedWhileScavengingCluster":
            until: str | None = "00:00:00"  # a cycle is happening right now
        else:
            until = None if self.schedule is None else self.next_cycle
        return {"state": reported, "schedule": self.schedule, "timeUntilNextCycle": until}

    def pause(self) -> int:
        """PauseProcess (l.458-487): 200 when paused, 202 while a node scavenge stops."""
        if self.status in ("StartingNodeScavenge", "MonitoringNodeScavenge"):
            self.status, self._polls = "Pausing", 0
        elif self.status != "Pausing" and not self.status.startswith("Paused"):
            self._paused()
        return 202 if self.status == "Pausing" else 200

    def resume(self) -> str | None:
        """ResumeProcess (l.492-516): the reason it is refused, or None."""
        if self.status == "Pausing":
            return "Auto scavenge process is currently pausing"
        if self.status.startswith("Paused"):  # AutoScavengeState.Handle(Resumed)
            scavenging = self.status == "PausedWhileScavengingCluster"
            configured = self.schedule is not None
            self.status = (
                "ContinuingClusterScavenge" if scavenging
                else "Waiting" if configured else "NotConfigured"
            )  # fmt: skip
        return None

    def poll(self) -> bool:
        """One status read; True when a pausing process has just stopped its node scavenge."""
        if self.status != "Pausing":
            return False
        self._polls += 1
        if self._polls < self.pausing_polls:
            return False
        self._paused()
        return True

    def _paused(self) -> None:  # AutoScavengeState.Handle(Paused)
        scavenging = self.cluster_scavenge_running
        self.status = "PausedWhileScavengingCluster" if scavenging else "PausedWhileIdle"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double saw it; `user` is the authenticated login or None."""

    method: str
    path: str
    query: dict[str, str]
    user: str | None
    body: Any
    status: int


@dataclass
class Response:
    """What the double answers; `after` runs once the response has been sent."""

    status: int
    body: Any = None  # dict/list → JSON, str → text, None → empty
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None
    json_body: bool = False  # send `body` as JSON whatever its type (a JSON string answer)
    never_answer: bool = False  # keep the connection open without answering, then close it


# Who may call what (contract §4, default policy). "ops" means $admins or $ops. ENDPOINT
# is what LegacyPolicySelectorFactory.cs (v26.1.0, l.56-70) gives Node.Statistics.Read
# (/metrics: MetricsController.cs l.28; /stats: StatController.cs l.30), .Replication
# (/stats/replication), .Tcp (/stats/tcp) and .Custom (/stats/{*statPath}): anonymous when
# the node runs with AllowAnonymousEndpointAccess, else any authenticated user. (The same
# rule covers Node.Options, which no endpoint uses, and Gossip.ClientRead unless
# OverrideAnonymousEndpointAccessForGossip, true by default: /gossip stays ANONYMOUS here.)
ANONYMOUS, AUTHENTICATED, OPS, ADMINS, ADMINS_OR_SELF, SELF, ENDPOINT = (
    "anonymous", "authenticated", "ops", "admins", "admins-or-self", "self", "endpoint",
)  # fmt: skip
_LOGIN = r"(?P<login>[^/]+)"
ROUTES: list[tuple[str, str, str, str]] = [  # method, path regex, policy, handler name
    ("GET", r"/info", ANONYMOUS, "_info"),
    ("GET", r"/gossip", ANONYMOUS, "_gossip"),
    ("GET", r"/ping", ANONYMOUS, "_ping"),
    ("GET", r"/metrics", ENDPOINT, "_metrics"),
    ("GET", r"/stats(?:/.+)?", ENDPOINT, "_stats"),
    ("POST", r"/admin/shutdown", OPS, "_shutdown"),
    ("POST", r"/admin/reloadconfig", OPS, "_reload"),
    ("POST", r"/admin/node/resign", OPS, "_resign"),
    ("POST", r"/admin/node/priority/(?P<priority>[^/]+)", OPS, "_priority"),
    ("GET", r"/admin/scavenge/current", OPS, "_current_scavenge"),
    ("GET", r"/admin/scavenge/last", OPS, "_last_scavenge"),
    ("DELETE", r"/admin/scavenge/(?P<scavenge_id>[^/]+)", OPS, "_stop_scavenge"),
    # ASP.NET endpoints of the AutoScavenge plugin (AutoScavengePlugin.cs l.119-130).
    ("GET", r"/auto-scavenge/enabled", AUTHENTICATED, "_auto_scavenge_enabled"),
    ("GET", r"/auto-scavenge/status", AUTHENTICATED, "_auto_scavenge_status"),
    ("POST", r"/auto-scavenge/pause", OPS, "_pause_auto_scavenge"),
    ("POST", r"/auto-scavenge/resume", OPS, "_resume_auto_scavenge"),
    ("GET", r"/users/?", ADMINS, "_list_users"),
    ("GET", r"/users/\$current", AUTHENTICATED, "_current_user"),
    ("GET", rf"/users/{_LOGIN}", ADMINS_OR_SELF, "_get_user"),
    ("POST", r"/users/?", ADMINS, "_create_user"),
    ("PUT", rf"/users/{_LOGIN}", ADMINS, "_update_user"),
    ("DELETE", rf"/users/{_LOGIN}", ADMINS, "_delete_user"),
    ("POST", rf"/users/{_LOGIN}/command/(?P<toggle>enable|disable)", ADMINS, "_toggle_user"),
    ("POST", rf"/users/{_LOGIN}/command/reset-password", ADMINS, "_reset_password"),
    ("POST", rf"/users/{_LOGIN}/command/change-password", SELF, "_change_password"),
]


@functools.cache
def _default_ca() -> KeyPair:
    return generate_ca()  # RSA key generation is slow; one CA serves every double


@functools.cache
def _node_certificate(ca: KeyPair, sans: tuple[str, ...]) -> tuple[str, str]:
    cert = issue_node_certificate(ca, sans)
    return cert.certificate, cert.private_key


class KurrentDBDouble:
    """One fake KurrentDB node serving HTTPS on 127.0.0.1 (a context manager)."""

    def __init__(
        self,
        *,
        admin_password: str = DEFAULT_PASSWORD,
        ops_password: str = DEFAULT_PASSWORD,
        initialised: bool = True,
        node: NodeState | None = None,
        ca: KeyPair | None = None,
        sans: tuple[str, ...] = DEFAULT_SANS,
    ):
        self.node = node or NodeState()
        self.admin_password, self.ops_password = admin_password, ops_password
        self.users: dict[str, FakeUser] = {}
        self.members: list[dict[str, Any]] | None = None  # None: one member, this node
        self.fail_with: int | None = None  # answer every request with this status
        self.fail_body: Any = "injected failure"
        self.delay: float = 0.0  # seconds to wait before answering (cut short by stop())
        # Called on a resign request while this node is Leader, e.g. to run an election. It runs
        # under the request lock: it may change any double's state, not call this one over HTTP.
        self.on_resign: Callable[[KurrentDBDouble], None] | None = None
        self.exit_on_shutdown = True  # /admin/shutdown takes the double down, like the process
        self.requests: list[RecordedRequest] = []
        self.resign_count = self.reload_count = self.shutdown_count = 0
        # The node's scavenge (StorageScavenger.cs): the running one's id, and the last one.
        self.scavenge_id: str | None = None
        self.last_scavenge_id: str | None = None
        self.last_scavenge_result = "Unknown"
        self.auto_scavenge = FakeAutoScavenge()
        self.errors: list[BaseException] = []  # swallowed handler errors (TLS rejects, hang-ups)
        ca = ca or _default_ca()
        self.ca_pem = ca.certificate
        self._ssl = _server_context(*_node_certificate(ca, tuple(sans)))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.RLock()
        self._serialise = threading.Lock()  # one request at a time touches the state
        self._stopping = threading.Event()
        self.port = 0
        if initialised:
            self.initialise()
        else:  # a fresh node before it became leader and created the default users
            self.node.state, self.node.live = "Initializing", False

    # -- shortcuts to the most-driven knobs of `node` ----------------------------------------
    @property
    def state(self) -> str:
        """The node's VNodeState ("Leader", "Follower", ...)."""
        return self.node.state

    @state.setter
    def state(self, value: str) -> None:
        self.node.state = value

    @property
    def version(self) -> str:
        """The version /info reports."""
        return self.node.version

    @version.setter
    def version(self, value: str) -> None:
        self.node.version = value

    @property
    def live(self) -> bool:
        """Whether /health/live answers 204 (else 503)."""
        return self.node.live

    @live.setter
    def live(self, value: bool) -> None:
        self.node.live = value

    @property
    def url(self) -> str:
        """Base URL; 127.0.0.1 is one of the certificate's SANs."""
        return f"https://127.0.0.1:{self.port}"

    def initialise(self) -> None:
        """What a node does on first BecomeLeader: create admin/ops, then report live."""
        self.add_user("admin", self.admin_password, ["$admins"], "KurrentDB Administrator")
        self.add_user("ops", self.ops_password, ["$ops"], "KurrentDB Operations")
        if self.node.state == "Initializing":
            self.node.state = "Leader"
        self.node.live = True

    def add_user(
        self, login: str, password: str, groups: list[str] | None = None, full_name: str = ""
    ) -> FakeUser:
        """Create or replace a user directly, bypassing the API."""
        user = FakeUser(login, password, list(groups or []), full_name)
        self.users[login] = user
        return user

    def start_scavenge(self) -> str:
        """A scavenge starts on this node (as POST /admin/scavenge would); its id."""
        self.scavenge_id = self.last_scavenge_id = str(uuid.uuid4())
        self.last_scavenge_result = "InProgress"
        return self.scavenge_id

    def gossip_members(self) -> list[dict[str, Any]]:
        """The `members` array; override or set `members` to simulate a cluster."""
        return self.members if self.members is not None else [self.node.gossip_json()]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> KurrentDBDouble:
        """Listen on 127.0.0.1 (a free port the first time, the same port after `down()`)."""
        with self._lifecycle:
            if self._server is None:
                self._stopping.clear()
                self._server = _Server(("127.0.0.1", self.port), self, self._ssl)
                self.port = self._server.server_address[1]
                self.node.http_port = self.port
                self._thread = threading.Thread(
                    target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
                )
                self._thread.start()
        return self

    def down(self) -> None:
        """Stop accepting connections (clients get 'connection refused'); `up()` reverses it."""
        with self._lifecycle:
            if self._server is not None:
                self._stopping.set()  # wakes handlers that are sleeping out `delay`
                self._server.shutdown()
                self._server.server_close()
                if self._thread is not None:
                    self._thread.join(timeout=5)
                self._server = self._thread = None

    def up(self) -> KurrentDBDouble:
        """Accept connections again, on the same port."""
        return self.start()

    stop = down

    @property
    def is_up(self) -> bool:
        """Whether the double accepts connections now."""
        return self._server is not None

    def wait_until_down(self, timeout: float = 2.0) -> bool:
        """Wait for a scheduled `down()` (after /admin/shutdown); True once it is down."""
        deadline = time.monotonic() + timeout
        while self.is_up and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.is_up

    def __enter__(self) -> KurrentDBDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Response:
        """Answer one request; pure apart from the state it reads and changes."""
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path, dict(urllib.parse.parse_qsl(parts.query))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")  # not a dict: handlers needing one answer 400
        if self.delay:
            self._stopping.wait(self.delay)
        with self._serialise:
            user, response = self._route(method, path, query, headers, body)
            login = user.login_name if user else None
            self.requests.append(RecordedRequest(method, path, query, login, body, response.status))
        return response

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[FakeUser | None, Response]:
        if self.fail_with is not None:
            return None, Response(self.fail_with, self.fail_body)
        if path == "/health/live" and method in ("GET", "HEAD"):
            # Mapped before authentication in the server: anonymous, and bad credentials pass.
            status = int(query.get("liveCode", 204)) if self.node.live else 503
            return None, Response(status)
        ok, user = self._authenticate(headers.get("authorization"))
        if not ok:
            return None, Response(401, "Unauthorized")
        for verb, pattern, policy, name in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                if policy == ENDPOINT:
                    anonymous_ok = self.node.allow_anonymous_endpoint_access
                    policy = ANONYMOUS if anonymous_ok else AUTHENTICATED
                if not _allowed(policy, user, params.get("login")):
                    # ASP.NET endpoints forbid a known user (403); the legacy HTTP
                    # controllers answer 401 to everyone (AuthorizationMiddleware.cs l.22).
                    aspnet = user is not None and path.startswith("/auto-scavenge/")
                    return user, Response(403 if aspnet else 401, "Unauthorized")
                return user, getattr(self, name)(body=body, user=user, **params)
        return user, Response(404)

    def _authenticate(self, header: str | None) -> tuple[bool, FakeUser | None]:
        """(credentials acceptable, user); no header is fine (anonymous), bad ones are not."""
        if not header:
            return True, None
        scheme, _, token = header.partition(" ")
        try:
            login, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        user = self.users.get(login)
        if scheme != "Basic" or not sep or user is None or user.disabled:
            return False, None
        return (True, user) if user.password == password else (False, None)

    # -- endpoints (keyword arguments: body, user, and the path's named groups) --------------
    def _info(self, **_: Any) -> Response:
        return Response(200, self.node.info_json())

    def _gossip(self, **_: Any) -> Response:
        return Response(
            200,
            {"members": self.gossip_members(), "serverIp": "127.0.0.1", "serverPort": self.port},
        )

    def _ping(self, **_: Any) -> Response:
        return Response(200, {"text": "Ping request successfully handled"})

    def _metrics(self, **_: Any) -> Response:
        # A stand-in for the exporter's text: one family of tests/data/kurrentdb-metrics.txt.
        state = self.node.state
        return Response(
            200,
            "# TYPE kurrentdb_statuses gauge\n"
            f'kurrentdb_statuses{{name="Node",status="{state}"}} 1\n',
        )

    def _stats(self, **_: Any) -> Response:
        return Response(200, {"proc": {"id": 1}, "es": {"queue": {}}})

    def _shutdown(self, **_: Any) -> Response:
        self.shutdown_count += 1
        self.node.state, self.node.live = "ShuttingDown", False
        return Response(200, "OK", after=self.down if self.exit_on_shutdown else None)

    def _reload(self, **_: Any) -> Response:
        self.reload_count += 1
        return Response(200, "OK")

    def _resign(self, **_: Any) -> Response:
        # The server accepts it everywhere but only a leader acts on it (contract §4.5).
        self.resign_count += 1
        if self.node.state == "Leader" and self.on_resign is not None:
            self.on_resign(self)
        return Response(200, "OK")

    def _priority(self, priority: str, **_: Any) -> Response:
        try:
            self.node.node_priority = int(priority)
        except ValueError:
            return Response(400, "Invalid priority")
        return Response(200, "OK")

    def _current_scavenge(self, **_: Any) -> Response:
        # ScavengeGetCurrentResultDto: empty strings unless one runs (AdminController.cs l.261-286).
        running = self.scavenge_id
        link = "" if running is None else f"/admin/scavenge/{running}"
        return Response(200, {"scavengeId": running or "", "scavengeLink": link})

    def _last_scavenge(self, **_: Any) -> Response:
        # ScavengeGetLastResultDto: the empty GUID before any scavenge (l.288-310).
        last = self.last_scavenge_id
        return Response(
            200,
            {
                "scavengeId": last or str(uuid.UUID(int=0)),
                "scavengeLink": "" if last is None else f"/admin/scavenge/{last}",
                "scavengeResult": self.last_scavenge_result,
            },
        )

    def _stop_scavenge(self, scavenge_id: str, **_: Any) -> Response:
        # StorageScavenger.Handle(StopDatabaseScavenge), l.97-114; a node that is still
        # Initializing drops the request unanswered (ClusterVNodeController.cs l.138-139).
        if self.node.state == "Initializing":
            return Response(0, never_answer=True)
        running = self.scavenge_id
        if running is None or scavenge_id not in (running, "current"):
            return Response(404, "Scavenge Id does not exist")
        self.scavenge_id, self.last_scavenge_result = None, "Stopped"
        return Response(200, running, json_body=True)

    def _auto_scavenge_enabled(self, **_: Any) -> Response:
        return Response(200, {"enabled": self.auto_scavenge.enabled})

    def _auto_scavenge(self, command: Callable[[], Response]) -> Response:
        """ExecuteCommand (AutoScavengePlugin.cs l.182-213): 503 while disabled."""
        if not self.auto_scavenge.enabled:
            return Response(503, _problem(503, "AutoScavenge is not enabled"))
        return command()

    def _auto_scavenge_status(self, **_: Any) -> Response:
        def status() -> Response:
            if self.auto_scavenge.poll() and self.scavenge_id is not None:
                self._stop_scavenge(scavenge_id="current")  # what pausing was waiting for
            return Response(200, self.auto_scavenge.status_json())

        return self._auto_scavenge(status)

    def _pause_auto_scavenge(self, **_: Any) -> Response:
        def pause() -> Response:
            status = self.auto_scavenge.pause()
            # A follower proxies to the leader and answers 202 whatever it said
            # (ProxyAutoScavengeClient.cs, `Response.Accepted()`).
            if status == 202 or self.node.state != "Leader":
                return Response(202)
            return Response(200, {})  # Results.Json(Unit): an empty object

        return self._auto_scavenge(pause)

    def _resume_auto_scavenge(self, **_: Any) -> Response:
        def resume() -> Response:
            refused = self.auto_scavenge.resume()
            if refused is not None:
                return Response(400, refused, json_body=True)  # Results.BadRequest(string)
            return Response(202) if self.node.state != "Leader" else Response(200, {})

        return self._auto_scavenge(resume)

    def _list_users(self, **_: Any) -> Response:
        data = [u.json(self.url) for u in self.users.values()]
        return Response(200, {"data": data, **_result("Success")})

    def _current_user(self, user: FakeUser, **_: Any) -> Response:
        return self._get_user(login=user.login_name)

    def _get_user(self, login: str, **_: Any) -> Response:
        found = self.users.get(login)
        if found is None:
            return Response(404, {"data": None, **_result("NotFound")})
        return Response(200, {"data": found.json(self.url), **_result("Success")})

    def _create_user(self, body: Any, **_: Any) -> Response:
        # The server binds the body case-insensitively (contract §4.6).
        fields = {k.lower(): v for k, v in body.items()} if isinstance(body, dict) else {}
        login = fields.get("loginname")
        if not isinstance(login, str) or not login or not isinstance(fields.get("password"), str):
            return Response(400, "Invalid user data")
        if login in self.users:
            return Response(409, _result("Conflict", login))
        self.add_user(login, fields["password"], fields.get("groups"), fields.get("fullname", ""))
        location = f"{self.url}/users/{urllib.parse.quote(login, safe='')}"
        return Response(201, _result("Success", login), {"Location": location})

    def _update_user(self, login: str, body: Any, **_: Any) -> Response:
        return self._change(login, body, _update)

    def _delete_user(self, login: str, **_: Any) -> Response:
        if self.users.pop(login, None) is None:
            return Response(404, _result("NotFound", login))
        return Response(200, _result("Success", login))

    def _toggle_user(self, login: str, toggle: str, **_: Any) -> Response:
        return self._change(login, {}, lambda u, _: setattr(u, "disabled", toggle == "disable"))

    def _reset_password(self, login: str, body: Any, **_: Any) -> Response:
        def reset(user: FakeUser, fields: dict[str, Any]) -> Response | None:
            if not isinstance(fields.get("newpassword"), str):
                return Response(400, "NewPassword is required")
            user.password = fields["newpassword"]
            return None

        return self._change(login, body, reset)

    def _change_password(self, login: str, body: Any, **_: Any) -> Response:
        def change(user: FakeUser, fields: dict[str, Any]) -> Response | None:
            if fields.get("currentpassword") != user.password:
                return Response(401, _result("Unauthorized", login))
            if not isinstance(fields.get("newpassword"), str):
                return Response(400, "NewPassword is required")
            user.password = fields["newpassword"]
            return None

        return self._change(login, body, change)

    def _change(
        self, login: str, body: Any, apply: Callable[[FakeUser, dict[str, Any]], Response | None]
    ) -> Response:
        """The shared shape of user updates: 400 on a bad body, 404 on no user, else apply."""
        if not isinstance(body, dict):
            return Response(400, "Invalid request body")
        user = self.users.get(login)
        if user is None:
            return Response(404, _result("NotFound", login))
        problem = apply(user, {k.lower(): v for k, v in body.items()})
        if problem is not None:
            return problem
        user.date_last_updated = _now_iso()
        return Response(200, _result("Success", login))


def _update(user: FakeUser, fields: dict[str, Any]) -> Response | None:
    user.full_name = fields.get("fullname", user.full_name)
    user.groups = list(fields.get("groups", user.groups))
    return None


def _result(error: str, login: str | None = None) -> dict[str, Any]:
    """The user-management result envelope (contract §4.6)."""
    envelope = {"success": error == "Success", "error": error, "msgTypeId": 0}
    return envelope if login is None else {"loginName": login, **envelope}


def _problem(status: int, detail: str) -> dict[str, Any]:
    """ASP.NET's `Results.Problem` body (RFC 9457 problem details)."""
    titles = {500: "An error occurred while processing your request.", 503: "Service Unavailable"}
    return {
        "type": f"https://tools.ietf.org/html/rfc9110#section-15.6.{4 if status == 503 else 1}",
        "title": titles.get(status, "Error"),
        "status": status,
        "detail": detail,
    }


def _allowed(policy: str, user: FakeUser | None, login: str | None) -> bool:
    if policy == ANONYMOUS:
        return True
    if user is None:
        return False
    groups = set(user.groups)
    return {
        AUTHENTICATED: True,
        OPS: bool(groups & {"$admins", "$ops"}),
        ADMINS: "$admins" in groups,
        ADMINS_OR_SELF: "$admins" in groups or user.login_name == login,
        SELF: user.login_name == login,
    }[policy]


def _server_context(certificate: str, private_key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain only reads files
        cert, key = Path(tmp, "node.crt"), Path(tmp, "node.key")
        cert.write_text(certificate)
        key.write_text(private_key)
        context.load_cert_chain(cert, key)
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never wait for a handler that sleeps out `delay`

    def __init__(self, address: tuple[str, int], double: KurrentDBDouble, tls: ssl.SSLContext):
        self.double, self.tls = double, tls
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        # The handshake runs later, in the handler's thread, so that a client that never
        # finishes it cannot block the accept loop.
        sock, address = super().get_request()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients rejecting our certificate or hanging up are part of the tests: keep quiet.
        self.double.errors.append(sys.exc_info()[1] or RuntimeError("unknown"))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a silent client may hold a handler thread

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `double.requests`

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.double.handle(self.command, self.path, headers, raw)
        if response.never_answer:
            self.server.double._stopping.wait(self.timeout)
            self.close_connection = True
            return
        if response.json_body or isinstance(response.body, (dict, list)):
            payload, content_type = json.dumps(response.body).encode(), "application/json"
        elif response.body is None:
            payload, content_type = b"", "text/plain"
        else:
            payload, content_type = str(response.body).encode(), "text/plain; charset=utf-8"
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()
        if response.after is not None:
            response.after()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve  # noqa: N815 (http.server names)
