"""A steady cluster under write load wakes nobody: no relation-changed storm when nothing
is scheduled, and a bounded number of hooks when KurrentDB elects another leader."""

from __future__ import annotations

from cluster import CATCH_UP_BYTES
from sim.harness import UPDATE_STATUS_INTERVAL, Simulation
from sim.scenarios import SCENARIOS, run_step
from sim.test_scaling import assert_healthy_cluster, assert_safe


def test_write_load_wakes_nobody_and_an_election_wakes_each_peer_once_per_role_change(
    sim: Simulation,
):
    _deploy, load, election = (run_step(sim, n, a) for n, a in SCENARIOS["steady load"])
    # The lag did waver around the threshold, as the followers' gossip showed it.
    lags = sim.cluster.jitter_log
    assert sum(lag > CATCH_UP_BYTES for lag in lags) > len(lags) / 3
    assert sum(lag <= CATCH_UP_BYTES for lag in lags) > len(lags) / 3

    window = load.window
    assert window is not None and window.minutes == 10
    assert window.health_relation_changed == 0, window.hooks
    assert set(window.hooks) == {"update-status"}, window.hooks
    assert window.per_unit_per_minute() <= 60 / UPDATE_STATUS_INTERVAL
    assert load.restarts == {} and load.membership_changes == 0

    window = election.window
    assert window is not None
    elections = [what for _, _, what in sim.cluster.events if what.startswith("elected")]
    assert len(elections) == 2, "the first leader, then one after it resigned"
    # Two units changed role (old and new leader); each change woke the two other units.
    assert window.health_relation_changed <= 2 * 2, window.hooks
    assert election.restarts == {}
    assert_safe(election)
    # The app status names the new KurrentDB leader once its unit has reported.
    assert_healthy_cluster(sim)
