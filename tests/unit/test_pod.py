"""The pod's namespace and cluster domain, read from the pod, and the names built on them."""

from __future__ import annotations

import pytest
import yaml
from conftest import unit_state
from cryptography import x509

import pod
from workload import paths


@pytest.mark.parametrize(
    ("resolv_conf", "expected"),
    [
        (
            "search prod.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.0.0.10\n",
            "cluster.local",
        ),
        (
            "nameserver 10.152.183.10\nsearch prod.svc.k8s.example.org svc.k8s.example.org "
            "k8s.example.org\noptions ndots:5\n",
            "k8s.example.org",
        ),
        ("search svc.corp.internal corp.internal\n", "corp.internal"),
        ("search PROD.SVC.Cluster.Local.\n", "cluster.local"),
        ("nameserver 1.1.1.1\n", "cluster.local"),
        ("", "cluster.local"),
        ("search prod.svc.\n", "cluster.local"),
        ("search prod.svc.bad_domain!\n", "cluster.local"),
        ("search other.svc.example.com\n", "cluster.local"),
    ],
)
def test_cluster_domain_from_the_search_list(resolv_conf, expected):
    assert pod.cluster_domain(resolv_conf, "prod") == expected


def test_namespace_comes_from_the_service_account(pod_environment):
    (pod_environment / "namespace").write_text("controller-k8s\n")
    assert pod.detect("controller").namespace == "controller-k8s"


@pytest.mark.parametrize("content", [None, "", "Not A Namespace", "a" * 64])
def test_namespace_falls_back_on_the_model_name(pod_environment, content):
    if content is not None:
        (pod_environment / "namespace").write_text(content)
    assert pod.detect("prod") == pod.PodEnvironment("prod", "cluster.local")


def test_names_follow_the_detected_namespace_and_domain(
    ctx, volumes, internal_ca, kurrentdb, pod_environment
):
    (pod_environment / "namespace").write_text("kdb-prod")
    (pod_environment / "resolv.conf").write_text(
        "search kdb-prod.svc.k8s.example.org svc.k8s.example.org k8s.example.org\n"
    )
    state = unit_state(volumes, internal_ca)
    ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    fqdn = "kurrentdb-0.kurrentdb-endpoints.kdb-prod.svc.k8s.example.org"
    options = yaml.safe_load(volumes.read(paths.CONFIG_FILE))
    assert options["NodeHostAdvertiseAs"] == fqdn
    assert options["ReplicationHostAdvertiseAs"] == fqdn
    cert = x509.load_pem_x509_certificate(volumes.read(paths.NODE_CERT_FILE).encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    sans = san.get_values_for_type(x509.DNSName)
    assert fqdn in sans and "kurrentdb.kdb-prod.svc.k8s.example.org" in sans


def test_pod_label_uses_the_namespace(
    ctx, volumes, internal_ca, kurrentdb, pod_labels, pod_environment
):
    (pod_environment / "namespace").write_text("kdb-prod")
    state = unit_state(volumes, internal_ca)
    ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    assert pod_labels == [("kurrentdb-0", "kdb-prod", "Leader")]
