"""How the cluster looks to a user: unit and app statuses, the get-cluster-status table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import ops

from cluster import (
    ClusterPlan,
    UnitReport,
    by_number,
    lag_bytes,
    leaving_units,
    restart_waits_for_new_node,
)
from text_table import text_table

if TYPE_CHECKING:
    from kurrentdb_api import ClusterGossip


def unit_waiting_status(
    unit: str,
    plan: ClusterPlan,
    reports: Mapping[str, UnitReport],
    report: UnitReport,
    restart_pending: bool,
) -> ops.StatusBase | None:
    """What this unit is waiting for in the cluster schedule, if anything.

    ``reports`` are every present unit's, ``report`` this unit's own as it stands now.
    """
    size = len(plan.members)
    if unit not in plan.members:
        return ops.WaitingStatus("waiting for the leader to add this unit to the cluster")
    if not report.started and unit not in plan.fresh_allowed:
        return ops.WaitingStatus(
            f"waiting to join the {size}-node cluster until nodes with data are in sync"
        )
    if not restart_pending:
        return None
    goal = (
        f"join a {size}-node cluster"
        if tuple(report.running_members) != plan.members
        else "apply the new configuration"
    )
    reports = {**reports, unit: report}  # this unit's report as it stands now
    if plan.restart_grant == unit:
        if restart_waits_for_new_node(unit, plan.members, reports):
            return ops.WaitingStatus(
                f"waiting to restart to {goal} until a new node serves "
                "(restarting now would pause writes)"
            )
        return ops.MaintenanceStatus(f"restarting to {goal}")
    leaving = leaving_units(plan.members, reports)
    waiting_for = plan.restart_grant or (
        f"all nodes to be in sync and departed {', '.join(leaving)} gone"
        if leaving
        else "all nodes to be in sync"
    )
    return ops.WaitingStatus(f"waiting to restart to {goal} (waiting for {waiting_for})")


def app_status(plan: ClusterPlan, reports: Mapping[str, UnitReport]) -> ops.StatusBase:
    """One line for the whole cluster: size, leader, nodes not in sync, restarts under way."""
    members = [u for u in plan.members if u in reports]
    size = len(members)
    if size == 0:
        return ops.WaitingStatus("waiting for units to join the cluster")
    leader = next((u for u in members if reports[u].role == "Leader"), None)
    behind = [u for u in members if not reports[u].serving]
    if plan.restart_grant:
        return ops.MaintenanceStatus(
            f"{size} nodes: rolling restart, {plan.restart_grant} restarting"
        )
    if leaving := leaving_units(plan.members, reports):
        return ops.MaintenanceStatus(f"{size} nodes: resizing after {', '.join(leaving)} departed")
    if leader is None:
        return ops.WaitingStatus(f"{size} nodes, no leader yet")
    message = f"{size} nodes, leader {leader}"
    if behind:
        message += f", not in sync: {', '.join(by_number(behind))}"
    if size == 2:
        message += "; 2 nodes cannot survive a node failure, use 3"
    elif size % 2 == 0:
        message += f"; {size} nodes survive no more failures than {size - 1}, use an odd size"
    return ops.ActiveStatus(message)


def cluster_rows(
    gossip: ClusterGossip, units_by_host: Mapping[str, str]
) -> tuple[dict[str, dict[str, str]], str]:
    """One row per node: unit, role, alive, checkpoints and lag behind the leader."""
    leader = gossip.leader
    rows: dict[str, dict[str, str]] = {}
    for member in gossip.members:
        unit = units_by_host.get(member.node_host, member.node_host)
        rows[unit.replace("/", "-")] = {
            "unit": unit,
            "role": member.state,
            "alive": str(member.is_alive).lower(),
            "writer-checkpoint": str(member.writer_checkpoint),
            "chaser-checkpoint": str(member.chaser_checkpoint),
            "lag-bytes": (
                str(lag_bytes(leader.writer_checkpoint, member.writer_checkpoint))
                if leader
                else "unknown"
            ),
        }
    header = ("unit", "role", "alive", "writer-checkpoint", "chaser-checkpoint", "lag-bytes")
    table = text_table(header, [[row[h] for h in header] for _, row in sorted(rows.items())])
    return rows, table
