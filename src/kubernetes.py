"""The few Kubernetes API calls the charm makes (lightkube is loaded only when needed)."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

ROLE_LABEL = "kurrentdb-role"
# Listing pods is part of a leader's hook: never let it hang there.
LIST_TIMEOUT = 5.0


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


def app_pod_ordinals(app: str, namespace: str, own_pod: str) -> frozenset[int] | None:
    """The ordinals of the app's StatefulSet pods that are not being deleted.

    `juju add-unit -n 2` sets the StatefulSet's replicas at once, and Kubernetes creates
    the pods at once (parallel pod management), while Juju makes each unit only when its
    pod introduces itself: the pods say how many units a scale request will end with.
    Juju's default Role lets an app list its namespace's pods without trust (it gives
    nothing on StatefulSets). None when the answer cannot be trusted: no API, no
    permission, an error, or a list that lacks ``own_pod`` (the caller's own pod). Never
    raises: the caller then falls back on goal-state.
    """
    try:
        import httpx2
        from lightkube import Client
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod
    except ImportError:  # pragma: no cover - lightkube is a runtime dependency
        return None
    pattern = re.compile(rf"{re.escape(app)}-(\d+)")
    ordinals: set[int] = set()
    seen_own = False
    try:
        client = Client(field_manager="kurrentdb", timeout=httpx2.Timeout(LIST_TIMEOUT))
        for item in client.list(Pod, namespace=namespace):
            meta = item.metadata
            if meta is None or meta.name is None:
                continue
            seen_own = seen_own or meta.name == own_pod
            owners = meta.ownerReferences or ()
            match = pattern.fullmatch(meta.name)
            if (
                match is None
                or meta.deletionTimestamp is not None
                or not any(o.kind == "StatefulSet" and o.name == app for o in owners)
            ):
                continue
            ordinals.add(int(match.group(1)))
    except ApiError as e:
        logger.warning("Cannot list the pods of %s: %s", app, e.status.message)
        return None
    except Exception as e:  # no in-cluster config, network errors, timeouts
        logger.warning("Cannot list the pods of %s: %s", app, type(e).__name__)
        return None
    if not seen_own:
        logger.warning("The pod list of %s lacks this unit's pod %s: ignored", app, own_pod)
        return None
    return frozenset(ordinals)
