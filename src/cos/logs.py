"""`logging` (loki_push_api consumer): KurrentDB's stdout to every Loki, via Pebble.

Contract (the loki_push_api v1 library's documentation): each Loki unit publishes
`endpoint` = JSON `{"url": "<scheme>://<host>:<port>/loki/api/v1/push"}` in its unit
databag; the consumer app publishes `metadata` (topology) and `alert_rules` (LogQL).
Pebble forwards the service's output itself (`log-targets`, Juju 3.4+), so KurrentDB keeps
logging to stdout for `kubectl logs` and nothing extra runs in the pod.
"""

from __future__ import annotations

import json
import logging
import urllib.parse

import ops

from cos import rules
from cos.topology import Topology
from databag import update_databag

logger = logging.getLogger(__name__)

RELATION = "logging"


class LogForwarding:
    """Knows the Loki push endpoints and publishes the consumer's app data."""

    def __init__(
        self, model: ops.Model, topology: Topology, stored: ops.framework.BoundStoredState
    ):
        self._model = model
        self._topology = topology
        self._stored = stored
        self._stored.set_default(loki_rules_fingerprint="")

    def endpoints(self, exclude: ops.Relation | None = None) -> dict[str, str]:
        """Pebble log-target name → Loki push URL, for every Loki unit.

        ``exclude``: a relation being broken (Juju still lists it during its last hook).
        """
        targets: dict[str, str] = {}
        for relation in self._model.relations[RELATION]:
            if exclude is not None and relation.id == exclude.id:
                continue
            for unit in sorted(relation.units, key=lambda u: u.name):
                raw = relation.data[unit].get("endpoint")
                if not raw:
                    continue
                url = push_url(raw)
                if url is None:
                    # One bad remote unit must not stop forwarding to the others, and
                    # Pebble would refuse the whole layer over it.
                    logger.warning("Ignoring a malformed Loki endpoint from %s", unit.name)
                    continue
                targets[f"loki-{relation.id}-{unit.name.replace('/', '-')}"] = url
        return targets

    def publish_app(self) -> None:
        """Leader: the topology and the LogQL alert rules."""
        relations = self._model.relations[RELATION]
        if not relations:
            return
        databags = [relation.data[self._model.app] for relation in relations]
        self._stored.loki_rules_fingerprint = rules.publish_alert_rules(
            databags, rules.LOKI_RULES, self._topology, "logql", self._stored.loki_rules_fingerprint
        )
        metadata = json.dumps(self._topology.scrape_metadata())
        for databag in databags:
            update_databag(databag, {"metadata": metadata})


_MAX_URL = 2048


def push_url(raw: str) -> str | None:
    """The Loki push URL in a unit's `endpoint` value, or None when it is not a usable one."""
    try:
        url = json.loads(raw)["url"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(url, str) or not 0 < len(url) <= _MAX_URL or not url.isprintable():
        return None
    if any(c.isspace() for c in url):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        return None
    return url
