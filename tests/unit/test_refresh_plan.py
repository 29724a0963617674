"""The refresh's decisions (`refresh.plan`) and version rules (`refresh.versions`), pure.

The multi-unit behaviour is in tests/sim/test_refresh.py; here each rule on its own, and
properties over any databag content and any cluster state.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refresh.plan import (
    Original,
    RefreshRecord,
    StatefulSetView,
    UnitFacts,
    assess,
    effective_pause,
    maybe_in_progress,
    resumed,
    steady_record,
)
from refresh.versions import check_change, newest

OLD, NEW = "rev-old", "rev-new"
SERVING = UnitFacts(revision=OLD, version="26.0.3", serving=True, leading=False, role="Follower")


def cluster(n: int = 3, leader: int = 0, refreshed: tuple[int, ...] = ()) -> dict[str, UnitFacts]:
    units = {}
    for i in range(n):
        facts = dataclasses.replace(
            SERVING, leading=i == leader, role="Leader" if i == leader else "Follower"
        )
        if i in refreshed:
            facts = dataclasses.replace(facts, revision=NEW, version="26.1.0")
        units[f"kurrentdb/{i}"] = facts
    return units


RECORD = RefreshRecord(original=Original(OLD, charm="7", image="img:26.0.3", kurrentdb="26.0.3"))
VIEW = StatefulSetView(update_revision=NEW, partition=0)


def test_the_highest_unit_goes_first_and_nothing_else_until_it_serves() -> None:
    units = cluster()
    progress = assess(RECORD, VIEW, units, "none")
    assert progress.in_progress and progress.next_unit == "kurrentdb/2"
    assert progress.partition == 2
    # Its new pod is up but its node does not serve yet: the partition stays at 2.
    units["kurrentdb/2"] = dataclasses.replace(units["kurrentdb/2"], revision=NEW, serving=False)
    progress = assess(progress.record, dataclasses.replace(VIEW, partition=2), units, "none")
    assert progress.partition == 2 and progress.next_unit == "kurrentdb/1"
    assert "kurrentdb/2 does not serve since its refresh" in (progress.waiting or "")
    units["kurrentdb/2"] = dataclasses.replace(units["kurrentdb/2"], serving=True)
    progress = assess(progress.record, dataclasses.replace(VIEW, partition=2), units, "none")
    assert progress.partition == 1 and progress.record.allowed == "kurrentdb/1"


def test_a_unit_let_go_stays_let_go_while_kubernetes_replaces_it() -> None:
    """Once the partition was lowered for kurrentdb/1, its pod may already be going: its
    node not serving must not make the leader raise the partition back."""
    units = cluster(refreshed=(2,))
    record = dataclasses.replace(RECORD, allowed="kurrentdb/1")
    units["kurrentdb/1"] = dataclasses.replace(units["kurrentdb/1"], serving=False, role=None)
    progress = assess(record, dataclasses.replace(VIEW, partition=1), units, "none")
    assert progress.partition == 1


def test_another_node_down_holds_the_refresh() -> None:
    units = cluster(refreshed=(2,))
    units["kurrentdb/0"] = dataclasses.replace(units["kurrentdb/0"], serving=False, role=None)
    progress = assess(RECORD, VIEW, units, "none")
    assert progress.partition == 2
    assert progress.waiting == "kurrentdb/0 does not serve (not running)"


def test_the_next_unit_resigns_before_it_may_go() -> None:
    units = cluster(leader=1, refreshed=(2,))
    progress = assess(RECORD, VIEW, units, "none")
    assert progress.resign == "kurrentdb/1" and progress.partition == 2


def test_a_restart_elsewhere_holds_the_refresh() -> None:
    progress = assess(
        RECORD, VIEW, cluster(refreshed=(2,)), "none", busy="kurrentdb/0 is restarting"
    )
    assert progress.partition == 2 and progress.waiting == "kurrentdb/0 is restarting"


@pytest.mark.parametrize(
    ("pause", "resumes", "expected"),
    [
        ("first", 0, 2),
        ("first", 1, 1),
        ("all", 0, 2),
        ("all", 1, 1),
        ("none", 0, 1),
        ("bogus", 0, 2),
    ],
)
def test_pause_after_unit_refresh(pause: str, resumes: int, expected: int) -> None:
    record = dataclasses.replace(RECORD, resumed=resumes)
    progress = assess(record, VIEW, cluster(refreshed=(2,)), pause)
    assert progress.partition == expected
    assert progress.paused is (expected == 2)


def test_pause_all_asks_again_after_each_unit() -> None:
    units = cluster(leader=2, refreshed=(2, 1))
    record = dataclasses.replace(RECORD, resumed=1)
    progress = assess(record, VIEW, units, "all")
    assert progress.paused and progress.partition == 1
    again = resumed(record, progress, check_health=True)
    assert assess(again, VIEW, units, "all").partition == 0


def test_resume_without_the_health_check_waives_it_for_that_unit_only() -> None:
    units = cluster(refreshed=(2,))
    units["kurrentdb/2"] = dataclasses.replace(units["kurrentdb/2"], serving=False)
    progress = assess(RECORD, VIEW, units, "first")
    waived = resumed(RECORD, progress, check_health=False)
    assert assess(waived, VIEW, units, "first").partition == 1
    units["kurrentdb/1"] = dataclasses.replace(units["kurrentdb/1"], revision=NEW, serving=False)
    later = assess(dataclasses.replace(waived, allowed=None), VIEW, units, "first")
    assert later.partition == 1 and "does not serve since its refresh" in (later.waiting or "")


def test_a_rollback_skips_the_pause_but_not_the_health_checks() -> None:
    back = StatefulSetView(update_revision=OLD, partition=2)
    units = {u: dataclasses.replace(f, revision=NEW) for u, f in cluster().items()}
    units["kurrentdb/2"] = dataclasses.replace(units["kurrentdb/2"], revision=OLD)
    progress = assess(RECORD, back, units, "all")
    assert progress.rollback and not progress.paused and progress.partition == 1
    units["kurrentdb/2"] = dataclasses.replace(units["kurrentdb/2"], serving=False)
    assert assess(RECORD, back, units, "all").partition == 2


def test_a_finished_refresh_resets_the_partition_and_records_the_new_originals() -> None:
    units = cluster(refreshed=(0, 1, 2))
    progress = assess(dataclasses.replace(RECORD, allowed="kurrentdb/0"), VIEW, units, "none")
    assert not progress.in_progress and progress.partition == 0
    record = steady_record(progress.record, units, "8", "img:26.1.0")
    assert record.original == Original(NEW, charm="8", image="img:26.1.0", kurrentdb="26.1.0")
    assert record.data_version == "26.1.0" and record.allowed is None
    assert not maybe_in_progress(record, units)


def test_no_refresh_is_seen_without_a_differing_revision() -> None:
    steady = steady_record(RefreshRecord(), cluster(), "7", "img")
    assert not maybe_in_progress(steady, cluster())
    assert maybe_in_progress(steady, cluster(refreshed=(2,)))
    # Every unit moved on, but the leader has not recorded it yet.
    assert maybe_in_progress(steady, cluster(refreshed=(0, 1, 2)))


def test_a_pre_refresh_check_lasts_only_until_the_revision_changes() -> None:
    prepared = dataclasses.replace(
        steady_record(RefreshRecord(), cluster(), "7", "i"), prepared=True
    )
    assert steady_record(prepared, cluster(), "7", "i").prepared
    assert not steady_record(prepared, cluster(refreshed=(0, 1, 2)), "8", "i").prepared


def test_an_unknown_pause_value_is_the_most_cautious() -> None:
    assert effective_pause("first") == "first"
    assert effective_pause("FIRST") == "all" and effective_pause("") == "all"


@given(st.text(max_size=300))
def test_any_record_text_reads_without_error(text: str) -> None:
    record = RefreshRecord.from_json(text)
    assert RefreshRecord.from_json(record.to_json()) == record


@given(
    st.dictionaries(
        st.sampled_from(
            ["original", "data_version", "allowed", "resumed", "health_waived", "prepared"]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-5, 20_000),
            st.text(max_size=20),
            st.dictionaries(
                st.sampled_from(["revision", "charm", "image", "kurrentdb"]), st.text(max_size=5)
            ),
        ),
    )
)
def test_any_record_json_reads_into_a_usable_record(raw: dict) -> None:
    import json

    record = RefreshRecord.from_json(json.dumps(raw))
    assert record.resumed >= 0 and record.health_waived >= -1
    assert record.allowed is None or record.allowed.startswith(tuple("abcdefghijklmnopqrstuvwxyz"))
    assert RefreshRecord.from_json(record.to_json()) == record


FACTS = st.builds(
    UnitFacts,
    revision=st.sampled_from([OLD, NEW, None]),
    version=st.sampled_from(["26.0.3", "26.1.0", None]),
    serving=st.booleans(),
    leading=st.booleans(),
    role=st.sampled_from(["Leader", "Follower", None]),
)


@given(
    units=st.dictionaries(st.integers(0, 6).map(lambda n: f"kurrentdb/{n}"), FACTS, min_size=1),
    partition=st.integers(0, 8),
    allowed=st.one_of(st.none(), st.integers(0, 6).map(lambda n: f"kurrentdb/{n}")),
    pause=st.sampled_from(["all", "first", "none", "x"]),
    resumes=st.integers(0, 7),
    busy=st.one_of(st.none(), st.just("busy")),
)
def test_at_most_one_unrefreshed_unit_is_ever_let_go(
    units: dict, partition: int, allowed: str | None, pause: str, resumes: int, busy: str | None
) -> None:
    """Whatever the reports say: the partition never exposes more than one unit that has
    not been refreshed, and only one whose turn it is (the highest not refreshed)."""
    record = dataclasses.replace(RECORD, allowed=allowed, resumed=resumes)
    progress = assess(record, StatefulSetView(NEW, partition), units, pause, busy)
    if not progress.in_progress:
        assert progress.partition == 0
        return
    exposed = [u for u in progress.pending if int(u.split("/")[1]) >= progress.partition]
    assert exposed in ([], [progress.next_unit])
    if progress.resign is not None:
        assert progress.resign == progress.next_unit and units[progress.resign].leading
    following = int(str(progress.next_unit).split("/")[1])
    held = any(int(u.split("/")[1]) > following for u in progress.refreshed)
    if busy is not None and allowed != progress.next_unit and held:
        # Busy: the next unit goes only if Kubernetes replaces it first anyway.
        assert exposed == []


# --- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("running", "target", "written", "refused"),
    [
        ("26.0.3", "26.1.0", "26.0.3", None),  # a minor up
        ("26.1.0", "26.0.3", "26.0.3", None),  # a minor down: same major
        ("25.1.0", "26.0.3", "25.1.0", None),  # an online path the guide lists
        ("24.10.2", "26.1.0", "24.10.2", None),
        ("24.2.0", "26.0.3", "24.2.0", "rolls online only from"),
        ("26.1.0", "27.0.0", "26.1.0", "does not know whether"),
        ("27.0.0", "26.1.0", "27.0.0", "older major"),
        ("26.1.0", "25.1.0", "26.1.0", "older major"),
        ("26.0.3", "25.1.0", "25.1.0", None),  # the rollback of an unfinished 25 -> 26
        ("26.0.3", "not a version", "26.0.3", None),
        (None, "26.1.0", None, None),
    ],
)
def test_version_changes(running, target, written, refused) -> None:
    refusal = check_change(running, target, written)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.reason


def test_newest() -> None:
    assert newest("26.0.3", None, "26.1.0", "x") == "26.1.0"
    assert newest(None, "x") is None


def test_a_refresh_stays_seen_when_its_refreshed_units_are_removed() -> None:
    """Scale-down removed every refreshed unit: the rest all run the old revision again,
    as before the refresh, but the StatefulSet still moves them to the new one."""
    progress = assess(RECORD, VIEW, cluster(refreshed=(2,)), "first")
    assert progress.record.target == NEW
    two_left = {u: f for u, f in cluster().items() if u != "kurrentdb/2"}
    assert maybe_in_progress(progress.record, two_left)
    again = assess(progress.record, VIEW, two_left, "first")
    assert again.in_progress and again.next_unit == "kurrentdb/1"


def test_the_first_unit_is_the_highest_in_steady_state_and_stays_while_refreshing() -> None:
    steady = steady_record(RefreshRecord(), cluster(3), "7", "img")
    assert steady.first == "kurrentdb/2"
    assert steady_record(steady, cluster(5), "7", "img").first == "kurrentdb/4"
    # Mid-refresh the revisions differ: the record, first unit included, stays as it was.
    assert steady_record(steady, cluster(5, refreshed=(2, 4)), "7", "img").first == "kurrentdb/2"
    assert RefreshRecord.from_json(steady.to_json()).first == "kurrentdb/2"
    assert RefreshRecord.from_json('{"first": "not a unit"}').first is None
