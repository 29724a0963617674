"""Pure functions: the KurrentDB config file and Pebble layer a unit should run.

Nothing here touches Juju or Pebble, so every decision about what KurrentDB runs with can
be tested by calling these functions.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config import CharmConfig, Profile
from tls import NODE_COMMON_NAME
from workload import paths

if TYPE_CHECKING:
    import jinja2

TEMPLATES_DIR = pathlib.Path(__file__).resolve().parents[2] / "templates"

# The `kurrentdb_options` inputs behind the options KurrentDB applies on a configuration
# reload (SIGHUP): `LogLevel`; certificates reload too. Any other change needs a restart
# (ClusterVNode.cs, Handle(ReloadConfig)).
RELOADABLE_INPUTS = frozenset({"log_level"})

# Smaller caches for development environments, where many small deployments share nodes.
PROFILE_OPTIONS: Mapping[Profile, Mapping[str, Any]] = {
    Profile.DEVELOPMENT: {
        "StreamInfoCacheCapacity": 10000,
        "ChunksCacheSize": 268435712,  # one chunk instead of KurrentDB's default of two
    },
}


@dataclass(frozen=True)
class NodeIdentity:
    """How a unit's pod is named in Kubernetes, which fixes its stable DNS names."""

    app: str
    unit_number: int
    namespace: str  # the model's Kubernetes namespace
    cluster_domain: str = "cluster.local"

    @property
    def pod_name(self) -> str:
        """The StatefulSet pod name, `<app>-<n>`."""
        return f"{self.app}-{self.unit_number}"

    @property
    def headless_service(self) -> str:
        """The headless service Juju creates for the StatefulSet."""
        return f"{self.app}-endpoints"

    @property
    def pod_fqdn(self) -> str:
        """The pod's stable DNS name (published even while the pod is not ready)."""
        return f"{self.pod_name}.{self.headless_service}.{self.namespace}.svc.{self.cluster_domain}"

    def sans(self) -> tuple[str, ...]:
        """Names a node certificate must hold: the pod, the services and loopback."""
        svc = f"{self.namespace}.svc.{self.cluster_domain}"
        return (
            self.pod_fqdn,
            f"{self.headless_service}.{svc}",
            self.headless_service,
            f"{self.app}.{svc}",
            self.app,
            "localhost",
            "127.0.0.1",
        )


@dataclass(frozen=True)
class ClusterView:
    """The cluster this node should be configured for: its size and the other nodes."""

    size: int = 1
    peer_fqdns: Sequence[str] = field(default_factory=tuple)


def kurrentdb_options(
    config: CharmConfig, node: NodeIdentity, cluster: ClusterView | None = None
) -> dict[str, Any]:
    """The template's inputs: every option KurrentDB gets, grouped as the file shows them."""
    cluster = cluster or ClusterView()
    extra = dict(config.extra_options)
    # KurrentDB sizes its "recent max" metric windows from the scrape interval.
    metrics = {**extra.pop("Metrics", {}), "ExpectedScrapeIntervalSeconds": config.scrape_interval}
    profile_options = {
        name: value
        for name, value in PROFILE_OPTIONS.get(config.profile, {}).items()
        if name not in extra  # the user's explicit choice wins over the profile default
    }
    return {
        "db": paths.DATA_DIR,
        "log_level": config.log_level,
        "node_port": paths.HTTP_PORT,
        "replication_port": paths.REPLICATION_PORT,
        "advertise": {
            "NodeHostAdvertiseAs": node.pod_fqdn,
            "ReplicationHostAdvertiseAs": node.pod_fqdn,
        },
        "certificate_file": paths.NODE_CERT_FILE,
        "private_key_file": paths.NODE_KEY_FILE,
        "trusted_roots": paths.CA_DIR,
        "node_common_name": NODE_COMMON_NAME,
        # Prometheus scrapes /metrics without a user. An input, not template text: KurrentDB
        # builds its authorization policy at start, so a change must restart the node.
        "allow_anonymous_endpoint_access": True,
        "cluster_size": cluster.size,
        "gossip_seeds": [f"{fqdn}:{paths.HTTP_PORT}" for fqdn in cluster.peer_fqdns],
        "run_projections": config.run_projections.kurrentdb_value,
        "start_standard_projections": config.start_standard_projections,
        "profile": config.profile.value,
        "profile_options": profile_options,
        "metrics": metrics,
        "extra_options": extra,
    }


def render_config_file(options: Mapping[str, Any]) -> str:
    """Render `kurrentdb.conf` from the jinja2 template."""
    return _template().render(**options)


@functools.cache
def _template() -> jinja2.Template:
    import jinja2  # loaded only when a config file is rendered

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - renders YAML, not HTML
    )
    # JSON scalars, lists and maps are valid YAML flow values, quoted where needed; keys are
    # sorted so that the same options in another order render the same file.
    env.filters["yaml"] = functools.partial(json.dumps, sort_keys=True)
    return env.get_template("kurrentdb.conf.j2")


def pebble_layer(initial_passwords: Mapping[str, str]) -> dict[str, Any]:
    """The Pebble layer that runs KurrentDB as the image's non-root user.

    ``initial_passwords`` maps `admin`/`ops` to the passwords KurrentDB gives those users
    when it first creates them; later rotations go through the users API, so the
    environment (and with it the service) never changes after the first start.
    """
    return {
        "summary": "KurrentDB",
        "description": "KurrentDB node managed by the kurrentdb charm",
        "services": {
            paths.SERVICE: {
                "override": "replace",
                "summary": "KurrentDB server",
                "command": f"{paths.BINARY} --config {paths.CONFIG_FILE}",
                "startup": "enabled",
                "user": paths.WORKLOAD_USER,
                "group": paths.WORKLOAD_GROUP,
                "working-dir": paths.DATA_DIR,
                # KurrentDB needs about 7 s to shut down cleanly; Pebble's default is 5 s.
                "kill-delay": f"{paths.KILL_DELAY_SECONDS}s",
                # After offline truncation (a deposed leader rejoining) KurrentDB exits with
                # code 0 and expects to be started again; surplus nodes exit likewise.
                "on-success": "restart",
                "on-failure": "restart",
                "environment": {
                    "KURRENTDB_DEFAULT_ADMIN_PASSWORD": initial_passwords["admin"],
                    "KURRENTDB_DEFAULT_OPS_PASSWORD": initial_passwords["ops"],
                },
            }
        },
        "checks": {
            paths.CHECK: {
                "override": "replace",
                # `ready`, never `alive`: /health/live answers 503 until the node has
                # initialised, which can take hours (index rebuild); an alive check would
                # make Kubernetes restart the container after ~15 s of that.
                "level": "ready",
                # Pebble runs a check from the moment its layer is added, not from the
                # service's start: a node still waiting for its turn would go `down`,
                # unready and fire pebble-check-failed. The charm starts it with the service.
                "startup": "disabled",
                "period": "10s",
                "timeout": "5s",
                "threshold": 3,
                # An exec check because Pebble's http checks cannot trust a private CA.
                "exec": {
                    "command": (
                        "curl --fail --silent --show-error --max-time 4"
                        f" --cacert {paths.TRUST_BUNDLE}"
                        f" https://localhost:{paths.HTTP_PORT}/health/live"
                    ),
                },
            }
        },
    }
