"""Teardown that fits Kubernetes: one handover per teardown, every wait bounded.

A deleted pod has 30 s (terminationGracePeriodSeconds) for its stop hook, while its Pebble
is already stopping KurrentDB; a scale-down runs relation-departed once per peer, then
storage-detaching, then stop on the leaving unit. Time is a fake clock here: the waits
sleep on it and every request to a node that does not answer costs its full timeout.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
from ops import testing
from test_cluster import FQDN, clustered_state, three_node_gossip

import charm
import coordinator
import kurrentdb_api
import node
from workload import paths


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    import time

    fake = FakeClock()
    module = types.SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep, time=time.time)
    for patched in (charm, coordinator, node):
        monkeypatch.setattr(patched, "time", module)
    # The waits are bounded by the real settle timeout here, not the tests' zero.
    monkeypatch.setattr(node, "SETTLE_TIMEOUT", 180.0)
    return fake


@pytest.fixture
def not_answering(monkeypatch: pytest.MonkeyPatch, clock: FakeClock):
    """From now on, every request hangs for its client's whole timeout."""
    calls: list[float] = []

    def hang(self, method, path, **kwargs):
        calls.append(self.timeout)
        clock.sleep(self.timeout)
        raise kurrentdb_api.KurrentDBUnreachable(
            f"{method} {path}: timed out", reason="timeout", method=method, path=path
        )

    def start() -> list[float]:
        monkeypatch.setattr(kurrentdb_api.KurrentDBClient, "_request", hang)
        return calls

    return start


@pytest.fixture
def ctx():
    """Unit 1 leaves: Scenario 8.9 ignores `departing_unit=0` (falsy) and uses the remote."""
    with testing.Context(charm.KurrentDBCharm, unit_id=1) as context:
        yield context


def gossip(kurrentdb, leader: int = 1, lag: int = 0) -> list[dict]:
    """Three nodes as unit 1's node sees them; `leader` leads, the others lag by `lag`."""
    rows = three_node_gossip(kurrentdb, lag=(lag, lag))
    order = [leader, *(n for n in (0, 1, 2) if n != leader)]
    return [
        row | {"httpEndPointIp": FQDN.format(n), "internalHttpEndPointIp": FQDN.format(n)}
        for n, row in zip(order, rows, strict=True)
    ]


def running(ctx, volumes, ca, kurrentdb, leader: int = 1) -> testing.State:
    kurrentdb.members = gossip(kurrentdb, leader)
    kurrentdb.state = "Leader" if leader == 1 else "Follower"
    kurrentdb.node.http_host = FQDN.format(1)
    state = clustered_state(volumes, ca)
    peer = next(iter(state.relations))
    peers = {n: {"address": FQDN.format(n), "started": "true"} for n in (0, 2)}
    state = dataclasses.replace(state, relations={dataclasses.replace(peer, peers_data=peers)})
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


def teardown_events(ctx, state: testing.State) -> list:
    peer = next(iter(state.relations))
    departed = [ctx.on.relation_departed(peer, remote_unit=n, departing_unit=1) for n in (0, 2)]
    return [*departed, ctx.on.storage_detaching(next(iter(state.storages))), ctx.on.stop()]


def test_stop_ends_within_its_deadline_when_kurrentdb_does_not_answer(
    ctx, volumes, internal_ca, kurrentdb, clock, not_answering
):
    state = running(ctx, volumes, internal_ca, kurrentdb)
    calls = not_answering()
    start = clock.now
    ctx.run(ctx.on.stop(), state)
    assert calls, "the stop hook did try to reach KurrentDB"
    assert clock.now - start <= charm.STOP_DEADLINE


def test_stop_ends_within_its_deadline_when_no_leader_takes_over(
    ctx, volumes, internal_ca, kurrentdb, clock
):
    # The node answers, but nobody ever takes leadership over, and the others lag.
    state = running(ctx, volumes, internal_ca, kurrentdb)
    kurrentdb.members = gossip(kurrentdb, lag=2**30)
    start = clock.now
    ctx.run(ctx.on.stop(), state)
    assert kurrentdb.resign_count == 1
    assert charm.STOP_DEADLINE - 5 <= clock.now - start <= charm.STOP_DEADLINE


def test_scale_down_hands_over_once_per_teardown(ctx, volumes, internal_ca, kurrentdb, clock):
    state = running(ctx, volumes, internal_ca, kurrentdb)

    def elect_another(double):
        double.members = [
            row | {"state": "Leader" if row["httpEndPointIp"] == FQDN.format(0) else "Follower"}
            for row in double.members
        ]
        double.state = "Follower"

    kurrentdb.on_resign = elect_another
    asked: list[int] = []
    for event in teardown_events(ctx, state):
        before = len(kurrentdb.requests)
        state = ctx.run(event, state)
        asked.append(len(kurrentdb.requests) - before)
    assert kurrentdb.resign_count == 1
    assert asked[0] > 0 and asked[1:] == [0, 0, 0], f"requests per teardown hook: {asked}"


def test_a_whole_scale_down_is_bounded(ctx, volumes, internal_ca, kurrentdb, clock):
    # The node never hands over and the others never catch up: every hook would wait.
    state = running(ctx, volumes, internal_ca, kurrentdb)
    kurrentdb.members = gossip(kurrentdb, lag=2**30)
    start = clock.now
    for event in teardown_events(ctx, state):
        state = ctx.run(event, state)
    assert clock.now - start <= charm.LEAVE_BUDGET
    assert kurrentdb.resign_count == 1


def test_a_leaving_follower_with_the_others_in_sync_goes_at_once(
    ctx, volumes, internal_ca, kurrentdb, clock
):
    state = running(ctx, volumes, internal_ca, kurrentdb, leader=0)
    start = clock.now
    ctx.run(ctx.on.stop(), state)
    assert kurrentdb.resign_count == 0
    assert clock.now - start < 1, "the others were in sync: no wait"
