"""Cluster membership and the rolling-restart schedule (pure decisions, no Juju calls).

KurrentDB's cluster size is fixed in each node's configuration, so every size change means
reconfiguring and restarting every node. The Juju leader is the one scheduler: it decides
the membership (all units present, in unit order), which new units may start, and which
single unit may restart next. Units report back through the peer relation what they run
and how their node is doing. The rules, and why:

- Never two voting nodes down at once: a restart is granted only while every other data
  node reports a serving role, and one grant is out at a time.
- Followers first, the KurrentDB leader last: the leader resigns first, so the cluster
  elects a new leader once instead of losing it unannounced.
- A new (empty) node must never be part of a quorum of empty nodes: if empty nodes alone
  could elect a leader they would win over nodes holding data that are restarting, and
  the data nodes would truncate acknowledged events. So while a cluster holds data, at most
  quorum-1 empty nodes may run; more start as earlier ones catch up.
- No two leaders while sizes are mixed. Each KurrentDB node counts election votes against
  its own ClusterSize (v26.1.0 `ElectionsService.cs`), so running nodes of different sizes
  can hold two disjoint majorities (`split_brain_possible`). Every start and restart the
  leader allows keeps that impossible: growing, the running nodes change size first (one
  at a time, followers first) and a new node starts only once every running node but the
  one restarting runs the new size (KurrentDB's docs: the size "must be changed on all
  nodes before the new node can join"); shrinking, nothing restarts into the smaller size
  while the larger sizes that remain could outvote it. Write pauses this costs (ticks of
  the simulation, bench/convergence.py): 1->3 and 1->5, the single node's restart until
  the first new node joins it; 3->5 and 3->4->5, only the old leader's resign: it holds
  its restart until a new node serves (`restart_waits_for_new_node`), since the size-5
  nodes without it would be no quorum; 5->3, 3->1, 5->1, the restarts that leave fewer
  nodes than the old quorum. Shrinking, departed units leave no report behind, and
  Juju tells the remaining units before their pods are gone: the leader's own gossip
  must show them dead before a node restarts into the smaller size (`leaving_units`).
- No new node starts while a node of the old size leads: a leader wants ClusterSize - 1
  followers by its own size and tells the clones beyond "SURPLUS OF NODES" (v26.1.0
  `LeaderReplicationService.cs`, ClusterVNodeController.cs `Handle(DropSubscription)`).
- No hook waits for what only its end can cause: a node restarted into a size it cannot
  reach a quorum of with the nodes already started (1->3) serves only once a new node
  starts, which sees its permission only after this hook; it does not wait
  (`can_serve_alone_with_started`).
- One scale request, one membership change: `juju add-unit -n 2` sets the StatefulSet's
  replicas at once, but Juju creates each unit only when its pod's init container
  introduces itself, and `planned_units()` (goal-state) counts the units Juju has, so it
  grows pod by pod, tens of seconds apart. The leader therefore also waits for every pod
  of the app that has no unit yet (see `plan`).
- Reports change only when the schedule would: a role is published as one of the states
  the schedule tells apart, and "caught up" has hysteresis, so a follower whose lag
  wavers around CATCH_UP_BYTES under write load wakes nobody. Because reports lag, the
  leader confirms a restart grant against a fresh /gossip of its own node
  (`gossip_confirms`), with the strict threshold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kurrentdb_api import ClusterGossip

SERVING_ROLES = frozenset({"Leader", "Follower", "ReadOnlyReplica"})
LEADING_ROLES = frozenset({"Leader", "ResigningLeader"})
# A follower whose writer checkpoint is within this many bytes of the leader's is caught up:
# the cluster keeps writing, so "zero lag" would rarely be seen.
CATCH_UP_BYTES = 4 * 2**20
# A unit that reported itself caught up reports otherwise only once it falls this far
# behind (or stops serving): lag under write load wavers around CATCH_UP_BYTES, and every
# change of a report wakes every peer with relation-changed.
CATCH_UP_LEAVE_BYTES = 16 * CATCH_UP_BYTES


def quorum(size: int) -> int:
    """KurrentDB's quorum: a majority of the configured cluster size."""
    return 1 if size <= 1 else size // 2 + 1


def split_brain_possible(sizes: Iterable[int]) -> bool:
    """Whether running nodes with these ClusterSizes could elect two leaders at once.

    Each node counts votes against its own ClusterSize (KurrentDB v26.1.0
    `ElectionsService.cs`: `_clusterSize / 2 + 1`), and a node is elected once the nodes
    that vote for it reach its own majority. So two disjoint sets can each elect a leader
    exactly when the two nodes with the smallest majorities fit side by side.
    """
    quorums = sorted(quorum(size) for size in sizes)
    return len(quorums) >= 2 and quorums[0] + quorums[1] <= len(quorums)


def unit_number(unit: str) -> int:
    """`kurrentdb/3` → 3."""
    return int(unit.rsplit("/", 1)[1])


_UNIT_NAME = re.compile(r"^[a-z][a-z0-9-]*/[0-9]{1,9}$")


def unit_list(raw: str | None) -> tuple[str, ...]:
    """A JSON list of unit names from peer data, or () for anything else.

    Another charm revision's format or a hand edit counts as absent, so that no later step
    meets a value it cannot use.
    """
    try:
        value = json.loads(raw or "[]")
    except (ValueError, RecursionError):
        return ()
    if not isinstance(value, list) or not all(
        isinstance(unit, str) and _UNIT_NAME.match(unit) for unit in value
    ):
        return ()
    return tuple(dict.fromkeys(value))  # in order, once each


def by_number(units: Iterable[str]) -> list[str]:
    """Units in unit-number order (not string order: kurrentdb/10 after kurrentdb/9)."""
    return sorted(units, key=unit_number)


@dataclass(frozen=True)
class UnitReport:
    """What a unit says about its node in its peer databag."""

    address: str | None = None
    started: bool = False  # KurrentDB has been started here at least once
    has_data: bool = False  # the node has been in sync with the cluster at least once
    running_members: tuple[str, ...] = ()  # the membership its process was started with
    restart_wanted: bool = False  # its files changed in a way that needs a restart
    role: str | None = None  # Leader, ResigningLeader, Follower, ReadOnlyReplica or None
    caught_up: bool = False  # with hysteresis, see `reported_caught_up`
    settings: str = ""  # fingerprint of the config and membership this unit has processed

    @property
    def serving(self) -> bool:
        """Whether the node is up in a serving role and caught up."""
        return self.role in SERVING_ROLES and self.caught_up

    def to_databag(self) -> dict[str, str]:
        """The unit databag form (strings only)."""
        return {
            "address": self.address or "",
            "started": "true" if self.started else "",
            "has-data": "true" if self.has_data else "",
            "running-members": json.dumps(list(self.running_members)),
            "restart-wanted": "true" if self.restart_wanted else "",
            "role": self.role or "",
            "caught-up": "true" if self.caught_up else "",
            "settings": self.settings,
        }

    @classmethod
    def from_databag(cls, data: Mapping[str, str]) -> UnitReport:
        """Read a unit databag written by `to_databag` (missing keys mean 'not yet')."""
        return cls(
            address=data.get("address") or None,
            started=data.get("started") == "true",
            has_data=data.get("has-data") == "true",
            running_members=unit_list(data.get("running-members")),
            restart_wanted=data.get("restart-wanted") == "true",
            role=data.get("role") or None,
            caught_up=data.get("caught-up") == "true",
            settings=data.get("settings", ""),
        )


@dataclass(frozen=True)
class ClusterPlan:
    """The leader's decisions, kept in the peer app databag."""

    members: tuple[str, ...] = ()
    fresh_allowed: tuple[str, ...] = ()
    restart_grant: str | None = None

    def to_databag(self) -> dict[str, str]:
        """The app databag form."""
        return {
            "members": json.dumps(list(self.members)),
            "fresh-allowed": json.dumps(list(self.fresh_allowed)),
            "restart-grant": self.restart_grant or "",
        }

    @classmethod
    def from_databag(cls, data: Mapping[str, str]) -> ClusterPlan:
        """Read the app databag written by `to_databag` (anything unusable is absent)."""
        grant = data.get("restart-grant") or None
        return cls(
            members=unit_list(data.get("members")),
            fresh_allowed=unit_list(data.get("fresh-allowed")),
            restart_grant=grant if grant and _UNIT_NAME.match(grant) else None,
        )


def present_units(reports: Mapping[str, UnitReport]) -> tuple[str, ...]:
    """The units that published their address, in unit order: the candidate members."""
    return tuple(by_number(unit for unit, report in reports.items() if report.address))


def growth_pending(
    current: ClusterPlan, reports: Mapping[str, UnitReport], planned_units: int | None
) -> bool:
    """Whether `plan` would add units to the membership if goal-state were the whole truth.

    Only then does the leader need to know whether more pods are on their way. A shrink
    needs no such check: goal-state drops a unit as soon as it is dying.
    """
    present = present_units(reports)
    return (
        present != current.members
        and len(present) == planned_units
        and not set(present) <= set(current.members)
    )


def awaited_units(
    current_members: Sequence[str], present: Sequence[str], app_pods: Collection[str]
) -> tuple[str, ...]:
    """Units whose pod exists but which have not joined yet.

    ``app_pods`` names the unit of each of the app's pods that is not being deleted. The
    pods of members that left (a scale-down whose pods Kubernetes has not removed yet)
    are not awaited.
    """
    return tuple(by_number(u for u in app_pods if u not in present and u not in current_members))


def plan(
    current: ClusterPlan,
    reports: Mapping[str, UnitReport],
    planned_units: int | None,
    app_pods: Collection[str] | None = None,
    *,
    hold_config_restarts: bool = False,
) -> ClusterPlan:
    """The leader's next decisions from every present unit's report (its own included).

    ``reports`` holds only units that are still in the relation: departed units have
    already left. The membership changes only once every unit Juju plans to have is
    present (``planned_units``, None when goal-state could not be read: no change) and no
    pod of the app is still waiting for its unit (``app_pods``, None when Kubernetes could
    not tell; see `awaited_units`). So `juju add-unit -n 2` is one resize, not two, and a
    new deployment starts every node once, at its final size. With
    ``hold_config_restarts`` (a refresh runs), only restarts into a new membership are
    granted: a config change's restarts wait until the refresh is done.
    """
    if not current.members:
        # No readable membership (another revision's format, a hand edit) while nodes run:
        # the largest membership a running node was started with is the one in force.
        running = [r.running_members for r in reports.values() if r.started and r.running_members]
        if running:
            current = dataclasses.replace(current, members=max(running, key=len))
    present = present_units(reports)
    complete = len(present) == planned_units and not (
        app_pods is not None and awaited_units(current.members, present, app_pods)
    )
    # While units come or go, keep the membership: departed members are harmless seeds,
    # and reconfiguring for an intermediate size would cost every node a restart.
    members = present if complete else current.members
    grant = _restart_grant(current.restart_grant, members, reports, hold_config_restarts)
    return ClusterPlan(
        members=members,
        fresh_allowed=_fresh_allowed(members, reports, grant),
        restart_grant=grant,
    )


def grant_witnesses(
    candidate: str, members: Sequence[str], reports: Mapping[str, UnitReport]
) -> tuple[str, ...]:
    """The nodes that must be serving for ``candidate`` to restart: the others with data."""
    return tuple(u for u in members if u != candidate and u in reports and reports[u].has_data)


def gossip_confirms(
    units: Iterable[str], hosts: Mapping[str, str], gossip: ClusterGossip | None
) -> bool:
    """Whether a fresh /gossip shows each of ``units`` alive, serving and caught up.

    ``hosts`` maps a unit to the host its node advertises. The strict CATCH_UP_BYTES
    applies here, not the hysteresis of the reports.
    """
    wanted = list(units)
    if not wanted:
        return True
    if gossip is None or gossip.leader is None:
        return False
    leader = gossip.leader
    by_host = {m.node_host: m for m in gossip.alive_members}
    for unit in wanted:
        member = by_host.get(hosts[unit])
        if member is None or member.state not in SERVING_ROLES:
            return False
        if not caught_up(leader.writer_checkpoint, member.writer_checkpoint):
            return False
    return True


def leaving_units(members: Sequence[str], reports: Mapping[str, UnitReport]) -> tuple[str, ...]:
    """Units a started node still counts as members but ``members`` does not: a scale-down.

    Their nodes may still run at the larger size: Juju runs the remaining units'
    relation-departed hooks without waiting for the departing pods to go
    (a departing unit runs its own teardown hooks at the same time, and its pod is deleted
    only once the unit is dead). The peer reports of a departed unit are gone, so only
    gossip can tell whether its node still runs.
    """
    counted = {u for report in reports.values() if report.started for u in report.running_members}
    return tuple(by_number(counted - set(members)))


def gossip_shows_gone(
    units: Iterable[str], hosts: Mapping[str, str], gossip: ClusterGossip | None
) -> bool:
    """Whether a fresh /gossip shows none of ``units`` alive (no gossip: cannot tell)."""
    wanted = list(units)
    if not wanted:
        return True
    if gossip is None:
        return False
    alive = {m.node_host for m in gossip.alive_members}
    return not any(hosts[unit] in alive for unit in wanted)


def running_sizes(
    members: Sequence[str], reports: Mapping[str, UnitReport], new_size: dict[str, int]
) -> list[int]:
    """The ClusterSize each started unit runs, members or not (``new_size`` overrides)."""
    return [
        new_size.get(u, len(reports[u].running_members) or len(members))
        for u in by_number(set(members) | set(reports))
        if u in reports and (reports[u].started or u in new_size)
    ]


def _fresh_allowed(
    members: Sequence[str], reports: Mapping[str, UnitReport], grant: str | None
) -> tuple[str, ...]:
    present = [u for u in members if u in reports]
    fresh = [u for u in present if not reports[u].started]
    if not any(reports[u].has_data for u in present):
        return tuple(fresh)  # a brand-new cluster: nothing to lose, start everyone at once
    size = len(members)
    # The size must be changed on the running nodes before a new node joins (KurrentDB's
    # cluster.md): every started node but the one now restarting already runs it.
    old = [
        u
        for u in present
        if reports[u].started and tuple(reports[u].running_members) != tuple(members)
    ]
    if any(u != grant for u in old):
        return ()
    # A leader on the old size wants fewer followers than the new size has nodes: it would
    # tell a new node "SURPLUS OF NODES" and the node would exit (rule 7 of the cluster
    # model). The restarting node resigns first (`restart_waits_for_new_node`).
    if grant in old and reports[grant].role in LEADING_ROLES:
        return ()
    # Started nodes that have never been in sync hold no data yet: they count as empty.
    empty_running = [u for u in present if reports[u].started and not reports[u].has_data]
    budget = max(0, quorum(size) - 1 - len(empty_running))
    allowed: list[str] = []
    for unit in fresh[:budget]:
        starting = dict.fromkeys([*allowed, unit], size)
        # The restarting node may still run its old size, or already the new one.
        if split_brain_possible(running_sizes(members, reports, starting)):
            break
        if grant is not None and split_brain_possible(
            running_sizes(members, reports, {**starting, grant: size})
        ):
            break
        allowed.append(unit)
    return tuple(allowed)


def restart_waits_for_new_node(
    unit: str, members: Sequence[str], reports: Mapping[str, UnitReport]
) -> bool:
    """Whether ``unit``, granted its restart, should first let a new node join and serve.

    Growing 3 -> 5, the last node on the old size is the KurrentDB leader: it restarts
    last, after it resigned. If it restarted right then, the two size-5 nodes left would
    be no quorum of 5 and writes would pause until it is back. Instead it resigns (the
    cluster elects a size-5 leader, which wants 4 followers, so a new node is a follower
    there, not a surplus node told to exit), and holds its restart while a new node
    starts and catches up; then the size-5 nodes without it are a quorum. It holds only
    while that can help: a node already runs the new size (else a new node would join
    the old leader as a surplus: 1 -> 3 restarts at once and pauses), and a new node is
    starting or the plan would let one start once ``unit`` no longer leads.
    """
    others = [u for u in members if u != unit and u in reports]
    if sum(reports[u].serving for u in others) >= quorum(len(members)):
        return False  # writes go on while it restarts
    on_new_size = [
        u
        for u in others
        if reports[u].started and tuple(reports[u].running_members) == tuple(members)
    ]
    if not on_new_size or unit not in reports:
        return False
    if any(reports[u].started and not reports[u].has_data for u in others):
        return True  # a new node is catching up
    resigned = {**reports, unit: dataclasses.replace(reports[unit], role="Follower")}
    return bool(_fresh_allowed(members, resigned, unit))


def can_serve_alone_with_started(
    unit: str, members: Sequence[str], reports: Mapping[str, UnitReport]
) -> bool:
    """Whether ``unit``, restarted into ``members``, can reach its quorum with running nodes.

    If not, it serves only once a new node starts, and that node may start only once the
    plan of this very hook is visible: a hook must not wait for it.
    """
    others = [u for u in members if u != unit and u in reports and reports[u].started]
    return 1 + len(others) >= quorum(len(members))


def _restart_grant(
    current: str | None,
    members: Sequence[str],
    reports: Mapping[str, UnitReport],
    hold_config_restarts: bool = False,
) -> str | None:
    if current is not None and current in reports and not _restart_done(current, members, reports):
        return current  # one restart at a time, until that node is back and caught up
    # Nodes that will need a restart: those that asked, and those whose process runs another
    # membership but have not seen the new one yet (so the leader is not granted first
    # merely because it asked first).
    pending = [
        u
        for u in members
        if u in reports
        and reports[u].started
        and (reports[u].restart_wanted or tuple(reports[u].running_members) != tuple(members))
    ]
    if hold_config_restarts:
        pending = [u for u in pending if tuple(reports[u].running_members) != tuple(members)]
    if not pending:
        return None
    # Followers first; the KurrentDB leader restarts last, after it resigns.
    pending.sort(key=lambda u: (reports[u].role in LEADING_ROLES, unit_number(u)))
    candidate = pending[0]
    if not reports[candidate].restart_wanted:
        return None  # it has not written its new files yet: wait for it, keep the order
    started = [u for u in members if u != candidate and u in reports and reports[u].started]
    if reports[candidate].role in LEADING_ROLES and any(
        reports[u].settings != reports[candidate].settings for u in started
    ):
        return None  # the others have not all seen the change yet: they go first
    # Never restart into a size that lets two disjoint sets of running nodes elect
    # (a smaller size while larger ones still run: the scale-down's leaving nodes).
    if split_brain_possible(running_sizes(members, reports, {candidate: len(members)})):
        return None
    # Never take a node down while another node holding data is not serving. Nodes that
    # never synced do not count: they may be waiting for exactly this restart to join.
    if all(reports[u].serving for u in grant_witnesses(candidate, members, reports)):
        return candidate
    return None


def _restart_done(unit: str, members: Sequence[str], reports: Mapping[str, UnitReport]) -> bool:
    if unit not in members:
        return True
    report = reports[unit]
    return (
        not report.restart_wanted
        and tuple(report.running_members) == tuple(members)
        and report.serving
    )


def settings_fingerprint(config: Mapping[str, object], members: Sequence[str]) -> str:
    """A short fingerprint of what every node must agree on: charm config and membership."""
    text = json.dumps([config, list(members)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lag_bytes(leader_writer: int, member_writer: int) -> int:
    """How far a member's log is behind the leader's."""
    return max(0, leader_writer - member_writer)


def caught_up(leader_writer: int, member_writer: int) -> bool:
    """Whether a member's log is close enough to the leader's to count as in sync."""
    return lag_bytes(leader_writer, member_writer) <= CATCH_UP_BYTES


def reported_role(state: str | None) -> str | None:
    """The role a unit publishes: the states the schedule tells apart, and nothing finer.

    KurrentDB passes through several states while it starts, elects or catches up
    (Initializing, DiscoverLeader, Unknown, PreReplica, CatchingUp, Clone...): for the
    schedule they all mean "not serving", published as no role at all.
    """
    return state if state in SERVING_ROLES or state in LEADING_ROLES else None


def reported_caught_up(was_caught_up: bool, role: str | None, lag: int | None) -> bool:
    """Whether a unit reports itself caught up, with hysteresis.

    A node enters "caught up" within CATCH_UP_BYTES of the leader and leaves it only past
    CATCH_UP_LEAVE_BYTES, or when it stops serving. The leader is caught up by definition.
    ``lag`` is None when the node's gossip shows no leader or not itself: no evidence
    either way, so the report stays as it was.
    """
    if role not in SERVING_ROLES:
        return False
    if role == "Leader":
        return True
    if lag is None:
        return was_caught_up
    return lag <= (CATCH_UP_LEAVE_BYTES if was_caught_up else CATCH_UP_BYTES)
