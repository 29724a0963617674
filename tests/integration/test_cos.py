"""Observability with COS Lite components on a real Juju + Kubernetes.

Deploys a 3-node KurrentDB next to prometheus-k8s, grafana-k8s and loki-k8s from Charmhub,
integrates them as a user would, and checks what the user expects: every node scraped,
the alert rules loaded, the dashboard in Grafana, KurrentDB's logs in Loki. Skipped when no
Juju controller is reachable.
"""

from __future__ import annotations

import json
import shlex
import time

import jubilant
import pytest

APP = "kurrentdb"
COS = {"prometheus": "prometheus-k8s", "grafana": "grafana-k8s", "loki": "loki-k8s"}


def query(juju: jubilant.Juju, unit: str, container: str, url: str) -> dict:
    """GET a COS API from inside its own pod (no ingress needed)."""
    out = juju.ssh(unit, "curl", "-sf", shlex.quote(url), container=container)
    return json.loads(out)


def eventually(check, timeout: float = 600, interval: float = 10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (jubilant.CLIError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{check.__name__} did not hold within {timeout} s")
        time.sleep(interval)


@pytest.fixture(scope="module")
def deployed(juju: jubilant.Juju, charm_path, kurrentdb_image) -> jubilant.Juju:
    juju.deploy(
        charm_path,
        APP,
        num_units=3,
        resources={"kurrentdb-image": kurrentdb_image},
        config={"profile": "development"},  # 15 s scrape interval: faster test
        trust=True,
    )
    for name, charm in COS.items():
        juju.deploy(charm, name, channel="2/stable", trust=True)
    juju.integrate(f"{APP}:metrics-endpoint", "prometheus:metrics-endpoint")
    juju.integrate(f"{APP}:grafana-dashboard", "grafana:grafana-dashboard")
    juju.integrate(f"{APP}:logging", "loki:logging")
    juju.integrate("grafana:grafana-source", "prometheus:grafana-source")
    juju.integrate("grafana:grafana-source", "loki:grafana-source")
    juju.wait(lambda status: jubilant.all_active(status, APP, *COS), error=jubilant.any_error)
    return juju


def test_every_node_is_scraped_over_tls_without_credentials(deployed: jubilant.Juju):
    def targets_up():
        data = query(deployed, "prometheus/0", "prometheus", "http://localhost:9090/api/v1/targets")
        ours = [
            t for t in data["data"]["activeTargets"] if t["labels"].get("juju_application") == APP
        ]
        return len(ours) == 3 and all(t["health"] == "up" for t in ours) and ours

    targets = eventually(targets_up)
    assert {t["scrapeUrl"].split("/")[2] for t in targets} == {
        f"{APP}-{n}.{APP}-endpoints.{deployed.model}.svc.cluster.local:2113" for n in range(3)
    }
    assert all(t["scrapeUrl"].startswith("https://") for t in targets)


def test_only_statistics_answer_without_a_login(deployed: jubilant.Juju):
    """AllowAnonymousEndpointAccess opens /metrics and /stats, never streams or users."""

    def status_of(path: str) -> str:
        return deployed.ssh(
            f"{APP}/0",
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
            "--cacert", "/etc/kurrentdb/certs/trusted-roots.pem",
            shlex.quote(f"https://localhost:2113{path}"),
            container="kurrentdb",
        ).strip()  # fmt: skip

    assert status_of("/metrics") == "200"
    assert status_of("/stats") == "200"
    # (Streams are reached over gRPC; AtomPub over HTTP is off by default.)
    for path in ("/users/", "/info/options"):
        assert status_of(path) == "401", path


def test_alert_rules_are_loaded_and_quiet_on_a_healthy_cluster(deployed: jubilant.Juju):
    def rules_loaded():
        data = query(deployed, "prometheus/0", "prometheus", "http://localhost:9090/api/v1/rules")
        rules = [r for g in data["data"]["groups"] for r in g["rules"] if r["type"] == "alerting"]
        ours = [r for r in rules if "KurrentDB" in r["name"]]
        return ours

    rules = eventually(rules_loaded)
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert firing == [], f"alerts firing on a healthy cluster: {firing}"


def test_metrics_have_kurrentdb_names_and_topology(deployed: jubilant.Juju):
    def series():
        url = "http://localhost:9090/api/v1/query?query=kurrentdb_proc_up_time_seconds_total"
        data = query(deployed, "prometheus/0", "prometheus", url)
        return len(data["data"]["result"]) == 3 and data["data"]["result"]

    for sample in eventually(series):
        assert sample["metric"]["juju_application"] == APP
        assert sample["metric"]["juju_model"] == deployed.model


def test_dashboard_is_in_grafana(deployed: jubilant.Juju):
    password = deployed.run("grafana/0", "get-admin-password").results["admin-password"]

    def dashboard():
        url = f"http://admin:{password}@localhost:3000/api/search?query=KurrentDB"
        found = json.loads(
            deployed.ssh("grafana/0", "curl", "-sf", shlex.quote(url), container="grafana")
        )
        return [d for d in found if d["title"] == "KurrentDB"]

    assert eventually(dashboard)


def test_logs_reach_loki_with_topology_labels(deployed: jubilant.Juju):
    def log_streams():
        url = "http://localhost:3100/loki/api/v1/query_range?limit=10&query=" + shlex.quote(
            '{juju_application="kurrentdb"}'
        ).strip("'")
        data = query(deployed, "loki/0", "loki", url)
        return data["data"]["result"]

    streams = eventually(log_streams)
    labels = streams[0]["stream"]
    assert labels["juju_application"] == APP
    assert labels["juju_unit"].startswith(f"{APP}/")


def test_removing_loki_stops_forwarding_without_restarts(deployed: jubilant.Juju):
    before = deployed.ssh(f"{APP}/0", "/charm/bin/pebble", "changes", container="kurrentdb")
    deployed.remove_relation(f"{APP}:logging", "loki:logging")
    deployed.wait(lambda status: jubilant.all_active(status, APP))
    plan = deployed.ssh(f"{APP}/0", "/charm/bin/pebble", "plan", container="kurrentdb")
    assert "-all" in plan
    after = deployed.ssh(f"{APP}/0", "/charm/bin/pebble", "changes", container="kurrentdb")
    assert after.count("Restart service") == before.count("Restart service")
