"""What `pre-refresh-check` requires before `juju refresh` may replace the first pod.

Kubernetes replaces the highest unit's pod as soon as the StatefulSet changes, whatever the
charm does next: the cluster must be able to lose that node now. So every node must be up
and in the cluster, exactly one must lead, every follower caught up, and nothing else that
stops nodes (a resize, a rolling restart, a backup or restore) may be running.

The same checks run again on the first unit after Kubernetes replaced its pod, before its
new KurrentDB starts (`offline`: that unit, whose node is down by then): the rest of the
cluster must be whole without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cluster import by_number

if TYPE_CHECKING:
    from refresh.plan import UnitFacts
    from state import CharmState


def pre_refresh_failure(
    state: CharmState,
    facts: Mapping[str, UnitFacts],
    refusal: str | None,
    planned_units: int | None,
    *,
    offline: str | None = None,
) -> str | None:
    """The first reason the cluster may not be refreshed now, or None."""
    if refusal is not None:
        return refusal
    reports = state.unit_reports()
    plan = state.cluster_plan()
    if planned_units is not None and len(reports) != planned_units:
        return f"{len(reports)} of {planned_units} units are in the cluster: wait for the rest"
    if set(plan.members) != set(reports):
        return "the cluster is resizing: wait until `juju status` shows every unit active"
    others = {unit: f for unit, f in facts.items() if unit != offline}
    unknown = [u for u in by_number(others) if others[u].revision is None]
    if unknown:
        return (
            f"{', '.join(unknown)} could not read its pod's revision: deploy with --trust "
            "or run juju trust kurrentdb --scope=cluster"
        )
    if len({f.revision for f in others.values()}) > 1:
        return "the units run different revisions: a refresh is already under way"
    if len({f.version for f in others.values()}) > 1:
        return "the nodes run different KurrentDB versions: refresh them to one first"
    serving = {unit: report for unit, report in reports.items() if unit != offline}
    for unit in by_number(serving):
        report = serving[unit]
        if not report.started or report.role is None:
            return f"{unit}'s node is not running"
        if tuple(report.running_members) != tuple(plan.members) or report.restart_wanted:
            return f"{unit} waits for a restart: wait until the rolling restart is done"
        if not report.serving:
            return f"{unit}'s node does not serve ({report.role}, not caught up)"
    leaders = [u for u in by_number(serving) if serving[u].role == "Leader"]
    if len(leaders) != 1:
        return f"{len(leaders)} nodes lead ({', '.join(leaders) or 'none'}): exactly one must"
    if plan.restart_grant is not None:
        return f"{plan.restart_grant} is restarting: wait until it is back"
    return None
