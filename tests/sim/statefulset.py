"""The app's StatefulSet as Kubernetes rolls it out, for the simulation's refreshes.

`juju refresh` (a new charm revision or `kurrentdb-image`) changes the StatefulSet's pod
template: Kubernetes makes a new controller revision (`status.updateRevision`), and its
StatefulSet controller replaces pods by the rules of `updateStatefulSet` in
kubernetes/kubernetes `pkg/controller/statefulset/stateful_set_control.go` (RollingUpdate):

1. only pods whose ordinal is at or above `spec.updateStrategy.rollingUpdate.partition`
   are updated; the others keep their revision whatever happens;
2. from the highest ordinal down, the first pod not on the update revision (and not
   already terminating) is deleted, one per pass;
3. while a pod above it (already updated) is not Running and Ready, nothing more is
   deleted ("wait for unhealthy Pods on update");
4. a deleted pod comes back with the update revision's template; its charm's stored state,
   its Pebble plan and `/etc` are new, its volume and Juju secrets are kept.

Readiness as Juju's pods have it (juju-facts §11): a new pod's Pebble has no checks until
the charm adds a layer, and the charm's check starts with the service and takes three
failures to go down, so a recreated pod counts as Ready as soon as its first hook ran.
Nothing here waits for KurrentDB: the controller does not care about it (the kinder model
would hide exactly the bugs a partition must prevent).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimPod:
    """One pod of the StatefulSet as its controller sees it."""

    revision: str
    ready: bool = True  # Running and Ready (see the module docstring)


@dataclass
class SimStatefulSet:
    """Update revision, partition and pods; which pod the controller deletes next."""

    update_revision: str = "rev-1"
    partition: int = 0
    trusted: bool = True  # whether the charm may read and patch it (`juju trust`)
    # The KurrentDB version each revision's image holds (rollbacks reuse a revision).
    versions: dict[str, str] = field(default_factory=dict)
    # The uid of each revision's image user `kurrent` (26.x: 1001, older: 1000).
    uids: dict[str, int] = field(default_factory=dict)
    pods: dict[int, SimPod] = field(default_factory=dict)
    partition_log: list[tuple[float, int]] = field(default_factory=list)  # (clock, value)

    def set_partition(self, value: int, clock: float) -> None:
        self.partition = value
        self.partition_log.append((clock, value))

    def next_to_replace(self) -> int | None:
        """The ordinal the controller deletes now, or None (rules 1-3)."""
        for ordinal in sorted(self.pods, reverse=True):
            if ordinal < self.partition:
                return None
            pod = self.pods[ordinal]
            if pod.revision != self.update_revision:
                return ordinal
            if not pod.ready:
                return None
        return None

    def rolled_out(self) -> bool:
        return all(pod.revision == self.update_revision for pod in self.pods.values())
