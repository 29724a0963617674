"""Bad config values: a blocked status naming option, value and what is allowed; the node
keeps running on its last good configuration."""

from __future__ import annotations

import pytest
from conftest import unit_state
from ops import testing

from config import ConfigError, parse_config
from workload import paths

BAD_VALUES = [
    (
        {"profile": "prod"},
        "invalid config profile='prod': allowed: development, staging, uat, production",
    ),
    (
        {"log-level": "loud"},
        "invalid config log-level='loud': allowed: Verbose, Debug, Information, Warning, Error, Fatal or empty",
    ),
    (
        {"run-projections": "some"},
        "invalid config run-projections='some': allowed: none, system, all",
    ),
    (
        {"extra-options": "[1, 2]"},
        "invalid config extra-options='[1, 2]': must be a YAML map of KurrentDB options",
    ),
    (
        {"extra-options": "{a: b"},
        "invalid config extra-options='{a: b': must be a YAML map of KurrentDB options",
    ),
    (
        {"extra-options": "{ClusterSise: 3}"},
        "invalid config extra-options='ClusterSise': not a KurrentDB 26.0.3 option: remove it (did you mean ClusterSize?)",
    ),
    (
        {"extra-options": "{Insecure: true, Db: /tmp}"},
        "invalid config extra-options='Db': set by the charm (its storage) (and 1 more refused)",
    ),
    (
        {"extra-options": "{ExtIp: 0.0.0.0}"},
        "invalid config extra-options='ExtIp': removed in KurrentDB 25.0: use NodeIp",
    ),
    (
        {"extra-options": "{MaxPartitionStateCacheSize: 1000}"},
        "invalid config extra-options='MaxPartitionStateCacheSize': not in KurrentDB 26.0.3 (added in 26.1.0): remove it or use a 26.1.0+ image",
    ),
    (
        {"extra-options": "{OverrideAnonymousEndpointAccessForGossip: false}"},
        "invalid config extra-options='OverrideAnonymousEndpointAccessForGossip': the charm reads /gossip without credentials for its health checks",
    ),
    (
        {"extra-options": "{allowanonymousendpointaccess: false}"},
        "invalid config extra-options='AllowAnonymousEndpointAccess': set by the charm (Prometheus scrapes /metrics without a user)",
    ),
    (
        {"extra-options": "{AllowAnonymousStreamAccess: true}"},
        "invalid config extra-options='AllowAnonymousStreamAccess': streams always need a KurrentDB user (the charm keeps it off)",
    ),
    (
        {"extra-options": "{Licensing: abc}"},
        "invalid config extra-options='Licensing': a plugin section must be a YAML map",
    ),
    (
        {"extra-options": "{GossipTimeoutMs: {a: 1}}"},
        "invalid config extra-options='GossipTimeoutMs: {\"a\": 1}': a whole number from -2147483648 to 2147483647",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD_VALUES)
def test_parse_config_names_option_value_and_allowed(raw, message):
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert error.value.message == message


def test_long_values_are_shortened_in_the_message():
    with pytest.raises(ConfigError) as error:
        parse_config({"profile": "x" * 100})
    assert "x" * 37 + "..." in error.value.message
    assert len(error.value.message) < 140


def test_values_are_case_insensitive_where_kurrentdb_is():
    config = parse_config({"profile": "Staging", "log-level": "DEBUG", "run-projections": "All"})
    assert (config.profile.value, config.log_level, config.run_projections.value) == (
        "staging",
        "Debug",
        "all",
    )


@pytest.mark.parametrize(("raw", "message"), BAD_VALUES)
def test_bad_value_blocks_and_keeps_last_good_config(
    ctx, volumes, internal_ca, pebble_calls, raw, message
):
    # Given a running node with a good configuration
    state = unit_state(volumes, internal_ca, config={"log-level": "Information"})
    state = ctx.run(ctx.on.config_changed(), state)
    good_file = volumes.read(paths.CONFIG_FILE)
    restarts_before, signals_before = pebble_calls.restarts, list(pebble_calls.signals)

    # When the user sets one bad value
    bad = testing.State(**{**state.__dict__, "config": {"log-level": "Information", **raw}})
    out = ctx.run(ctx.on.config_changed(), bad)

    # Then the unit is blocked with a message naming it, and nothing changed on the node
    assert out.unit_status == testing.BlockedStatus(message)
    assert volumes.read(paths.CONFIG_FILE) == good_file
    assert pebble_calls.restarts == restarts_before
    assert pebble_calls.signals == signals_before
    assert out.get_container(paths.CONTAINER).service_statuses[paths.SERVICE].value == "active"


def test_fixing_the_value_clears_the_block(ctx, volumes, internal_ca):
    state = unit_state(volumes, internal_ca, config={"profile": "nope"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    # With no good configuration ever seen, the charm does not start KurrentDB on a guess.
    assert not volumes.host_path(paths.CONFIG_FILE).exists()

    fixed = testing.State(**{**out.__dict__, "config": {"profile": "staging"}})
    out = ctx.run(ctx.on.config_changed(), fixed)
    assert not isinstance(out.unit_status, testing.BlockedStatus)
    assert 'LogLevel: "Information"' in volumes.read(paths.CONFIG_FILE)
