"""`metrics-endpoint` (prometheus_scrape provider): one https scrape job for every node.

Contract (charm-relation-interfaces prometheus_scrape v0): the app databag holds JSON
`scrape_jobs`, `scrape_metadata` and `alert_rules`; each unit databag holds
`prometheus_scrape_unit_address` and `prometheus_scrape_unit_name`, which Prometheus uses to
expand the `*:2113` target into one target per unit.

The job carries no credentials: every node serves /metrics without them
(`AllowAnonymousEndpointAccess`, see templates/kurrentdb.conf.j2 and
docs/explanation/security.md), so nothing secret is in this relation's data.
"""

from __future__ import annotations

import json
import logging

import ops

from cos import rules
from cos.topology import Topology
from databag import update_databag
from workload import paths

logger = logging.getLogger(__name__)

RELATION = "metrics-endpoint"


def scrape_job(ca_certificate: str, interval_seconds: int) -> dict:
    """KurrentDB's /metrics over https, trusting only the cluster's CA, without credentials."""
    return {
        "job_name": "kurrentdb",
        "metrics_path": "/metrics",
        "scheme": "https",
        "scrape_interval": f"{interval_seconds}s",
        # Every unit's pod name, as published in its unit databag; the node certificates
        # carry those names, so TLS verification holds.
        "static_configs": [{"targets": [f"*:{paths.HTTP_PORT}"]}],
        # The Prometheus charm writes this CA certificate (content, not a path) to a file.
        "tls_config": {"ca_file": ca_certificate},
    }


class MetricsEndpoint:
    """Publishes scrape jobs, unit addresses and alert rules to every Prometheus."""

    def __init__(
        self, model: ops.Model, topology: Topology, stored: ops.framework.BoundStoredState
    ):
        self._model = model
        self._topology = topology
        self._stored = stored
        self._stored.set_default(prometheus_rules_fingerprint="")

    @property
    def relations(self) -> list[ops.Relation]:
        """Every related Prometheus."""
        return list(self._model.relations[RELATION])

    def publish_unit_address(self, address: str) -> None:
        """This unit's scrape address (its pod's stable DNS name)."""
        for relation in self.relations:
            update_databag(
                relation.data[self._model.unit],
                {
                    "prometheus_scrape_unit_address": address,
                    "prometheus_scrape_unit_name": self._model.unit.name,
                },
            )

    def publish_app(self, ca_certificate: str, interval_seconds: int) -> None:
        """Leader: the scrape job, the topology and the alert rules."""
        if not self.relations:
            return
        data = {
            "scrape_jobs": json.dumps([scrape_job(ca_certificate, interval_seconds)]),
            "scrape_metadata": json.dumps(self._topology.scrape_metadata()),
        }
        databags = [relation.data[self._model.app] for relation in self.relations]
        self._stored.prometheus_rules_fingerprint = rules.publish_alert_rules(
            databags,
            rules.PROMETHEUS_RULES,
            self._topology,
            "promql",
            self._stored.prometheus_rules_fingerprint,
        )
        for databag in databags:
            if update_databag(databag, data):
                logger.info("Updated the KurrentDB scrape job")
