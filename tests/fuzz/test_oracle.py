"""The fuzz suite's leak oracle itself: what it must report in relation data (plain tests)."""

from __future__ import annotations

import json

from ops import testing
from scenario_fixtures import ADMIN_PASSWORD

from fuzz.fuzz_harness import Hook, find_leaks

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
JOB = {
    "job_name": "kurrentdb",
    "metrics_path": "/metrics",
    "scheme": "https",
    "static_configs": [{"targets": ["*:2113"]}],
    "tls_config": {"ca_file": CA},
}


def leaks_with_job(job: dict, *secrets: testing.Secret) -> list[str]:
    relation = testing.Relation(
        "metrics-endpoint", local_app_data={"scrape_jobs": json.dumps([job])}
    )
    state = testing.State(relations={relation}, secrets=set(secrets))
    return find_leaks(Hook(state, [], None, None), state, ())


def test_a_scrape_job_without_credentials_is_no_leak():
    assert leaks_with_job(JOB) == []


def test_any_credential_in_a_scrape_job_is_a_leak_even_an_unknown_one():
    unknown = {"username": "charm-metrics", "password": "never-seen-Before-0004"}
    assert leaks_with_job({**JOB, "basic_auth": unknown}) == [
        "metrics-endpoint app scrape_jobs: basic_auth in a job"
    ]
    bearer = {**JOB, "authorization": {"credentials": "x"}}
    assert leaks_with_job(bearer) == ["metrics-endpoint app scrape_jobs: authorization in a job"]
    client_key = {**JOB, "tls_config": {"ca_file": CA, "key_file": "/k"}}
    assert leaks_with_job(client_key) == [
        "metrics-endpoint app scrape_jobs: tls_config.key_file in a job"
    ]


def test_a_password_the_charm_keeps_is_a_leak_in_the_scrape_job_too():
    # Earlier revisions published the scrape user's password here; no secret may be here now.
    kept = testing.Secret(tracked_content={"password": "kept-Scrape-Password-0005"}, owner="app")
    job = {
        **JOB,
        "basic_auth": {"username": "charm-metrics", "password": "kept-Scrape-Password-0005"},
    }
    leaks = leaks_with_job(job, kept)
    assert "metrics-endpoint app scrape_jobs: basic_auth in a job" in leaks
    assert any(leak.startswith("metrics-endpoint app scrape_jobs: kept-Scrape") for leak in leaks)
    admin_in_params = {**JOB, "params": {"token": [ADMIN_PASSWORD]}}
    assert leaks_with_job(admin_in_params)
