"""Several charm units played against each other, each with a simulated KurrentDB node.

Each unit has its own Scenario state (container, volumes, stored state, unit secrets);
they share what Juju shares: the peer relation's databags and the app's secrets. Running a
hook on one unit may change a databag, which queues `relation-changed` on the others, as
Juju does. Pebble calls of the charm (replan, restart, stop) start and stop the node in the
`SimCluster` model. Between rounds of hooks the cluster ticks (elections, catch-up, client
writes) and every unit gets `update-status`, until nothing changes any more.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import ops
import yaml
from ops import testing

import node as node_module
import workload.kurrentdb as workload_module
from charm import KurrentDBCharm
from sim.kurrentdb_cluster import SimCluster
from state import PEER_RELATION
from tls import KeyPair
from workload import paths
from workload.render import NodeIdentity

APP = "kurrentdb"
MODEL = "prod"
ADMIN_PASSWORD = "sim-admin-password"
OPS_PASSWORD = "sim-ops-password"

EventFactory = Callable[[testing.Context, testing.State], Any]


@dataclasses.dataclass
class SimUnit:
    """One unit: its Scenario state and the host directories behind its container."""

    name: str
    root: pathlib.Path
    state: testing.State | None = None
    hooks: int = 0

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

    def __init__(self, tmp: pathlib.Path, cluster: SimCluster, monkeypatch: Any):
        self.tmp = tmp
        self.cluster = cluster
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
        self.hooks_run = 0
        # Restarts the charm asked Pebble for (KurrentDB's own exits are in the model).
        self.charm_restarts: collections.Counter[str] = collections.Counter()
        self._current: SimUnit | None = None
        self._relation_id = 1
        monkeypatch.setattr(node_module, "SETTLE_TIMEOUT", 0.0)
        # Simulated time: restarts need not wait out Pebble's kill-delay in real seconds.
        monkeypatch.setattr(workload_module, "STOP_SPACING", 0.0)
        self._patch_pebble(monkeypatch)

    # --- Juju operations -------------------------------------------------------------------

    def add_unit(self) -> str:
        """`juju add-unit`: a new pod with a fresh volume joins the peer relation."""
        name = f"{APP}/{self.next_number}"
        self.next_number += 1
        self.planned_units += 1
        unit = SimUnit(name=name, root=self.tmp / name.replace("/", "-"))
        unit.etc.mkdir(parents=True)
        unit.data.mkdir()
        (unit.etc / "passwd").write_text(
            f"kurrent:x:{os.getuid()}:{os.getgid()}::/home/kurrent:/usr/sbin/nologin\n"
        )
        (unit.etc / "group").write_text(f"kurrent:x:{os.getgid()}:\n")
        self.units[name] = unit
        self.unit_data[name] = {}
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
        for other in self.units:
            if other != name:
                self._enqueue(other, "relation-joined", self._joined(name))
        return name

    def remove_unit(self, name: str) -> None:
        """`juju remove-unit`: the unit's teardown hooks run, then its pod goes."""
        self.planned_units -= 1
        self._enqueue(name, "relation-departed", self._departed(name))
        self._enqueue(
            name, "storage-detaching", lambda ctx, s: ctx.on.storage_detaching(self._storage(s))
        )
        self._enqueue(name, "stop", lambda ctx, s: ctx.on.stop())
        self.drain()
        self.cluster.remove_node(name)
        del self.units[name]
        del self.unit_data[name]
        if self.leader == name:
            self.leader = None
        for other in self.units:
            self._enqueue(other, "relation-departed", self._departed(name))
        if self.leader is None and self.units:
            self.move_leadership(min(self.units, key=lambda u: int(u.split("/")[1])))

    def move_leadership(self, name: str) -> None:
        """Juju elects another leader."""
        self.leader = name
        self._enqueue(name, "leader-elected", lambda ctx, s: ctx.on.leader_elected())

    def set_config(self, **options: Any) -> None:
        """`juju config`."""
        self.config.update({k.replace("_", "-"): v for k, v in options.items()})
        for name in self.units:
            self._enqueue(name, "config-changed", lambda ctx, s: ctx.on.config_changed())

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
        for name in self.units:
            self._enqueue(name, "pebble-ready", self._pebble_ready)

    # --- running -----------------------------------------------------------------------------

    def drain(self, limit: int = 2000) -> None:
        """Run queued hooks until none is left."""
        while self.queue:
            limit -= 1
            assert limit > 0, "hooks keep triggering each other"
            name, _, factory = self.queue.popleft()
            if name in self.units:
                self._run(name, factory)

    def run_hooks(self, count: int) -> None:
        """Run only the next `count` queued hooks (to interrupt a change half-way)."""
        for _ in range(count):
            if not self.queue:
                return
            name, _, factory = self.queue.popleft()
            if name in self.units:
                self._run(name, factory)

    def settle(self, max_rounds: int = 400) -> int:
        """Hooks, tick, update-status everywhere; until a round changes nothing. Returns rounds."""
        quiet_rounds = 0
        for rounds in range(1, max_rounds + 1):
            self.drain()
            before = self._fingerprint()
            self.cluster.tick()
            self._pebble_restarts_exited_processes()
            for name in self.units:
                self._enqueue(name, "update-status", lambda ctx, s: ctx.on.update_status())
            self.drain()
            quiet = before == self._fingerprint() and self.cluster.is_quiet()
            quiet_rounds = quiet_rounds + 1 if quiet else 0
            if quiet_rounds >= 3:
                return rounds
        raise AssertionError(f"no convergence after {max_rounds} rounds:\n{self.describe()}")

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
        if unit.state is None:
            container = testing.Container(
                paths.CONTAINER,
                can_connect=True,
                mounts={
                    "etc": testing.Mount(location="/etc", source=unit.etc),
                    "data": testing.Mount(location=paths.DATA_DIR, source=unit.data),
                },
                execs={testing.Exec(["chown"], return_code=0)},
            )
            return testing.State(
                leader=self.leader == unit.name,
                config=dict(self.config),
                containers={container},
                relations={peer},
                secrets=set(self.app_secrets.values()) | self.user_secrets,
                storages={testing.Storage("data")},
                model=testing.Model(name=MODEL),
                planned_units=self.planned_units,
            )
        own_secrets = {s for s in unit.state.secrets if s.owner == "unit"}
        return dataclasses.replace(
            unit.state,
            leader=self.leader == unit.name,
            config=dict(self.config),
            relations={peer},
            secrets=own_secrets | set(self.app_secrets.values()) | self.user_secrets,
            planned_units=self.planned_units,
        )

    def _run(self, name: str, factory: EventFactory) -> None:
        unit = self.units[name]
        state_in = self._state_for(unit)
        KurrentDBCharm.api_url = self.cluster.node(name).url
        self._current = unit
        with testing.Context(KurrentDBCharm, unit_id=unit.number, app_trusted=True) as ctx:
            unit.state = ctx.run(factory(ctx, state_in), state_in)
        self._current = None
        unit.hooks += 1
        self.hooks_run += 1
        self._share(unit)

    def _share(self, unit: SimUnit) -> None:
        assert unit.state is not None
        peer = unit.state.get_relation(self._relation_id)
        assert isinstance(peer, testing.PeerRelation)
        changed = dict(peer.local_unit_data) != self.unit_data[unit.name]
        self.unit_data[unit.name] = dict(peer.local_unit_data)
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
        others = [n for n in self.units if n != unit.name]
        if changed:
            for other in others:
                self._enqueue(other, "relation-changed", self._changed(unit.name))
        if app_changed:
            for other in others:
                self._enqueue(other, "relation-changed", self._changed(unit.name))

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

    def _patch_pebble(self, monkeypatch: Any) -> None:
        """Route the charm's Pebble service calls to the simulated cluster."""
        sim = self
        replan, restart, stop = ops.Container.replan, ops.Container.restart, ops.Container.stop

        def current() -> SimUnit:
            assert sim._current is not None
            return sim._current

        def sim_replan(container: ops.Container) -> None:
            unit = current()
            was_running = sim.cluster.process_running(unit.name)
            replan(container)
            if not was_running:
                sim.cluster.start_process(unit.name, unit.rendered_config())

        def sim_restart(container: ops.Container, *names: str) -> None:
            restart(container, *names)
            unit = current()
            sim.charm_restarts[unit.name] += 1
            sim.cluster.restart_process(unit.name, unit.rendered_config())

        def sim_stop(container: ops.Container, *names: str) -> None:
            stop(container, *names)
            sim.cluster.stop_process(current().name)

        monkeypatch.setattr(ops.Container, "replan", sim_replan)
        monkeypatch.setattr(ops.Container, "restart", sim_restart)
        monkeypatch.setattr(ops.Container, "stop", sim_stop)

    def _pebble_restarts_exited_processes(self) -> None:
        """Pebble restarts a service whose process exited (surplus shutdown, truncation)."""
        for name, unit in self.units.items():
            if unit.state is None or self.cluster.process_running(name):
                continue
            services = unit.state.get_container(paths.CONTAINER).service_statuses
            if services.get(paths.SERVICE) == ops.pebble.ServiceStatus.ACTIVE:
                self.cluster.start_process(name, unit.rendered_config())


def iter_states(sim: Simulation) -> Iterator[tuple[str, testing.State]]:
    for name, unit in sim.units.items():
        assert unit.state is not None
        yield name, unit.state
