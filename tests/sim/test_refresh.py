"""`juju refresh` played out: the StatefulSet controller replaces pods as Kubernetes does
(highest first, at or above the partition, as soon as the one before is Ready), the charm
moves the partition, and KurrentDB nodes run mixed versions while it rolls.

Every test checks the cluster model's invariants at every tick (strict simulation), that no
two voting nodes were down in the same tick, and that no acknowledged write was lost.
"""

from __future__ import annotations

import collections
import os

import pytest
from ops import testing

from sim.harness import Simulation
from sim.scenarios import StepResult, run_step
from workload import paths

OLD, NEW = "26.0.3", "26.1.0"


def formed(sim: Simulation, units: int, *, version: str = OLD, pause: str = "none") -> None:
    sim.image_version = version
    sim.statefulset.versions["rev-1"] = version
    sim.set_config(pause_after_unit_refresh=pause)
    for _ in range(units):
        sim.add_unit()
    sim.settle()
    assert sim.cluster.leader() is not None


def lead_on(sim: Simulation, unit: str) -> None:
    """Resign KurrentDB leaders until ``unit``'s node leads (priorities are equal)."""
    from sim.scenarios import _resign_leader

    for _ in range(12):
        if sim.cluster.leader() == unit:
            sim.settle()
            return
        _resign_leader(sim)
        for _ in range(3):
            sim.cluster.tick()
    raise AssertionError(f"{unit} never came to lead")


def refresh(
    sim: Simulation, revision: str = "rev-2", version: str = NEW, *, checked: bool = True
) -> StepResult:
    """`juju refresh`, after `pre-refresh-check` (the documented flow) unless not ``checked``."""

    def action(s: Simulation) -> None:
        if checked:
            assert s.leader is not None
            s.run_action(s.leader, "pre-refresh-check")
            s.settle()
        s.juju_refresh(revision, version)

    return run_step(sim, f"refresh to {revision}", action)


def play(sim: Simulation, rounds: int) -> None:
    """Rounds of hooks, the controller's pass and a tick, for a refresh that cannot finish
    (settle would wait for it)."""
    for _ in range(rounds):
        sim.drain()
        sim.roll_statefulset()
        sim.drain()
        sim.tick()
        sim._pebble_restarts_exited_processes()
        for name in sim.ordered(sim.units):
            sim._enqueue(name, "update-status", lambda ctx, s: ctx.on.update_status())


def never_two_down(sim: Simulation) -> None:
    worst = max(record.voting_down for record in sim.cluster.history)
    assert worst <= 1, f"{worst} voting nodes were down in one tick"


def replaced_order(sim: Simulation) -> list[str]:
    return [unit for _, unit, _ in sim.pods_replaced]


@pytest.mark.parametrize("leader", ["kurrentdb/0", "kurrentdb/1", "kurrentdb/2"])
def test_a_3_node_refresh_goes_highest_first_with_the_leader_handed_over(
    sim: Simulation, leader: str
) -> None:
    formed(sim, 3)
    lead_on(sim, leader)
    result = refresh(sim)
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/1", "kurrentdb/0"]
    assert result.restarted_while_leading == [], "a leader was stopped without resigning"
    assert result.lost_writes == 0
    never_two_down(sim)
    # One pod start per node: the charm restarted nothing on top of Kubernetes.
    assert result.restarts == {}
    assert {sim.units[u].pod_starts for u in sim.units} == {2}
    assert {sim.cluster.node(u).double.node.version for u in sim.units} == {NEW}
    assert sim.statefulset.partition == 0, "the partition is reset once the refresh is done"
    assert isinstance(sim.app_status(), testing.ActiveStatus), sim.app_status()


def test_without_pre_refresh_check_only_the_first_leader_goes_unannounced(
    sim: Simulation,
) -> None:
    """`juju refresh` straight away: Kubernetes deletes the highest pod at once, and its
    KurrentDB gets SIGTERM as its stop hook starts, so a leader there is not handed over
    (the others elect one); every later unit is, and nothing acknowledged is lost."""
    formed(sim, 3)
    lead_on(sim, "kurrentdb/2")
    result = refresh(sim, checked=False)
    assert result.restarted_while_leading == ["kurrentdb/2"]
    assert result.lost_writes == 0
    never_two_down(sim)
    lead_on(sim, "kurrentdb/1")
    result = refresh(sim, "rev-3", checked=False)
    assert result.restarted_while_leading == [] and result.lost_writes == 0


def test_a_5_node_refresh(sim: Simulation) -> None:
    formed(sim, 5)
    lead_on(sim, "kurrentdb/3")
    result = refresh(sim)
    assert replaced_order(sim) == [f"kurrentdb/{n}" for n in (4, 3, 2, 1, 0)]
    assert result.restarted_while_leading == [] and result.lost_writes == 0
    never_two_down(sim)
    # The partition only ever let one unit more go at a time.
    moves = [value for _, value in sim.statefulset.partition_log]
    assert moves == [4, 3, 2, 1, 0], moves


def test_the_refresh_pauses_after_the_first_unit_until_resumed(sim: Simulation) -> None:
    formed(sim, 3, pause="first")
    refresh(sim)
    assert replaced_order(sim) == ["kurrentdb/2"]
    status = sim.app_status()
    assert isinstance(status, testing.BlockedStatus), status
    assert "resume-refresh" in status.message and "juju refresh kurrentdb" in status.message
    assert sim.statefulset.partition == 2
    assert sim.leader is not None
    sim.run_action(sim.leader, "resume-refresh")
    sim.settle()
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/1", "kurrentdb/0"]
    never_two_down(sim)
    assert sim.cluster.lost_acknowledged_writes() == 0


def test_pause_all_needs_a_resume_for_every_unit(sim: Simulation) -> None:
    formed(sim, 3, pause="all")
    refresh(sim)
    assert sim.leader is not None
    for done in (["kurrentdb/2"], ["kurrentdb/2", "kurrentdb/1"]):
        assert replaced_order(sim) == done
        sim.run_action(sim.leader, "resume-refresh")
        sim.settle()
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/1", "kurrentdb/0"]


def test_pre_refresh_check_fails_naming_a_node_that_does_not_serve(sim: Simulation) -> None:
    formed(sim, 3)
    sim.cluster.stop_process("kurrentdb/1")  # it crashed; Pebble has not restarted it yet
    for name in sim.ordered(sim.units):
        sim._enqueue(name, "update-status", lambda ctx, s: ctx.on.update_status())
    sim.drain()
    assert sim.leader is not None
    with pytest.raises(testing.ActionFailed) as failed:
        sim.run_action(sim.leader, "pre-refresh-check")
    assert "kurrentdb/1" in failed.value.message, failed.value.message
    assert sim.statefulset.partition == 0, "a failed check changes nothing"


def test_pre_refresh_check_holds_all_but_the_highest_unit(sim: Simulation) -> None:
    formed(sim, 3)
    lead_on(sim, "kurrentdb/2")
    assert sim.leader is not None
    results = sim.run_action(sim.leader, "pre-refresh-check")
    assert results["first-unit"] == "kurrentdb/2"
    assert results["rollback"].startswith("juju refresh kurrentdb --revision 7 ")
    assert "kurrentdb-image=docker.kurrent.io/" in results["rollback"]
    assert sim.statefulset.partition == 2
    sim.settle()
    assert sim.cluster.leader() != "kurrentdb/2", "the first unit to go handed leadership over"
    refresh(sim)
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/1", "kurrentdb/0"]


def test_a_unit_that_does_not_come_back_stops_the_refresh_and_rollback_restores_it(
    sim: Simulation,
) -> None:
    """The new image's KurrentDB never serves on kurrentdb/2: the refresh stops there (the
    others keep the old version and quorum) and says so; `juju refresh` back to the first
    revision replaces kurrentdb/2 again and the cluster is whole on the old version."""
    formed(sim, 3)
    broken = "26.1.1"
    sim.cluster.failing_versions.add(broken)
    sim.juju_refresh("rev-2", broken)
    play(sim, rounds=60)
    assert replaced_order(sim) == ["kurrentdb/2"]
    status = sim.app_status()
    assert "kurrentdb/2 does not serve since its refresh" in status.message, status
    assert "juju refresh kurrentdb --revision" in status.message
    never_two_down(sim)
    sim.juju_refresh("rev-1")
    sim.settle()
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/2"]
    assert {sim.cluster.node(u).double.node.version for u in sim.units} == {OLD}
    assert isinstance(sim.app_status(), testing.ActiveStatus), sim.app_status()
    assert sim.cluster.lost_acknowledged_writes() == 0


def test_an_older_major_than_the_data_was_written_by_is_refused(sim: Simulation) -> None:
    formed(sim, 3, version="27.0.0")
    sim.juju_refresh("rev-2", "26.1.0")
    play(sim, rounds=20)
    assert replaced_order(sim) == ["kurrentdb/2"]
    status = sim.status("kurrentdb/2")
    assert isinstance(status, testing.BlockedStatus), status
    assert "older major" in status.message and "force-refresh-start" in status.message
    assert not sim.cluster.process_running("kurrentdb/2"), "the old data was not handed over"
    never_two_down(sim)


def test_a_pod_deleted_mid_refresh_does_not_let_the_next_unit_go(sim: Simulation) -> None:
    formed(sim, 3, pause="first")
    refresh(sim)
    assert replaced_order(sim) == ["kurrentdb/2"]
    # kurrentdb/2's new pod is deleted (a drain): it comes back on the same revision.
    sim.replace_pod("kurrentdb/2")
    assert sim.statefulset.partition >= 2
    sim.settle()
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/2"]
    assert sim.leader is not None
    sim.run_action(sim.leader, "resume-refresh")
    sim.settle()
    assert replaced_order(sim)[-2:] == ["kurrentdb/1", "kurrentdb/0"]
    never_two_down(sim)
    assert sim.cluster.lost_acknowledged_writes() == 0


def test_a_scale_up_mid_refresh_joins_on_the_new_revision(sim: Simulation) -> None:
    formed(sim, 3, pause="first")
    refresh(sim)
    sim.add_unit()
    sim.add_unit()
    sim.settle()
    assert sim.units["kurrentdb/3"].revision == "rev-2"
    assert sim.leader is not None
    sim.run_action(sim.leader, "resume-refresh")
    sim.settle()
    assert {unit.revision for unit in sim.units.values()} == {"rev-2"}
    assert {sim.units[u].rendered_config()["ClusterSize"] for u in sim.units} == {5}
    never_two_down(sim)
    assert sim.cluster.lost_acknowledged_writes() == 0


def test_a_charm_only_refresh_restarts_nothing_beyond_the_pods(sim: Simulation) -> None:
    formed(sim, 3)
    secrets_before = {s.id: s.tracked_content for s in sim.app_secrets.values()}
    members_before = len(sim.membership_changes)
    result = refresh(sim, version=OLD)
    assert result.restarts == {} and result.membership_changes == 0
    assert len(sim.membership_changes) == members_before
    assert {s.id: s.tracked_content for s in sim.app_secrets.values()} == secrets_before
    assert {sim.units[u].pod_starts for u in sim.units} == {2}


def test_backups_and_config_restarts_wait_for_the_refresh(sim: Simulation) -> None:
    formed(sim, 3, pause="first")
    refresh(sim)
    assert sim.leader is not None
    with pytest.raises(testing.ActionFailed) as failed:
        sim.run_action("kurrentdb/1", "create-backup")
    assert "refresh" in failed.value.message
    with pytest.raises(testing.ActionFailed):
        sim.run_action(sim.leader, "pre-refresh-check")
    restarts = dict(sim.charm_restarts)
    sim.set_config(extra_options="{MaxAppendSize: 2097152}")
    sim.settle()
    assert dict(sim.charm_restarts) == restarts, "a config restart ran during the refresh"
    sim.run_action(sim.leader, "resume-refresh")
    sim.settle()
    assert {unit.revision for unit in sim.units.values()} == {"rev-2"}
    assert all(sim.units[u].rendered_config()["MaxAppendSize"] == 2097152 for u in sim.units)
    never_two_down(sim)


def test_slow_booting_nodes_hold_each_step_until_they_serve(make_sim) -> None:
    """Nodes that take 12 s to boot: the next pod goes only once the last one serves."""
    sim = make_sim(boot_ticks=6)
    formed(sim, 3)
    result = refresh(sim)
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/1", "kurrentdb/0"]
    assert result.lost_writes == 0 and result.restarted_while_leading == []
    never_two_down(sim)


def test_without_the_partition_kubernetes_takes_two_nodes_down(make_sim, monkeypatch) -> None:
    """The control: with the charm's partition moves ignored, the controller replaces the
    next pod as soon as the last is Ready (at once), so a slow node and the next one are
    down together. The model is not kinder than Kubernetes."""
    from refresh import statefulset

    sim = make_sim(boot_ticks=6, strict=False)
    formed(sim, 3)
    monkeypatch.setattr(statefulset, "set_partition", lambda *args: None)
    refresh(sim)
    assert max(record.voting_down for record in sim.cluster.history) >= 2


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a volume's owner needs root")
def test_a_refresh_across_the_uid_line_and_back_chowns_each_volume_once(sim: Simulation) -> None:
    """rev-1's image runs as uid 1000, rev-2's as 1001 (KurrentDB 26.x): each new pod
    gives its volume to its user once, and a rollback gives it back; no other start
    chowns anything."""
    sim.statefulset.uids.update({"rev-1": 1000, "rev-2": 1001})
    formed(sim, 3)

    def owners() -> set[tuple[int, int]]:
        return {
            (path.stat().st_uid, path.stat().st_gid)
            for unit in sim.units.values()
            for path in [unit.data, *unit.data.rglob("*")]
        }

    def top_chowns() -> collections.Counter[str]:
        return collections.Counter(u for u, c in sim.chowns if c[-1] == paths.DATA_DIR)

    assert owners() == {(1000, 1000)}
    assert top_chowns() == {u: 1 for u in sim.units}
    refresh(sim)
    assert owners() == {(1001, 1001)}
    assert top_chowns() == {u: 2 for u in sim.units}, "once per unit for the new user"
    sim.settle()
    assert top_chowns() == {u: 2 for u in sim.units}, "no start chowns again"
    run_step(sim, "roll back", lambda s: s.juju_refresh("rev-1"))
    assert owners() == {(1000, 1000)}
    assert top_chowns() == {u: 3 for u in sim.units}
    never_two_down(sim)
    assert sim.cluster.lost_acknowledged_writes() == 0


def test_a_scale_down_mid_refresh_leaves_a_whole_cluster(sim: Simulation) -> None:
    formed(sim, 5, pause="first")
    refresh(sim)
    assert replaced_order(sim) == ["kurrentdb/4"]
    for unit in ("kurrentdb/4", "kurrentdb/3"):
        sim.remove_unit(unit)
    sim.settle()
    assert {sim.units[u].rendered_config()["ClusterSize"] for u in sim.units} == {3}
    assert sim.leader is not None
    sim.run_action(sim.leader, "resume-refresh")
    sim.settle()
    assert replaced_order(sim) == ["kurrentdb/4", "kurrentdb/2", "kurrentdb/1", "kurrentdb/0"]
    assert {unit.revision for unit in sim.units.values()} == {"rev-2"}
    never_two_down(sim)
    assert sim.cluster.lost_acknowledged_writes() == 0


def test_a_refresh_started_during_a_backup_waits_on_the_first_unit_until_it_ends(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`juju refresh` without pre-refresh-check while kurrentdb/1 backs up (its alive object
    in the bucket, as `Backups.busy` reads it): Kubernetes replaces kurrentdb/2 regardless,
    but its new KurrentDB waits, and the refresh with it, until the backup ends."""
    from backup.capability import Backups

    formed(sim, 3)
    backing_up = {"on": True}
    monkeypatch.setattr(
        Backups,
        "busy",
        lambda self: "a backup is running on kurrentdb/1" if backing_up["on"] else None,
    )
    sim.juju_refresh("rev-2", NEW)
    play(sim, rounds=30)
    assert replaced_order(sim) == ["kurrentdb/2"]
    assert not sim.cluster.process_running("kurrentdb/2")
    status = sim.status("kurrentdb/2")
    assert isinstance(status, testing.BlockedStatus), status
    assert status.message.startswith("pre-refresh check failed: a backup is running on kurrentdb/1")
    assert "force-refresh-start run-pre-refresh-checks=false" in status.message
    never_two_down(sim)

    backing_up["on"] = False
    sim.settle()
    assert replaced_order(sim) == ["kurrentdb/2", "kurrentdb/1", "kurrentdb/0"]
    assert {sim.cluster.node(u).double.node.version for u in sim.units} == {NEW}
    assert isinstance(sim.app_status(), testing.ActiveStatus), sim.app_status()
    never_two_down(sim)
    assert sim.cluster.lost_acknowledged_writes() == 0


def test_force_refresh_start_lets_the_first_unit_go_without_its_checks(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backup.capability import Backups

    formed(sim, 3)
    monkeypatch.setattr(Backups, "busy", lambda self: "a backup is running on kurrentdb/1")
    sim.juju_refresh("rev-2", NEW)
    play(sim, rounds=20)
    assert not sim.cluster.process_running("kurrentdb/2")
    results = sim.run_action(
        "kurrentdb/2", "force-refresh-start", {"run-pre-refresh-checks": False}
    )
    assert "run-pre-refresh-checks" in results["result"]
    sim.settle()
    assert {sim.cluster.node(u).double.node.version for u in sim.units} == {NEW}
    never_two_down(sim)
    assert sim.cluster.lost_acknowledged_writes() == 0
