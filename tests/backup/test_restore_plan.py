"""The restore state machine (`backup.restore`), played across 1, 3 and 5 units.

`Cluster` is a small world of its own: each unit has a volume (which data is live, which
is moved aside, the marker `backup.swap` would leave) and a node that runs or not; the
app and unit databags hold exactly what the charm would write, so every decision goes
through `to_databag`/`from_databag`. A round runs every unit's hook and the leader's
`advance` in an order the test (or hypothesis) chooses, until nothing changes. Failures
are injected per unit and action; a hook can die half-way through a swap, as a killed
pod would, and the next hook then starts from `recover`'s view of the volume.

After every event the safety rules are checked (`Cluster.check`):

- no unit deletes moved-aside data unless the leader moved the plan to commit after
  every participant reported started and every node served the restored data;
- no two running nodes hold different histories (old data beside restored data);
- no node runs on restored data before the plan said start, nor on moved-aside volumes;
- a unit's old data is never lost before that commit;
- a unit never has live data moved aside while the plan says done.

And at the end: success leaves every unit running the restored data with nothing left
on its volume; any failure leaves every unit running its old data, nothing moved aside.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backup import restore, swap
from backup.restore import (
    Action,
    BackupFacts,
    Outcome,
    PlanPhase,
    Refusal,
    RestorePlan,
    Step,
    UnitPhase,
    UnitRestoreReport,
    advance,
    initiate,
    unit_step,
)
from backup.swap import DEFAULT_MAX_TRUNCATION, Phase, Recovery, Truncation

BACKUP = BackupFacts("20261201T230000Z-0a1b2c", "26.0.3", 3 * 2**30)
T0 = 1_796_000_000.0  # 2026-11-30
TICK = 60.0
IDLE_JUMP = 3600.0  # a round that changes nothing: an hour of update-status passes
RESTORE_ID = "restore-20261130T005320Z-c0ffee"  # what `Cluster.begin` starts
OLD = "old"
# What swap_in reports: the backup's log runs 300 MiB past its chaser, beyond the default
# MaxTruncation, so the first start needs the raised limit.
TRUNCATION = Truncation(writer=900 * 2**20, chaser=600 * 2**20)


class HookKilledError(Exception):
    """The hook died here (the pod was killed): nothing after it ran."""


@dataclass
class Volume:
    """What `backup.swap` leaves on a volume, in the few facts the plan cares about."""

    live: str | None = OLD  # OLD, a restore id (restored data), or None mid-swap
    aside: str | None = None  # the old data moved aside
    marker: tuple[str, Phase] | None = None

    def recover(self) -> Recovery | None:
        """`swap.recover`: finish a half-done swap or roll back."""
        if self.marker is None:
            return None
        rid, phase = self.marker
        if phase is Phase.SWAPPING:
            if self.aside is None:
                self.aside, self.live = self.live, None
            self.live = rid
            self.marker = (rid, Phase.SWAPPED)
        elif phase is Phase.ROLLING_BACK:
            if self.aside is not None:
                self.live, self.aside = self.aside, None
            self.marker = (rid, Phase.ROLLED_BACK)
        return Recovery(*self.marker)


def state_of(volume: Any) -> tuple[str | None, str | None, tuple[str, Phase] | None]:
    """Which data is live, which is moved aside, and the marker: what the rules look at."""
    return volume.live, volume.aside, volume.marker


@dataclass
class Unit:
    name: str
    volume: Any = field(default_factory=Volume)  # a Volume or a DiskVolume
    running: bool = True
    databag: dict[str, str] = field(default_factory=dict)
    # action -> error code; the action fails with it every time
    fails: dict[Action, str] = field(default_factory=dict)
    crashes: set[Action] = field(default_factory=set)  # dies half-way, once each
    asleep_until: float = 0.0  # runs no hook before this time (a stuck pod)
    committed: bool = False


@dataclass
class Cluster:
    units: dict[str, Unit]
    app_databag: dict[str, str] = field(default_factory=dict)
    leader: str = ""
    now: float = T0
    never_serves: bool = False  # the restored cluster never elects a leader
    departed: list[str] = field(default_factory=list)
    # what the leader saw when it moved a restore on: the evidence the rules need
    start_allowed: set[str] = field(default_factory=set)
    commit_allowed: set[str] = field(default_factory=set)
    history: list[str] = field(default_factory=list)
    events: int = 0

    @classmethod
    def of(cls, n: int) -> Cluster:
        units = {f"kurrentdb/{i}": Unit(f"kurrentdb/{i}") for i in range(n)}
        return cls(units, leader="kurrentdb/0")

    # -- the charm's side -----------------------------------------------------------

    def plan(self) -> RestorePlan | None:
        return RestorePlan.from_databag(self.app_databag)

    def begin(self) -> RestorePlan:
        result = initiate(
            BACKUP,
            members=list(self.units),
            present=list(self.units),
            image_version="26.1.0",
            running_restore=self.plan(),
            running_backup=None,
            now=self.now,
            token="c0ffee",
            reports={n: UnitRestoreReport.from_databag(u.databag) for n, u in self.units.items()},
        )
        assert isinstance(result, RestorePlan), result
        self.app_databag.update(result.to_databag())
        return result

    def serving(self) -> dict[str, bool]:
        plan = self.plan()
        return {
            name: unit.running
            and plan is not None
            and unit.volume.live == plan.restore_id
            and not self.never_serves
            for name, unit in self.units.items()
        }

    def leader_hook(self) -> bool:
        if self.leader not in self.units:
            self.leader = min(self.units)  # Juju elects another leader
        before = self.plan()
        reports = {n: UnitRestoreReport.from_databag(u.databag) for n, u in self.units.items()}
        after = advance(before, reports, self.serving(), self.now)
        if after == before or after is None:
            return False
        assert before is not None
        if after.phase is PlanPhase.START:
            assert before.phase is PlanPhase.SWAP
            self.start_allowed.add(after.restore_id)
        if after.phase is PlanPhase.COMMIT:
            # The rule commit rests on: every participant started, all nodes serve.
            assert before.phase is PlanPhase.START
            assert all(p in reports for p in after.participants)
            assert all(
                (r := reports[p]) is not None and r.completed is UnitPhase.STARTED
                for p in after.participants
            )
            assert all(self.serving()[p] for p in after.participants)
            self.commit_allowed.add(after.restore_id)
        self.app_databag.update(after.to_databag())
        self.history.append(f"{self.leader}: {before.phase.value} -> {after.phase.value}")
        return True

    def unit_hook(self, name: str) -> bool:
        unit = self.units[name]
        if self.now < unit.asleep_until:
            return False
        state = self.snapshot(unit)
        recovery = unit.volume.recover()  # before anything may start the node
        plan = self.plan()
        report = UnitRestoreReport.from_databag(unit.databag)
        peers = {
            n: UnitRestoreReport.from_databag(u.databag) for n, u in self.units.items() if n != name
        }
        step = unit_step(plan, name, report, recovery, peers)
        if step.holds_node_stopped:
            unit.running = False
        try:
            published = self.act(unit, step)
        except HookKilledError:
            return True
        if published is not None:
            unit.databag.update(published.to_databag())
        if not step.holds_node_stopped and not unit.running and unit.volume.live is not None:
            unit.running = True  # the charm's usual reconcile starts an idle node
        return self.snapshot(unit) != state

    def act(self, unit: Unit, step: Step) -> UnitRestoreReport | None:
        """Do the step's action, or the failure injected for it; the report to publish."""
        if step.action is Action.NOTHING or step.restore_id is None:
            return None
        if step.action in unit.fails:
            if step.action in (Action.SWAP, Action.ROLL_BACK):
                unit.running = False
            return step.failed(unit.fails[step.action])
        crash = step.action in unit.crashes
        unit.crashes.discard(step.action)
        return self.perform(unit, step, step.restore_id, crash)

    def perform(self, unit: Unit, step: Step, rid: str, crash: bool) -> UnitRestoreReport | None:
        volume, action = unit.volume, step.action
        if action is Action.STAGE:
            volume.marker = (rid, Phase.STAGED)
        elif action is Action.SWAP:
            assert not unit.running, "swap_in needs the node stopped"
            assert volume.marker is not None and volume.marker[0] == rid
            if volume.marker[1] is Phase.STAGED:
                volume.marker = (rid, Phase.SWAPPING)
                volume.aside, volume.live = volume.live, None
                if crash:
                    raise HookKilledError
                volume.live = rid
                volume.marker = (rid, Phase.SWAPPED)
            assert volume.marker == (rid, Phase.SWAPPED)
            return step.succeeded(TRUNCATION)
        elif action is Action.START:
            assert volume.marker == (rid, Phase.SWAPPED) and volume.live == rid
            assert step.truncation == TRUNCATION
            assert restore.start_max_truncation(step.truncation) == TRUNCATION.requested
            unit.running = True
        elif action is Action.COMMIT:
            assert volume.marker is not None and volume.marker[1] is Phase.SWAPPED
            assert rid in self.commit_allowed, f"{unit.name} commits {rid} unconfirmed"
            volume.aside, volume.marker, unit.committed = None, None, True
        elif action is Action.ABORT:
            assert volume.marker is None or volume.marker[1] not in restore._MOVED_ASIDE
            volume.marker = None
        elif action is Action.ROLL_BACK:
            moving = volume.marker is not None and volume.marker[1] in restore._MOVED_ASIDE
            assert not (moving and unit.running), "roll_back needs the node stopped"
            if moving:
                assert volume.marker is not None
                volume.marker = (volume.marker[0], Phase.ROLLING_BACK)
                if crash:
                    raise HookKilledError
            if volume.aside is not None:
                volume.live, volume.aside = volume.aside, None
            volume.marker = None
        return step.succeeded()

    @staticmethod
    def snapshot(unit: Unit) -> Any:
        return (state_of(unit.volume), unit.running, dict(unit.databag))

    # -- the world --------------------------------------------------------------------

    def depart(self, name: str) -> None:
        del self.units[name]
        self.departed.append(name)

    def play(
        self,
        rng: random.Random | None = None,
        rounds: int = 400,
        during: Any = None,
        last: str | None = None,
    ) -> None:
        """Run rounds of hooks until a whole round changes nothing and the plan is done.

        ``last``: this unit's hook comes last in every round (after the leader's).
        """
        rng = rng or random.Random(0)
        for _ in range(rounds):
            names = [*self.units, "leader"]
            rng.shuffle(names)
            names.sort(key=lambda name: name == last)
            changed = False
            before = self.world()
            for name in names:
                if during is not None:
                    during(self)
                if name != "leader" and name not in self.units:
                    continue
                changed |= self.leader_hook() if name == "leader" else self.unit_hook(name)
                self.check()
                self.events += 1
            if rng.random() < 0.3 and self.units:
                self.leader = rng.choice(sorted(self.units))  # leadership moves
            changed |= self.world() != before  # `during` may have changed it too
            plan = self.plan()
            awake = all(self.now >= u.asleep_until for u in self.units.values())
            settled = awake and (plan is None or plan.phase is PlanPhase.DONE)
            if not changed and settled:
                return
            self.now += TICK if changed else IDLE_JUMP
        raise AssertionError(f"no convergence: {self.plan()} {self.history}")

    def world(self) -> Any:
        return dict(self.app_databag), {n: self.snapshot(u) for n, u in self.units.items()}

    def check(self) -> None:
        plan = self.plan()
        histories = {u.volume.live for u in self.units.values() if u.running}
        assert len(histories) <= 1, f"running nodes hold different histories: {histories}"
        for unit in self.units.values():
            volume = unit.volume
            if unit.running:
                assert volume.live is not None, f"{unit.name} runs on a half-swapped volume"
                assert volume.marker is None or volume.marker[1] not in (
                    Phase.SWAPPING,
                    Phase.ROLLING_BACK,
                ), f"{unit.name} runs while its data moves"
                if volume.live != OLD:
                    assert volume.live in self.start_allowed, f"{unit.name} started early"
            if not unit.committed:
                assert OLD in (volume.live, volume.aside), f"{unit.name} lost its old data"
            if plan is not None and plan.phase is PlanPhase.DONE:
                assert volume.aside is None, f"{unit.name} has data moved aside, plan done"

    def assert_restored(self) -> None:
        plan = self.plan()
        assert plan is not None and plan.outcome is Outcome.RESTORED, (plan, self.history)
        assert plan.fresh_backup_needed
        for unit in self.units.values():
            assert state_of(unit.volume) == (plan.restore_id, None, None), unit
            assert unit.running

    def assert_rolled_back(self) -> None:
        plan = self.plan()
        assert plan is None or plan.outcome is Outcome.FAILED, (plan, self.history)
        for unit in self.units.values():
            assert state_of(unit.volume) == (OLD, None, None), unit
            assert unit.running


SIZES = [1, 3, 5]


def last(cluster: Cluster) -> str:
    return max(cluster.units)


# -- whole restores ----------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_every_unit_ends_on_the_restored_data(n: int):
    cluster = Cluster.of(n)
    cluster.begin()
    cluster.play()
    cluster.assert_restored()
    assert cluster.plan().reason == ""  # type: ignore[union-attr]


@pytest.mark.parametrize("n", SIZES)
def test_a_unit_whose_staging_fails_aborts_everyone_with_the_cause(n: int):
    cluster = Cluster.of(n)
    cluster.units[last(cluster)].fails[Action.STAGE] = "NoSuchKey"
    plan = cluster.begin()
    cluster.play()
    cluster.assert_rolled_back()
    done = cluster.plan()
    assert done is not None and done.failed_in is PlanPhase.STAGE
    assert done.reason == f"{last(cluster)} failed during stage: NoSuchKey"
    assert plan.restore_id not in cluster.start_allowed  # no node ever stopped for it


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("action", [Action.SWAP, Action.START])
def test_a_failure_after_others_swapped_puts_every_unit_back(n: int, action: Action):
    cluster = Cluster.of(n)
    failing = last(cluster)
    cluster.units[failing].fails[action] = "swap-failed"
    cluster.begin()
    cluster.play(last=failing)  # so the others have swapped (or started) by then
    cluster.assert_rolled_back()
    done = cluster.plan()
    assert done is not None and done.failed_in in (PlanPhase.SWAP, PlanPhase.START)
    assert f"{failing} failed during" in done.reason


@pytest.mark.parametrize("n", SIZES)
def test_a_cluster_that_never_serves_the_restored_data_rolls_back_after_the_bound(n: int):
    cluster = Cluster.of(n)
    cluster.never_serves = True
    cluster.begin()
    cluster.play()
    cluster.assert_rolled_back()
    done = cluster.plan()
    assert done is not None and done.failed_in is PlanPhase.START
    assert done.reason.startswith("start did not finish within 30 min: waiting for kurrentdb/0")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("action", [Action.SWAP, Action.ROLL_BACK])
def test_a_unit_that_dies_mid_way_finishes_on_its_next_hook(n: int, action: Action):
    cluster = Cluster.of(n)
    cluster.units[last(cluster)].crashes.add(action)
    if action is Action.ROLL_BACK:
        cluster.units["kurrentdb/0"].fails[Action.START] = "start-failed"
    cluster.begin()
    cluster.play()
    if action is Action.SWAP:
        cluster.assert_restored()
    else:
        cluster.assert_rolled_back()
    assert not cluster.units[last(cluster)].crashes  # the crash did happen


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("phase", [PlanPhase.STAGE, PlanPhase.SWAP, PlanPhase.START])
def test_a_participant_that_departs_before_commit_rolls_everyone_back(n: int, phase: PlanPhase):
    cluster = Cluster.of(n)
    leaving = "kurrentdb/1"

    def depart_in_phase(c: Cluster) -> None:
        plan = c.plan()
        if leaving in c.units and plan is not None and plan.phase is phase:
            c.depart(leaving)

    cluster.begin()
    cluster.play(during=depart_in_phase)
    assert cluster.departed == [leaving]
    cluster.assert_rolled_back()
    done = cluster.plan()
    assert done is not None and done.reason == f"{leaving} left the relation during {phase.value}"


@pytest.mark.parametrize("n", [3, 5])
def test_a_participant_that_departs_in_commit_is_excused(n: int):
    cluster = Cluster.of(n)
    leaving = last(cluster)

    def depart_in_commit(c: Cluster) -> None:
        plan = c.plan()
        if leaving in c.units and plan is not None and plan.phase is PlanPhase.COMMIT:
            c.depart(leaving)

    cluster.begin()
    cluster.play(during=depart_in_commit, last=leaving)  # the leader's commit comes first
    assert cluster.departed == [leaving]
    cluster.assert_restored()
    done = cluster.plan()
    assert done is not None and done.reason == f"{leaving} left before committing"


@pytest.mark.parametrize("n", SIZES)
def test_a_new_leader_continues_the_plan(n: int):
    cluster = Cluster.of(n)
    cluster.begin()
    leaders: set[str] = set()

    def rotate(c: Cluster) -> None:
        c.leader = sorted(c.units)[c.events % len(c.units)]
        leaders.add(c.leader)

    cluster.play(during=rotate)
    cluster.assert_restored()
    assert len(leaders) == n
    moved_by = {entry.split(":")[0] for entry in cluster.history}
    assert len(moved_by) > 1 or n == 1, cluster.history  # several leaders moved it on


@pytest.mark.parametrize("n", SIZES)
def test_a_unit_stuck_in_staging_aborts_after_six_hours(n: int):
    cluster = Cluster.of(n)
    cluster.units[last(cluster)].asleep_until = T0 + 10 * 3600
    cluster.begin()
    cluster.play()
    cluster.assert_rolled_back()
    done = cluster.plan()
    assert done is not None
    assert done.reason.startswith(f"stage did not finish within 6 h: waiting for {last(cluster)}")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("phase", [PlanPhase.STAGE, PlanPhase.SWAP, PlanPhase.START])
def test_a_plan_that_becomes_unreadable_leaves_every_unit_on_its_old_data(n: int, phase: PlanPhase):
    cluster = Cluster.of(n)

    def corrupt(c: Cluster) -> None:
        plan = c.plan()
        if plan is not None and plan.phase is phase and c.events % 2:
            c.app_databag[restore.DATABAG_KEY] = c.app_databag[restore.DATABAG_KEY][:-7]

    cluster.begin()
    cluster.play(during=corrupt)
    assert cluster.plan() is None
    cluster.assert_rolled_back()


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("committed_before", [0, 1])
def test_a_plan_lost_during_commit_ends_with_every_unit_on_one_history(
    n: int, committed_before: int
):
    cluster = Cluster.of(n)

    def corrupt(c: Cluster) -> None:
        plan = c.plan()
        done = sum(u.committed for u in c.units.values())
        if plan is not None and plan.phase is PlanPhase.COMMIT and done == committed_before:
            del c.app_databag[restore.DATABAG_KEY]

    cluster.begin()
    cluster.play(during=corrupt)
    assert cluster.plan() is None
    # A committed peer proves the plan said commit: the others commit too. Without one,
    # nobody has deleted anything and everyone rolls back.
    expected = RESTORE_ID if committed_before else OLD
    assert [u.volume for u in cluster.units.values()] == [Volume(live=expected)] * n
    assert all(u.running for u in cluster.units.values())


def test_without_a_plan_a_rolled_back_node_waits_for_peers_that_may_run_restored_data():
    rid = "restore-x"
    mine = UnitRestoreReport(rid, UnitPhase.ROLLED_BACK)
    alone = unit_step(None, "kurrentdb/0", mine, None, {"kurrentdb/1": mine})
    assert alone == Step(Action.NOTHING)
    started = {"kurrentdb/1": UnitRestoreReport(rid, UnitPhase.STARTED)}
    waits = unit_step(None, "kurrentdb/0", mine, None, started)
    assert waits.action is Action.NOTHING and waits.holds_node_stopped
    committed = {"kurrentdb/1": UnitRestoreReport(rid, UnitPhase.COMMITTED)}
    stuck = unit_step(None, "kurrentdb/0", mine, None, committed)
    assert stuck.action is Action.REPORT_ONLY and stuck.holds_node_stopped
    published = stuck.succeeded()
    assert published == UnitRestoreReport(
        rid, UnitPhase.ROLLED_BACK, restore.ROLLED_BACK_AFTER_COMMIT
    )
    again = unit_step(None, "kurrentdb/0", published, None, committed)
    assert again.action is Action.NOTHING and again.holds_node_stopped
    # ... and a swapped volume with that evidence commits instead of rolling back.
    swapped = unit_step(None, "kurrentdb/2", None, Recovery(rid, Phase.SWAPPED), committed)
    assert swapped.action is Action.COMMIT


def test_initiate_refuses_while_a_unit_still_runs_a_lost_plans_restore():
    reports = {"kurrentdb/1": UnitRestoreReport("restore-x", UnitPhase.STARTED)}
    result = begin(reports=reports)
    assert isinstance(result, Refusal)
    assert result.message == (
        "kurrentdb/1 has not finished an earlier restore; wait for it to roll back"
    )


def test_a_unit_that_joins_during_the_restore_waits_and_takes_no_part():
    cluster = Cluster.of(3)
    cluster.begin()
    newcomer = Unit("kurrentdb/3", running=False, volume=Volume(live=None))
    plan = cluster.plan()
    assert plan is not None
    step = unit_step(plan, newcomer.name, None, None)
    assert step == Step(Action.NOTHING, holds_node_stopped=True, pauses_schedule=True)
    done = dataclasses.replace(plan, phase=PlanPhase.DONE, outcome=Outcome.RESTORED, finished_at=T0)
    assert unit_step(done, newcomer.name, None, None) == Step(Action.NOTHING)


# -- one unit's decisions -----------------------------------------------------------------


def running_plan(phase: PlanPhase, **changes: Any) -> RestorePlan:
    plan = initiate(BACKUP, ["kurrentdb/0", "kurrentdb/1"], ["kurrentdb/0", "kurrentdb/1"],
                    "26.1.0", None, None, T0, "abc123")  # fmt: skip
    assert isinstance(plan, RestorePlan)
    failed_in = PlanPhase.SWAP if phase in (PlanPhase.ABORT, PlanPhase.ROLL_BACK) else None
    fields: dict[str, Any] = {"phase": phase, "failed_in": failed_in}
    if phase is PlanPhase.ABORT:
        fields["failed_in"] = PlanPhase.STAGE
    fields.update(changes)
    return dataclasses.replace(plan, **fields)


def done_plan(outcome: Outcome) -> RestorePlan:
    failed_in = PlanPhase.START if outcome is Outcome.FAILED else None
    return running_plan(PlanPhase.DONE, outcome=outcome, finished_at=T0, failed_in=failed_in)


MID_SWAP_EXPECTED = {
    # the plan's phase -> what a unit that died mid-swap does once recover finished it
    PlanPhase.STAGE: Action.ROLL_BACK,  # a swap the plan never asked for is undone
    PlanPhase.SWAP: Action.SWAP,  # reports it (swap_in only re-reads the checkpoints)
    PlanPhase.START: Action.SWAP,  # its report is missing the truncation facts: again
    PlanPhase.COMMIT: Action.COMMIT,  # the plan commits this very restore
    PlanPhase.ABORT: Action.ROLL_BACK,
    PlanPhase.ROLL_BACK: Action.ROLL_BACK,
}


@pytest.mark.parametrize("phase", list(MID_SWAP_EXPECTED))
def test_a_unit_that_died_mid_swap_acts_on_the_plan_in_each_phase(phase: PlanPhase):
    plan = running_plan(phase)
    volume = Volume(live=None, aside=OLD, marker=(plan.restore_id, Phase.SWAPPING))
    recovery = volume.recover()
    assert volume.live == plan.restore_id and recovery == Recovery(plan.restore_id, Phase.SWAPPED)
    staged = UnitRestoreReport(plan.restore_id, UnitPhase.STAGED)
    step = unit_step(plan, "kurrentdb/1", staged, recovery)
    assert step.action is MID_SWAP_EXPECTED[phase]
    assert step.restore_id == plan.restore_id
    assert step.holds_node_stopped == (phase is not PlanPhase.COMMIT)
    assert step.pauses_schedule


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (None, Action.ROLL_BACK),  # no plan for the id: roll back
        (done_plan(Outcome.FAILED), Action.ROLL_BACK),
        (done_plan(Outcome.RESTORED), Action.COMMIT),
        (running_plan(PlanPhase.STAGE, restore_id="restore-other"), Action.ROLL_BACK),
    ],
    ids=["no-plan", "done-failed", "done-restored", "another-restore"],
)
def test_moved_aside_data_is_deleted_only_when_the_plan_commits_that_restore(
    plan: RestorePlan | None, expected: Action
):
    rid = running_plan(PlanPhase.SWAP).restore_id
    step = unit_step(plan, "kurrentdb/0", None, Recovery(rid, Phase.SWAPPED))
    assert step.action is expected
    assert step.restore_id == rid
    assert step.holds_node_stopped == (expected is Action.ROLL_BACK)


def test_leftover_staging_of_another_restore_is_discarded_first_while_the_node_keeps_serving():
    plan = running_plan(PlanPhase.STAGE)
    step = unit_step(plan, "kurrentdb/0", None, Recovery("restore-old", Phase.STAGED))
    assert (step.action, step.restore_id, step.holds_node_stopped) == (
        Action.ABORT,
        "restore-old",
        False,
    )


def test_leftovers_while_nodes_may_run_restored_data_keep_the_node_stopped():
    plan = running_plan(PlanPhase.ROLL_BACK, failed_in=PlanPhase.START)
    step = unit_step(plan, "kurrentdb/0", None, Recovery("restore-old", Phase.STAGED))
    assert step.action is Action.ABORT and step.holds_node_stopped


def test_the_first_start_raises_max_truncation_to_exactly_what_it_needs():
    plan = running_plan(PlanPhase.START)
    report = UnitRestoreReport(plan.restore_id, UnitPhase.SWAPPED, truncation=TRUNCATION)
    step = unit_step(plan, "kurrentdb/0", report, Recovery(plan.restore_id, Phase.SWAPPED))
    assert step.action is Action.START and not step.holds_node_stopped
    assert restore.start_max_truncation(step.truncation) == 300 * 2**20
    started = step.succeeded()
    assert started == UnitRestoreReport(plan.restore_id, UnitPhase.STARTED, None, TRUNCATION)
    # Once started, later starts use the configured limit (truncate.chk is -1 by then).
    after = unit_step(plan, "kurrentdb/0", started, Recovery(plan.restore_id, Phase.SWAPPED))
    assert after.action is Action.NOTHING and after.truncation is None


@pytest.mark.parametrize(
    ("truncation", "configured", "expected"),
    [
        (Truncation(100, 100), DEFAULT_MAX_TRUNCATION, None),
        (Truncation(DEFAULT_MAX_TRUNCATION, 0), DEFAULT_MAX_TRUNCATION, None),
        (Truncation(DEFAULT_MAX_TRUNCATION + 1, 0), DEFAULT_MAX_TRUNCATION, DEFAULT_MAX_TRUNCATION + 1),
        (Truncation(2**40, 0), -1, None),  # no limit configured
        (None, DEFAULT_MAX_TRUNCATION, None),
    ],
)  # fmt: skip
def test_start_max_truncation(truncation: Truncation | None, configured: int, expected: Any):
    assert restore.start_max_truncation(truncation, configured) == expected


def test_a_failure_report_carries_a_code_never_the_exception_text():
    plan = running_plan(PlanPhase.STAGE)
    step = unit_step(plan, "kurrentdb/0", None, None)
    secret_text = "GET https://s3/?X-Amz-Signature=deadbeef failed: AccessDenied"
    report = step.failed(secret_text)
    assert report == UnitRestoreReport(plan.restore_id, None, restore.UNKNOWN_ERROR)
    assert report is not None and "deadbeef" not in json.dumps(report.to_databag())
    assert step.failed("AccessDenied") == UnitRestoreReport(plan.restore_id, None, "AccessDenied")


# -- the leader's decisions ---------------------------------------------------------------


def reports_of(plan: RestorePlan, phase: UnitPhase | None, **errors: str) -> dict[str, Any]:
    return {
        u: UnitRestoreReport(plan.restore_id, phase, errors.get(u.replace("kurrentdb/", "u")))
        for u in plan.participants
    }


def test_start_waits_for_every_node_to_serve_before_commit():
    plan = running_plan(PlanPhase.START, phase_since=T0)
    started = reports_of(plan, UnitPhase.STARTED)
    half = {"kurrentdb/0": True, "kurrentdb/1": False}
    assert advance(plan, started, half, T0 + 60) == plan
    moved = advance(plan, started, {"kurrentdb/0": True, "kurrentdb/1": True}, T0 + 60)
    assert moved is not None and moved.phase is PlanPhase.COMMIT and moved.phase_since == T0 + 60


def test_reports_about_an_earlier_restore_count_for_nothing():
    plan = running_plan(PlanPhase.STAGE)
    old = {u: UnitRestoreReport("restore-earlier", UnitPhase.STAGED) for u in plan.participants}
    assert advance(plan, old, {}, T0 + 60) == plan


def test_roll_back_and_commit_never_time_out():
    for phase in (PlanPhase.ROLL_BACK, PlanPhase.COMMIT):
        plan = running_plan(phase)
        assert advance(plan, reports_of(plan, UnitPhase.SWAPPED), {}, T0 + 10**6) == plan


def test_a_clock_that_goes_back_never_times_a_phase_out():
    plan = running_plan(PlanPhase.SWAP, phase_since=T0)
    assert advance(plan, reports_of(plan, UnitPhase.STAGED), {}, T0 - 10**6) == plan


def test_an_abort_that_waits_too_long_for_clean_up_finishes_failed():
    plan = running_plan(PlanPhase.ABORT, phase_since=T0, reason="kurrentdb/1 failed")
    waiting = reports_of(plan, None)
    assert advance(plan, waiting, {}, T0 + restore.ABORT_TIMEOUT) == plan
    done = advance(plan, waiting, {}, T0 + restore.ABORT_TIMEOUT + 1)
    assert done is not None and done.outcome is Outcome.FAILED
    assert done.reason.endswith("kurrentdb/0, kurrentdb/1 had not discarded its staging")


def test_no_plan_and_a_finished_plan_stay_as_they_are():
    assert advance(None, {}, {}, T0) is None
    done = done_plan(Outcome.RESTORED)
    assert advance(done, {}, {}, T0 + 10**6) is done


# -- the restore action ------------------------------------------------------------------


def begin(**changes: Any) -> RestorePlan | Refusal:
    args: dict[str, Any] = {
        "backup": BACKUP,
        "members": ["kurrentdb/0", "kurrentdb/1", "kurrentdb/2"],
        "present": ["kurrentdb/0", "kurrentdb/1", "kurrentdb/2"],
        "image_version": "26.1.0",
        "running_restore": None,
        "running_backup": None,
        "now": T0,
        "token": "0a0b0c",
    }
    return initiate(**{**args, **changes})


def test_initiate_plans_every_member_in_staging():
    plan = begin()
    assert isinstance(plan, RestorePlan)
    assert (
        plan.restore_id == "restore-20261130T005320Z-0a0b0c" == restore.restore_id_for(T0, "0a0b0c")
    )
    assert plan.backup_id == BACKUP.backup_id and plan.outcome is None
    assert plan.participants == ("kurrentdb/0", "kurrentdb/1", "kurrentdb/2")
    assert (plan.phase, plan.started_at, plan.phase_since) == (PlanPhase.STAGE, T0, T0)
    assert plan.fresh_backup_needed and plan.running
    assert RestorePlan.from_databag(plan.to_databag()) == plan


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"running_restore": running_plan(PlanPhase.SWAP)}, "is still running (swap)"),
        ({"running_backup": "kurrentdb/2"}, "a backup is running on kurrentdb/2"),
        ({"backup": dataclasses.replace(BACKUP, kurrentdb_version="27.0.0")},
         "written by KurrentDB 27.0.0, newer than this image's 26.1.0: refresh to a 27.x"),
        ({"backup": dataclasses.replace(BACKUP, kurrentdb_version="latest")},
         "names no KurrentDB version"),
        ({"image_version": None}, "the image's KurrentDB version is not known yet"),
        ({"present": ["kurrentdb/0", "kurrentdb/2"]}, "kurrentdb/1 is a member but not in"),
        ({"members": []}, "the cluster has no members yet"),
        ({"backup": dataclasses.replace(BACKUP, backup_id="../etc")}, "is not a backup id"),
    ],
)  # fmt: skip
def test_initiate_refuses_with_what_to_do(changes: dict[str, Any], message: str):
    result = begin(**changes)
    assert isinstance(result, Refusal) and message in result.message, result


def test_initiate_accepts_older_majors_and_a_finished_restore():
    assert isinstance(begin(backup=dataclasses.replace(BACKUP, kurrentdb_version="25.1.4")),
                      RestorePlan)  # fmt: skip
    assert isinstance(begin(running_restore=done_plan(Outcome.FAILED)), RestorePlan)


@given(st.one_of(st.none(), st.text(max_size=80), st.integers(), st.floats()),
       st.one_of(st.none(), st.text(max_size=80)))  # fmt: skip
def test_initiate_never_raises_on_untrusted_versions(backup_version: Any, image_version: Any):
    result = begin(
        backup=dataclasses.replace(BACKUP, kurrentdb_version=backup_version),
        image_version=image_version,
    )
    if isinstance(result, RestorePlan):
        backup_major = restore._major(backup_version)
        image_major = restore._major(image_version)
        assert backup_major is not None and image_major is not None
        assert backup_major <= image_major


def test_the_fresh_backup_request_clears_once_a_backup_begins_after_the_restore():
    done = done_plan(Outcome.RESTORED)
    assert restore.fresh_backup_taken(done, T0 - 1) == done
    cleared = restore.fresh_backup_taken(done, T0 + 1)
    assert cleared is not None and not cleared.fresh_backup_needed


# -- hypothesis: databags and the order units act in ---------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
PLAN_FIELDS = [
    "format", "restore-id", "backup-id", "participants", "phase", "started-at",
    "phase-since", "outcome", "reason", "failed-in", "fresh-backup-needed", "finished-at",
]  # fmt: skip


def sample_plans() -> Iterable[RestorePlan]:
    for phase in PlanPhase:
        if phase is PlanPhase.DONE:
            yield done_plan(Outcome.RESTORED)
            yield done_plan(Outcome.FAILED)
        else:
            yield running_plan(phase)


@given(st.sampled_from(list(sample_plans())), st.sampled_from(PLAN_FIELDS), json_values)
def test_a_plan_with_any_field_changed_is_a_valid_plan_or_none(
    plan: RestorePlan, key: str, value: Any
):
    body = json.loads(plan.to_databag()[restore.DATABAG_KEY])
    body[key] = value
    parsed = RestorePlan.from_databag({restore.DATABAG_KEY: json.dumps(body)})
    if parsed is not None:
        assert RestorePlan.from_databag(parsed.to_databag()) == parsed
        assert parsed.participants and all("/" in u for u in parsed.participants)
        assert (parsed.phase is PlanPhase.DONE) == (parsed.outcome is not None)


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=200), max_size=3) | st.just({}),
       st.text(max_size=300))  # fmt: skip
def test_arbitrary_databags_are_no_plan_and_no_report(data: dict[str, str], text: str):
    for bag in (data, {restore.DATABAG_KEY: text}):
        plan = RestorePlan.from_databag(bag)
        report = UnitRestoreReport.from_databag(bag)
        assert plan is None or RestorePlan.from_databag(plan.to_databag()) == plan
        assert report is None or UnitRestoreReport.from_databag(report.to_databag()) == report


reports_strategy = st.one_of(
    st.none(),
    st.builds(
        UnitRestoreReport,
        restore_id=st.sampled_from([running_plan(PlanPhase.STAGE).restore_id, "restore-old"]),
        completed=st.none() | st.sampled_from(UnitPhase),
        error=st.none() | st.sampled_from(["AccessDenied", restore.NOT_STAGED]),
        truncation=st.none() | st.just(TRUNCATION),
    ),
)
markers = st.none() | st.builds(
    Recovery,
    st.sampled_from([running_plan(PlanPhase.STAGE).restore_id, "restore-old"]),
    st.none() | st.sampled_from(Phase),
)


@given(
    st.none() | st.sampled_from(list(sample_plans())),
    st.dictionaries(st.sampled_from(["kurrentdb/0", "kurrentdb/1", "kurrentdb/7"]),
                    reports_strategy, max_size=3),
    st.dictionaries(st.sampled_from(["kurrentdb/0", "kurrentdb/1"]), st.booleans()),
    st.floats(min_value=0, max_value=2e9),
    st.sampled_from(["kurrentdb/0", "kurrentdb/7"]),
    markers,
)  # fmt: skip
def test_decisions_never_raise_and_never_commit_without_the_plan(
    plan: RestorePlan | None,
    reports: dict[str, Any],
    serving: dict[str, bool],
    now: float,
    unit: str,
    marker: Recovery | None,
):
    after = advance(plan, reports, serving, now)
    if plan is not None and after is not None and after.phase is PlanPhase.COMMIT:
        assert plan.phase in (PlanPhase.START, PlanPhase.COMMIT)
        if plan.phase is PlanPhase.START:
            assert all(reports[u].completed is UnitPhase.STARTED for u in plan.participants)
            assert all(serving.get(u) for u in plan.participants)
    assert after is None or RestorePlan.from_databag(after.to_databag()) == after
    step = unit_step(plan, unit, reports.get(unit), marker)
    if step.action is Action.COMMIT:
        assert marker is not None and plan is not None and marker.restore_id == plan.restore_id
        assert plan.phase is PlanPhase.COMMIT or plan.outcome is Outcome.RESTORED
    if marker is not None and marker.phase in (Phase.SWAPPING, Phase.SWAPPED):
        assert step.action is not Action.ABORT  # discarding refuses moved-aside data
    moving = marker is not None and marker.phase in restore._MOVED_ASIDE
    if step.action in (Action.SWAP, Action.ROLL_BACK) and moving:
        assert step.holds_node_stopped


failures = st.fixed_dictionaries(
    {},
    optional={
        "fails": st.tuples(st.sampled_from([Action.STAGE, Action.SWAP, Action.START]),
                           st.integers(0, 4)),
        "crashes": st.tuples(st.sampled_from([Action.SWAP, Action.ROLL_BACK]), st.integers(0, 4)),
        "departs": st.tuples(st.sampled_from([PlanPhase.STAGE, PlanPhase.SWAP, PlanPhase.START,
                                              PlanPhase.COMMIT]), st.integers(1, 4)),
        "never_serves": st.just(True),
        "loses_plan": st.tuples(st.sampled_from(list(PlanPhase)), st.integers(0, 30)),
        "sleeps": st.tuples(st.integers(0, 4), st.sampled_from([600.0, 3 * 3600.0, 8 * 3600.0])),
        # (unit, event): from then on, every few events its report is another revision's
        "garbles_report": st.tuples(st.integers(0, 4), st.integers(0, 40)),
    },
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SIZES), failures, st.randoms(use_true_random=False))
def test_any_order_and_any_failure_end_all_restored_or_all_on_old_data(
    n: int, faults: dict[str, Any], rng: random.Random
):
    cluster = Cluster.of(n)
    names = sorted(cluster.units)
    failed = False
    if "fails" in faults:
        action, index = faults["fails"]
        cluster.units[names[index % n]].fails[action] = "injected"
        failed = True
    if "crashes" in faults:
        action, index = faults["crashes"]
        cluster.units[names[index % n]].crashes.add(action)
    if faults.get("never_serves"):
        cluster.never_serves = failed = True
    if "sleeps" in faults:
        index, seconds = faults["sleeps"]
        cluster.units[names[index % n]].asleep_until = T0 + seconds
        failed |= seconds > restore.STAGE_TIMEOUT
    departs = faults.get("departs") if n > 1 else None
    loses = faults.get("loses_plan")
    garbles = faults.get("garbles_report")

    def during(c: Cluster) -> None:
        plan = c.plan()
        if plan is None:
            return
        leaving = names[departs[1] % n] if departs is not None else None
        if departs is not None and plan.phase is departs[0] and leaving in c.units:
            c.depart(leaving)
        if loses is not None and plan.phase is loses[0] and c.events >= loses[1]:
            c.app_databag[restore.DATABAG_KEY] = "{}"
        # One fault at a time: a lost plan leaves the reports as the only record.
        if garbles is not None and loses is None and c.events >= garbles[1] and c.events % 5 == 0:
            unit = c.units.get(names[garbles[0] % n])
            if unit is not None and restore.DATABAG_KEY in unit.databag:
                unit.databag[restore.DATABAG_KEY] = '{"format": 2}'

    cluster.begin()
    cluster.play(rng, during=during)
    plan = cluster.plan()
    event(f"n={n} ended {plan.outcome.value if plan and plan.outcome else 'with the plan lost'}")
    if plan is None:  # lost: everyone on one history, whichever the evidence gave
        histories = {
            (u.volume.live, u.volume.aside, u.volume.marker) for u in cluster.units.values()
        }
        assert histories in ({(OLD, None, None)}, {(RESTORE_ID, None, None)})
        assert all(u.running for u in cluster.units.values())
        return
    assert plan is not None and plan.phase is PlanPhase.DONE
    if plan.outcome is Outcome.RESTORED:
        assert not failed, cluster.history
        cluster.assert_restored()
    else:
        departed_early = cluster.departed and plan.failed_in is not PlanPhase.COMMIT
        assert failed or departed_early or plan.reason, cluster.history
        cluster.assert_rolled_back()


# -- the same plays on real volumes, with backup.swap's own steps ----------------------------

CHUNK = "chunk-000000.000000"


def write_data(directory: Path, tag: str) -> None:
    """A tiny data directory whose chunk says which data it is."""
    (directory / "index").mkdir(parents=True, exist_ok=True)
    (directory / "index" / "indexmap").write_text(f"index of {tag}\n")
    (directory / CHUNK).write_text(tag)
    writer, chaser = (TRUNCATION.writer, TRUNCATION.chaser) if tag != OLD else (4096, 4096)
    (directory / "writer.chk").write_bytes(struct.pack("<q", writer))
    (directory / "chaser.chk").write_bytes(struct.pack("<q", chaser))


@dataclass
class DiskVolume:
    """A unit's volume on disk; the same three facts as `Volume`, read from the files."""

    root: Path

    @staticmethod
    def _tag(path: Path) -> str | None:
        return path.read_text() if path.exists() else None

    @property
    def live(self) -> str | None:
        return self._tag(self.root / CHUNK)

    @property
    def aside(self) -> str | None:
        marker = swap.read_marker(self.root)
        if marker is None:
            return None
        return self._tag(swap.RestoreDirs(self.root, marker.restore_id).previous / CHUNK)

    @property
    def marker(self) -> tuple[str, Phase] | None:
        marker = swap.read_marker(self.root)
        return None if marker is None else (marker.restore_id, marker.phase)

    def recover(self) -> Recovery | None:
        return swap.recover(self.root)


class DiskCluster(Cluster):
    """`Cluster` whose units' actions are backup.swap's, on a directory per unit."""

    def perform(self, unit: Unit, step: Step, rid: str, crash: bool) -> UnitRestoreReport | None:
        root, action, truncation = unit.volume.root, step.action, None
        if action is Action.STAGE:
            write_data(swap.prepare_staging(root, rid, 1024), rid)  # the verified download
            swap.mark_staged(root, rid)
        elif action is Action.SWAP:
            assert not unit.running
            with killed_after_moves(2 if crash else None):
                truncation = swap.swap_in(root, rid, os.getuid(), os.getgid())
            assert (root / "truncate.chk").read_bytes() == (root / "chaser.chk").read_bytes()
        elif action is Action.START:
            assert unit.volume.live == rid and step.truncation == TRUNCATION
            unit.running = True
        elif action is Action.COMMIT:
            assert rid in self.commit_allowed
            swap.commit(root, rid)
            unit.committed = True
        elif action is Action.ABORT:
            swap.discard_staging(root, rid)
        elif action is Action.ROLL_BACK:
            with killed_after_moves(1 if crash else None):
                swap.roll_back(root, rid)
            swap.discard_staging(root, rid)
        return step.succeeded(truncation)


class killed_after_moves:  # noqa: N801 (a context manager read as a phrase)
    """Make backup.swap's Nth rename of a data entry kill the hook (None: no kill)."""

    fired = 0  # how many hooks it killed

    def __init__(self, moves: int | None):
        self.moves, self.original = moves, swap._move

    def __enter__(self) -> None:
        if self.moves is None:
            return
        left = [self.moves]

        def move(source: Path, target: Path) -> None:
            if left[0] == 0:
                killed_after_moves.fired += 1
                raise HookKilledError
            left[0] -= 1
            self.original(source, target)

        swap._move = move

    def __exit__(self, *exc: object) -> None:
        swap._move = self.original


def disk_cluster(n: int, tmp_path: Path) -> DiskCluster:
    cluster = DiskCluster({})
    for i in range(n):
        root = tmp_path / f"volume-{i}"
        write_data(root, OLD)
        unit = Unit(f"kurrentdb/{i}", volume=DiskVolume(root))
        cluster.units[unit.name] = unit
    cluster.leader = "kurrentdb/0"
    return cluster


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    "fault", ["none", "start-fails", "dies-mid-swap", "dies-mid-roll-back", "plan-lost-in-start"]
)
def test_real_volumes_end_all_restored_or_all_on_old_data(n: int, fault: str, tmp_path: Path):
    cluster = disk_cluster(n, tmp_path)
    failing = f"kurrentdb/{n - 1}"
    during = None
    if fault in ("start-fails", "dies-mid-roll-back"):
        cluster.units[failing].fails[Action.START] = "start-failed"
    if fault == "dies-mid-swap":
        cluster.units[failing].crashes.add(Action.SWAP)
    if fault == "dies-mid-roll-back":
        cluster.units["kurrentdb/0"].crashes.add(Action.ROLL_BACK)
    if fault == "plan-lost-in-start":

        def during(c: Cluster) -> None:
            plan = c.plan()
            if plan is not None and plan.phase is PlanPhase.START and c.events % 3 == 0:
                c.app_databag[restore.DATABAG_KEY] = "not json"

    killed_after_moves.fired = 0
    cluster.begin()
    cluster.play(during=during, last=failing)
    assert killed_after_moves.fired == (1 if fault.startswith("dies") else 0)
    if fault in ("none", "dies-mid-swap"):
        cluster.assert_restored()
    else:
        assert cluster.plan() is None or cluster.plan().outcome is Outcome.FAILED  # type: ignore[union-attr]
        for unit in cluster.units.values():
            assert state_of(unit.volume) == (OLD, None, None), unit
            assert unit.running
    for unit in cluster.units.values():
        root = unit.volume.root
        assert not (root / swap.RESTORE_DIR).exists(), entries(root)  # nothing left behind
        tag = unit.volume.live
        assert (root / "index" / "indexmap").read_text() == f"index of {tag}\n"


def test_importing_the_state_machine_loads_no_juju_and_no_storage_client():
    code = (
        "import sys; import backup.restore; "
        "print(sorted(m for m in ('ops', 'boto3', 'botocore', 'azure', 'lightkube')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": "src:lib"},
    )
    assert out.stdout.strip() == "[]"
