"""Where this pod runs: its Kubernetes namespace and the cluster's DNS domain.

Juju passes neither to the charm. It names the namespace after the model, except for the
controller model (`controller-<name>`), and the cluster domain is whatever the cluster was
set up with (`cluster.local` by default). Both are read from the pod itself: the service
account's namespace file, and the search list Kubernetes writes into the pod's
resolv.conf (`<namespace>.svc.<domain> svc.<domain> <domain>`, DNS policy ClusterFirst).
"""

from __future__ import annotations

import functools
import logging
import pathlib
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

NAMESPACE_FILE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
RESOLV_CONF = pathlib.Path("/etc/resolv.conf")
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_NAMESPACE = re.compile(rf"^{_DNS_LABEL}$")
_DOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")


@dataclass(frozen=True)
class PodEnvironment:
    """The namespace the pod runs in and the cluster domain its DNS names end with."""

    namespace: str
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


@functools.cache
def detect(model_name: str) -> PodEnvironment:
    """This pod's environment; falls back on the model name and `cluster.local`."""
    namespace = _read(NAMESPACE_FILE).strip()
    if not _NAMESPACE.match(namespace):
        namespace = model_name
    return PodEnvironment(namespace, cluster_domain(_read(RESOLV_CONF), namespace))


def cluster_domain(resolv_conf: str, namespace: str) -> str:
    """The domain in a resolv.conf's search list, or the default when none is there."""
    search: list[str] = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if fields and fields[0] in ("search", "domain"):
            search = [name.lower().rstrip(".") for name in fields[1:]]
    for prefix in (f"{namespace}.svc.", "svc."):
        for name in search:
            domain = name.removeprefix(prefix)
            if name.startswith(prefix) and _DOMAIN.match(domain):
                return domain
    return DEFAULT_CLUSTER_DOMAIN


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""
