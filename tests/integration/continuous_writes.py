"""Continuous writes to a KurrentDB cluster, to prove that scaling and failures lose nothing.

`ContinuousWrites` appends one event at a time to one stream from a background thread of
the test process, remembers every event KurrentDB acknowledged, and measures each time
writes stopped being acknowledged (a *write pause*: from the last acknowledgement before
the trouble to the first one after it). After `stop()`, `verify()` reads the stream back,
from the leader and from every node, and reports any acknowledged event that is missing.

How the test host reaches the nodes
-----------------------------------
The writer runs on the test host, not in the cluster: `juju ssh`/`kubectl exec` into a
workload container gives neither Python nor the client library, and a port-forward reaches
one pod, whereas a cluster client must follow the leader from pod to pod.

- **Addresses.** On MicroK8s the host routes the pod network (Calico), so every pod IP is
  reachable from the host. The IPs come from `kubectl get pods` (or `juju status`, whose
  unit address is the pod IP) and are looked up again whenever a connection fails, because
  a deleted pod comes back with a new IP.
- **Names.** The nodes' certificates, signed by the charm's CA, carry the pod FQDNs
  (`kurrentdb-0.kurrentdb-endpoints.<model>.svc.cluster.local`), not the IPs; and the
  nodes advertise those FQDNs in gossip, so the client is told to connect to the leader by
  FQDN. The host's resolver usually cannot resolve `*.svc.cluster.local` (no /etc/hosts
  edits, no resolv.conf changes: tests must not change the machine). So `PodIPClient`
  keeps the client's cluster logic as is (seeds, gossip, leader discovery, reconnect on
  "not leader") and changes only where a gRPC channel goes: a channel for
  `<pod FQDN>:2113` connects to `<pod IP>:2113` with `grpc.ssl_target_name_override` set to
  the FQDN, so TLS still checks the certificate against the charm's CA *and* the FQDN
  (SNI is the FQDN too). A wrong CA or a certificate without that name still fails.
  This relies on kurrentdbclient building every channel in `_construct_grpc_channel`
  (true in 1.3.x; the lock file pins the version); `PodIPClient` checks that it exists.
- **Credentials.** `admin` and the password from the `get-password` action; the CA from
  `/etc/kurrentdb/certs/ca/ca.crt` in a `kurrentdb` container.

Where pod IPs are not routable from the test host (a remote Kubernetes), run the tests on a
machine that is on the pod network instead; nothing here can work around that.

What counts
-----------
- An event is *acknowledged* when `append_to_stream` returned. Each event has its own id
  and is retried with that id until acknowledged (KurrentDB's idempotent append makes a
  retry of a write that did land a no-op; if the retry lands again anyway after a leader
  change, the stream holds a duplicate, which is reported, not a failure).
- Lost = acknowledged but not in the stream. Acknowledged events must also appear in the
  order in which they were acknowledged.
- Every failed attempt is counted (as the writer sees them: kurrentdbclient itself retries a
  failed call once, and follows a "not leader" answer to the leader, before it gives up);
  failures and gaps between acknowledgements longer than `pause_threshold` are reported as
  pauses with their durations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import NotFoundError

T = TypeVar("T")

PORT = 2113
CLUSTER_DOMAIN = "cluster.local"  # as src/workload/render.py: the node certificates' SANs
EVENT_TYPE = "ContinuousWrite"

# Short timeouts: a dead leader must not hold the writer for minutes.
_URI_OPTIONS = (
    "tls=true&MaxDiscoverAttempts=3&DiscoveryInterval=500&GossipTimeout=3"
    "&KeepAliveInterval=5000&KeepAliveTimeout=5000"
)


def pod_fqdn(app: str, unit_number: int, model: str) -> str:
    """The stable DNS name of a unit's pod, as in the node certificates and gossip."""
    return f"{app}-{unit_number}.{app}-endpoints.{model}.svc.{CLUSTER_DOMAIN}"


# --- where the pods are -------------------------------------------------------------------


def kubectl_command() -> list[str] | None:
    """`kubectl`, or MicroK8s' bundled one, if it can talk to a cluster; else None."""
    candidates = []
    if shutil.which("kubectl"):
        candidates.append(["kubectl"])
    if shutil.which("microk8s"):
        candidates.append(["microk8s", "kubectl"])
    for command in candidates:
        try:
            proc = subprocess.run(
                [*command, "get", "namespaces", "-o", "name"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0:
            return command
    return None


def kubectl_pod_ips(kubectl: Sequence[str], model: str, app: str) -> Callable[[], dict[str, str]]:
    """A lookup of {pod FQDN: pod IP} for the app's pods, from the Kubernetes API."""
    pod_name = re.compile(rf"^{re.escape(app)}-(\d+)$")

    def lookup() -> dict[str, str]:
        out = subprocess.run(
            [*kubectl, "get", "pods", "-n", model, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        ips = {}
        for pod in json.loads(out)["items"]:
            match = pod_name.match(pod["metadata"]["name"])
            ip = pod.get("status", {}).get("podIP")
            if match and ip:
                ips[pod_fqdn(app, int(match.group(1)), model)] = ip
        return ips

    return lookup


def juju_unit_ips(juju: Any, app: str, model: str) -> Callable[[], dict[str, str]]:
    """A lookup of {pod FQDN: pod IP} from `juju status` (a jubilant.Juju as `juju`).

    On Kubernetes a unit's address is its pod's IP. Juju learns a new IP a little after
    Kubernetes does; `kubectl_pod_ips` is fresher when kubectl is available.
    """

    def lookup() -> dict[str, str]:
        status = juju.status()
        units = status.apps[app].units if app in status.apps else {}
        return {
            pod_fqdn(app, int(unit.rsplit("/", 1)[1]), model): info.address
            for unit, info in units.items()
            if info.address
        }

    return lookup


class PodAddresses:
    """Pod FQDN → pod IP, looked up again when stale or when a connection failed."""

    def __init__(self, lookup: Callable[[], Mapping[str, str]], ttl: float = 10.0):
        self._lookup = lookup
        self._ttl = ttl
        self._lock = threading.Lock()
        self._ips: dict[str, str] = {}
        self._fetched = -float("inf")

    def refresh(self) -> None:
        """Look the addresses up now (keeps the old ones if the lookup fails)."""
        try:
            ips = dict(self._lookup())
        except Exception:  # a failing kubectl/juju call must not kill the writer
            ips = None
        with self._lock:
            self._fetched = time.monotonic()
            if ips:
                self._ips = ips

    def invalidate(self) -> None:
        """Make the next use look the addresses up again."""
        with self._lock:
            self._fetched = -float("inf")

    def _fresh(self) -> dict[str, str]:
        with self._lock:
            stale = time.monotonic() - self._fetched > self._ttl
        if stale:
            self.refresh()
        with self._lock:
            return dict(self._ips)

    def hosts(self) -> list[str]:
        """The FQDNs of the pods that exist now, in a stable order."""
        return sorted(self._fresh())

    def ip_of(self, host: str) -> str | None:
        """The pod IP behind a FQDN, None for names that are not our pods."""
        ips = self._fresh()
        if host not in ips and host.endswith(f".svc.{CLUSTER_DOMAIN}"):
            # A pod we have not seen yet (just added): look again, at most once a second.
            with self._lock:
                recent = time.monotonic() - self._fetched < 1.0
            if not recent:
                self.refresh()
                ips = self._fresh()
        return ips.get(host)


# --- the client ---------------------------------------------------------------------------


class PodIPClient(KurrentDBClient):
    """kurrentdbclient's client, whose channels to pod FQDNs go to the pods' IPs.

    TLS verification still uses the FQDN (see the module docstring).
    """

    def __init__(self, uri: str, *, addresses: PodAddresses, root_certificates: str):
        if not hasattr(KurrentDBClient, "_construct_grpc_channel"):  # pragma: no cover
            raise RuntimeError("this kurrentdbclient has no _construct_grpc_channel to wrap")
        self._addresses = addresses  # before super().__init__, which connects
        super().__init__(uri, root_certificates=root_certificates)

    def _construct_grpc_channel(self, grpc_target: str, grpc_options: Any = ()) -> Any:
        host, _, port = grpc_target.rpartition(":")
        ip = self._addresses.ip_of(host)
        if ip is None:  # not one of our pods: connect as asked
            return super()._construct_grpc_channel(grpc_target, grpc_options)
        address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        options = (*tuple(grpc_options), ("grpc.ssl_target_name_override", host))
        return super()._construct_grpc_channel(address, options)


def _check_password(password: str) -> None:
    # kurrentdbclient takes the credentials from the URI without unquoting them.
    if any(c in password for c in "@:/?#,%[]"):
        raise ValueError("the admin password must not contain @ : / ? # , % [ ]")


def cluster_client(addresses: PodAddresses, password: str, ca_pem: str) -> KurrentDBClient:
    """A client that discovers the leader through gossip, seeded with every pod."""
    _check_password(password)
    seeds = ",".join(f"{host}:{PORT}" for host in addresses.hosts())
    if not seeds:
        raise RuntimeError("no KurrentDB pods found")
    # Two or more seeds make kurrentdbclient discover the leader; with one it would connect
    # to that node only, so a single-node cluster gets its seed twice.
    if "," not in seeds:
        seeds = f"{seeds},{seeds}"
    uri = f"kurrentdb://admin:{password}@{seeds}?{_URI_OPTIONS}"
    return PodIPClient(uri, addresses=addresses, root_certificates=ca_pem)


def node_client(host: str, addresses: PodAddresses, password: str, ca_pem: str) -> KurrentDBClient:
    """A client for one node only, which may read from a follower."""
    _check_password(password)
    uri = f"kurrentdb://admin:{password}@{host}:{PORT}?{_URI_OPTIONS}&NodePreference=random"
    return PodIPClient(uri, addresses=addresses, root_certificates=ca_pem)


# --- what the writer saw ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ack:
    """One acknowledged event."""

    seq: int
    event_id: uuid.UUID
    commit_position: int
    attempts: int


@dataclasses.dataclass
class WritePause:
    """A time without acknowledgements: from the last ack before it to the first after."""

    started_at: float  # wall clock, time.time()
    duration: float
    failed_attempts: int
    errors: list[str]

    def __str__(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.started_at))
        errors = "; ".join(self.errors) or "no error, just slow"
        return (
            f"{self.duration:.1f}s from {when}, {self.failed_attempts} failed attempts ({errors})"
        )


@dataclasses.dataclass
class Report:
    """What `verify()` found."""

    stream: str
    acknowledged: int
    failed_attempts: int
    retried_events: int
    longest_gap: float
    pauses: list[WritePause]
    missing: list[Ack]
    out_of_order: list[Ack]
    duplicates: int
    unacknowledged_present: int
    per_node_missing: dict[str, str]  # host → "0" or a count or an error

    @property
    def lost(self) -> int:
        """Acknowledged events not found on the leader."""
        return len(self.missing)

    @property
    def ok(self) -> bool:
        """No acknowledged event lost or reordered, anywhere."""
        return (
            self.acknowledged > 0
            and not self.missing
            and not self.out_of_order
            and all(v == "0" for v in self.per_node_missing.values())
        )

    def summary(self) -> str:
        """Several lines for the test log."""
        lines = [
            f"stream {self.stream}: {self.acknowledged} events acknowledged,"
            f" {self.lost} lost, {len(self.out_of_order)} out of order,"
            f" {self.duplicates} duplicates, {self.unacknowledged_present} written"
            " without an acknowledgement",
            f"failed attempts {self.failed_attempts}, events that needed a retry"
            f" {self.retried_events}, longest gap between acknowledgements"
            f" {self.longest_gap:.1f}s",
            *(f"write pause: {pause}" for pause in self.pauses),
            *(f"node {host}: missing {n}" for host, n in sorted(self.per_node_missing.items())),
        ]
        if self.missing:
            lines.append(f"lost (first 10): {[a.seq for a in self.missing[:10]]}")
        return "\n".join(lines)


# --- the writer ---------------------------------------------------------------------------


class ContinuousWrites:
    """Append events to one stream from a background thread until stopped.

    Use as a context manager (`with ContinuousWrites(...) as writes:`), which starts the
    thread and stops it on exit, or call `start()` and `stop()`; then call `verify()`.
    """

    def __init__(
        self,
        addresses: PodAddresses,
        password: str,
        ca_pem: str,
        *,
        stream: str | None = None,
        interval: float = 0.05,
        attempt_timeout: float = 5.0,
        pause_threshold: float = 1.0,
        client_factory: Callable[[], KurrentDBClient] | None = None,
    ):
        self.addresses = addresses
        self.password = password
        self.ca_pem = ca_pem
        self.stream = stream or f"continuous-writes-{uuid.uuid4().hex[:8]}"
        self.interval = interval
        self.attempt_timeout = attempt_timeout
        self.pause_threshold = pause_threshold
        self._client_factory = client_factory or (
            lambda: cluster_client(self.addresses, self.password, self.ca_pem)
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acks: list[Ack] = []
        self._pauses: list[WritePause] = []
        self._failed_attempts = 0
        self._longest_gap = 0.0
        self._current_errors: list[str] = []  # failures since the last acknowledgement
        self._crash: BaseException | None = None

    # -- control

    def start(self) -> ContinuousWrites:
        """Start writing in a background thread."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"writes-{self.stream}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop writing (the event in flight, if any, finishes or is abandoned)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.attempt_timeout * 3 + 60)
            if self._thread.is_alive():
                raise RuntimeError("the writer thread did not stop")
        if self._crash is not None:
            raise RuntimeError("the writer thread crashed") from self._crash

    def __enter__(self) -> ContinuousWrites:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- progress while running

    @property
    def acknowledged(self) -> int:
        """How many events have been acknowledged so far."""
        with self._lock:
            return len(self._acks)

    @property
    def failed_attempts(self) -> int:
        """How many append attempts have failed so far."""
        with self._lock:
            return self._failed_attempts

    def wait_for_acks(self, count: int = 20, timeout: float = 180.0) -> None:
        """Wait until `count` more events are acknowledged: writes are flowing."""
        target = self.acknowledged + count
        deadline = time.monotonic() + timeout
        while self.acknowledged < target:
            if self._crash is not None:
                raise RuntimeError("the writer thread crashed") from self._crash
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"writes stalled: {self.acknowledged}/{target} acknowledged after"
                    f" {timeout:.0f}s; last errors: {self._last_errors()}"
                )
            time.sleep(0.2)

    def wait_for_failures(self, since: int, timeout: float = 120.0) -> bool:
        """Wait until more than `since` append attempts have failed (False on timeout).

        Take `since` from `failed_attempts` before the disruption, so that failures that
        happened while the disruption was being caused count.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.failed_attempts > since:
                return True
            time.sleep(0.2)
        return False

    def _last_errors(self) -> list[str]:
        with self._lock:
            return self._current_errors[-3:]

    # -- the writer thread

    def _run(self) -> None:
        try:
            self._write_until_stopped()
        except BaseException as e:  # surfaced by stop()/wait_for_acks()
            self._crash = e

    def _write_until_stopped(self) -> None:
        client: KurrentDBClient | None = None
        seq, attempts = 0, 0
        event: NewEvent | None = None
        # Connecting before the first acknowledgement is no pause, unless attempts failed.
        started, last_ack_wall = time.monotonic(), time.time()
        last_ack: float | None = None
        pause_failures = 0
        while not self._stop.is_set():
            if event is None:
                event = NewEvent(
                    type=EVENT_TYPE,
                    data=json.dumps({"seq": seq}).encode(),
                    id=uuid.uuid4(),
                )
                attempts = 0
            attempts += 1
            try:
                if client is None:
                    client = self._client_factory()
                commit = client.append_to_stream(
                    self.stream,
                    events=event,
                    current_version=StreamState.ANY,
                    timeout=self.attempt_timeout,
                )
            except Exception as e:
                error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                with self._lock:
                    self._failed_attempts += 1
                    if error not in self._current_errors:
                        self._current_errors.append(error)
                pause_failures += 1
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
                    client = None
                self.addresses.invalidate()  # the pod may have come back with a new IP
                self._stop.wait(min(0.2 * pause_failures, 2.0))
                continue
            now = time.monotonic()
            if last_ack is not None:
                gap = now - last_ack
            else:
                gap = now - started if pause_failures else 0.0
            with self._lock:
                self._acks.append(Ack(seq, event.id, int(commit), attempts))
                self._longest_gap = max(self._longest_gap, gap)
                if pause_failures or gap > self.pause_threshold:
                    self._pauses.append(
                        WritePause(last_ack_wall, gap, pause_failures, self._current_errors[-5:])
                    )
                self._current_errors = []
            last_ack, last_ack_wall = now, time.time()
            pause_failures = 0
            seq += 1
            event = None
            self._stop.wait(self.interval)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # -- verification

    def verify(self, *, per_node: bool = True, timeout: float = 180.0) -> Report:
        """Read the stream back (leader, then each node) and compare with the acks."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("stop() the writer before verify()")
        with self._lock:
            acks = list(self._acks)
            pauses = list(self._pauses)
            failed = self._failed_attempts
            longest = self._longest_gap
        recorded = retry(
            lambda: self._read(cluster_client(self.addresses, self.password, self.ca_pem)),
            timeout,
        )
        first_position: dict[uuid.UUID, int] = {}
        duplicates = 0
        for event_id, position in recorded:
            if event_id in first_position:
                duplicates += 1
            else:
                first_position[event_id] = position
        missing = [a for a in acks if a.event_id not in first_position]
        out_of_order = []
        previous = -1
        for ack in acks:
            position = first_position.get(ack.event_id)
            if position is None:
                continue
            if position <= previous:
                out_of_order.append(ack)
            previous = max(previous, position)
        acked_ids = {a.event_id for a in acks}
        per_node_missing = {}
        if per_node:
            for host in self.addresses.hosts():
                per_node_missing[host] = self._missing_on_node(host, acked_ids, timeout)
        return Report(
            stream=self.stream,
            acknowledged=len(acks),
            failed_attempts=failed,
            retried_events=sum(1 for a in acks if a.attempts > 1),
            longest_gap=longest,
            pauses=pauses,
            missing=missing,
            out_of_order=out_of_order,
            duplicates=duplicates,
            unacknowledged_present=len(set(first_position) - acked_ids),
            per_node_missing=per_node_missing,
        )

    def _read(self, client: KurrentDBClient) -> list[tuple[uuid.UUID, int]]:
        try:
            events = client.get_stream(self.stream, timeout=60)
        except NotFoundError:
            events = ()
        finally:
            with contextlib.suppress(Exception):
                client.close()
        return [(e.id, e.stream_position) for e in events]

    def _missing_on_node(self, host: str, acked_ids: set[uuid.UUID], timeout: float) -> str:
        """How many acknowledged events a node lacks, once it has had time to catch up."""
        deadline = time.monotonic() + timeout
        result = "not read"
        while True:
            try:
                client = node_client(host, self.addresses, self.password, self.ca_pem)
                present = {event_id for event_id, _ in self._read(client)}
                missing = len(acked_ids - present)
                result = str(missing)
                if missing == 0:
                    return result
            except Exception as e:
                result = f"unreadable: {type(e).__name__}: {str(e)[:120]}"
            if time.monotonic() > deadline:
                return result  # a follower still behind after `timeout` is reported
            time.sleep(2)


def retry(action: Callable[[], T], timeout: float = 300, interval: float = 2) -> T:
    """`action()`, retried on any exception until `timeout` (then the last one is raised).

    The cluster may still be electing a leader, or a relation still being answered.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


@contextlib.contextmanager
def continuous_writes(
    addresses: PodAddresses, password: str, ca_pem: str, **kwargs: Any
) -> Iterator[ContinuousWrites]:
    """Write while the body runs; afterwards verify, print the report, assert no loss."""
    writes = ContinuousWrites(addresses, password, ca_pem, **kwargs)
    try:
        with writes:
            writes.wait_for_acks(10)
            yield writes
    except BaseException:
        # Say what the writer saw before the failure, for the log; the failure stands.
        with contextlib.suppress(Exception):
            print(writes.verify(per_node=False, timeout=30).summary())
        raise
    report = writes.verify()
    print(report.summary())
    assert not report.missing, f"acknowledged events lost:\n{report.summary()}"
    assert report.ok, report.summary()


CA_FILE = "/etc/kurrentdb/certs/ca/ca.crt"


def app_addresses(juju: Any, app: str) -> PodAddresses:
    """The app's pod IPs, from kubectl when there is one, else from `juju status`."""
    model = juju.model.split(":")[-1]
    kubectl = kubectl_command()
    if kubectl:
        return PodAddresses(kubectl_pod_ips(kubectl, model, app))
    return PodAddresses(juju_unit_ips(juju, app, model))


def admin_credentials(juju: Any, app: str) -> tuple[str, str]:
    """The admin password and the charm's CA certificate (PEM), from the app's unit 0."""
    unit = f"{app}/0"
    password = juju.run(unit, "get-password", {"username": "admin"}).results["password"]
    ca_pem = juju.ssh(unit, "cat", CA_FILE, container="kurrentdb").replace("\r\n", "\n")
    assert "BEGIN CERTIFICATE" in ca_pem
    return password, ca_pem
