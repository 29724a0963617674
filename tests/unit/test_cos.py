"""COS: the relation data each endpoint writes (parsed) and the Pebble log-targets layer."""

from __future__ import annotations

import dataclasses
import json

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


def metrics_secret(state: testing.State) -> str:
    secret = next(s for s in state.secrets if set(s.tracked_content) == {"password"})
    return secret.tracked_content["password"]


# --- metrics-endpoint ---------------------------------------------------------------------


def test_scrape_job_for_every_unit_over_tls_as_a_no_privilege_user(
    ctx, volumes, internal_ca, kurrentdb
):
    prometheus = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    out = running(ctx, volumes, internal_ca, prometheus)
    data = relation_out(out, prometheus)

    (job,) = json.loads(data.local_app_data["scrape_jobs"])
    password = metrics_secret(out)
    assert job == {
        "job_name": "kurrentdb",
        "metrics_path": "/metrics",
        "scheme": "https",
        "scrape_interval": "60s",
        "static_configs": [{"targets": ["*:2113"]}],
        "tls_config": {"ca_file": internal_ca.certificate},
        "basic_auth": {"username": "charm-metrics", "password": password},
    }
    assert data.local_unit_data["prometheus_scrape_unit_address"] == FQDN0
    assert data.local_unit_data["prometheus_scrape_unit_name"] == "kurrentdb/0"
    metadata = json.loads(data.local_app_data["scrape_metadata"])
    assert metadata["model"] == "prod" and metadata["application"] == "kurrentdb"
    assert metadata["charm_name"] == "kurrentdb" and metadata["unit"] == "kurrentdb/0"
    # The scrape user exists in KurrentDB, with that password and in no group.
    user = kurrentdb.users["charm-metrics"]
    assert (user.password, user.groups) == (password, [])


def test_alert_rules_carry_the_topology(ctx, volumes, internal_ca, kurrentdb):
    prometheus = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    out = running(ctx, volumes, internal_ca, prometheus)
    groups = json.loads(relation_out(out, prometheus).local_app_data["alert_rules"])["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules, "the charm ships alert rules"
    for rule in rules:
        assert rule["labels"]["juju_application"] == "kurrentdb"
        assert rule["labels"]["juju_model"] == "prod"


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


def test_metrics_user_created_once(ctx, volumes, internal_ca, kurrentdb):
    prometheus = testing.Relation("metrics-endpoint")
    state = running(ctx, volumes, internal_ca, prometheus)
    writes = [r for r in kurrentdb.requests if r.path.startswith("/users") and r.method != "GET"]
    state = ctx.run(ctx.on.update_status(), state)
    ctx.run(ctx.on.relation_changed(state.get_relation(prometheus.id)), state)
    assert [
        r for r in kurrentdb.requests if r.path.startswith("/users") and r.method != "GET"
    ] == writes
    assert len(writes) == 1


def test_no_scrape_job_until_kurrentdb_can_create_the_user(ctx, volumes, internal_ca, kurrentdb):
    prometheus = testing.Relation("metrics-endpoint")
    kurrentdb.down()
    out = running(ctx, volumes, internal_ca, prometheus)
    assert "scrape_jobs" not in relation_out(out, prometheus).local_app_data
    kurrentdb.up()
    out = ctx.run(ctx.on.update_status(), out)
    assert "scrape_jobs" in relation_out(out, prometheus).local_app_data


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
    assert "charm-metrics" not in kurrentdb.users, "no scrape user without a Prometheus"
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
