"""A deterministic, tick-based model of a KurrentDB cluster, served over HTTPS node by node.

The simulation harness runs charm units against this model. When a unit's charm starts,
restarts or stops KurrentDB, the harness calls `start_process`, `restart_process` or
`stop_process`. Between hook rounds it calls `tick()`. Each node has its own `KurrentDBDouble`
on 127.0.0.1. Its /info, /gossip, /health/live, /admin/node/resign, /admin/shutdown and users API
answer from this model, so the charm's HTTP client sees what it would see on a real node.

Rules, from the server's source (kurrent-io/KurrentDB, tag v26.1.0; paths under src/) and
/work/shared/kurrentdb-contract.md §4-§5. `tick()` applies 1-10 in this order:

1. Boot. A process started `boot_ticks` ticks ago (1 by default) finishes Initializing and is
   "DiscoverLeader".
   It exits instead if the validator would reject its config
   (KurrentDB.Core/Configuration/ClusterVNodeOptionsValidator.cs): ClusterSize < 1; several
   GossipSeed entries with ClusterSize 1; a seed without a port; ClusterSize > 1 with
   DiscoverViaDns false and no seeds. With ClusterSize > 1 and DiscoverViaDns not false, the
   server resolves ClusterDns and ignores GossipSeed (KurrentDB.Core/ClusterVNode.cs), so
   such a node has no seeds here.
2. Visibility. Two running nodes gossip when either one lists the other in GossipSeed; gossip
   spreads membership, so a node sees every running node of its connected group.
3. Failure detection. A node whose leader is gone becomes "Unknown". A leader with fewer
   promotable subscriptions (catching up, clones or followers) than ClusterSize / 2 of its
   own size for longer than NoQuorumTimeout (3 s: two ticks) retires ("NO QUORUM EMERGED
   WITHIN TIMEOUT... RETIRING", KurrentDB.Core/Services/Replication/
   LeaderReplicationService.cs `ManageNoQuorumDetection`, KurrentDB.Core/Services/VNode/
   ClusterVNodeController.cs `Handle(NoQuorumMessage)`). If two leaders see each other, the
   lesser one steps down.
4. Resign (POST /admin/node/resign to the leader, between ticks). The leader becomes
   "ResigningLeader" and stops writing; at the next tick it and its subscribers elect at
   once. The resigned node loses ties to any node with as much data.
5. Join. A leaderless node that sees a leader subscribes to it as "CatchingUp". If its log
   holds bytes the leader's lacks, it truncates them and exits (offline truncation; Pebble
   restarts it).
6. Election (KurrentDB.Core/Services/ElectionsService.cs). Each node counts votes against
   its own ClusterSize (`_clusterSize / 2 + 1` for view changes, prepare-oks and accepts):
   the best node of a leaderless group (highest epoch and writer checkpoint, then not
   resigned, NodePriority, first added) is elected if the ready voters reach ITS majority;
   a voter completes the election only if they also reach its own majority, and otherwise
   finds the leader through gossip at the next tick. So nodes of different sizes can form
   two disjoint majorities (`split_brain_possible`).
7. Replication and roles (LeaderReplicationService.cs). Subscribers copy the leader's log at
   up to `catch_up_bytes_per_tick`; one within CloneThreshold (1024 bytes; a tick of writes
   here) is a "Clone". `ManageRoleAssignments`: the leader wants ClusterSize - 1 followers by
   its own size; it promotes caught-up clones (best log first) while a follower is missing;
   the clones beyond are told to drop their subscription, log "THERE IS A SURPLUS OF NODES
   IN THE CLUSTER, SHUTTING DOWN" and exit with code 0 (ClusterVNodeController.cs
   `Handle(DropSubscription)`), unless `unsafe_allow_surplus_nodes`. A follower that lags
   stays a follower (demotion swaps a lagging follower beyond the desired count for a clone
   further ahead, which this model never produces). Client writes (`write_bytes_per_tick`)
   need the leader and its followers to make its quorum; a position is acknowledged once a
   quorum of them holds it. A tick is writable if a leader had all its writes acknowledged.
   With `lag_jitter_bytes`, followers' gossip checkpoints trail by a random amount.
8. Health (KurrentDB.Core/ClusterVNodeStartup.cs, `StatusCheck.MapLiveness`, mapped before
   the authentication middleware: anonymous, credentials ignored). /health/live answers 204
   once SystemReady was published, 503 before and after BecomeShuttingDown. With internal
   authentication SystemReady follows AuthenticationProviderInitialized, which waits until
   the node became Leader, Follower or ReadOnlyReplica (KurrentDB.Core/Authentication/
   InternalAuthentication/UserManagementService.cs, ClusterVNodeController.cs): here, once
   the node first served since it started.
9. Lost writes. Acknowledged bytes missing from the log of the current leader count as lost.
10. Gossip. A running node's /gossip lists itself and what it saw at the last tick; nodes it
   lost stay listed as isAlive false for `dead_member_ticks` ticks.
11. Reload, between ticks, by each node's `service` (tests/doubles/process.py, on the
   harness's clock of simulated seconds). The config file the charm pushes (`write_config`)
   reaches the node's in-memory configuration only when its file watcher reads it:
   `watch_delay` (250 ms, .NET's `FileConfigurationSource.ReloadDelay`) after a change, as
   the file is then, and once more `watch_delay` later if it changed during that wait
   (KurrentDB.Core/Configuration/KurrentConfiguration.cs `AddKurrentYamlConfigFile`:
   `reloadOnChange: true`; .NET's `FileConfigurationProvider`). A SIGHUP (`sighup`; POST
   /admin/reloadconfig does the same) re-binds that configuration, not the file
   (KurrentDB.Core/Configuration/ClusterVNodeOptionsExtensions.cs `Reload`,
   KurrentDB.Core/ClusterVNode.cs `Handle(ClientMessage.ReloadConfig)`), and applies from
   it only LogLevel, unless it is "Default" (`ReloadLogOptions`, which logs "The log level
   was adjusted to: <level>" when the level changed), the certificates and Transform
   (neither modelled); ClusterSize, seeds and every other option keep what the process
   started with. A (re)start reads the file as it is, and logs the adjusted line too when
   its level is not logconfig.json's Debug (KurrentDB/logconfig.json). `pebble logs` shows
   the node's `service.log`.
12. Node TLS, when the harness models it (`tls_files`). A node loads its certificate and
   its trusted roots when it starts and when it reloads (SIGHUP: `ClusterVNode.cs`
   `Handle(ClientMessage.ReloadConfig)` reloads certificates,
   `OptionsCertificateProvider.LoadCertificates`), from the files as they are then, and its
   HTTP double serves that certificate. Two nodes talk only if each presents a certificate
   whose root the other trusts: node-to-node TLS is mutual, and a node accepts a peer only
   if its chain reaches one of its own trusted roots
   (`NodeCertificateAuthenticationProvider.cs`); gossip between two nodes that cannot
   authenticate each other fails both ways, as between partitioned nodes.
13. Endpoint access. A node reads AllowAnonymousEndpointAccess when it starts: the
   authorization policy is built once (KurrentDB/AuthorizationPolicyRegistryFactory.cs
   l.46-52), and a reload re-applies only LogLevel, certificates and Transform
   (KurrentDB.Core/ClusterVNode.cs l.1949-1968). With it true, its /metrics and /stats
   answer without credentials; otherwise only to an authenticated user (the double's
   ENDPOINT policy, KurrentDB.Core/Authorization/AuthorizationPolicies/
   LegacyPolicySelectorFactory.cs l.56-70).

Invariants, checked at the start (the state the last round of hooks left) and the end of
every tick, reported as `Breach`es (the harness fails the test at the first one): (a) never
two disjoint sets of running nodes that could each elect a leader by their own sizes; (b)
never two voting nodes down by the charm's doing (stopped by it, not serving again yet),
but for nodes a restore stopped on purpose (`stop_process(for_restore=True)`: every node
stops between the restore's swap and its start); (c) no acknowledged write lost, counted
within each history (`SimNode.lineage`): a restore (`load_data`) starts a history from the
backup's log, and what was acknowledged after the backup is dropped by design, not lost;
(e) never two histories running at once (old data beside restored data); (h) never two
running nodes that list each other but cannot authenticate each other (rule 12). (d), every resize
completing in bounded time, is checked by `sim.scenarios.run_step`; (f) and (g), about the
volumes, by `sim.volumes`.

Logs. The bytes one leader writes in one term are identical on every node that holds them. So
a log is a tuple of (term, epoch, start, end) segments, and two logs agree up to the first
byte whose term differs. That is all the model needs to detect truncation and lost writes.

Simplifications: there is one shared user database, created by the first leader ever elected;
lost writes do not take users with them. Chaser checkpoint = writer checkpoint. There are no
PreReplica or PreLeader transitions. A resigned node keeps its election handicap until it
restarts or is elected, not just for the next election. A reload that fails (a bad
certificate, an unknown LogLevel) only logs, as on the server, and is not modelled further.
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import yaml
from doubles.kurrentdb import (
    KurrentDBDouble,
    NodeState,
    Response,
    _node_certificate,
    _server_context,
)
from doubles.process import WATCH_DEBOUNCE, KurrentDBProcess, config_options

from tls import KeyPair

HTTP_PORT = 2113  # what gossip advertises, whatever port the node's double listens on
# One tick is about one KurrentDB gossip interval (GossipIntervalMs defaults to 2000 ms).
SECONDS_PER_TICK = 2.0
LEADING = ("Leader", "ResigningLeader")
FOLLOWING = ("CatchingUp", "Clone", "Follower")  # subscribed to a leader
SERVING = ("Leader", "Follower", "ReadOnlyReplica")
# LeaderReplicationService.CloneThreshold: a subscriber this close to the leader is a Clone.
CLONE_THRESHOLD = 1024
# LeaderReplicationService.NoQuorumTimeout (3 s): in ticks of SECONDS_PER_TICK (2 s), a leader
# short of subscriptions at two consecutive ticks has been short for more than that.
NO_QUORUM_TICKS = 2
_IDS = uuid.UUID("6f1c2d0e-5b7a-4e0c-9a51-0c8e2b6d7f31")  # namespace: deterministic GUIDs
_NO_EPOCH = "00000000-0000-0000-0000-000000000000"
ORIGINAL = "original"  # the history every node starts with


class Segment(NamedTuple):
    """Bytes [start, end) written by the leader of `term` (one term per election)."""

    term: int
    epoch: int
    start: int
    end: int


Log = tuple[Segment, ...]


def _content(log: Log) -> list[Segment]:
    return [s for s in log if s.end > s.start]


def common_bytes(a: Log, b: Log) -> int:
    """How many leading bytes two logs share (same term at the same position)."""
    pos = 0
    for x, y in zip(_content(a), _content(b), strict=False):
        if (x.term, x.start) != (y.term, y.start):
            return pos
        if x.end != y.end:
            return min(x.end, y.end)
        pos = x.end
    return pos


def prefix(log: Log, pos: int, *, markers: bool = True) -> Log:
    """The first `pos` bytes of `log`. With `markers`, keep an epoch that starts right at `pos`."""
    return tuple(
        s._replace(end=min(s.end, pos))
        for s in log
        if s.start < pos or (markers and s.start == pos)
    )


@dataclass(frozen=True)
class NodeConfig:
    """The parts of a parsed kurrentdb.conf that the model acts on."""

    cluster_size: int = 1
    seeds: frozenset[str] = frozenset()  # hosts this node gossips to
    advertise_as: str | None = None
    priority: int = 0
    error: str | None = None  # why the server would refuse to start

    @property
    def quorum(self) -> int:
        return self.cluster_size // 2 + 1

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> NodeConfig:
        size = int(config.get("ClusterSize", 1))
        raw = config.get("GossipSeed") or ()
        entries = [e.strip() for e in (raw.split(",") if isinstance(raw, str) else raw)]
        entries = [e for e in entries if e]
        hosts = frozenset(e.rpartition(":")[0] for e in entries)
        dns = str(config.get("DiscoverViaDns", True)).lower() != "false"
        error = None
        if size < 1:
            error = "ClusterSize must be positive"
        elif any(":" not in e or not e.rpartition(":")[0] for e in entries):
            error = "GossipSeed entries must be host:port"
        elif len(entries) > 1 and size == 1:
            error = "GossipSeed given with ClusterSize 1"
        elif size > 1 and not dns and not entries:
            error = "DNS discovery is disabled, but no gossip seed endpoints have been specified."
        if size > 1 and dns:
            hosts = frozenset()  # the node resolves ClusterDns and ignores GossipSeed
        advertise = config.get("NodeHostAdvertiseAs")
        priority = int(config.get("NodePriority", 0))
        return cls(max(size, 1), hosts, advertise and str(advertise), priority, error)


@dataclass(eq=False)
class SimNode:
    """One pod: its KurrentDB process (when running), its data and its HTTP double."""

    name: str
    fqdn: str
    index: int  # order of `add_node`: the last tie-breaker in elections
    double: _NodeDouble = field(repr=False)
    # Its config file, file watcher, SIGHUP handling and service log (rule 11).
    service: KurrentDBProcess = field(repr=False)
    process: str = "stopped"  # stopped | starting | up | exited (Pebble would restart it)
    config: dict[str, Any] = field(default_factory=dict)
    settings: NodeConfig = field(default_factory=NodeConfig)
    state: str = "Shutdown"  # VNodeState
    log: Log = ()
    node_priority: int = 0  # from NodePriority; /admin/node/priority changes it until restart
    resigned: bool = False  # resigned and neither restarted nor elected since
    leader: str | None = None  # the node it follows (itself while leading)
    ready_tick: int = 0  # may vote in elections from this tick on
    join_seq: int = 0  # when it last joined a leader (surplus: the latest joiner goes first)
    ever_voted: bool = False  # has been in a leader's voting group at least once
    starts: int = 0
    jitter: int = 0  # bytes its advertised checkpoints trail what it holds (Follower only)
    ready: bool = False  # SystemReady published since it started: /health/live answers 204
    short_ticks: int = 0  # consecutive ticks this leader had too few subscriptions
    boot_ticks_left: int = 0  # ticks until a starting process is up (rule 1)
    charm_down: bool = False  # stopped by the charm, not serving again yet (invariant b)
    # Stopped by a restore on purpose (every node stops between its swap and start):
    # exempt from invariant (b) until it serves again.
    restore_down: bool = False
    # Which history its data holds: ORIGINAL, or the one a restore put in place
    # (`load_data`); writes are acknowledged, and lost, within one history (invariant c).
    lineage: str = ORIGINAL
    # What the process does first once booted, if anything (the harness's truncation of
    # a restored volume): returns why it exits then, or None to go on.
    on_boot: Callable[[], str | None] | None = field(default=None, repr=False)
    known: dict[str, tuple[NodeState, int | None]] = field(default_factory=dict, repr=False)
    # Rule 12, as loaded at its last start or reload: the root its certificate chains to
    # and the roots it trusts (by fingerprint); None while TLS is not modelled.
    tls_presents: str | None = None
    tls_trusts: frozenset[str] | None = None

    @property
    def url(self) -> str:
        return self.double.url

    @property
    def ca_pem(self) -> str:
        return self.double.ca_pem

    @property
    def running(self) -> bool:
        return self.process in ("starting", "up")

    @property
    def cluster_size(self) -> int:
        return self.settings.cluster_size

    @property
    def quorum(self) -> int:
        return self.settings.quorum

    @property
    def seeds(self) -> frozenset[str]:
        return self.settings.seeds

    @property
    def advertised_host(self) -> str:
        return self.settings.advertise_as or self.fqdn

    @property
    def writer_checkpoint(self) -> int:
        return self.log[-1].end if self.log else 0

    chaser_checkpoint = writer_checkpoint

    @property
    def epoch_number(self) -> int:
        return self.log[-1].epoch if self.log else -1

    @property
    def epoch_position(self) -> int:
        return self.log[-1].start if self.log else -1

    @property
    def epoch_id(self) -> str:
        return str(uuid.uuid5(_IDS, f"term/{self.log[-1].term}")) if self.log else _NO_EPOCH

    def lists(self, other: SimNode) -> bool:
        return other.fqdn in self.seeds or other.advertised_host in self.seeds

    def authenticates(self, other: SimNode) -> bool:
        """Rule 12: each accepts the other's certificate (always, while not modelled)."""
        if self.tls_trusts is None or other.tls_trusts is None:
            return True
        return self.tls_presents in other.tls_trusts and other.tls_presents in self.tls_trusts


class NodeTlsFiles(NamedTuple):
    """What a node's TLS files hold (rule 12), as the harness reads them off its volume."""

    certificate: str
    private_key: str
    presents: str  # fingerprint of the root its certificate chains to
    trusts: frozenset[str]  # fingerprints of the roots in its trusted-roots directory


@dataclass
class _Acked:
    """What a quorum acknowledged of one term's bytes, and how much of that a later leader kept.

    Lost bytes are counted once, even while a split-brain leader keeps acknowledging more.
    """

    start: int
    end: int
    kept: int | None = None  # the least any later leader held, once it held less than `end`

    @property
    def lost(self) -> int:
        return 0 if self.kept is None else self.end - self.kept


@dataclass(frozen=True)
class TickRecord:
    """What one tick looked like, for assertions and the benchmark."""

    tick: int
    leader: str | None  # the leader with quorum at the end of the tick
    writable: bool
    down: tuple[str, ...]  # nodes whose process was not up during the round before the tick
    voting_down: int  # of those, nodes that had been voting members before
    not_serving: tuple[str, ...]  # running nodes neither Leader nor Follower after the tick
    acknowledged: int  # bytes acknowledged and not lost so far
    serving_nodes: tuple[str, ...] = ()  # running nodes that are Leader or Follower


class _NodeDouble(KurrentDBDouble):
    """A node's HTTP face: gossip, info, resign, shutdown and priority come from the model."""

    def __init__(self, cluster: SimCluster, name: str, **kwargs: Any):
        super().__init__(initialised=False, **kwargs)
        self.cluster, self.name = cluster, name
        self.users = cluster.users  # one user database for the whole cluster
        self.on_resign = lambda _double: cluster._resign(name)

    def gossip_members(self) -> list[dict[str, Any]]:
        return self.cluster._gossip_members(self.name)

    def _info(self, **_: Any) -> Response:
        with self.cluster._lock:
            return Response(200, self.node.info_json())

    def _shutdown(self, **_: Any) -> Response:
        self.shutdown_count += 1
        return Response(200, "OK", after=lambda: self.cluster._admin_shutdown(self.name))

    def _reload(self, **kwargs: Any) -> Response:
        response = super()._reload(**kwargs)
        self.cluster._reload(self.name, KurrentDBProcess.reload)
        return response

    def _priority(self, priority: str, **kwargs: Any) -> Response:
        response = super()._priority(priority=priority, **kwargs)
        if response.status == 200:
            self.cluster._set_priority(self.name, self.node.node_priority)
        return response


class SimCluster:
    """The cluster model and one HTTP double per node. Use it as a context manager (or `close`)."""

    def __init__(
        self,
        *,
        ca: KeyPair,
        admin_password: str,
        ops_password: str,
        catch_up_bytes_per_tick: int = 64 * 2**20,
        write_bytes_per_tick: int = 2**20,
        dead_member_ticks: int = 60,
        lag_jitter_bytes: int = 0,
        seed: int = 0,
        unsafe_allow_surplus_nodes: bool = False,
        boot_ticks: int = 1,
        clock: Callable[[], float] | None = None,
        watch_delay: float = WATCH_DEBOUNCE,
    ):
        """``clock``: simulated seconds (default: SECONDS_PER_TICK per tick), which the
        nodes' file watchers run on; the harness sets its own. ``watch_delay``: how long
        after the config file changed a node's watcher re-reads it (rule 11)."""
        self.clock: Callable[[], float] = clock or (lambda: self.now * SECONDS_PER_TICK)
        self.watch_delay = watch_delay
        self.ca, self.admin_password, self.ops_password = ca, admin_password, ops_password
        self.catch_up_bytes_per_tick = catch_up_bytes_per_tick
        self.write_bytes_per_tick = write_bytes_per_tick
        self.dead_member_ticks = dead_member_ticks
        self.lag_jitter_bytes = lag_jitter_bytes
        self.unsafe_allow_surplus_nodes = unsafe_allow_surplus_nodes
        # Ticks a started process spends Initializing (opening chunks, loading the index)
        # before it gossips: 1 is the kindest; a real node takes seconds to minutes.
        self.boot_ticks = boot_ticks
        # Fault injection: KurrentDB versions whose process exits at boot (a bad image).
        self.failing_versions: set[str] = set()
        self._rng = random.Random(seed)
        self.jitter_log: list[int] = []  # every lag jitter drawn, in bytes
        self.nodes: dict[str, SimNode] = {}
        self.users: dict[str, Any] = {}  # FakeUser by login, shared by every node's double
        self.now = 0  # ticks so far
        self.history: list[TickRecord] = []
        self.events: list[tuple[int, str, str]] = []  # (tick, node, what)
        self.restart_log: list[tuple[int, str, str]] = []  # (tick, node, state when stopped)
        self.restarts: Counter[str] = Counter()  # starts after the first, by node
        self.surplus_shutdowns: Counter[str] = Counter()
        self.election_count = 0
        self.write_unavailable_ticks = 0
        self.breaches: list[Breach] = []  # invariant breaches, one per invariant and tick
        # What was acknowledged, by history (`SimNode.lineage`), then by term.
        self._ledgers: dict[str, dict[int, _Acked]] = {ORIGINAL: {}}
        self._lineage = ORIGINAL  # the history the latest leader ran
        self._lost_logged = 0
        self._terms = itertools.count(1)
        self._joins = itertools.count(1)
        self._indexes = itertools.count()
        self._lock = threading.RLock()  # the doubles' request threads call in too
        # Rule 12: a node's TLS files by name, read at each start and reload; None: TLS is
        # not modelled (every node serves a certificate from `ca`, all trust each other).
        self.tls_files: Callable[[str], NodeTlsFiles | None] | None = None
        self.tls_reloads: Counter[str] = Counter()

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes.values():
            node.double.stop()

    # -- what the harness does to pods ---------------------------------------------------------
    def add_node(self, name: str, fqdn: str, *, data_bytes: int = 0) -> SimNode:
        """A new pod, KurrentDB not started yet (its double refuses connections).

        `data_bytes` preloads an acknowledged history of its own (a restored volume, say).
        """
        with self._lock:
            if name in self.nodes:
                raise ValueError(f"{name} already exists")
            sans = ("localhost", "127.0.0.1", fqdn)
            double = _NodeDouble(
                self, name, admin_password=self.admin_password, ops_password=self.ops_password,
                ca=self.ca, sans=sans,
            )  # fmt: skip
            double.start()  # take a port now; `up()` reuses it
            double.down()
            service = KurrentDBProcess(lambda: self.clock(), watch_delay=self.watch_delay)
            node = SimNode(name, fqdn, next(self._indexes), double, service)
            if data_bytes:
                term = next(self._terms)
                node.log = (Segment(term, 0, 0, data_bytes),)
                self._ledgers[ORIGINAL][term] = _Acked(0, data_bytes)
            self.nodes[name] = node
            self._sync(node)
            self._event(node, "added")
            return node

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    def set_ca(self, ca: KeyPair) -> None:
        """Serve certificates from another CA (say, the one the charm's leader generated)."""
        with self._lock:
            self.ca = ca
            for node in self.nodes.values():
                double = node.double
                sans = ("localhost", "127.0.0.1", node.fqdn)
                double.ca_pem = ca.certificate
                double._ssl = _server_context(*_node_certificate(ca, sans))
                if double.is_up:  # the listening socket holds the old TLS context
                    double.down()
                    double.up()

    def remove_node(self, name: str) -> None:
        """The pod and its data are gone; the others list it as dead for a while."""
        with self._lock:
            node = self.nodes[name]
            self._halt(node, "stopped", "removed")
            node.double.stop()
            del self.nodes[name]

    def write_config(self, name: str, text: str) -> None:
        """The charm pushed kurrentdb.conf: the node's watcher re-reads it later (rule 11)."""
        with self._lock:
            self.nodes[name].service.file_written(text)

    def sighup(self, name: str) -> None:
        """Pebble sent SIGHUP: a running node reloads its configuration (rule 11)."""
        self._reload(name, KurrentDBProcess.sighup)

    def _reload(self, name: str, reload: Callable[[KurrentDBProcess], None]) -> None:
        with self._lock:
            node = self.nodes.get(name)
            if node is not None and node.running:
                reload(node.service)
                self._event(node, f"reloaded: logs at {node.service.log_level}")
                if self._load_tls(node):
                    self.tls_reloads[name] += 1
                self._check_authentication()

    def _load_tls(self, node: SimNode) -> bool:
        """Rule 12: the node takes its certificate and trusted roots from its files now.

        Returns whether anything changed."""
        files = self.tls_files(node.name) if self.tls_files is not None else None
        if files is None:
            return False
        before = (node.tls_presents, node.tls_trusts)
        node.tls_presents, node.tls_trusts = files.presents, files.trusts
        changed = before != (node.tls_presents, node.tls_trusts)
        if changed or before[1] is None:
            node.double._ssl = _server_context(files.certificate, files.private_key)
            if node.double.is_up:  # the listening socket holds the old TLS context
                node.double.down()
                node.double.up()
            self._event(node, f"certificates loaded: presents {files.presents[:8]}")
        return changed

    def start_process(
        self, name: str, config: Mapping[str, Any] | None = None, *, version: str | None = None
    ) -> None:
        """Pebble started KurrentDB; it reads its config file now and boots at the next tick.

        ``config``: the parsed kurrentdb.conf it starts with, for callers that did not
        `write_config` it (it becomes the file); None: the file as last written."""
        with self._lock:
            node = self.nodes[name]
            if node.running:
                raise RuntimeError(f"{name}: KurrentDB is already running")
            if config is not None and config_options(node.service.file) != dict(config):
                node.service.file_written(yaml.safe_dump(dict(config)))
            node.service.started()
            node.starts += 1
            if node.starts > 1:
                self.restarts[name] += 1
            config = config_options(node.service.file)
            if config is None:
                node.config, node.settings = {}, NodeConfig(error="the config file is not YAML")
            else:
                node.config, node.settings = dict(config), NodeConfig.parse(config)
            node.node_priority, node.resigned, node.known = node.settings.priority, False, {}
            anonymous = str(node.config.get("AllowAnonymousEndpointAccess", False)).lower()
            node.double.node.allow_anonymous_endpoint_access = anonymous == "true"  # rule 13
            self._load_tls(node)
            node.process, node.state, node.leader = "starting", "Initializing", None
            node.ready, node.short_ticks = False, 0
            node.boot_ticks_left = self.boot_ticks
            node.double.node.instance_id = str(uuid.uuid5(_IDS, f"{name}/{node.starts}"))
            if version:
                node.double.node.version = version
            try:
                node.double.up()
            except OSError:  # something took its port meanwhile: the node's url changes
                node.double.port = 0
                node.double.up()
            self._sync(node)
            self._event(node, "start")
            self._check_histories()

    def stop_process(self, name: str, *, by_charm: bool = False, for_restore: bool = False) -> None:
        """Pebble stopped KurrentDB (clean shutdown); a no-op if it is not running.

        ``by_charm``: the charm asked for it, so the node counts against invariant (b)
        until it serves again, unless ``for_restore``: a restore stops every node on
        purpose between its swap and its start."""
        with self._lock:
            node = self.nodes[name]
            if node.running:
                self.restart_log.append((self.now, name, node.state))
                self._halt(node, "stopped", "stop")
                node.charm_down = by_charm and not for_restore
                node.restore_down = by_charm and for_restore

    def load_data(self, name: str, lineage: str, log: Log) -> None:
        """A stopped node's volume now holds ``log`` of history ``lineage`` (a restore
        swapped its data in, or rolled it back). A history new to the model starts
        with what the original history had acknowledged of ``log``: everything after
        it was dropped by the restore, on purpose."""
        with self._lock:
            node = self.nodes[name]
            if node.running:
                raise RuntimeError(f"{name}: its data changed under a running KurrentDB")
            if lineage not in self._ledgers:
                held = {s.term: s.end for s in log}
                self._ledgers[lineage] = {
                    term: _Acked(a.start, min(a.end, max(a.start, held[term])))
                    for term, a in self._ledgers[ORIGINAL].items()
                    if term in held
                }
            node.log, node.lineage = log, lineage
            self._event(node, f"data: {lineage} history, {node.writer_checkpoint} bytes")

    def report_breach(self, invariant: str, detail: str) -> None:
        """An invariant the harness checks (it knows the volumes) broke now."""
        with self._lock:
            self._breach(invariant, detail)

    def restart_process(
        self, name: str, config: Mapping[str, Any] | None = None, *, by_charm: bool = False
    ) -> None:
        self.stop_process(name, by_charm=by_charm)
        self.start_process(name, config)

    def process_running(self, name: str) -> bool:
        """False once stopped, or after it exited by itself (surplus, truncation, bad config)."""
        return self.nodes[name].running

    # -- observations --------------------------------------------------------------------------
    def leader(self) -> str | None:
        """The leader with quorum (the best one, should there be a split brain)."""
        with self._lock:
            leaders = [n for n in self._sorted(self.nodes.values()) if self._has_quorum(n)]
            return max(leaders, key=_rank).name if leaders else None

    @property
    def leader_restart_order(self) -> list[str]:
        """Nodes stopped (or restarted) while leading, in order."""
        return [name for _, name, state in self.restart_log if state in LEADING]

    def lost_acknowledged_writes(self) -> int:
        """Bytes a quorum acknowledged that a later leader's history does not hold."""
        return sum(a.lost for ledger in self._ledgers.values() for a in ledger.values())

    def acknowledged_bytes(self) -> int:
        """Bytes a quorum acknowledged, minus the lost ones."""
        ledger = self._ledgers[self._lineage].values()
        return sum(a.end - a.start - a.lost for a in ledger)

    def is_quiet(self) -> bool:
        """No node starting, electing, resigning or catching up."""
        with self._lock:
            nodes = self.nodes.values()
            return not any(n.process == "starting" for n in nodes) and all(
                n.state in ("Leader", "Follower") for n in nodes if n.process == "up"
            )

    # -- time ----------------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance simulated time by one step (rules 1-9 of the module docstring)."""
        with self._lock:
            self.now += 1
            self._check_invariants()  # as the last round of hooks left it
            down = [n for n in self._sorted(self.nodes.values()) if n.process != "up"]
            for node in self._sorted(self.nodes.values()):
                if node.process == "starting":
                    self._boot(node)
            groups = self._groups()
            self._detect_failures(groups)
            self._release_resigned()
            self._join_leaders(groups)
            self._elect(groups)
            writable = self._replicate()
            self._check_acknowledged()
            self._update_views()
            if not writable:
                self.write_unavailable_ticks += 1
            not_serving = tuple(
                n.name
                for n in self.nodes.values()
                if n.process == "up" and n.state not in ("Leader", "Follower")
            )
            serving = tuple(
                n.name
                for n in self.nodes.values()
                if n.process == "up" and n.state in ("Leader", "Follower")
            )
            record = TickRecord(
                self.now, self.leader(), writable, tuple(n.name for n in down),
                sum(n.ever_voted for n in down), not_serving, self.acknowledged_bytes(), serving,
            )  # fmt: skip
            self.history.append(record)
            for node in self.nodes.values():
                self._sync(node)
            self._check_invariants()

    def _check_invariants(self) -> None:
        """Invariants (a)-(c) of the module docstring; (d) is the harness's (it knows the
        scale requests)."""
        running = [n for n in self._sorted(self.nodes.values()) if n.running]
        if split_brain_possible(n.cluster_size for n in running):
            sizes = ", ".join(f"{n.name}@{n.cluster_size}" for n in running)
            self._breach("a: two disjoint majorities possible", sizes)
        down = [n.name for n in self._sorted(self.nodes.values()) if n.charm_down and n.ever_voted]
        if len(down) >= 2:
            self._breach("b: two voting nodes down by the charm", ", ".join(down))
        if self.lost_acknowledged_writes():
            self._breach("c: acknowledged writes lost", f"{self.lost_acknowledged_writes()} bytes")
        self._check_histories()
        self._check_authentication()

    def _check_authentication(self) -> None:
        """Invariant (h), also checked at every reload: hooks reload nodes between ticks."""
        running = [n for n in self._sorted(self.nodes.values()) if n.running]
        for i, a in enumerate(running):
            for b in running[i + 1 :]:
                if (a.lists(b) or b.lists(a)) and not a.authenticates(b):
                    self._breach(
                        "h: two nodes cannot authenticate each other",
                        f"{a.name} presents {a.tls_presents}, {b.name} presents "
                        f"{b.tls_presents}; {a.name} trusts {sorted(a.tls_trusts or ())}, "
                        f"{b.name} trusts {sorted(b.tls_trusts or ())}",
                    )

    def _check_histories(self) -> None:
        """Invariant (e), also checked at every start: hooks start nodes between ticks."""
        running = [n for n in self._sorted(self.nodes.values()) if n.running]
        if len({n.lineage for n in running}) > 1:
            detail = ", ".join(f"{n.name}: {n.lineage}" for n in running)
            self._breach("e: running nodes hold different histories", detail)

    def _breach(self, invariant: str, detail: str) -> None:
        if self.breaches and (self.breaches[-1].tick, self.breaches[-1].invariant) == (
            self.now,
            invariant,
        ):
            return
        self.breaches.append(Breach(self.now, invariant, detail))
        self._event_text("invariants", f"BREACH {invariant}: {detail}")

    @property
    def first_breach(self) -> Breach | None:
        return self.breaches[0] if self.breaches else None

    def _boot(self, node: SimNode) -> None:
        node.boot_ticks_left -= 1
        if node.boot_ticks_left > 0:
            return
        first, node.on_boot = node.on_boot, None
        exit_reason = first() if first is not None else None
        if exit_reason is not None:
            self._halt(node, "exited", exit_reason)
            return
        if node.settings.error:
            self._halt(node, "exited", f"config error: {node.settings.error}")
            return
        if node.double.node.version in self.failing_versions:
            self._halt(node, "exited", f"KurrentDB {node.double.node.version} fails at start")
            return
        node.process, node.state, node.ready_tick = "up", "DiscoverLeader", self.now + 1
        self._event(node, "up")

    def _groups(self) -> dict[str, frozenset[str]]:
        """Each running node's connected group (rule 2), by name."""
        up = [n for n in self._sorted(self.nodes.values()) if n.process == "up"]
        groups: dict[str, frozenset[str]] = {}
        for start in up:
            if start.name in groups:
                continue
            seen, todo = {start.name}, [start]
            while todo:
                a = todo.pop()
                for b in up:
                    listed = a.lists(b) or b.lists(a)
                    if b.name not in seen and listed and a.authenticates(b):
                        seen.add(b.name)
                        todo.append(b)
            group = frozenset(seen)
            groups.update(dict.fromkeys(group, group))
        return groups

    def _detect_failures(self, groups: dict[str, frozenset[str]]) -> None:
        for node in self._up():
            if node.leader not in (None, node.name):
                leader = self.nodes.get(node.leader)
                if not (
                    leader is not None
                    and leader.process == "up"
                    and leader.state in LEADING
                    and leader.name in groups[node.name]
                ):
                    self._leaderless(node, self.now + 1)
        for leader in self._up():
            if leader.state != "Leader":
                continue
            # ManageNoQuorumDetection: promotable subscriptions (any role) >= ClusterSize / 2.
            if 1 + len(self._subscribers(leader)) >= leader.quorum:
                leader.short_ticks = 0
                continue
            leader.short_ticks += 1
            if leader.short_ticks >= NO_QUORUM_TICKS:
                self._event(leader, "no quorum emerged within timeout: retiring")
                for member in [leader, *self._subscribers(leader)]:
                    self._leaderless(member, self.now + 1)
        for group in self._distinct(groups):
            leaders = [n for n in self._up() if n.name in group and n.state in LEADING]
            for lesser in sorted(leaders, key=_rank, reverse=True)[1:]:
                self._event(lesser, "stepped down: sees a better leader")
                for member in [lesser, *self._subscribers(lesser)]:
                    self._leaderless(member, self.now)

    def _release_resigned(self) -> None:
        for leader in self._up():
            if leader.state == "ResigningLeader":
                self._event(leader, "stepped down: resigned")
                for member in [leader, *self._subscribers(leader)]:
                    self._leaderless(member, self.now)  # elect at once: nobody died

    def _join_leaders(self, groups: dict[str, frozenset[str]]) -> None:
        for node in self._up():
            if node.leader is None and node.process == "up":
                leaders = [n for n in self._up() if n.name in groups[node.name]]
                leaders = [n for n in leaders if n.state == "Leader"]
                if leaders:
                    self._follow(node, max(leaders, key=_rank))

    def _elect(self, groups: dict[str, frozenset[str]]) -> None:
        for group in self._distinct(groups):
            members = [n for n in self._up() if n.name in group]
            if any(n.state in LEADING for n in members):
                continue
            pool = [n for n in members if n.leader is None]
            if not pool:
                continue
            best = max(pool, key=_rank)
            voters = [n for n in pool if n.ready_tick <= self.now]
            if best not in voters or len(voters) < best.quorum:
                continue
            self.election_count += 1
            epoch = max(n.epoch_number for n in pool) + 1
            end = best.writer_checkpoint
            best.log += (Segment(next(self._terms), epoch, end, end),)  # the epoch record
            best.state, best.leader, best.resigned = "Leader", best.name, False
            best.join_seq, best.ever_voted = next(self._joins), True
            self._event(best, f"elected leader of epoch {epoch}")
            if "admin" not in self.users:  # BecomeLeader creates the default users (§6.1)
                best.double.initialise()
            self._serve(best)
            for node in voters:
                # Each voter counts the accepts against its own ClusterSize; one that does
                # not reach its majority finds the leader through gossip at the next tick.
                if node is not best and node.process == "up" and len(voters) >= node.quorum:
                    self._follow(node, best)

    def _follow(self, node: SimNode, leader: SimNode) -> None:
        common = common_bytes(node.log, leader.log)
        if common < node.writer_checkpoint:  # divergent history: offline truncation
            dropped = node.writer_checkpoint - common
            node.log = prefix(node.log, common, markers=False)
            self._halt(node, "exited", f"offline truncation of {dropped} bytes")
            return
        node.leader, node.state, node.join_seq = leader.name, "CatchingUp", next(self._joins)

    def _replicate(self) -> bool:
        writable = False
        for leader in self._up():
            if leader.state != "Leader":
                continue
            budget = {}
            for sub in self._subscribers(leader):  # catch up with what the leader holds
                position = min(
                    leader.writer_checkpoint, sub.writer_checkpoint + self.catch_up_bytes_per_tick
                )
                budget[sub.name] = self.catch_up_bytes_per_tick - (position - sub.writer_checkpoint)
                sub.log = prefix(leader.log, position)
                if (
                    sub.state == "CatchingUp"
                    and leader.writer_checkpoint - position <= CLONE_THRESHOLD
                ):
                    sub.state = "Clone"
            self._assign_roles(leader)
            group = self._group(leader)
            if len(group) < leader.quorum:
                continue  # client writes time out without a quorum of followers
            last = leader.log[-1]  # this leader's own term (its epoch record at least)
            leader.log = (*leader.log[:-1], last._replace(end=last.end + self.write_bytes_per_tick))
            target = leader.writer_checkpoint
            for sub in self._subscribers(leader):
                position = min(target, sub.writer_checkpoint + budget.get(sub.name, 0))
                sub.log = prefix(leader.log, position)
                sub.jitter = 0
                if self.lag_jitter_bytes and sub.state == "Follower" and position == target:
                    sub.jitter = self._rng.randint(0, self.lag_jitter_bytes)
                    self.jitter_log.append(sub.jitter)
            positions = sorted((n.writer_checkpoint for n in group), reverse=True)
            acknowledged = positions[leader.quorum - 1]
            for s in _content(leader.log):
                if s.start < acknowledged:
                    ledger = self._ledgers[leader.lineage]
                    acked = ledger.setdefault(s.term, _Acked(s.start, s.start))
                    acked.end = max(acked.end, min(s.end, acknowledged))
            writable = writable or acknowledged >= target
        return writable

    def _assign_roles(self, leader: SimNode) -> None:
        """ManageRoleAssignments: promote caught-up clones to the leader's own
        ClusterSize - 1 followers, best log first; drop the clones beyond that."""
        subs = sorted(self._subscribers(leader), key=lambda n: (-n.writer_checkpoint, n.index))
        followers = sum(n.state == "Follower" for n in subs)
        desired = leader.cluster_size - 1
        for clone in [n for n in subs if n.state == "Clone"]:
            if followers < desired:
                clone.state, clone.ever_voted = "Follower", True
                followers += 1
                self._serve(clone)
            elif not self.unsafe_allow_surplus_nodes:
                self.surplus_shutdowns[clone.name] += 1
                self._halt(clone, "exited", "SURPLUS OF NODES IN THE CLUSTER, SHUTTING DOWN")

    def _serve(self, node: SimNode) -> None:
        """The node became Leader or Follower: SystemReady, if it was not already."""
        node.ready = True
        node.charm_down = node.restore_down = False

    def _check_acknowledged(self) -> None:
        """Compare what was acknowledged with the history of the leader (the best one)."""
        name = self.leader()
        if name is None:
            return
        held = {s.term: s.end for s in self.nodes[name].log}
        self._lineage = self.nodes[name].lineage
        for term, acked in self._ledgers[self._lineage].items():
            kept = min(acked.end, held.get(term, acked.start))
            if kept < acked.end:
                acked.kept = kept if acked.kept is None else min(acked.kept, kept)
        total = self.lost_acknowledged_writes()
        lost, self._lost_logged = total - self._lost_logged, total
        if lost:
            self._event(self.nodes[name], f"lost {lost} acknowledged bytes")

    def _update_views(self) -> None:
        groups = self._groups()
        for node in self._up():
            for name in groups[node.name]:
                if name != node.name:
                    self._sync(self.nodes[name])
                    node.known[name] = (replace(self.nodes[name].double.node), None)
            for name, (seen, dead_since) in list(node.known.items()):
                if name in groups[node.name]:
                    continue
                if dead_since is None:
                    node.known[name] = (replace(seen, is_alive=False), self.now)
                elif self.now - dead_since >= self.dead_member_ticks:
                    del node.known[name]

    # -- helpers -------------------------------------------------------------------------------
    def _up(self) -> list[SimNode]:
        return [n for n in self._sorted(self.nodes.values()) if n.process == "up"]

    def _distinct(self, groups: dict[str, frozenset[str]]) -> list[frozenset[str]]:
        """Each group once, in a stable order (set order would vary with the hash seed)."""
        return sorted(set(groups.values()), key=lambda g: min(self.nodes[n].index for n in g))

    @staticmethod
    def _sorted(nodes: Iterable[SimNode]) -> list[SimNode]:
        return sorted(nodes, key=lambda n: n.index)

    def _group(self, leader: SimNode) -> list[SimNode]:
        """The leader, then its Followers: the members whose copies acknowledge writes."""
        return [leader] + [n for n in self._subscribers(leader) if n.state == "Follower"]

    def _subscribers(self, leader: SimNode) -> list[SimNode]:
        """The running nodes subscribed to this leader: catching up, clones, followers."""
        return [
            n for n in self._up()
            if n is not leader and n.leader == leader.name and n.state in FOLLOWING
        ]  # fmt: skip

    def _has_quorum(self, node: SimNode) -> bool:
        return (
            node.process == "up"
            and node.state == "Leader"
            and 1 + len(self._subscribers(node)) >= node.quorum
        )

    def _leaderless(self, node: SimNode, ready_tick: int) -> None:
        node.leader, node.state, node.ready_tick = None, "Unknown", ready_tick

    def _halt(self, node: SimNode, process: str, why: str) -> None:
        """The process ends; followers notice at the next tick."""
        if node.running:
            node.process, node.state, node.leader = process, "Shutdown", None
            node.ready, node.short_ticks = False, 0  # BecomeShuttingDown: 503 again
            node.double.down()
        self._sync(node)
        self._event(node, why)

    def _event(self, node: SimNode, what: str) -> None:
        self.events.append((self.now, node.name, what))

    def _event_text(self, name: str, what: str) -> None:
        self.events.append((self.now, name, what))

    def _sync(self, node: SimNode) -> None:
        """Copy the model's view of a node into the NodeState its double serves."""
        ns = node.double.node
        ns.state, ns.is_alive = node.state, True
        ns.live = node.process == "up" and node.ready
        ns.http_host, ns.http_port = node.advertised_host, HTTP_PORT
        jitter = node.jitter if node.state == "Follower" else 0
        ns.writer_checkpoint = ns.chaser_checkpoint = max(0, node.writer_checkpoint - jitter)
        ns.last_commit_position = node.writer_checkpoint if node.log else -1
        ns.epoch_number, ns.epoch_position = node.epoch_number, node.epoch_position
        ns.epoch_id, ns.node_priority = node.epoch_id, node.node_priority

    # -- called from the doubles' request threads ----------------------------------------------
    def _gossip_members(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            node = self.nodes[name]
            self._sync(node)
            members = {name: node.double.node}
            if node.process == "up":
                members |= {other: seen for other, (seen, _) in node.known.items()}
            return [members[n].gossip_json() for n in sorted(members)]

    def _resign(self, name: str) -> None:
        with self._lock:
            node = self.nodes[name]
            if node.process == "up" and node.state == "Leader":
                node.state, node.resigned = "ResigningLeader", True
                self._sync(node)
                self._event(node, "resign requested")

    def _admin_shutdown(self, name: str) -> None:
        with self._lock:
            if name in self.nodes:
                self._halt(self.nodes[name], "exited", "admin shutdown")

    def _set_priority(self, name: str, priority: int) -> None:
        with self._lock:
            self.nodes[name].node_priority = priority


def split_brain_possible(sizes: Iterable[int]) -> bool:
    """Whether running nodes with these ClusterSizes hold two disjoint sets that could each
    elect a leader: a set elects a node once it holds that node's own majority
    (`ElectionsService`), so the two nodes with the smallest majorities decide."""
    quorums = sorted(size // 2 + 1 for size in sizes)
    return len(quorums) >= 2 and quorums[0] + quorums[1] <= len(quorums)


@dataclass(frozen=True)
class Breach:
    """The first tick at which an invariant failed, and how."""

    tick: int
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"tick {self.tick}: invariant {self.invariant} broken: {self.detail}"


def _rank(node: SimNode) -> tuple[int, int, bool, int, int]:
    """Election preference: most data (epoch first), not resigned, priority, first added."""
    return (
        node.epoch_number, node.writer_checkpoint, not node.resigned,
        node.node_priority, -node.index,
    )  # fmt: skip
