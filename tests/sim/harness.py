"""Several charm units played against each other, each with a simulated KurrentDB node.

Each unit has its own Scenario state (container, volumes, stored state, unit secrets);
they share what Juju shares: the peer relation's databags and the app's secrets. Running a
hook on one unit may change a databag, which queues `relation-changed` on the others, as
Juju does. Pebble calls of the charm (replan, restart, stop) start and stop the node in the
`SimCluster` model; its config file pushes, SIGHUPs and `pebble logs` reach the node's
process model (file watcher, reload, service log), and its waits are simulated time. Between
rounds of hooks the cluster ticks (elections, catch-up, client writes) and every unit gets
`update-status`, until nothing changes any more.

Kubernetes and goal-state are modelled apart, as they behave: a scale request creates the
StatefulSet's pods at once (`add_pods`), which the charm can list (`kubernetes_api`), while
each unit appears in goal-state (`planned_units`) only when its pod introduces itself
(`introduce_at`, on a simulated clock of SECONDS_PER_TICK per tick). `run_for` plays time
out the way a quiet model sees it: update-status every UPDATE_STATUS_INTERVAL per unit, and
each unit running at most one hook per tick.

The charm finds its `data` storage at the unit's volume, as the workload does. With
`enable_backups`, every unit also has an s3-parameters relation and the same synthetic
KurrentDB data directory on its volume, and each node's log follows the data set its
volume holds when it starts (`sim.volumes`); `run_action` runs an action on a unit, and
a test's fault injection can kill a hook mid-way (`HookKilledError`).

Refreshes (`juju_refresh`) follow `sim.statefulset`: the StatefulSet gets a new update
revision, and between rounds its controller replaces the pod it may (highest ordinal first,
at or above the partition the charm sets, one at a time): its node stops as the old pod's
`stop` hook runs, and the new pod (new stored state, Pebble
plan and /etc; same volume and secrets; the revision's KurrentDB version) runs
upgrade-charm, config-changed and pebble-ready.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import signal
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import ops
import yaml
from ops import testing
from scenario import mocking as scenario_mocking
from scenario.state import _CharmSpec

import coordinator as coordinator_module
import kubernetes as kubernetes_module
import node as node_module
import workload.kurrentdb as workload_module
from charm import KurrentDBCharm
from sim.certificates_provider import APP as CERTIFICATES_APP
from sim.certificates_provider import RELATION_ID as CERTIFICATES_RELATION_ID
from sim.certificates_provider import SimCertificatesProvider, node_tls_files
from sim.kurrentdb_cluster import SECONDS_PER_TICK, SimCluster
from sim.statefulset import SimPod, SimStatefulSet
from sim.volumes import VolumeHistories, data_identity
from state import PEER_RELATION
from tls import KeyPair
from workload import paths
from workload.render import NodeIdentity

APP = "kurrentdb"
MODEL = "prod"
ADMIN_PASSWORD = "sim-admin-password"
OPS_PASSWORD = "sim-ops-password"

EventFactory = Callable[[testing.Context, testing.State], Any]

# Juju's default update-status-hook-interval.
UPDATE_STATUS_INTERVAL = 300.0
# Peer data a unit changes when only its node's health changed.
HEALTH_KEYS = frozenset({"role", "caught-up"})
# The orders in which Juju may run the queued hooks of different units: it promises none.
HOOK_ORDERS = ("number", "newest")
# What the image says `KurrentDB --version` is, in simulations with backups: the version
# the nodes' doubles report too.
IMAGE_VERSION = "26.1.0"
# The charm revision each pod revision runs (a refresh to rev-2 is charm revision 8).
CHARM_REVISIONS = {"rev-1": 7, "rev-2": 8, "rev-3": 9}
IMAGE_REFERENCE = "docker.kurrent.io/kurrent-latest/kurrentdb:26.1.0"
BACKUP_RELATION_ID = 2
# Plan phases (backup.restore.PlanPhase) in which the restore stops every node on purpose.
RESTORE_STOP_PHASES = ("swap", "start", "roll-back")


class HookKilledError(Exception):
    """Raised by a test's fault injection: the hook dies here, as a killed pod's would.

    The harness keeps what outlives a dead hook (files on the volumes, Pebble's services)
    and drops what Juju drops (relation data, stored state), then retries the hook.
    """


@dataclasses.dataclass
class SimUnit:
    """One unit: its Scenario state and the host directories behind its container."""

    name: str
    root: pathlib.Path
    state: testing.State | None = None
    hooks: int = 0
    revision: str = "rev-1"  # the controller revision its pod was created from
    image_version: str | None = None  # what `KurrentDB --version` prints (None: no answer)
    pod_starts: int = 1  # pods this unit has had (a refresh replaces one)

    @property
    def number(self) -> int:
        return int(self.name.split("/")[1])

    @property
    def etc(self) -> pathlib.Path:
        return self.root / "etc"

    @property
    def data(self) -> pathlib.Path:
        return self.root / "data"

    def rendered_config(self) -> dict[str, Any]:
        return yaml.safe_load((self.etc / "kurrentdb" / "kurrentdb.conf").read_text())


class Simulation:
    """Juju, Kubernetes and KurrentDB for N charm units, in one process."""

    def __init__(
        self,
        tmp: pathlib.Path,
        cluster: SimCluster,
        monkeypatch: Any,
        *,
        hook_order: str = "number",
        strict: bool = True,
    ):
        """``hook_order``: "number" runs the hooks one event queues for several units in
        unit-number order, "newest" newest unit first. ``strict``: fail (AssertionError)
        at the first tick that breaks an invariant of the cluster model."""
        assert hook_order in HOOK_ORDERS, hook_order
        self.tmp = tmp
        self.cluster = cluster
        self.hook_order = hook_order
        self.strict = strict
        self._hook_time = 0.0  # simulated seconds a running hook slept, not yet ticked
        self.units: dict[str, SimUnit] = {}
        self.unit_data: dict[str, dict[str, str]] = {}
        self.app_data: dict[str, str] = {}
        self.app_secrets: dict[str, testing.Secret] = {}
        self.leader: str | None = None
        # The admin password is the user's choice, so the simulated nodes know it too.
        users = testing.Secret({"admin": ADMIN_PASSWORD, "ops": OPS_PASSWORD})
        self.user_secrets = {users}
        self.config: dict[str, Any] = {"system-users": users.id}
        self._ca_applied: str | None = None
        self.queue: collections.deque[tuple[str, str, EventFactory]] = collections.deque()
        self.next_number = 0
        self.planned_units = 0  # what `goal-state` says: changes before units come or go
        self.pods: set[int] = set()  # ordinals of the StatefulSet's pods (not being deleted)
        self.kubernetes_api = True  # whether the charm may list them
        self.clock = 0.0  # simulated seconds
        # How long a removed unit's pod (and its KurrentDB) outlives the unit (see
        # `remove_unit`), and the pods still going: (simulated time gone, unit).
        self.pod_linger_seconds = 0.0
        self._pods_going: list[tuple[float, str]] = []
        self._arrivals: list[float] = []  # when the next pods without a unit introduce
        self.hooks_run = 0
        self.hook_log: list[tuple[float, str, str]] = []  # (clock, unit, hook)
        self.membership_changes: list[tuple[float, tuple[str, ...]]] = []  # (clock, members)
        self.introduced: list[tuple[float, str]] = []  # (clock, unit) as units appear
        # Restarts the charm asked Pebble for (KurrentDB's own exits are in the model).
        self.charm_restarts: collections.Counter[str] = collections.Counter()
        self._current: SimUnit | None = None
        self._relation_id = 1
        self._monkeypatch = monkeypatch
        # Backups and restores (`enable_backups`): off unless a test asks.
        self.volumes: VolumeHistories | None = None
        self._backup_relation: testing.Relation | None = None
        self._data_spec: Any = None
        self._backend: Any = None  # the running hook's model backend (its live databags)
        self._service_now: ops.pebble.ServiceStatus | None = None  # set by this hook
        self.failed_hooks: list[tuple[str, str]] = []  # (unit, hook) of killed hooks
        # The StatefulSet as its controller rolls it out (`juju_refresh`); the image
        # version new pods get (None: the image does not answer `--version`).
        self.statefulset = SimStatefulSet()
        self.image_version: str | None = None
        self.pods_replaced: list[tuple[float, str, str]] = []  # (clock, unit, revision)
        self._pebble_down: set[str] = set()  # new pods whose Pebble is not up yet
        self.chowns: list[tuple[str, list[str]]] = []  # (unit, command) run in its container
        self.last_action_logs: list[str] = []
        # The certificates relation (`relate_certificates`): its provider, each unit's
        # databag in it, the provider's app databag, units whose relation is gone.
        self.certificates: SimCertificatesProvider | None = None
        self._certificates_unit_data: dict[str, dict[str, str]] = {}
        self._certificates_app_data: dict[str, str] = {}
        self._certificates_gone: set[str] = set()
        self._old_roots: list[str] = []  # roots of a provider no longer related
        # A hook that waits lets simulated time pass: the cluster ticks while it sleeps,
        # and what the hook wrote to relation data reaches nobody before it ends.
        monkeypatch.setattr(
            node_module,
            "time",
            types.SimpleNamespace(monotonic=lambda: self.clock, sleep=self._sleep_in_hook),
        )
        # Simulated time: restarts need not wait out Pebble's kill-delay in real seconds.
        monkeypatch.setattr(workload_module, "STOP_SPACING", 0.0)
        self._patch_pebble(monkeypatch)
        self._patch_kubernetes_and_time(monkeypatch)
        # Every hook builds a Context, which parses charmcraft.yaml again: parse it once.
        spec = _CharmSpec.autoload(KurrentDBCharm)
        monkeypatch.setattr(_CharmSpec, "autoload", staticmethod(lambda charm_type: spec))
        self._patch_storage(monkeypatch)
        self._patch_statefulset(monkeypatch)

    def enable_backups(self, relation: testing.Relation, data_spec: Any) -> None:
        """Give every unit an s3-parameters relation and a synthetic data directory.

        ``relation`` is the storage relation every unit's state holds (its id must be
        BACKUP_RELATION_ID); ``data_spec`` a `datadir.DataDirSpec`: every unit added
        afterwards gets that same data on its volume (one seed: the nodes hold one
        replicated history). The nodes' logs follow their volumes (`VolumeHistories`),
        the image reports IMAGE_VERSION, and the restore's clock is the simulated one.
        """
        assert relation.id == BACKUP_RELATION_ID, relation.id
        assert not self.units, "enable backups before adding units"
        self._backup_relation, self._data_spec = relation, data_spec
        self.volumes = VolumeHistories(self.cluster)
        from backup import capability, participant

        epoch = time.time()  # simulated seconds count from the real start
        clock = types.SimpleNamespace(
            time=lambda: epoch + self.seconds(),
            monotonic=self.seconds,
            sleep=self._sleep_in_hook,
        )
        self._monkeypatch.setattr(participant, "time", clock)
        self._monkeypatch.setattr(capability, "time", clock)

    def grow_data(self, size: int) -> None:
        """Clients wrote ``size`` more bytes: every volume's data grows by the same bytes."""
        from datadir import SyntheticDataDir

        assert self.volumes is not None and self._data_spec is not None
        for name, unit in self.units.items():
            before = data_identity(unit.data)
            SyntheticDataDir(unit.data, self._data_spec).grow_active(size)
            self.volumes.regrown(name, before, data_identity(unit.data))

    # --- certificates ----------------------------------------------------------------------

    def model_tls(self) -> None:
        """Rule 12 of the cluster model from now on: nodes load their own TLS files."""

        def files(name: str):
            unit = self.units.get(name)
            if unit is None:
                return None
            roots = [
                self._ca_applied or "",
                *(self.certificates.roots if self.certificates else ()),
            ]
            return node_tls_files(unit.etc, [r for r in roots if r] + self._old_roots)

        self.cluster.tls_files = files

    def relate_certificates(self, provider: SimCertificatesProvider) -> None:
        """`juju integrate kurrentdb self-signed-certificates`."""
        self.model_tls()
        self.certificates, self._certificates_gone = provider, set()
        self._certificates_unit_data = {name: {} for name in self.units}
        self._certificates_app_data = {}
        for name in self.ordered(self.units):
            self._enqueue(
                name, "certificates-relation-created", self._certificates_event("created")
            )

    def unrelate_certificates(self) -> None:
        """`juju remove-relation kurrentdb self-signed-certificates`."""
        assert self.certificates is not None
        self._old_roots += self.certificates.roots
        for name in self.ordered(self.units):
            self._enqueue(name, "certificates-relation-broken", self._certificates_event("broken"))

    def rotate_certificates_ca(self, ca: Any) -> None:
        """The provider's CA changes: it issues every certificate again."""
        assert self.certificates is not None
        self.certificates.rotate(ca)
        self._provider_answers()

    def _certificates_event(self, kind: str) -> EventFactory:
        def event(ctx: testing.Context, state: testing.State) -> Any:
            relation = state.get_relation(CERTIFICATES_RELATION_ID)
            return getattr(ctx.on, f"relation_{kind}")(relation)

        return event

    def _certificates_relation(self, name: str) -> testing.Relation | None:
        if self.certificates is None or name in self._certificates_gone:
            return None
        return testing.Relation(
            "certificates",
            id=CERTIFICATES_RELATION_ID,
            remote_app_name=CERTIFICATES_APP,
            local_unit_data=dict(self._certificates_unit_data.get(name, {})),
            remote_app_data=dict(self._certificates_app_data),
        )

    def _share_certificates(self, unit: SimUnit, what: str) -> None:
        if self.certificates is None or unit.name in self._certificates_gone:
            return
        if what.startswith("certificates-relation-broken"):
            self._certificates_gone.add(unit.name)
            if self._certificates_gone >= set(self.units):
                self.certificates = None
            return
        assert unit.state is not None
        relation = unit.state.get_relation(CERTIFICATES_RELATION_ID)
        self._certificates_unit_data[unit.name] = dict(relation.local_unit_data)
        self._provider_answers()

    def _provider_answers(self) -> None:
        assert self.certificates is not None
        answer = self.certificates.answer(self._certificates_unit_data.values())
        if answer != self._certificates_app_data:
            self._certificates_app_data = answer
            for name in self.ordered(self.units):
                if name not in self._certificates_gone:
                    self._enqueue(
                        name, "certificates-relation-changed", self._certificates_event("changed")
                    )

    # --- Juju operations -------------------------------------------------------------------

    def add_unit(self) -> str:
        """`juju add-unit`: a new pod with a fresh volume joins the peer relation."""
        name = f"{APP}/{self.next_number}"
        self.pods.add(self.next_number)  # a no-op when `add_pods` created it earlier
        self.next_number += 1
        self.planned_units += 1
        unit = SimUnit(name=name, root=self.tmp / name.replace("/", "-"))
        unit.revision = self.statefulset.update_revision
        unit.image_version = self._version_of(unit.revision)
        self.statefulset.pods[unit.number] = SimPod(unit.revision, ready=False)
        unit.etc.mkdir(parents=True)
        unit.data.mkdir()
        if self._data_spec is not None:
            from datadir import SyntheticDataDir

            SyntheticDataDir.create(unit.data, self._data_spec)
        self._write_users(unit)
        self.units[name] = unit
        self.unit_data[name] = {}
        self.introduced.append((self.clock, name))
        fqdn = NodeIdentity(app=APP, unit_number=unit.number, namespace=MODEL).pod_fqdn
        self.cluster.add_node(name, fqdn)
        if self.leader is None:
            self.leader = name
        self._enqueue(
            name, "relation-created", lambda ctx, s: ctx.on.relation_created(self._peer(s))
        )
        if self.leader == name:
            self._enqueue(name, "leader-elected", lambda ctx, s: ctx.on.leader_elected())
        self._enqueue(name, "config-changed", lambda ctx, s: ctx.on.config_changed())
        self._enqueue(name, "pebble-ready", self._pebble_ready)
        for other in self.ordered(self.units):
            if other != name:
                self._enqueue(other, "relation-joined", self._joined(name))
        return name

    def remove_unit(self, name: str) -> None:
        """`juju remove-unit`: the unit's teardown hooks run, then its pod goes.

        With ``pod_linger_seconds`` 0 the pod is gone before the other units hear
        relation-departed. Juju promises no such thing: it runs every side's
        relation-departed hooks as the unit departs, and deletes the pod only once the
        unit is dead, so with ``pod_linger_seconds`` > 0 the node keeps running (at its
        size) for that long after the others heard it leave.
        """
        self.planned_units -= 1
        self._enqueue(name, "relation-departed", self._departed(name))
        self._enqueue(
            name, "storage-detaching", lambda ctx, s: ctx.on.storage_detaching(self._storage(s))
        )
        self._enqueue(name, "stop", lambda ctx, s: ctx.on.stop())
        self.drain()
        if self.pod_linger_seconds > 0:
            self._pods_going.append((self.clock + self.pod_linger_seconds, name))
        else:
            self.cluster.remove_node(name)
        # The unit is dead: Juju scales the StatefulSet down.
        self.pods.discard(self.units[name].number)
        self.statefulset.pods.pop(self.units[name].number, None)
        del self.units[name]
        del self.unit_data[name]
        if self.leader == name:
            self.leader = None
        for other in self.ordered(self.units):
            self._enqueue(other, "relation-departed", self._departed(name))
        if self.leader is None and self.units:
            self.move_leadership(min(self.units, key=lambda u: int(u.split("/")[1])))

    def add_pods(self, n: int) -> None:
        """`juju add-unit -n N`: the StatefulSet grows and its N new pods exist at once."""
        self.pods.update(range(self.next_number, self.next_number + n))

    def introduce_at(self, *times: float) -> None:
        """The next pods without a unit introduce themselves at these simulated times."""
        self._arrivals = sorted([*self._arrivals, *times])

    @property
    def arrivals_pending(self) -> int:
        return len(self._arrivals)

    def advance(self, seconds: float) -> None:
        """Let simulated time pass (no cluster tick): pods due introduce their units,
        and removed units' pods due to go are deleted."""
        self.clock += seconds
        for due, name in [p for p in self._pods_going if p[0] <= self.clock]:
            self._pods_going.remove((due, name))
            self.cluster.remove_node(name)
        while self._arrivals and self._arrivals[0] <= self.clock:
            self._arrivals.pop(0)
            self.add_unit()

    def tick(self) -> None:
        """One step of the cluster, SECONDS_PER_TICK of simulated time."""
        self.cluster.tick()
        self.check_invariants()
        self.advance(SECONDS_PER_TICK)

    def ordered(self, names: Any) -> list[str]:
        """Units in the order their queued hooks run (see ``hook_order``)."""
        return sorted(
            names, key=lambda u: int(u.split("/")[1]), reverse=self.hook_order == "newest"
        )

    def check_invariants(self) -> None:
        """Fail at the first tick that broke an invariant (when ``strict``)."""
        if self.volumes is not None:
            self.volumes.check_running({n: u.data for n, u in self.units.items()})
        breach = self.cluster.first_breach
        if self.strict and breach is not None:
            raise AssertionError(f"{breach}\n{self.describe()}")

    def _sleep_in_hook(self, seconds: float) -> None:
        """A hook sleeps (polling KurrentDB): the cluster goes on, one tick per
        SECONDS_PER_TICK slept; other units' hooks wait, as the waiting hook's relation
        data would reach them only after it ends anyway."""
        self._hook_time += max(0.0, seconds)
        while self._hook_time >= SECONDS_PER_TICK:
            self._hook_time -= SECONDS_PER_TICK
            self.tick()
            self._pebble_restarts_exited_processes()

    def move_leadership(self, name: str) -> None:
        """Juju elects another leader."""
        self.leader = name
        self._enqueue(name, "leader-elected", lambda ctx, s: ctx.on.leader_elected())

    def set_config(self, **options: Any) -> None:
        """`juju config`."""
        self.config.update({k.replace("_", "-"): v for k, v in options.items()})
        for name in self.ordered(self.units):
            self._enqueue(name, "config-changed", lambda ctx, s: ctx.on.config_changed())

    def juju_refresh(self, revision: str, image_version: str | None = None) -> None:
        """`juju refresh` (or `--resource kurrentdb-image=...`): a new pod template.

        ``image_version`` is what the revision's image holds (default: what the current
        revision's holds). A revision seen before (a rollback) keeps its version.
        """
        current = self._version_of(self.statefulset.update_revision)
        self.statefulset.versions.setdefault(revision, image_version or current or "")
        self.statefulset.update_revision = revision

    def _write_users(self, unit: SimUnit) -> None:
        """The image's /etc/passwd and /etc/group: `kurrent` with its revision's uid."""
        uid = self.statefulset.uids.get(unit.revision, os.getuid())
        (unit.etc / "passwd").write_text(
            f"kurrent:x:{uid}:{uid}::/home/kurrent:/usr/sbin/nologin\n"
        )
        (unit.etc / "group").write_text(f"kurrent:x:{uid}:\n")

    def _chown(self, unit: SimUnit, command: list[str]) -> None:
        """`chown [-R -h] uid:gid [--] path...` in the workload container, on the unit's
        volume (as root; without root the volume keeps its owner and the call is only
        recorded)."""
        self.chowns.append((unit.name, list(command)))
        args = [a for a in command[1:] if a not in ("-R", "-h", "--")]
        uid, gid = (int(x) for x in args[0].split(":"))
        if os.geteuid() != 0:
            return
        recursive = "-R" in command
        for target in args[1:]:
            host = unit.data / pathlib.PurePosixPath(target).relative_to(paths.DATA_DIR)
            for path in [host, *(host.rglob("*") if recursive and host.is_dir() else [])]:
                os.chown(path, uid, gid, follow_symlinks=False)

    def _version_of(self, revision: str) -> str | None:
        return self.statefulset.versions.get(revision) or self.image_version

    def roll_statefulset(self) -> bool:
        """The StatefulSet controller's pass: replace the one pod it may; True if it did."""
        for waiting in sorted(self._pebble_down):
            if waiting in self.units:
                self._enqueue(waiting, "pebble-ready", self._pebble_ready)
        ordinal = self.statefulset.next_to_replace()
        name = f"{APP}/{ordinal}"
        if ordinal is None or name not in self.units:
            return False
        self.replace_pod(name, self.statefulset.update_revision)
        return True

    def replace_pod(self, name: str, revision: str | None = None) -> None:
        """The pod is deleted and created again (a refresh, `kubectl delete pod`, a drain).

        Pebble gets SIGTERM as the stop hook starts (juju-facts §11): the model takes the
        worst case, KurrentDB gone before the hook can hand its leadership over. The new
        pod has the given controller revision (default: the one it had), new stored state
        and Pebble plan.
        """
        unit = self.units[name]
        self.cluster.stop_process(name)
        self._run(name, lambda ctx, s: ctx.on.stop(), "stop (pod deleted)")
        unit.revision = revision or unit.revision
        unit.image_version = self._version_of(unit.revision) or unit.image_version
        unit.pod_starts += 1
        self.pods_replaced.append((self.clock, name, unit.revision))
        self.statefulset.pods[unit.number] = SimPod(unit.revision, ready=False)
        kurrentdb_etc = unit.etc / "kurrentdb"
        for path in sorted(kurrentdb_etc.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        self._write_users(unit)  # the new image's user
        assert unit.state is not None
        container = unit.state.get_container(paths.CONTAINER)
        execs = {e for e in container.execs if e.command_prefix[:1] != (paths.BINARY,)}
        if unit.image_version is not None:
            version = f"KurrentDB version {unit.image_version} oss (tags/v{unit.image_version})\n"
            execs.add(testing.Exec([paths.BINARY, "--version"], stdout=version))
        fresh = dataclasses.replace(
            container,
            layers={},
            service_statuses={},
            check_infos=frozenset(),
            execs=frozenset(execs),
        )
        # The charm container's first hooks may run before the workload's Pebble is up.
        self._pebble_down.add(name)
        unit.state = dataclasses.replace(unit.state, containers={fresh}, stored_states=frozenset())
        self._enqueue(name, "upgrade-charm", lambda ctx, s: ctx.on.upgrade_charm())
        self._enqueue(name, "config-changed", lambda ctx, s: ctx.on.config_changed())
        # The workload container starts later: the other units' hooks run meanwhile.

    def restart_all_pods(self) -> None:
        """A node drain or cluster restart: every pod goes down, then comes back."""
        for name, unit in self.units.items():
            self.cluster.stop_process(name)
            # A new pod: Pebble starts on hold, /etc/kurrentdb is gone, the volume stays.
            kurrentdb_etc = unit.etc / "kurrentdb"
            for path in sorted(kurrentdb_etc.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            assert unit.state is not None
            container = unit.state.get_container(paths.CONTAINER)
            fresh = dataclasses.replace(
                container, layers={}, service_statuses={}, check_infos=frozenset()
            )
            unit.state = dataclasses.replace(unit.state, containers={fresh})
        for name in self.ordered(self.units):
            self._enqueue(name, "pebble-ready", self._pebble_ready)

    # --- running -----------------------------------------------------------------------------

    def drain(self, limit: int = 2000) -> None:
        """Run queued hooks until none is left."""
        while self.queue:
            limit -= 1
            assert limit > 0, "hooks keep triggering each other"
            name, what, factory = self.queue.popleft()
            if name in self.units:
                self._run(name, factory, what)

    def run_hooks(self, count: int) -> None:
        """Run only the next `count` queued hooks (to interrupt a change half-way)."""
        for _ in range(count):
            if not self.queue:
                return
            name, what, factory = self.queue.popleft()
            if name in self.units:
                self._run(name, factory, what)

    def settle(self, max_rounds: int = 400) -> int:
        """Hooks, tick, update-status everywhere; until a round changes nothing. Returns rounds."""
        quiet_rounds = 0
        for rounds in range(1, max_rounds + 1):
            self.drain()
            if self.roll_statefulset():
                self.drain()
            before = self._fingerprint()
            self.tick()
            self._pebble_restarts_exited_processes()
            for name in self.ordered(self.units):
                self._enqueue(name, "update-status", lambda ctx, s: ctx.on.update_status())
            self.drain()
            quiet = (
                before == self._fingerprint()
                and self.cluster.is_quiet()
                and not self._pods_going
                and self.statefulset.next_to_replace() is None
            )
            quiet_rounds = quiet_rounds + 1 if quiet else 0
            if quiet_rounds >= 3:
                return rounds
        raise AssertionError(f"no convergence after {max_rounds} rounds:\n{self.describe()}")

    def run_for(self, seconds: float) -> None:
        """Time passes in a quiet model: each unit runs update-status every
        UPDATE_STATUS_INTERVAL (its own phase, as Juju's timers are per unit) and at most
        one hook per tick, as a hook takes about that long; hooks wait their turn."""
        end = self.clock + seconds
        while self.clock < end:
            self._quiet_tick()

    def run_until_arrived(self, limit: float = 3600.0) -> None:
        """As `run_for`, until every pod introduced its unit."""
        end = self.clock + limit
        while self._arrivals:
            assert self.clock < end, "pods never introduced their units"
            self._quiet_tick()

    def _quiet_tick(self) -> None:
        self.roll_statefulset()
        self.tick()
        self._pebble_restarts_exited_processes()
        for name, unit in self.units.items():
            phase = (unit.number * 37.0) % UPDATE_STATUS_INTERVAL
            if (self.clock - phase) % UPDATE_STATUS_INTERVAL < SECONDS_PER_TICK:
                self._enqueue(name, "update-status", lambda ctx, s: ctx.on.update_status())
        ran: set[str] = set()
        for item in list(self.queue):
            name = item[0]
            if name in ran:
                continue
            ran.add(name)
            self.queue.remove(item)
            if name in self.units:
                self._run(name, item[2], item[1])

    def hooks_since(self, index: int) -> collections.Counter[str]:
        """Hooks run since `hook_log` had ``index`` entries, by kind."""
        return collections.Counter(what for _, _, what in self.hook_log[index:])

    def describe(self) -> str:
        lines = [f"app data: {self.app_data}"]
        for name, unit in self.units.items():
            status = unit.state.unit_status if unit.state else None
            lines.append(f"{name}: {status} {self.unit_data[name]}")
        return "\n".join(lines)

    def status(self, name: str) -> ops.StatusBase:
        state = self.units[name].state
        assert state is not None
        return state.unit_status

    def app_status(self) -> ops.StatusBase:
        assert self.leader is not None
        state = self.units[self.leader].state
        assert state is not None
        return state.app_status

    # --- internals ---------------------------------------------------------------------------

    def _fingerprint(self) -> tuple:
        return (
            tuple(sorted(self.app_data.items())),
            tuple((n, tuple(sorted(d.items()))) for n, d in sorted(self.unit_data.items())),
            tuple((n, str(self.status(n))) for n in sorted(self.units) if self.units[n].state),
        )

    def _enqueue(self, name: str, what: str, factory: EventFactory) -> None:
        self.queue.append((name, what, factory))

    def _state_for(self, unit: SimUnit) -> testing.State:
        peer = testing.PeerRelation(
            PEER_RELATION,
            id=self._relation_id,
            local_app_data=dict(self.app_data),
            local_unit_data=dict(self.unit_data[unit.name]),
            peers_data={
                int(n.split("/")[1]): dict(d) for n, d in self.unit_data.items() if n != unit.name
            },
        )
        relations: set[testing.RelationBase] = {peer}
        if (certificates := self._certificates_relation(unit.name)) is not None:
            relations.add(certificates)
        if self._backup_relation is not None:
            kept = unit.state and [r for r in unit.state.relations if r.id == BACKUP_RELATION_ID]
            relations.add(kept[0] if kept else self._backup_relation)
        if unit.state is None:
            execs = {testing.Exec(["chown"], return_code=0)}
            image_version = unit.image_version
            if image_version is None and self._backup_relation is not None:
                image_version = IMAGE_VERSION
            if image_version is not None:
                version = f"KurrentDB version {image_version} oss (tags/v{image_version})\n"
                execs.add(testing.Exec([paths.BINARY, "--version"], stdout=version))
            container = testing.Container(
                paths.CONTAINER,
                can_connect=True,
                mounts={
                    "etc": testing.Mount(location="/etc", source=unit.etc),
                    "data": testing.Mount(location=paths.DATA_DIR, source=unit.data),
                },
                execs=execs,
            )
            image = unit.root / "kurrentdb-image.yaml"
            image.write_text(f"registrypath: {IMAGE_REFERENCE}\nusername: ''\npassword: ''\n")
            return testing.State(
                leader=self.leader == unit.name,
                config=dict(self.config),
                containers={container},
                resources={testing.Resource(name="kurrentdb-image", path=image)},
                relations=relations,
                secrets=set(self.app_secrets.values()) | self.user_secrets,
                storages={testing.Storage("data")},
                model=testing.Model(name=MODEL),
                planned_units=self.planned_units,
            )
        own_secrets = {s for s in unit.state.secrets if s.owner == "unit"}
        container = unit.state.get_container(paths.CONTAINER)
        container = dataclasses.replace(container, can_connect=unit.name not in self._pebble_down)
        return dataclasses.replace(
            unit.state,
            containers={container},
            leader=self.leader == unit.name,
            config=dict(self.config),
            relations=relations,
            secrets=own_secrets | set(self.app_secrets.values()) | self.user_secrets,
            planned_units=self.planned_units,
        )

    def run_action(
        self, name: str, action: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """`juju run <unit> <action>`: its results; testing.ActionFailed if it failed.

        The action's log lines are in `last_action_logs` afterwards."""
        outcome: dict[str, Any] = {}

        def event(ctx: testing.Context, state: testing.State) -> Any:
            outcome["ctx"] = ctx
            return ctx.on.action(action, params=params or {})

        def keep(ctx: testing.Context) -> None:
            outcome["results"] = dict(ctx.action_results or {})
            outcome["logs"] = list(ctx.action_logs)

        try:
            self._run(name, event, f"action {action}", keep)
        finally:
            self.last_action_logs = outcome.get("logs", [])
        return dict(outcome["results"])

    def _run(
        self,
        name: str,
        factory: EventFactory,
        what: str = "",
        keep: Callable[[testing.Context], None] | None = None,
    ) -> None:
        unit = self.units[name]
        self.hook_log.append((self.clock, name, what))
        if what.startswith("pebble-ready"):
            self._pebble_down.discard(name)
        state_in = self._state_for(unit)
        KurrentDBCharm.api_url = self.cluster.node(name).url
        self._current, self._service_now = unit, None
        failed: testing.ActionFailed | None = None
        try:
            with testing.Context(
                KurrentDBCharm,
                unit_id=unit.number,
                app_trusted=True,
            ) as ctx:
                try:
                    unit.state = ctx.run(factory(ctx, state_in), state_in)
                except testing.ActionFailed as e:
                    assert e.state is not None
                    unit.state, failed = e.state, e
                finally:
                    if keep is not None:
                        keep(ctx)
        except testing.errors.UncaughtCharmError as e:
            if not isinstance(e.__cause__, HookKilledError):
                raise
            self._hook_died(unit, name, what, factory)
            return
        finally:
            self._current = self._backend = None
        unit.hooks += 1
        self.hooks_run += 1
        if (pod := self.statefulset.pods.get(unit.number)) is not None:
            pod.ready = True  # its Pebble answers: Kubernetes counts it Ready
        self._share(unit)
        self._share_certificates(unit, what)
        if self.volumes is not None:
            self.check_invariants()  # a restore moves data and starts nodes between ticks
        if failed is not None:
            raise failed

    def _hook_died(self, unit: SimUnit, name: str, what: str, factory: EventFactory) -> None:
        """A hook killed mid-way: Juju keeps none of its relation data or stored state,
        Pebble keeps the service state it left, and Juju runs the hook again."""
        self.failed_hooks.append((name, what))
        if unit.state is not None and self._service_now is not None:
            container = unit.state.get_container(paths.CONTAINER)
            services = {**container.service_statuses, paths.SERVICE: self._service_now}
            container = dataclasses.replace(container, service_statuses=services)
            unit.state = dataclasses.replace(unit.state, containers={container})
        self._enqueue(name, f"{what} (retried)", factory)
        if self.volumes is not None:
            self.check_invariants()

    def _share(self, unit: SimUnit) -> None:
        assert unit.state is not None
        peer = unit.state.get_relation(self._relation_id)
        assert isinstance(peer, testing.PeerRelation)
        before, after = self.unit_data[unit.name], dict(peer.local_unit_data)
        changed = after != before
        self.unit_data[unit.name] = after
        app_before = self.app_data
        app_changed = unit.name == self.leader and dict(peer.local_app_data) != self.app_data
        if unit.name == self.leader:
            self.app_data = dict(peer.local_app_data)
        for secret in unit.state.secrets:
            if secret.owner == "app":
                self.app_secrets[secret.id] = secret
                content = secret.latest_content or secret.tracked_content
                if "private-key" in content and content["certificate"] != self._ca_applied:
                    # The nodes' certificates come from the charm's CA, as on a real cluster.
                    self.cluster.set_ca(KeyPair(content["certificate"], content["private-key"]))
                    self._ca_applied = content["certificate"]
        others = [n for n in self.ordered(self.units) if n != unit.name]
        if changed:
            keys = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
            cause = "health" if keys <= HEALTH_KEYS else "report"
            for other in others:
                self._enqueue(other, f"relation-changed ({cause})", self._changed(unit.name))
        if app_changed:
            if self.app_data.get("members") != app_before.get("members"):
                members = tuple(json.loads(self.app_data.get("members") or "[]"))
                self.membership_changes.append((self.clock, members))
            for other in others:
                self._enqueue(other, "relation-changed (plan)", self._changed(unit.name))

    def _peer(self, state: testing.State) -> testing.Relation:
        return state.get_relation(self._relation_id)

    def _storage(self, state: testing.State) -> testing.Storage:
        return next(iter(state.storages))

    def _pebble_ready(self, ctx: testing.Context, state: testing.State) -> Any:
        return ctx.on.pebble_ready(state.get_container(paths.CONTAINER))

    def _joined(self, remote: str) -> EventFactory:
        number = int(remote.split("/")[1])
        return lambda ctx, s: ctx.on.relation_joined(self._peer(s), remote_unit=number)

    def _changed(self, remote: str | None) -> EventFactory:
        number = None if remote is None else int(remote.split("/")[1])
        return lambda ctx, s: ctx.on.relation_changed(self._peer(s), remote_unit=number)

    def _departed(self, departing: str) -> EventFactory:
        number = int(departing.split("/")[1])

        def event(ctx: testing.Context, state: testing.State) -> Any:
            return ctx.on.relation_departed(
                self._peer(state), remote_unit=number, departing_unit=number
            )

        return event

    def seconds(self) -> float:
        """Simulated seconds, with what hooks slept since the last tick (`clock` has not)."""
        return self.clock + self._hook_time

    def _patch_pebble(self, monkeypatch: Any) -> None:
        """Route the charm's Pebble service calls to the simulated cluster, and its config
        file, signals and `pebble logs` to the unit's node (rule 11 of the cluster model)."""
        sim = self
        replan, restart, stop = ops.Container.replan, ops.Container.restart, ops.Container.stop
        push, send_signal, exec_ = ops.Container.push, ops.Container.send_signal, ops.Container.exec
        self._patch_workload_time(monkeypatch)

        def current() -> SimUnit:
            assert sim._current is not None
            return sim._current

        def sim_replan(container: ops.Container) -> None:
            unit = current()
            was_running = sim.cluster.process_running(unit.name)
            replan(container)
            sim._service_now = ops.pebble.ServiceStatus.ACTIVE
            if not was_running:
                sim._start_node(unit)

        def sim_restart(container: ops.Container, *names: str) -> None:
            restart(container, *names)
            unit = current()
            sim._service_now = ops.pebble.ServiceStatus.ACTIVE
            sim.charm_restarts[unit.name] += 1
            sim.cluster.stop_process(unit.name, by_charm=True)
            sim._start_node(unit)

        def sim_stop(container: ops.Container, *names: str) -> None:
            stop(container, *names)
            sim._service_now = ops.pebble.ServiceStatus.INACTIVE
            for_restore = sim._restore_phase_in_hook() in RESTORE_STOP_PHASES
            sim.cluster.stop_process(current().name, by_charm=True, for_restore=for_restore)

        def sim_push(container: ops.Container, path: str, source: Any, **kwargs: Any) -> None:
            push(container, path, source, **kwargs)
            if path == paths.CONFIG_FILE:
                text = source.decode() if isinstance(source, bytes) else source
                assert isinstance(text, str), "the charm pushes its config file as text"
                sim.cluster.write_config(current().name, text)

        def sim_send_signal(container: ops.Container, sig: int | str, *names: str) -> None:
            send_signal(container, sig, *names)  # Pebble refuses a service not running
            number = signal.Signals[sig] if isinstance(sig, str) else signal.Signals(sig)
            if number == signal.SIGHUP and paths.SERVICE in names:
                sim.cluster.sighup(current().name)

        def sim_exec(container: ops.Container, command: list[str], **kwargs: Any) -> Any:
            if command and command[0] == "chown":
                sim._chown(current(), command)
            logs = sim.cluster.node(current().name).service.pebble_logs(command)
            return exec_(container, command, **kwargs) if logs is None else logs

        monkeypatch.setattr(ops.Container, "replan", sim_replan)
        monkeypatch.setattr(ops.Container, "restart", sim_restart)
        monkeypatch.setattr(ops.Container, "stop", sim_stop)
        monkeypatch.setattr(ops.Container, "push", sim_push)
        monkeypatch.setattr(ops.Container, "send_signal", sim_send_signal)
        monkeypatch.setattr(ops.Container, "exec", sim_exec)
        sim.cluster.clock = sim.seconds

    def _patch_workload_time(self, monkeypatch: Any) -> None:
        """The workload's waits (CONFIG_WATCH_DELAY around a reload) are simulated time:
        the cluster ticks while the hook sleeps, and the nodes' file watchers see it pass."""
        monkeypatch.setattr(
            workload_module,
            "time",
            types.SimpleNamespace(
                sleep=self._sleep_in_hook, time=time.time, monotonic=self.seconds
            ),
        )

    def _patch_kubernetes_and_time(self, monkeypatch: Any) -> None:
        """The app's pods as the charm lists them, goal-state as it is now, simulated time."""
        sim = self

        def app_pod_ordinals(app: str, namespace: str, own_pod: str) -> frozenset[int] | None:
            return frozenset(sim.pods) if sim.kubernetes_api else None

        monkeypatch.setattr(kubernetes_module, "app_pod_ordinals", app_pod_ordinals)
        # goal-state is read again on each call, so it can grow during a hook (ops.testing
        # would keep the value the hook started with).
        monkeypatch.setattr(
            scenario_mocking._MockModelBackend, "planned_units", lambda _: sim.planned_units
        )
        monkeypatch.setattr(coordinator_module, "_monotonic", lambda: sim.clock)
        monkeypatch.setattr(coordinator_module, "_sleep", sim._sleep_in_hook)
        monkeypatch.setattr(
            coordinator_module,
            "_growth_settle_limit",
            lambda: coordinator_module.GROWTH_SETTLE_SECONDS,
        )

    def _pebble_restarts_exited_processes(self) -> None:
        """Pebble restarts a service whose process exited (surplus shutdown, truncation)."""
        for name, unit in self.units.items():
            if unit.state is None or self.cluster.process_running(name):
                continue
            services = unit.state.get_container(paths.CONTAINER).service_statuses
            if services.get(paths.SERVICE) == ops.pebble.ServiceStatus.ACTIVE:
                self._start_node(unit)

    def _start_node(self, unit: SimUnit) -> None:
        """KurrentDB starts on the unit's volume as it is now (`VolumeHistories`)."""
        config = unit.rendered_config()
        if self.volumes is not None:
            self.volumes.before_start(unit.name, unit.data)
        self.cluster.start_process(unit.name, config, version=unit.image_version)
        if self.volumes is not None:
            node = self.cluster.node(unit.name)
            node.on_boot = self.volumes.truncation(unit.name, unit.data, config)

    def _restore_phase_in_hook(self) -> str | None:
        """The restore plan's phase as the running hook sees it now (the leader may have
        just advanced it): from the hook's own live databag, not the shared copy."""
        backend = self._backend
        if backend is None:
            return None
        try:
            relation = backend._state.get_relation(self._relation_id)
            return str(json.loads(relation.local_app_data["restore"])["phase"])
        except (KeyError, ValueError, TypeError):
            return None

    def _patch_statefulset(self, monkeypatch: Any) -> None:
        """The charm's Kubernetes calls for a refresh reach `self.statefulset`."""
        from refresh import statefulset as calls
        from refresh.plan import StatefulSetView

        sim = self
        forbidden = calls.KubernetesUnavailable("cannot read StatefulSet (HTTP 403)", True)

        def pod_revision(pod: str, namespace: str) -> str | calls.KubernetesUnavailable:
            assert sim._current is not None and pod == f"{APP}-{sim._current.number}", pod
            return sim._current.revision

        def read(app: str, namespace: str) -> StatefulSetView | calls.KubernetesUnavailable:
            if not sim.statefulset.trusted:
                return forbidden
            return StatefulSetView(sim.statefulset.update_revision, sim.statefulset.partition)

        def set_partition(app: str, namespace: str, value: int) -> Any:
            if not sim.statefulset.trusted:
                return forbidden
            sim.statefulset.set_partition(value, sim.seconds())
            return None

        # The charm URL Juju writes into the charm directory (`.juju-charm`), per revision:
        # a Context with a charm root of its own costs every hook a third more.
        from refresh import capability

        monkeypatch.setattr(
            capability.Refresh,
            "_charm_revision",
            lambda _: str(CHARM_REVISIONS.get(sim._current.revision if sim._current else "", 7)),
        )
        monkeypatch.setattr(calls, "pod_revision", pod_revision)
        monkeypatch.setattr(calls, "read", read)
        monkeypatch.setattr(calls, "set_partition", set_partition)

    def _patch_storage(self, monkeypatch: Any) -> None:
        """The charm finds the `data` storage where the workload mounts it: the unit's
        volume (Scenario would give each hook a new empty directory), and the harness
        remembers each hook's model backend to read its live databags."""
        sim = self
        storage_root = testing.Context._get_storage_root

        def unit_volume(ctx: testing.Context, name: str, index: int) -> pathlib.Path:
            if name == "data" and sim._current is not None:
                return sim._current.data
            return storage_root(ctx, name, index)

        monkeypatch.setattr(testing.Context, "_get_storage_root", unit_volume)
        backend_init = scenario_mocking._MockModelBackend.__init__

        def remember(backend: Any, *args: Any, **kwargs: Any) -> None:
            backend_init(backend, *args, **kwargs)
            sim._backend = backend

        monkeypatch.setattr(scenario_mocking._MockModelBackend, "__init__", remember)


def iter_states(sim: Simulation) -> Iterator[tuple[str, testing.State]]:
    for name, unit in sim.units.items():
        assert unit.state is not None
        yield name, unit.state
