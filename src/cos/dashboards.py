"""`grafana-dashboard` (grafana_dashboard provider): the charm's own dashboards.

Contract (the grafana_dashboard library's documentation): the app databag key `dashboards`
holds JSON `{"uuid": ..., "templates": {"file:<name>": {"charm", "content" (LZMA + base64 of
the dashboard JSON), "juju_topology", "inject_dropdowns", "dashboard_alt_uid"}}}`.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import ops

from cos.topology import Topology
from databag import update_databag

RELATION = "grafana-dashboard"
DASHBOARDS_DIR = pathlib.Path(__file__).resolve().parents[2] / "src" / "grafana_dashboards"


def dashboards_data(topology: Topology) -> str:
    """The `dashboards` value: every dashboard file, compressed, with its topology."""
    from cosl import LZMABase64  # loaded only when the dashboards are (re)published

    templates = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        content = path.read_text()
        templates[f"file:{path.name}"] = {
            "charm": topology.charm_name,
            "content": LZMABase64.compress(content),
            "juju_topology": {
                "model": topology.model,
                "model_uuid": topology.model_uuid,
                "application": topology.application,
                "unit": topology.unit,
            },
            # The dashboards carry their own topology variables and filters.
            "inject_dropdowns": False,
            # One uid per deployment, so two KurrentDB apps get two dashboards.
            "dashboard_alt_uid": hashlib.sha256(
                f"{topology.model_uuid}:{topology.application}:{path.name}".encode()
            ).hexdigest()[:40],
        }
    # The uuid changes with the content (never for nothing): it is what tells Grafana to
    # reload.
    uuid = hashlib.sha256(json.dumps(templates, sort_keys=True).encode()).hexdigest()[:32]
    return json.dumps({"templates": templates, "uuid": uuid}, sort_keys=True)


class GrafanaDashboards:
    """Publishes the dashboards to every related Grafana (leader only)."""

    def __init__(self, model: ops.Model, topology: Topology):
        self._model = model
        self._topology = topology

    def publish(self) -> None:
        """Write the dashboards where they are missing or out of date."""
        relations = self._model.relations[RELATION]
        if not relations:
            return
        data = dashboards_data(self._topology)
        for relation in relations:
            update_databag(relation.data[self._model.app], {"dashboards": data})
