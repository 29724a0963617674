"""The rendered KurrentDB config file and Pebble layer (pure functions)."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from config import CharmConfig, Profile, RunProjections, parse_config
from workload import paths
from workload.render import (
    RELOADABLE_INPUTS,
    ClusterView,
    NodeIdentity,
    kurrentdb_options,
    pebble_layer,
    render_config_file,
)

# Kept as test data, independent of the copy the charm validates against: the oldest
# supported line, so the rendered file starts every supported image.
OPTION_NAMES = frozenset(
    line.split("\t")[0]
    for line in (pathlib.Path(__file__).parents[1] / "data" / "kurrentdb-options" / "26.0.0.txt")
    .read_text()
    .splitlines()
    if line.strip() and not line.startswith("#")
)
# Names removed in KurrentDB 25.0 or earlier: any of them stops the server.
REMOVED_NAMES = {"ExtIp", "IntIp", "ExtHttpPort", "HttpPort", "IntTcpPort", "ExtTcpPort"}

NODE = NodeIdentity(app="kurrentdb", unit_number=2, namespace="prod")


def rendered(config: CharmConfig, cluster: ClusterView | None = None) -> dict:
    text = render_config_file(kurrentdb_options(config, NODE, cluster))
    assert text.startswith("---\n"), "KurrentDB wants its YAML file to start with ---"
    return yaml.safe_load(text)


def test_every_rendered_key_is_a_real_kurrentdb_option():
    config = parse_config(
        {
            "profile": "development",
            "extra-options": "{MaxAppendSize: 1048576, SecondaryIndexing: {Enabled: false}}",
        }
    )
    options = rendered(config)
    top_level = {k for k, v in options.items() if not isinstance(v, dict)}
    assert top_level <= OPTION_NAMES
    assert not top_level & REMOVED_NAMES
    assert options["SecondaryIndexing"] == {"Enabled": False}


def test_default_config_is_secure_and_listens_everywhere():
    options = rendered(CharmConfig())
    assert options["Insecure"] is False
    assert "Dev" not in options
    assert options["NodeIp"] == options["ReplicationIp"] == "0.0.0.0"
    assert options["NodePort"] == 2113 and options["ReplicationPort"] == 1112
    assert options["Db"] == "/var/lib/kurrentdb"
    assert options["DisableLogFile"] is True
    assert options["CertificateFile"] == paths.NODE_CERT_FILE
    assert options["CertificatePrivateKeyFile"] == paths.NODE_KEY_FILE
    # A directory of trusted roots, not the CA file itself.
    assert options["TrustedRootCertificatesPath"] == paths.CA_DIR
    assert options["CertificateReservedNodeCommonName"] == "kurrentdb-node"
    # /metrics and /stats without credentials (Prometheus); streams still need a login.
    assert options["AllowAnonymousEndpointAccess"] is True
    assert "AllowAnonymousStreamAccess" not in options
    assert options["ClusterSize"] == 1
    assert (
        options["NodeHostAdvertiseAs"] == "kurrentdb-2.kurrentdb-endpoints.prod.svc.cluster.local"
    )


def test_anonymous_endpoint_access_is_a_restart_input_not_a_reloaded_one():
    # KurrentDB builds its authorization policy at start; a reload (SIGHUP) re-applies only
    # LogLevel, certificates and Transform (ClusterVNode.cs, Handle(ReloadConfig)).
    options = kurrentdb_options(CharmConfig(), NODE)
    assert options["allow_anonymous_endpoint_access"] is True
    assert "allow_anonymous_endpoint_access" not in RELOADABLE_INPUTS


@pytest.mark.parametrize(
    ("profile", "level"),
    [
        ("development", "Debug"),
        ("staging", "Information"),
        ("uat", "Information"),
        ("production", "Warning"),
    ],
)
def test_profile_sets_the_default_log_level(profile, level):
    assert rendered(parse_config({"profile": profile}))["LogLevel"] == level


def test_explicit_log_level_beats_the_profile():
    assert (
        rendered(parse_config({"profile": "development", "log-level": "error"}))["LogLevel"]
        == "Error"
    )


def test_development_profile_uses_smaller_caches_unless_overridden():
    dev = rendered(parse_config({"profile": "development"}))
    assert dev["StreamInfoCacheCapacity"] == 10000
    assert "StreamInfoCacheCapacity" not in rendered(parse_config({"profile": "production"}))
    overridden = rendered(
        parse_config({"profile": "development", "extra-options": "StreamInfoCacheCapacity: 5"})
    )
    assert overridden["StreamInfoCacheCapacity"] == 5


@pytest.mark.parametrize(
    ("value", "expected"), [("none", "None"), ("system", "System"), ("all", "All")]
)
def test_projections(value, expected):
    options = rendered(
        CharmConfig(run_projections=RunProjections(value), start_standard_projections=True)
    )
    assert options["RunProjections"] == expected
    assert options["StartStandardProjections"] is True


def test_extra_option_values_survive_yaml_quoting():
    config = parse_config(
        {"extra-options": "{Transform: 'a: b # c', EnableAtomPubOverHttp: true, MaxTruncation: -1}"}
    )
    options = rendered(config)
    assert options["Transform"] == "a: b # c"
    assert options["EnableAtomPubOverHttp"] is True
    assert options["MaxTruncation"] == -1


def test_cluster_view_renders_gossip_seeds_without_dns_discovery():
    peers = (
        "kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local",
        "kurrentdb-1.kurrentdb-endpoints.prod.svc.cluster.local",
    )
    options = rendered(CharmConfig(), ClusterView(size=3, peer_fqdns=peers))
    assert options["ClusterSize"] == 3
    assert options["DiscoverViaDns"] is False
    assert options["GossipSeed"] == ",".join(f"{p}:2113" for p in peers)


def test_node_sans_cover_pod_services_and_loopback():
    assert NODE.sans() == (
        "kurrentdb-2.kurrentdb-endpoints.prod.svc.cluster.local",
        "kurrentdb-endpoints.prod.svc.cluster.local",
        "kurrentdb-endpoints",
        "kurrentdb.prod.svc.cluster.local",
        "kurrentdb",
        "localhost",
        "127.0.0.1",
    )


def test_pebble_layer_runs_kurrentdb_as_the_image_user():
    layer = pebble_layer({"admin": "a-pass", "ops": "o-pass"})
    service = layer["services"]["kurrentdb"]
    assert service["command"] == "/opt/kurrentdb/KurrentDB --config /etc/kurrentdb/kurrentdb.conf"
    assert service["user"] == "kurrent"
    assert "user-id" not in service, "a fixed uid would break on images older or newer than 26.0"
    assert service["kill-delay"] == "20s"
    assert service["on-success"] == service["on-failure"] == "restart"
    assert service["environment"] == {
        "KURRENTDB_DEFAULT_ADMIN_PASSWORD": "a-pass",
        "KURRENTDB_DEFAULT_OPS_PASSWORD": "o-pass",
    }


def test_health_check_is_an_exec_check_that_cannot_restart_the_container():
    check = pebble_layer({"admin": "a", "ops": "o"})["checks"]["kurrentdb-live"]
    assert check["level"] == "ready", "an alive check would kill slow-starting nodes"
    command = check["exec"]["command"]
    assert f"--cacert {paths.TRUST_BUNDLE}" in command
    assert command.endswith("https://localhost:2113/health/live")
    assert "--insecure" not in command and " -k" not in command
    assert "http" not in check  # Pebble's http checks cannot trust a private CA


def test_profile_enum_covers_the_design():
    assert {p.value for p in Profile} == {"development", "staging", "uat", "production"}
