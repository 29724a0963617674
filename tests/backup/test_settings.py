"""The storage relations' data: v0 and v1 s3 providers, azure, and hostile data."""

from __future__ import annotations

import json

import ops
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops import testing

from backup import AZURE_ENDPOINT, S3_ENDPOINT
from backup.relations import BOTH_RELATED, NOTHING_RELATED, BackupStorage
from backup.settings import AzureSettings, S3Settings, StorageNotReady, parse_azure, parse_s3

ACCESS_KEY = "ACCESSKEYFROMRELATION1"
SECRET_KEY = "secret-key-from-relation-0123456789/+abc"
AZURE_KEY = "ZmFrZSBhenVyZSBhY2NvdW50IGtleSBmb3IgdGVzdHM="
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"

S3_V0 = {  # what s3-integrator with the v0 library writes: everything in plain keys
    "bucket": "kurrentdb-backups",
    "access-key": ACCESS_KEY,
    "secret-key": SECRET_KEY,
    "endpoint": "https://radosgw.example:7480/",
    "region": "eu-1",
    "path": "/clusters/prod/",
    "s3-uri-style": "host",
    "tls-ca-chain": json.dumps([CA_PEM]),
}
AZURE = {
    "container": "kurrentdb-backups",
    "storage-account": "kurrentstore",
    "secret-key": AZURE_KEY,
    "connection-protocol": "abfss",
    "path": "prod",
}


def test_v0_s3_data_parses_into_settings():
    parsed = parse_s3(S3_V0)

    assert parsed == S3Settings(
        bucket="kurrentdb-backups",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        endpoint="https://radosgw.example:7480",
        region="eu-1",
        path="clusters/prod",
        uri_style="virtual",
        tls_ca_chain=(CA_PEM,),
    )
    assert SECRET_KEY not in repr(parsed) and ACCESS_KEY not in repr(parsed)
    assert SECRET_KEY not in str(parsed.summary()) and ACCESS_KEY not in str(parsed.summary())


def test_azure_data_parses_into_settings():
    parsed = parse_azure(AZURE)

    assert parsed == AzureSettings(
        storage_account="kurrentstore",
        secret_key=AZURE_KEY,
        container="kurrentdb-backups",
        protocol="https",
        path="prod",
    )
    assert parsed.account_url == "https://kurrentstore.blob.core.windows.net"
    assert AZURE_KEY not in repr(parsed) + str(parsed.summary())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bucket": None}, "s3-parameters relation has no bucket"),
        ({"secret-key": None}, "s3-parameters relation has no secret-key"),
        ({"access-key": ""}, "s3-parameters relation has no access-key"),
        ({"bucket": "a"}, "bucket 'a' is not valid: 3-63 letters"),
        ({"endpoint": "ftp://host"}, "endpoint 'ftp://host' is not an http:// or https:// URL"),
        ({"endpoint": "https://user:pw@host"}, "is not an http:// or https:// URL"),
        ({"endpoint": "https://host:99999"}, "is not an http:// or https:// URL"),
        ({"path": "a/../b"}, "path 'a/../b' is not usable"),
        ({"s3-uri-style": "sideways"}, "s3-uri-style 'sideways' is not one of path, host, virtual"),
        ({"tls-ca-chain": "not json"}, "tls-ca-chain must be a JSON list of PEM certificates"),
        ({"tls-ca-chain": '["junk"]'}, "entry 0 is not one"),
        ({"secret-key": "has space"}, "secret-key is not usable"),
    ],
)
def test_bad_s3_data_names_the_key_and_what_is_allowed(change, message):
    data = {key: value for key, value in {**S3_V0, **change}.items() if value is not None}

    with pytest.raises(StorageNotReady) as not_ready:
        parse_s3(data)

    assert message in not_ready.value.message
    assert SECRET_KEY not in not_ready.value.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"container": None}, "azure-storage relation has no container"),
        ({"secret-key": None}, "azure-storage relation has no secret-key"),
        ({"storage-account": "Not_Valid"}, "storage-account 'Not_Valid' is not valid"),
        ({"container": "double--hyphen"}, "container 'double--hyphen' is not valid"),
        ({"connection-protocol": "ftp"}, "connection-protocol 'ftp' is not one of https, http"),
    ],
)
def test_bad_azure_data_names_the_key_and_what_is_allowed(change, message):
    data = {key: value for key, value in {**AZURE, **change}.items() if value is not None}

    with pytest.raises(StorageNotReady) as not_ready:
        parse_azure(data)

    assert message in not_ready.value.message


def test_a_value_quoted_in_a_message_cannot_forge_lines():
    with pytest.raises(StorageNotReady) as not_ready:
        parse_s3({**S3_V0, "region": "eu\nactive: all good" + "x" * 200})

    assert "\n" not in not_ready.value.message
    assert len(not_ready.value.message) < 200


# ---- through the relations, with object-storage-charmlib, under Scenario ------------------

META = {
    "name": "host",
    "requires": {
        S3_ENDPOINT: {"interface": "s3", "limit": 1},
        AZURE_ENDPOINT: {"interface": "azure_storage", "limit": 1},
    },
}


class HostCharm(ops.CharmBase):
    """The smallest charm that holds a BackupStorage, as the KurrentDB charm does."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.storage = BackupStorage(self)


def _context() -> testing.Context:
    return testing.Context(HostCharm, meta=META)


def _settings_in(state: testing.State) -> S3Settings | AzureSettings:
    ctx = _context()
    with ctx(ctx.on.update_status(), state) as manager:
        return manager.charm.storage.settings()


def _not_ready_in(state: testing.State) -> str:
    with pytest.raises(StorageNotReady) as not_ready:
        _settings_in(state)
    return not_ready.value.message


def test_nothing_related_says_what_to_relate():
    assert _not_ready_in(testing.State()) == NOTHING_RELATED
    assert "relate s3-integrator" in NOTHING_RELATED
    assert "azure-storage-integrator" in NOTHING_RELATED


def test_both_related_is_an_error_that_names_both():
    state = testing.State(
        relations=[
            testing.Relation(S3_ENDPOINT, remote_app_data=S3_V0),
            testing.Relation(AZURE_ENDPOINT, remote_app_data=AZURE),
        ]
    )
    assert _not_ready_in(state) == BOTH_RELATED


def test_a_v0_s3_provider_in_the_relation():
    state = testing.State(relations=[testing.Relation(S3_ENDPOINT, remote_app_data=S3_V0)])

    assert _settings_in(state) == parse_s3(S3_V0)


def test_a_v1_s3_provider_gives_its_credentials_in_a_secret():
    credentials = testing.Secret(
        tracked_content={"access-key": ACCESS_KEY, "secret-key": SECRET_KEY}
    )
    relation = testing.Relation(
        S3_ENDPOINT,
        remote_app_data={"version": "1", "bucket": "v1-bucket", "secret-extra": credentials.id},
    )

    parsed = _settings_in(testing.State(relations=[relation], secrets=[credentials]))

    assert (parsed.bucket, parsed.access_key, parsed.secret_key) == (
        "v1-bucket",
        ACCESS_KEY,
        SECRET_KEY,
    )


def test_a_v1_secret_not_granted_says_so():
    relation = testing.Relation(
        S3_ENDPOINT,
        remote_app_data={"version": "1", "bucket": "v1-bucket", "secret-extra": "secret:nope"},
    )
    message = _not_ready_in(testing.State(relations=[relation]))

    assert message.startswith("s3-parameters relation: the provider's credentials secret")


def test_a_provider_that_sent_nothing_yet():
    relation = testing.Relation(S3_ENDPOINT, remote_app_data={})

    assert _not_ready_in(testing.State(relations=[relation])) == (
        "s3-parameters relation: the provider has not sent its settings"
    )


def test_incomplete_v1_data_names_the_missing_key():
    relation = testing.Relation(S3_ENDPOINT, remote_app_data={"version": "1", "bucket": "b-1"})

    assert "has no access-key" in _not_ready_in(testing.State(relations=[relation]))


def test_an_azure_provider_in_the_relation():
    key = testing.Secret(tracked_content={"secret-key": AZURE_KEY})
    data = {**AZURE, "version": "1", "secret-extra": key.id}
    del data["secret-key"]
    relation = testing.Relation(AZURE_ENDPOINT, remote_app_data=data)

    assert _settings_in(testing.State(relations=[relation], secrets=[key])) == parse_azure(AZURE)


def test_the_requirer_asks_for_the_credentials_secret_and_speaks_v1():
    ctx = _context()
    relation = testing.Relation(S3_ENDPOINT)
    state = testing.State(leader=True, relations=[relation])

    created = ctx.run(ctx.on.relation_created(relation), state)
    joined = ctx.run(ctx.on.relation_joined(created.get_relation(relation.id)), created)

    ours = joined.get_relation(relation.id).local_app_data
    assert json.loads(ours["requested-secrets"]) == ["access-key", "secret-key"]
    assert ours["version"] == "1"


def test_a_v0_provider_is_given_the_bucket_placeholder_it_waits_for():
    ctx = _context()
    relation = testing.Relation(S3_ENDPOINT, remote_app_data={"access-key": ACCESS_KEY})

    out = ctx.run(
        ctx.on.relation_changed(relation), testing.State(leader=True, relations=[relation])
    )

    assert out.get_relation(relation.id).local_app_data["bucket"] == f"relation-{relation.id}"


def test_settings_summary_shows_where_backups_go_and_no_credential():
    ctx = _context()
    state = testing.State(relations=[testing.Relation(S3_ENDPOINT, remote_app_data=S3_V0)])
    with ctx(ctx.on.update_status(), state) as manager:
        summary = manager.charm.storage.settings_summary()
    with ctx(ctx.on.update_status(), testing.State()) as manager:
        nothing = manager.charm.storage.settings_summary()

    assert summary["bucket"] == "kurrentdb-backups" and summary["path"] == "clusters/prod"
    assert ACCESS_KEY not in str(summary) and SECRET_KEY not in str(summary)
    assert nothing == {"backend": "none", "problem": NOTHING_RELATED}


# ---- hostile relation data --------------------------------------------------------------

KEYS = [*S3_V0, "version", "secret-extra", "requested-secrets", "data", "container"]
values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["1", "0", "abc", "1e400", "nan", "[]", '["x"]', "{}", "null", "secret:x"]),
    st.just(json.dumps([CA_PEM])),
)
databags = st.dictionaries(
    st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), values, max_size=8
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    remote=databags, leader=st.booleans(), endpoint=st.sampled_from([S3_ENDPOINT, AZURE_ENDPOINT])
)
def test_hostile_relation_data_never_fails_a_hook_or_raises_past_storage_not_ready(
    remote, leader, endpoint
):
    ctx = _context()
    relation = testing.Relation(endpoint, remote_app_data=remote)
    state = testing.State(leader=leader, relations=[relation])

    out = ctx.run(ctx.on.relation_changed(relation), state)  # no UncaughtCharmError
    with ctx(ctx.on.update_status(), out) as manager:
        try:
            manager.charm.storage.settings()
        except StorageNotReady as not_ready:
            assert "\n" not in not_ready.message
        summary = manager.charm.storage.settings_summary()
    for key in ("access-key", "secret-key"):
        secret = remote.get(key)
        if secret and len(secret) > 3:
            assert secret not in json.dumps(summary)


def test_a_provider_version_that_is_not_a_number_does_not_fail_the_hook():
    # The library parses `version` with float(); its error stays in the log.
    ctx = _context()
    relation = testing.Relation(S3_ENDPOINT, remote_app_data={**S3_V0, "version": "one"})

    ctx.run(ctx.on.relation_changed(relation), testing.State(leader=True, relations=[relation]))

    assert any("not usable yet (ValueError)" in line.message for line in ctx.juju_log)
