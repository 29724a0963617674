"""Alert rule files shipped with the charm, labelled with this deployment's topology."""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Literal

import ops

from cos.topology import Topology

CHARM_ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMETHEUS_RULES = CHARM_ROOT / "src" / "prometheus_alert_rules"
LOKI_RULES = CHARM_ROOT / "src" / "loki_alert_rules"


def rules_fingerprint(directory: pathlib.Path, topology: Topology) -> str:
    """Changes when a rule file or the topology changes (cheap: no YAML parsing)."""
    digest = hashlib.sha256(json.dumps(topology.labels(), sort_keys=True).encode())
    for path in sorted(directory.glob("*.y*ml")) if directory.is_dir() else []:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def alert_rules(
    directory: pathlib.Path, topology: Topology, query_type: Literal["promql", "logql"]
) -> str:
    """The rule groups as relation data: topology labels added by cosl (imported lazily)."""
    from cosl.rules import AlertRules

    rules = AlertRules(query_type=query_type, topology=topology.cosl())
    if directory.is_dir():
        rules.add_path(directory, recursive=True)
    return json.dumps(rules.as_dict(), sort_keys=True)


def publish_alert_rules(
    databags: list[ops.RelationDataContent],
    directory: pathlib.Path,
    topology: Topology,
    query_type: Literal["promql", "logql"],
    last_fingerprint: str,
) -> str:
    """Write `alert_rules` where it is missing or stale; return the fingerprint to keep.

    Building the rules loads cosl (about 0.2 s), so it happens only when a rule file or the
    topology changed, or a new relation has none yet.
    """
    fingerprint = rules_fingerprint(directory, topology)
    built: str | None = None
    for databag in databags:
        if fingerprint != last_fingerprint or "alert_rules" not in databag:
            built = built or alert_rules(directory, topology, query_type)
            databag["alert_rules"] = built
    return fingerprint
