"""The Kubernetes calls of a refresh (lightkube, imported only when a refresh needs it).

A pod's controller revision; the StatefulSet's update revision and partition.

Juju's default Role lets an app read its own pods; the StatefulSet needs `juju trust`
(`juju deploy --trust`, or `juju trust kurrentdb --scope=cluster`). Every call is bounded
and never raises: an answer the charm cannot use is a `KubernetesUnavailable` value, which
says whether trust is what is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from refresh.plan import StatefulSetView

logger = logging.getLogger(__name__)

REVISION_LABEL = "controller-revision-hash"
TIMEOUT = 5.0  # seconds per call: a hook must not hang on the API server
FIELD_MANAGER = "kurrentdb"


@dataclass(frozen=True)
class KubernetesUnavailable:
    """Why the charm could not read or change what it needed."""

    reason: str
    needs_trust: bool = False


def _client() -> Any:
    import httpx2
    from lightkube import Client

    return Client(field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(TIMEOUT))


def _failure(what: str, error: Exception) -> KubernetesUnavailable:
    from lightkube.core.exceptions import ApiError

    if isinstance(error, ApiError):
        status = error.status
        code = getattr(status, "code", None)
        logger.warning("Cannot %s: %s %s", what, code, getattr(status, "reason", ""))
        return KubernetesUnavailable(f"cannot {what} (HTTP {code})", needs_trust=code == 403)
    logger.warning("Cannot %s: %s", what, type(error).__name__)
    return KubernetesUnavailable(f"cannot {what} ({type(error).__name__})")


def pod_revision(pod: str, namespace: str) -> str | KubernetesUnavailable:
    """The controller revision this pod was created from (its `controller-revision-hash`)."""
    try:
        from lightkube.resources.core_v1 import Pod

        item = _client().get(Pod, pod, namespace=namespace)
    except Exception as e:  # ApiError, no in-cluster config, network errors, timeouts
        return _failure(f"read pod {pod}", e)
    labels = (item.metadata.labels if item.metadata else None) or {}
    revision = labels.get(REVISION_LABEL)
    if not isinstance(revision, str) or not revision or len(revision) > 253:
        return KubernetesUnavailable(f"pod {pod} has no {REVISION_LABEL} label")
    return revision


def read(app: str, namespace: str) -> StatefulSetView | KubernetesUnavailable:
    """The StatefulSet's update revision and partition."""
    try:
        from lightkube.resources.apps_v1 import StatefulSet

        item = _client().get(StatefulSet, app, namespace=namespace)
    except Exception as e:
        return _failure(f"read StatefulSet {app}", e)
    update = item.status.updateRevision if item.status else None
    strategy = item.spec.updateStrategy if item.spec else None
    rolling = strategy.rollingUpdate if strategy else None
    partition = rolling.partition if rolling else None
    if not isinstance(update, str) or not update:
        return KubernetesUnavailable(f"StatefulSet {app} reports no update revision")
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        partition = 0
    return StatefulSetView(update_revision=update, partition=partition)


def set_partition(app: str, namespace: str, partition: int) -> KubernetesUnavailable | None:
    """Let Kubernetes replace only the pods numbered ``partition`` and up."""
    patch = {"spec": {"updateStrategy": {"rollingUpdate": {"partition": partition}}}}
    try:
        from lightkube.resources.apps_v1 import StatefulSet

        _client().patch(StatefulSet, app, patch, namespace=namespace)
    except Exception as e:
        return _failure(f"set the partition of StatefulSet {app}", e)
    logger.info("StatefulSet %s partition set to %d", app, partition)
    return None
