"""The CA switch (certificates.switch) played across units, in any order.

Each unit's hook is three moments, as in Juju: it reads the peer data committed so far, it
changes its node (files pushed, KurrentDB reloaded: at once), and its own writes become
visible to the others only when the hook ends. Hypothesis interleaves those moments across
three units, moves Juju leadership, hands out provider certificates, rotates the provider's
CA and removes the relation. After every moment, every node must accept every other node's
certificate (mutual TLS: the peer's root in its own trusted roots) and its own (KurrentDB
loads its certificate only if the chain reaches a trusted root). Once the events stop,
plain hooks must finish the switch: every node presents the root it wants, and trusts
nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

import tls
from certificates.switch import Plan, UnitTls, next_plan, unit_applies

# Roots by fingerprint, as peer data names them; the PEMs units publish for the leader.
PEMS = {tls.fingerprint(text): text for text in ("internal root", "provider", "rotated")}
INTERNAL, PROVIDER, ROTATED = PEMS
UNITS = ("kurrentdb/0", "kurrentdb/1", "kurrentdb/2")
NEW_UNIT = "kurrentdb/3"  # joins when hypothesis says: a pod with no peer data yet


@dataclasses.dataclass
class Unit:
    wants: str = INTERNAL
    trusts: frozenset[str] = frozenset({INTERNAL})  # the node, as applied
    presents: str = INTERNAL
    published: UnitTls | None = None  # committed
    reading: tuple[Plan, dict[str, UnitTls | None]] | None = None  # a hook's snapshot
    staged: tuple[UnitTls, Plan | None] | None = None  # a hook's writes, not yet visible
    running: bool = True  # a new unit's node starts in its first hook


class Cluster:
    """Three formed nodes on the internal CA, as the charm runs them before the switch."""

    def __init__(self) -> None:
        self.units = {name: Unit() for name in UNITS}
        for unit in self.units.values():
            unit.published = UnitTls(wants=INTERNAL, trusts=unit.trusts, presents=INTERNAL)
        self.plan = Plan()
        self.leader = UNITS[0]
        self.reloads = dict.fromkeys(UNITS, 0)

    # --- one hook, in three moments ---------------------------------------------------

    def join(self) -> None:
        if NEW_UNIT not in self.units:
            self.units[NEW_UNIT] = Unit(trusts=frozenset(), running=False)

    def read(self, name: str) -> None:
        if name not in self.units:
            return
        self.units[name].reading = (self.plan, {n: u.published for n, u in self.units.items()})

    def act(self, name: str) -> None:
        unit = self.units.get(name)
        if unit is None or unit.reading is None:
            return
        plan, published = unit.reading
        trusts, presents = unit_applies(plan, name, INTERNAL)
        if (trusts, presents) != (unit.trusts, unit.presents):
            self.reloads[name] = self.reloads.get(name, 0) + 1
        unit.trusts, unit.presents, unit.running = trusts, presents, True
        own = UnitTls(wants=unit.wants, trusts=trusts, presents=presents)
        new_plan = None
        if name == self.leader and name in self.units:
            # The roots units want, as their published PEMs offer them to the leader.
            offered = {p.wants: PEMS[p.wants] for p in published.values() if p and p.wants}
            offered[unit.wants] = PEMS[unit.wants]
            new_plan = next_plan(plan, {**published, name: own}, INTERNAL, offered)
        unit.staged, unit.reading = (own, new_plan), None

    def commit(self, name: str) -> None:
        unit = self.units.get(name)
        if unit is None or unit.staged is None:
            return
        own, new_plan = unit.staged
        unit.published, unit.staged = own, None
        if new_plan is not None:
            self.plan = new_plan

    def hook(self, name: str) -> None:
        self.read(name)
        self.act(name)
        self.commit(name)

    # --- checks -----------------------------------------------------------------------

    def check(self) -> None:
        running = {name: unit for name, unit in self.units.items() if unit.running}
        for a, first in running.items():
            assert first.presents in first.trusts, f"{a} cannot load its own certificate"
            for b, second in running.items():
                if a != b:
                    assert first.presents in second.trusts, (
                        f"{b} rejects {a}: it presents {PEMS[first.presents]}, {b} trusts "
                        f"{sorted(PEMS[r] for r in second.trusts)}"
                    )

    def settle(self, rounds: int = 30) -> int:
        for round_ in range(rounds):
            before = self.fingerprint()
            for name in list(self.units):
                self.hook(name)
                self.check()
            if self.fingerprint() == before:
                return round_
        raise AssertionError("the switch never finished")

    def fingerprint(self) -> object:
        return (
            self.plan,
            tuple((u.trusts, u.presents, u.published) for u in self.units.values()),
        )

    def finished(self) -> bool:
        wanted = {u.wants for u in self.units.values()}
        return all(u.presents == u.wants and u.trusts == wanted for u in self.units.values())


def test_internal_to_provider_trusts_first_then_switches_then_drops() -> None:
    cluster = Cluster()
    for unit in cluster.units.values():
        unit.wants = PROVIDER
    cluster.settle()
    assert cluster.finished()
    assert {u.trusts for u in cluster.units.values()} == {frozenset({PROVIDER})}
    # Each node reloads three times: trust both, present the new, drop the old.
    assert set(cluster.reloads.values()) == {3}


def test_provider_back_to_internal() -> None:
    cluster = Cluster()
    for unit in cluster.units.values():
        unit.wants = PROVIDER
    cluster.settle()
    for unit in cluster.units.values():
        unit.wants = INTERNAL
    cluster.settle()
    assert cluster.finished()
    assert {u.presents for u in cluster.units.values()} == {INTERNAL}


def test_a_provider_ca_rotation_reaching_units_one_by_one() -> None:
    cluster = Cluster()
    for unit in cluster.units.values():
        unit.wants = PROVIDER
    cluster.settle()
    cluster.units["kurrentdb/1"].wants = ROTATED
    cluster.settle()
    # Mixed roots are fine as long as everyone trusts both.
    assert cluster.units["kurrentdb/1"].presents == ROTATED
    assert all(u.trusts == {PROVIDER, ROTATED} for u in cluster.units.values())
    for unit in cluster.units.values():
        unit.wants = ROTATED
    cluster.settle()
    assert cluster.finished()


def test_a_unit_that_never_acknowledges_holds_every_grant() -> None:
    cluster = Cluster()
    cluster.units["kurrentdb/2"].published = None  # a new pod that has not run a hook
    for unit in cluster.units.values():
        unit.wants = PROVIDER
    for _ in range(5):
        for name in UNITS[:2]:
            cluster.hook(name)
            cluster.check()
    assert {cluster.units[n].presents for n in UNITS[:2]} == {INTERNAL}
    assert PROVIDER in cluster.plan.trust


moments = st.tuples(st.sampled_from(["read", "act", "commit"]), st.sampled_from([*UNITS, NEW_UNIT]))
events = st.one_of(
    st.tuples(st.just("issue"), st.sampled_from(UNITS), st.sampled_from([PROVIDER, ROTATED])),
    st.tuples(st.just("remove"), st.just(""), st.just("")),
    st.tuples(st.just("leader"), st.sampled_from(UNITS), st.just("")),
    st.tuples(st.just("join"), st.just(""), st.just("")),
)
steps = st.lists(st.one_of(moments, moments, moments, events), max_size=80)


@settings(max_examples=300, deadline=None)
@given(steps=steps)
def test_no_two_nodes_ever_fail_to_authenticate_each_other(steps: Sequence[tuple]) -> None:
    cluster = Cluster()
    for step in steps:
        if step[0] == "issue":
            cluster.units[step[1]].wants = step[2]
        elif step[0] == "remove":
            for unit in cluster.units.values():
                unit.wants = INTERNAL
        elif step[0] == "leader":
            cluster.leader = step[1]
        elif step[0] == "join":
            cluster.join()
        else:
            getattr(cluster, step[0])(step[1])
        cluster.check()
    for name in list(cluster.units):  # hooks in flight end
        cluster.act(name)
        cluster.commit(name)
        cluster.check()
    cluster.settle()
    assert cluster.finished(), {
        n: (u.wants, u.presents, u.trusts) for n, u in cluster.units.items()
    }


@given(text=st.one_of(st.text(max_size=40), st.sampled_from(['{"trusts": "x"}', "[]", "{}"])))
def test_any_databag_text_reads_as_a_value_or_nothing(text: str) -> None:
    plan = Plan.from_json(text)
    assert Plan.from_json(plan.to_json()) == plan
    unit = UnitTls.from_json(text)
    assert unit is None or UnitTls.from_json(unit.to_json()) == unit


def test_a_grant_not_yet_applied_keeps_its_root_trusted_when_the_unit_wants_another() -> None:
    """kurrentdb/1 is granted the provider's root while a hook of its own, begun before the
    grant, still runs; then the provider rotates its CA. The granted root must stay trusted
    until kurrentdb/1 has moved off it, or it would present a root nobody trusts."""
    cluster = Cluster()
    leader, unit, other = UNITS
    cluster.units[unit].wants = PROVIDER
    for name in (unit, leader, unit, other):
        cluster.hook(name)
    assert PROVIDER in cluster.plan.trust and unit not in cluster.plan.grants
    cluster.read(unit)  # before the grant
    cluster.hook(leader)
    assert cluster.plan.grants[unit] == PROVIDER
    cluster.units[unit].wants = ROTATED
    cluster.act(unit)
    cluster.commit(unit)
    for name in (leader, unit, other, leader, other):
        cluster.hook(name)
        cluster.check()
    cluster.settle()
    assert cluster.finished()


def test_a_new_unit_that_read_an_older_plan_holds_the_grants_until_it_acknowledges() -> None:
    """kurrentdb/3's first hook reads the plan before the provider's root is in it and
    is still running while the others trust it: no unit may present that root yet."""
    cluster = Cluster()
    leader, unit, other = UNITS
    cluster.join()
    cluster.read(NEW_UNIT)  # the plan of before the switch
    cluster.units[unit].wants = PROVIDER
    for name in (unit, leader, unit, other, leader, unit):
        cluster.hook(name)
        cluster.check()
    cluster.act(NEW_UNIT)
    cluster.check()
    cluster.commit(NEW_UNIT)
    cluster.settle()
    assert cluster.finished()


def test_a_root_nobody_offers_a_pem_for_is_never_trusted_nor_granted() -> None:
    units = {
        name: UnitTls(wants=PROVIDER, trusts=frozenset({INTERNAL}), presents=INTERNAL)
        for name in UNITS
    }
    plan = Plan()
    for _ in range(4):
        plan = next_plan(plan, units, INTERNAL, offered={})
    assert plan.trust == {INTERNAL} and set(plan.grants.values()) <= {INTERNAL}


def test_a_pem_that_does_not_have_its_fingerprint_is_dropped() -> None:
    text = Plan(trust=frozenset({PROVIDER}), pems={PROVIDER: "something else"}).to_json()
    assert Plan.from_json(text).pems == {}
    good = Plan(trust=frozenset({PROVIDER}), pems={PROVIDER: PEMS[PROVIDER]})
    assert Plan.from_json(good.to_json()) == good
