"""COS: the relation data each endpoint writes (parsed) and the Pebble log-targets layer."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import ssl

import pytest
import yaml
from conftest import unit_state
from cosl import LZMABase64
from ops import testing

from workload import paths

FQDN0 = "kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local"


def with_relations(state: testing.State, *relations: testing.Relation) -> testing.State:
    return dataclasses.replace(state, relations=set(state.relations) | set(relations))


def running(ctx, volumes, ca, *relations, leader=True, **config):
    state = with_relations(unit_state(volumes, ca, leader=leader, config=config), *relations)
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


def relation_out(state: testing.State, relation: testing.Relation) -> testing.Relation:
    return state.get_relation(relation.id)


def scrape(job: dict, double) -> int:
    """GET the job's metrics path from the double as Prometheus would: its scheme, its CA,
    its credentials if it has any. The HTTP status."""
    assert job["scheme"] == "https"
    context = ssl.create_default_context(cadata=job["tls_config"]["ca_file"])
    headers = {}
    if "basic_auth" in job:
        auth = job["basic_auth"]
        token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    # The double's certificate names 127.0.0.1 (a node's names its pod): verified as such.
    conn = http.client.HTTPSConnection("127.0.0.1", double.port, context=context, timeout=5)
    try:
        conn.request("GET", job["metrics_path"], headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def runs_as_rendered(double, volumes) -> None:
    """The double takes the rendered config's AllowAnonymousEndpointAccess, as a node starts."""
    rendered = yaml.safe_load(volumes.read(paths.CONFIG_FILE))
    double.node.allow_anonymous_endpoint_access = rendered["AllowAnonymousEndpointAccess"] is True


# --- metrics-endpoint ---------------------------------------------------------------------


def test_scrape_job_for_every_unit_over_tls_without_credentials(
    ctx, volumes, internal_ca, kurrentdb
):
    prometheus = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    out = running(ctx, volumes, internal_ca, prometheus)
    data = relation_out(out, prometheus)

    (job,) = json.loads(data.local_app_data["scrape_jobs"])
    assert job == {
        "job_name": "kurrentdb",
        "metrics_path": "/metrics",
        "scheme": "https",
        "scrape_interval": "60s",
        "static_configs": [{"targets": ["*:2113"]}],
        "tls_config": {"ca_file": internal_ca.certificate},
    }
    assert data.local_unit_data["prometheus_scrape_unit_address"] == FQDN0
    assert data.local_unit_data["prometheus_scrape_unit_name"] == "kurrentdb/0"
    metadata = json.loads(data.local_app_data["scrape_metadata"])
    assert metadata["model"] == "prod" and metadata["application"] == "kurrentdb"
    assert metadata["charm_name"] == "kurrentdb" and metadata["unit"] == "kurrentdb/0"
    # No scrape user, and no secret for one: nothing but admin and ops in KurrentDB.
    assert set(kurrentdb.users) == {"admin", "ops"}
    assert not [r for r in kurrentdb.requests if r.path.startswith("/users")]
    assert not [s for s in out.secrets if "password" in s.tracked_content]
    assert "metrics-secret-id" not in next(iter(out.relations)).local_app_data


def test_the_published_job_scrapes_a_node_running_the_rendered_config(
    ctx, volumes, internal_ca, kurrentdb
):
    prometheus = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    out = running(ctx, volumes, internal_ca, prometheus)
    (job,) = json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"])
    # A node started without the option refuses the job (LegacyPolicySelectorFactory.cs).
    assert scrape(job, kurrentdb) == 401
    runs_as_rendered(kurrentdb, volumes)
    assert scrape(job, kurrentdb) == 200
    assert [r.user for r in kurrentdb.requests if r.path == "/metrics"] == [None, None]


@pytest.mark.parametrize(
    ("profile", "interval"), [("development", 15), ("staging", 30), ("production", 60)]
)
def test_scrape_interval_follows_the_profile_and_kurrentdb_agrees(
    ctx, volumes, internal_ca, kurrentdb, profile, interval
):
    prometheus = testing.Relation("metrics-endpoint")
    out = running(ctx, volumes, internal_ca, prometheus, profile=profile)
    (job,) = json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"])
    assert job["scrape_interval"] == f"{interval}s"
    config = yaml.safe_load(volumes.read(paths.CONFIG_FILE))
    assert config["Metrics"] == {"ExpectedScrapeIntervalSeconds": interval}


def test_scrape_job_published_while_kurrentdb_is_down(ctx, volumes, internal_ca, kurrentdb):
    # Nothing to create in KurrentDB first: the job goes out whatever the node says.
    prometheus = testing.Relation("metrics-endpoint")
    kurrentdb.down()
    out = running(ctx, volumes, internal_ca, prometheus)
    (job,) = json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"])
    assert "basic_auth" not in job and job["tls_config"] == {"ca_file": internal_ca.certificate}


# --- the scrape user earlier revisions created --------------------------------------------

OLD_PASSWORD = "old-Scrape-Password-0003"
OLD_JOB = {
    "job_name": "kurrentdb",
    "metrics_path": "/metrics",
    "scheme": "https",
    "scrape_interval": "60s",
    "static_configs": [{"targets": ["*:2113"]}],
    "tls_config": {"ca_file": "old"},
    "basic_auth": {"username": "charm-metrics", "password": OLD_PASSWORD},
}


def with_leftover(state: testing.State, double, *relations: testing.Relation) -> testing.State:
    """What an earlier revision left: the user, its password's secret and peer record, and
    (on each given metrics-endpoint relation) the scrape job that logs in as it."""
    double.add_user("charm-metrics", OLD_PASSWORD, [], "Prometheus scraper (kurrentdb charm)")
    secret = testing.Secret(
        tracked_content={"password": OLD_PASSWORD},
        owner="app",
        label="kurrentdb-metrics",
        description="Password of the KurrentDB user Prometheus scrapes /metrics with",
    )
    peer = next(r for r in state.relations if r.endpoint == "kurrentdb-peers")
    peer = dataclasses.replace(
        peer, local_app_data={**peer.local_app_data, "metrics-secret-id": secret.id}
    )
    old = {"scrape_jobs": json.dumps([OLD_JOB])}
    others = {
        dataclasses.replace(r, local_app_data={**r.local_app_data, **old})
        if r.endpoint == "metrics-endpoint"
        else r
        for r in state.relations
        if r.id != peer.id
    }
    return dataclasses.replace(
        state, relations={peer, *others, *relations}, secrets={*state.secrets, secret}
    )


def leftover_secret_id(state: testing.State) -> str | None:
    peer = next(r for r in state.relations if r.endpoint == "kurrentdb-peers")
    return peer.local_app_data.get("metrics-secret-id")


def user_deletions(double) -> list:
    return [r for r in double.requests if r.method == "DELETE" and r.path.startswith("/users/")]


def test_leader_deletes_the_leftover_scrape_user_and_its_secret_once(
    ctx, volumes, internal_ca, kurrentdb
):
    prometheus = testing.Relation("metrics-endpoint")
    state = with_leftover(running(ctx, volumes, internal_ca, prometheus), kurrentdb)
    secret_id = leftover_secret_id(state)
    assert "charm-metrics" in kurrentdb.users and secret_id

    out = ctx.run(ctx.on.update_status(), state)
    assert "charm-metrics" not in kurrentdb.users
    (deleted,) = user_deletions(kurrentdb)
    assert (deleted.path, deleted.user, deleted.status) == ("/users/charm-metrics", "admin", 200)
    assert leftover_secret_id(out) is None
    assert secret_id not in {s.id for s in out.secrets}
    assert not [s for s in out.secrets if s.tracked_content.get("password") == OLD_PASSWORD]
    (job,) = json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"])
    assert "basic_auth" not in job
    assert isinstance(out.unit_status, testing.ActiveStatus)

    # Once: later hooks ask KurrentDB nothing about it.
    again = ctx.run(ctx.on.update_status(), out)
    ctx.run(ctx.on.leader_elected(), again)
    assert len(user_deletions(kurrentdb)) == 1


def test_a_leftover_user_already_gone_still_clears_its_secret(ctx, volumes, internal_ca, kurrentdb):
    state = with_leftover(running(ctx, volumes, internal_ca), kurrentdb)
    kurrentdb.users.pop("charm-metrics")  # deleted by hand, or never created
    out = ctx.run(ctx.on.update_status(), state)
    assert [r.status for r in user_deletions(kurrentdb)] == [404]
    assert leftover_secret_id(out) is None
    assert not [s for s in out.secrets if "password" in s.tracked_content]


def test_a_record_naming_another_secret_removes_only_the_scrape_users(
    ctx, volumes, internal_ca, kurrentdb
):
    state = with_leftover(running(ctx, volumes, internal_ca), kurrentdb)
    peer = next(r for r in state.relations if r.endpoint == "kurrentdb-peers")
    ca_id = peer.local_app_data["ca-secret-id"]
    peer = dataclasses.replace(
        peer, local_app_data={**peer.local_app_data, "metrics-secret-id": ca_id}
    )
    state = dataclasses.replace(state, relations={peer})
    out = ctx.run(ctx.on.update_status(), state)
    assert ca_id in {s.id for s in out.secrets}, "the CA secret stays"
    assert not [s for s in out.secrets if s.label == "kurrentdb-metrics"]
    assert leftover_secret_id(out) is None
    assert isinstance(out.unit_status, testing.ActiveStatus)


@pytest.mark.parametrize("fault", ["down", "refused", "server error"])
def test_leftover_user_deletion_is_retried_while_kurrentdb_cannot_do_it(
    ctx, volumes, internal_ca, kurrentdb, fault
):
    prometheus = testing.Relation("metrics-endpoint")
    state = with_leftover(running(ctx, volumes, internal_ca, prometheus), kurrentdb)
    secret_id = leftover_secret_id(state)
    if fault == "down":
        kurrentdb.down()
    else:
        kurrentdb.fail_with = 401 if fault == "refused" else 500

    out = ctx.run(ctx.on.update_status(), state)  # no UncaughtCharmError: the hook succeeds
    assert "charm-metrics" in kurrentdb.users
    assert leftover_secret_id(out) == secret_id
    assert secret_id in {s.id for s in out.secrets}
    (job,) = json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"])
    assert "basic_auth" not in job, "the new job does not wait for the deletion"

    kurrentdb.fail_with = None
    kurrentdb.up()
    out = ctx.run(ctx.on.update_status(), out)
    assert "charm-metrics" not in kurrentdb.users
    assert leftover_secret_id(out) is None
    assert secret_id not in {s.id for s in out.secrets}


def test_leftover_secret_that_cannot_be_removed_now_is_retried(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch
):
    import ops

    state = with_leftover(running(ctx, volumes, internal_ca), kurrentdb)
    secret_id = leftover_secret_id(state)
    remove = ops.Secret.remove_all_revisions

    def failing(self: ops.Secret) -> None:
        raise ops.ModelError("ERROR the controller did not answer")

    monkeypatch.setattr(ops.Secret, "remove_all_revisions", failing)
    out = ctx.run(ctx.on.update_status(), state)
    assert "charm-metrics" not in kurrentdb.users
    assert leftover_secret_id(out) == secret_id
    assert isinstance(out.unit_status, testing.ActiveStatus)

    monkeypatch.setattr(ops.Secret, "remove_all_revisions", remove)
    out = ctx.run(ctx.on.update_status(), out)
    assert leftover_secret_id(out) is None
    assert secret_id not in {s.id for s in out.secrets}
    assert [r.status for r in user_deletions(kurrentdb)] == [200, 404]


def test_leftover_scrape_user_and_its_job_stay_until_the_refresh_is_over(
    ctx, volumes, internal_ca, kurrentdb, monkeypatch
):
    from refresh.capability import Refresh

    prometheus = testing.Relation("metrics-endpoint")
    state = with_leftover(running(ctx, volumes, internal_ca, prometheus), kurrentdb)
    # Units not refreshed yet run without AllowAnonymousEndpointAccess: they need the user.
    monkeypatch.setattr(Refresh, "in_progress", lambda self: True)
    out = ctx.run(ctx.on.update_status(), state)
    assert "charm-metrics" in kurrentdb.users and leftover_secret_id(out)
    assert json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"]) == [OLD_JOB]

    monkeypatch.setattr(Refresh, "in_progress", lambda self: False)
    out = ctx.run(ctx.on.update_status(), out)
    assert "charm-metrics" not in kurrentdb.users and leftover_secret_id(out) is None
    (job,) = json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"])
    assert "basic_auth" not in job and job["tls_config"]["ca_file"] == internal_ca.certificate


def test_a_non_leader_leaves_the_leftover_scrape_user_to_the_leader(
    ctx, volumes, internal_ca, kurrentdb
):
    state = with_leftover(running(ctx, volumes, internal_ca, leader=False), kurrentdb)
    out = ctx.run(ctx.on.update_status(), state)
    assert "charm-metrics" in kurrentdb.users and leftover_secret_id(out)
    assert not user_deletions(kurrentdb)


def test_non_leader_publishes_only_its_address(ctx, volumes, internal_ca, kurrentdb):
    prometheus = testing.Relation("metrics-endpoint")
    out = running(ctx, volumes, internal_ca, prometheus, leader=False)
    data = relation_out(out, prometheus)
    assert data.local_app_data == {}
    assert data.local_unit_data["prometheus_scrape_unit_address"] == FQDN0


def test_new_ca_reaches_the_scrape_job(ctx, volumes, internal_ca, kurrentdb):
    import tls

    prometheus = testing.Relation("metrics-endpoint")
    state = running(ctx, volumes, internal_ca, prometheus)
    new_ca = tls.generate_ca()
    ca_secret = next(
        s for s in state.secrets if "private-key" in s.tracked_content and s.owner == "app"
    )
    content = {"certificate": new_ca.certificate, "private-key": new_ca.private_key}
    secrets = (state.secrets - {ca_secret}) | {
        dataclasses.replace(ca_secret, tracked_content=content, latest_content=content)
    }
    out = ctx.run(ctx.on.update_status(), dataclasses.replace(state, secrets=secrets))
    (job,) = json.loads(relation_out(out, prometheus).local_app_data["scrape_jobs"])
    assert job["tls_config"]["ca_file"] == new_ca.certificate


# --- grafana-dashboard --------------------------------------------------------------------


def test_dashboards_published_compressed_with_topology(ctx, volumes, internal_ca, kurrentdb):
    grafana = testing.Relation("grafana-dashboard", remote_app_name="grafana")
    out = running(ctx, volumes, internal_ca, grafana)
    data = json.loads(relation_out(out, grafana).local_app_data["dashboards"])
    assert data["uuid"]
    (name, template), *_ = data["templates"].items()
    assert name == "file:kurrentdb.json"
    dashboard = json.loads(LZMABase64.decompress(template["content"]))
    assert dashboard["title"] == "KurrentDB"
    assert template["juju_topology"] == {
        "model": "prod",
        "model_uuid": out.model.uuid,
        "application": "kurrentdb",
        "unit": "kurrentdb/0",
    }
    assert template["charm"] == "kurrentdb"
    assert template["inject_dropdowns"] is False
    # Publishing again writes the same data: Grafana is not woken for nothing.
    again = ctx.run(ctx.on.update_status(), out)
    assert (
        relation_out(again, grafana).local_app_data["dashboards"]
        == relation_out(out, grafana).local_app_data["dashboards"]
    )


# --- logging ------------------------------------------------------------------------------


def loki_relation(*urls: str) -> testing.Relation:
    return testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={i: {"endpoint": json.dumps({"url": url})} for i, url in enumerate(urls)},
    )


def test_logs_forwarded_to_every_loki_unit_with_topology_labels(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls
):
    loki = loki_relation(
        "http://loki-0.loki-endpoints:3100/loki/api/v1/push",
        "http://loki-1.loki-endpoints:3100/loki/api/v1/push",
    )
    out = running(ctx, volumes, internal_ca, loki)
    targets = out.get_container(paths.CONTAINER).plan.log_targets
    assert sorted(t.location for t in targets.values()) == [
        "http://loki-0.loki-endpoints:3100/loki/api/v1/push",
        "http://loki-1.loki-endpoints:3100/loki/api/v1/push",
    ]
    for target in targets.values():
        assert target.type == "loki"
        assert target.services == ["all"]
        assert target.labels["juju_application"] == "kurrentdb"
        assert target.labels["juju_unit"] == "kurrentdb/0"
        assert target.labels["juju_model"] == "prod"
    assert pebble_calls.restarts == 0
    # The consumer's app data: topology and LogQL rules.
    data = relation_out(out, loki).local_app_data
    assert json.loads(data["metadata"])["application"] == "kurrentdb"
    assert "groups" in json.loads(data["alert_rules"])


def test_log_forwarding_stops_when_the_relation_goes(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls
):
    loki = loki_relation("http://loki-0.loki-endpoints:3100/loki/api/v1/push")
    state = running(ctx, volumes, internal_ca, loki)
    out = ctx.run(ctx.on.relation_broken(state.get_relation(loki.id)), state)
    targets = out.get_container(paths.CONTAINER).plan.log_targets
    assert [t.services for t in targets.values()] == [["-all"]]
    assert pebble_calls.restarts == 0
    assert out.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"


def test_malformed_loki_endpoint_is_ignored(ctx, volumes, internal_ca, kurrentdb):
    loki = testing.Relation("logging", remote_units_data={0: {"endpoint": "not json"}})
    out = running(ctx, volumes, internal_ca, loki)
    assert out.get_container(paths.CONTAINER).plan.log_targets == {}
    assert isinstance(out.unit_status, testing.ActiveStatus)


def test_everything_works_without_cos_relations(ctx, volumes, internal_ca, kurrentdb):
    out = running(ctx, volumes, internal_ca)
    assert out.unit_status == testing.ActiveStatus("Leader")
    assert set(kurrentdb.users) == {"admin", "ops"}
    assert out.get_container(paths.CONTAINER).plan.log_targets == {}


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://loki:3100/push",
        "http://",
        "http://loki:99999/push",
        "http://loki:abc/push",
        "http://lo ki:3100/push",
        "http://loki:3100/push\nX-Injected: 1",
        "",
        "http://" + "a" * 3000,
        None,
        42,
    ],
)
def test_one_bad_loki_unit_does_not_stop_the_others(ctx, volumes, internal_ca, kurrentdb, bad):
    good = "http://loki-0.loki-endpoints:3100/loki/api/v1/push"
    loki = testing.Relation(
        "logging",
        remote_app_name="loki",
        remote_units_data={
            0: {"endpoint": json.dumps({"url": good})},
            1: {"endpoint": json.dumps({"url": bad})},
        },
    )
    out = running(ctx, volumes, internal_ca, loki)
    targets = out.get_container(paths.CONTAINER).plan.log_targets
    assert [t.location for t in targets.values()] == [good]
    assert isinstance(out.unit_status, testing.ActiveStatus)
