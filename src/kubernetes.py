"""The few Kubernetes API calls the charm makes (lightkube is loaded only when needed)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

ROLE_LABEL = "kurrentdb-role"


def label_pod(pod: str, namespace: str, role: str) -> bool:
    """Label this unit's pod with its KurrentDB role, as Kurrent's operator does.

    Juju lets an app patch its own namespace's pods even without trust. A failure only
    costs the label, never the hook: it is logged and retried when the role next changes.
    """
    try:
        from lightkube import Client
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod
    except ImportError:  # pragma: no cover - lightkube is a runtime dependency
        return False
    patch = {"metadata": {"labels": {ROLE_LABEL: role.lower()}}}
    try:
        Client(field_manager="kurrentdb").patch(Pod, pod, patch, namespace=namespace)
    except ApiError as e:
        logger.warning("Cannot label pod %s with its role: %s", pod, e.status.message)
        return False
    except Exception as e:  # no in-cluster config, network errors
        logger.warning("Cannot label pod %s with its role: %s", pod, type(e).__name__)
        return False
    return True
