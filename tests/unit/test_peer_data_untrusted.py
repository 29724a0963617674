"""Peer data is untrusted (another unit may run another charm revision): bad values are absent.

The leader rewrites its own keys rather than failing before it can.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import unit_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops import testing

from cluster import ClusterPlan, UnitReport, unit_list
from state import PEER_RELATION
from workload import paths

BAD_LISTS = ["5", "null", "true", '[["kurrentdb/0"]]', '["bogus"]', '["kurrentdb/x"]',
             '{"a": 1}', "[1, 2]", "not json", '"kurrentdb/0"', "[" * 5000]  # fmt: skip


@pytest.mark.parametrize("raw", BAD_LISTS)
def test_a_unit_list_that_is_not_one_is_absent(raw):
    assert unit_list(raw) == ()
    assert ClusterPlan.from_databag({"members": raw, "fresh-allowed": raw}).members == ()
    assert UnitReport.from_databag({"running-members": raw}).running_members == ()


def test_a_unit_list_keeps_order_once_each():
    assert unit_list('["kurrentdb/2", "kurrentdb/0", "kurrentdb/2"]') == (
        "kurrentdb/2",
        "kurrentdb/0",
    )


@pytest.mark.parametrize("grant", ["bogus", "kurrentdb/x", "kurrentdb/1; rm", "[1]"])
def test_a_restart_grant_that_is_no_unit_is_absent(grant):
    assert ClusterPlan.from_databag({"restart-grant": grant}).restart_grant is None


@pytest.mark.parametrize("raw", BAD_LISTS)
def test_the_leader_rewrites_a_bad_plan(ctx, volumes, internal_ca, kurrentdb, raw):
    state = unit_state(volumes, internal_ca)
    peer = next(iter(state.relations))
    data = {**peer.local_app_data, "members": raw, "fresh-allowed": raw, "restart-grant": raw}
    state = dataclasses.replace(state, relations={dataclasses.replace(peer, local_app_data=data)})
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    plan = out.get_relation(peer.id).local_app_data
    assert json.loads(plan["members"]) == ["kurrentdb/0"]
    assert plan.get("restart-grant", "") == ""


@pytest.mark.parametrize("raw", BAD_LISTS)
def test_bad_peer_reports_never_fail_a_hook(ctx, volumes, internal_ca, kurrentdb, raw):
    state = unit_state(volumes, internal_ca)
    peer = next(iter(state.relations))
    junk = {
        "address": raw,
        "started": raw,
        "has-data": raw,
        "running-members": raw,
        "restart-wanted": raw,
        "role": raw,
        "caught-up": raw,
        "settings": raw,
    }
    peer = dataclasses.replace(peer, peers_data={1: junk, 2: {}})
    state = dataclasses.replace(state, relations={peer}, planned_units=3)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert out.unit_status.name in ("active", "waiting", "maintenance", "blocked")


values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(BAD_LISTS),
    st.lists(st.sampled_from(["kurrentdb/0", "kurrentdb/1", "x", ""]), max_size=4).map(json.dumps),
)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(app=st.dictionaries(st.sampled_from(["members", "fresh-allowed", "restart-grant"]), values),
       unit=st.dictionaries(st.sampled_from(sorted(UnitReport().to_databag())), values))  # fmt: skip
def test_any_peer_data_reads_as_typed_values(app, unit):
    plan = ClusterPlan.from_databag(app)
    report = UnitReport.from_databag(unit)
    for name in (*plan.members, *plan.fresh_allowed, *report.running_members):
        assert isinstance(name, str) and "/" in name
    assert plan.restart_grant is None or "/" in plan.restart_grant
    assert isinstance(report.started, bool) and isinstance(report.caught_up, bool)


def test_the_leader_rewrites_an_emptied_plan_when_other_units_are_there(
    ctx, volumes, internal_ca, kurrentdb
):
    state = unit_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    peer = state.get_relations(PEER_RELATION)[0]
    peer = dataclasses.replace(
        peer, local_app_data={**peer.local_app_data, "members": ""}, peers_data={1: {}}
    )
    state = dataclasses.replace(state, relations={peer}, planned_units=2)
    out = ctx.run(ctx.on.relation_changed(peer, remote_unit=1), state)
    data = out.get_relation(peer.id).local_app_data
    assert "kurrentdb/0" in unit_list(data.get("members", ""))
    assert out.app_status != testing.WaitingStatus("waiting for units to join the cluster")


def test_a_running_unit_rewrites_its_own_unreadable_report(ctx, volumes, internal_ca, kurrentdb):
    state = unit_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    peer = state.get_relations(PEER_RELATION)[0]
    peer = dataclasses.replace(peer, local_unit_data={**peer.local_unit_data, "started": ""})
    state = dataclasses.replace(state, relations={peer})
    for _ in range(3):
        state = ctx.run(ctx.on.update_status(), state)
    assert state.unit_status == testing.ActiveStatus("Leader")
