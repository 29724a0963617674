"""`extra-options` checked against the options of the KurrentDB version a node runs.

The expected lists are the copies in tests/data/kurrentdb-options/, generated from
ClusterVNodeOptions at the tags each file's header names. hypothesis is not installed, so
the property tests below draw their cases from a seeded `random.Random`: every run checks
the same few hundred cases, and a failure names its seed.
"""

from __future__ import annotations

import itertools
import pathlib
import random

import pytest
import yaml

import config
from config import ConfigError, options_for, parse_config, parse_extra_options
from workload.render import ClusterView, NodeIdentity, kurrentdb_options, render_config_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEST_LISTS = ROOT / "tests" / "data" / "kurrentdb-options"
RUNTIME_LISTS = ROOT / "src" / "kurrentdb_options"


def read_list(path: pathlib.Path) -> tuple[list[str], dict[str, list[str]]]:
    """(tags, {name: [type, limits and flags...]}) from one data file."""
    tags: list[str] = []
    options: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# tags:"):
            tags = line.removeprefix("# tags:").split()
        elif line.strip() and not line.startswith("#"):
            name, *rest = line.split("\t")
            options[name] = rest
    return tags, options


LISTS = {path.stem: read_list(path) for path in sorted(TEST_LISTS.glob("*.txt"))}
# Every release the lists were verified for, with the list it belongs to.
RELEASES = [(tag, line) for line, (tags, _) in LISTS.items() for tag in tags]
LINES = list(LISTS)  # oldest first: 26.0.0, 26.0.2, 26.1.0


def names(line: str) -> set[str]:
    return set(LISTS[line][1])


def value_for(kind: list[str]) -> object:
    """A value of the option's type, inside its declared limits."""
    type_ = kind[0]
    if type_.startswith("enum:"):
        return type_.removeprefix("enum:").split("|")[0]
    return {
        "bool": True,
        "int": 1,
        "long": 1,
        "double": 1.5,
        "string": "x",
        "ip": "10.0.0.1",
        "endpoints": "a.example:2113",
    }[type_]


def settable(line: str) -> dict[str, object]:
    """Every option of a line that extra-options may set, with a value of its type."""
    return {
        name: value_for(kind)
        for name, kind in LISTS[line][1].items()
        if name not in config.REFUSED_OPTIONS
    }


def refused_message(raw: str, version: str | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        parse_extra_options(raw, version)
    return error.value.message


def random_case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)


# --- the data files ------------------------------------------------------------------


def test_the_charm_reads_the_same_lists_the_tests_check():
    runtime = {path.name: path.read_text() for path in RUNTIME_LISTS.glob("*.txt")}
    tests = {path.name: path.read_text() for path in TEST_LISTS.glob("*.txt")}
    assert runtime == tests
    assert set(runtime) == {"26.0.0.txt", "26.0.2.txt", "26.1.0.txt"}


@pytest.mark.parametrize("line", LINES)
def test_each_list_names_its_tags_and_source(line):
    text = (TEST_LISTS / f"{line}.txt").read_text()
    tags, _ = LISTS[line]
    assert tags[0] == line
    for tag in tags:
        assert f"#   v{tag} " in text, "each tag is named with its commit"
    assert "src/KurrentDB.Core/Configuration/ClusterVNodeOptions.cs" in text
    assert "src/KurrentDB.Logging/LoggingOptions.cs" in text


@pytest.mark.parametrize(("tag", "line"), RELEASES)
def test_the_charm_uses_each_releases_own_list(tag, line):
    applicable = options_for(tag)
    assert applicable.note is None
    assert applicable.options.names == names(line)


def test_where_the_lists_differ():
    # MaxPartitionStateCacheSize is new in 26.1.0; DisableClientAuthEkuValidation in 26.0.2.
    assert names("26.0.2") - names("26.0.0") == {"DisableClientAuthEkuValidation"}
    assert names("26.1.0") - names("26.0.2") == {"MaxPartitionStateCacheSize"}
    assert len(names("26.0.0")) == 132  # with QuorumSize, which KurrentDB knows but never binds


def test_newer_lists_keep_every_older_option_and_its_type():
    # What makes falling back to an older list safe: it can only refuse more.
    for older, newer in itertools.pairwise(LINES):
        assert names(older) <= names(newer)
        for name in names(older):
            if name != "DbLogFormat":  # 26.1 removed ExperimentalV3 (below)
                assert LISTS[older][1][name] == LISTS[newer][1][name], name
    assert LISTS["26.0.2"][1]["DbLogFormat"] == ["enum:V2|ExperimentalV3"]
    assert LISTS["26.1.0"][1]["DbLogFormat"] == ["enum:V2"]


def test_types_and_limits_are_read_from_the_list():
    specs = options_for("26.1.0").options.specs
    assert specs["MaxAppendSize"].type == "int"
    assert specs["MaxAppendSize"].maximum == 268435456
    assert specs["MaxAppendEventSize"].maximum == 16777216
    assert specs["InitializationThreads"].minimum == 1
    assert specs["ChunksCacheSize"].type == "long"
    assert specs["MinFlushDelayMs"].type == "double"
    assert specs["GossipSeed"].type == "endpoints"
    assert specs["NodeIp"].type == "ip"
    assert specs["LogFileInterval"].choices == (
        "Infinite",
        "Year",
        "Month",
        "Day",
        "Hour",
        "Minute",
    )
    assert specs["RunProjections"].choices == ("None", "System", "All")
    assert specs["DefaultAdminPassword"].flags == {"env-only", "sensitive"}
    assert specs["WorkerThreads"].flags == {"deprecated"}
    assert specs["QuorumSize"].flags == {"computed"}


def test_options_that_stop_the_node_from_a_file_are_all_refused():
    # env-only options fail startup when a file sets them; a computed one is never bound.
    for line in LINES:
        for name, (_, *extras) in LISTS[line][1].items():
            flags = set(" ".join(extras).split())
            if flags & {"env-only", "computed"}:
                assert name in config.REFUSED_OPTIONS, name


def test_every_refused_name_is_a_real_option_or_section():
    every = set().union(*(names(line) for line in LINES))
    assert set(config.REFUSED_OPTIONS) - every == {"Authorization"}  # a nested section


def test_the_default_version_is_the_image_metadata_pins():
    metadata = yaml.safe_load((ROOT / "metadata.yaml").read_text())
    assert metadata["resources"]["kurrentdb-image"]["upstream-source"] == config.DEFAULT_IMAGE
    assert config.DEFAULT_VERSION == "26.0.3"
    assert options_for(None).note is None
    assert options_for(None).options.names == names("26.0.2")


@pytest.mark.parametrize("profile", ["development", "staging", "uat", "production"])
@pytest.mark.parametrize(("tag", "line"), RELEASES)
def test_every_option_the_charm_renders_exists_in_every_supported_release(profile, tag, line):
    node = NodeIdentity(app="kurrentdb", unit_number=0, namespace="prod")
    cluster = ClusterView(size=3, peer_fqdns=("a.example", "b.example"))
    text = render_config_file(kurrentdb_options(parse_config({"profile": profile}), node, cluster))
    rendered = set(yaml.safe_load(text))
    assert rendered - names(line) - config.PLUGIN_SECTIONS == set(), tag


# --- which list a version gets ---------------------------------------------------------

VERSIONS = [
    # version, the list it is checked against, the note (None when exact)
    ("26.0.0", "26.0.0-26.0.1", None),
    ("26.0.3", "26.0.2-26.0.3", None),
    ("v26.0.3", "26.0.2-26.0.3", None),
    ("26.1.0", "26.1.0", None),
    (
        "26.0.4",
        "26.0.2-26.0.3",
        "KurrentDB 26.0.4 is newer than the releases the charm knows; checking options as for 26.0.2-26.0.3",
    ),
    (
        "26.1.1",  # its release candidate adds CompressionLevel
        "26.1.0",
        "KurrentDB 26.1.1 is newer than the releases the charm knows; checking options as for 26.1.0",
    ),
    (
        "27.0.0",
        "26.1.0",
        "KurrentDB 27.0.0 is newer than the releases the charm knows; checking options as for 26.1.0",
    ),
    (
        "26.1.0-rc.1",  # before 26.1.0: the older list
        "26.0.2-26.0.3",
        "KurrentDB 26.1.0-rc.1 is a pre-release or custom build; checking options as for 26.0.2-26.0.3",
    ),
    (
        "26.0.0-prerelease",  # what an image built from the repository's Dockerfile reports
        "26.0.0-26.0.1",
        "KurrentDB 26.0.0-prerelease is a pre-release or custom build; checking options as for 26.0.0-26.0.1",
    ),
    (
        "25.1.4",
        "26.0.0-26.0.1",
        "KurrentDB 25.1.4 is older than any option list the charm has; checking options as for 26.0.0-26.0.1",
    ),
    (
        "unknown_version",
        "26.0.0-26.0.1",
        "cannot tell the KurrentDB version from 'unknown_version'; checking options as for 26.0.0-26.0.1",
    ),
]


@pytest.mark.parametrize(("version", "label", "note"), VERSIONS)
def test_unknown_versions_use_the_closest_older_list_and_say_so(version, label, note):
    applicable = options_for(version)
    assert (applicable.version, applicable.options.label, applicable.note) == (
        version,
        label,
        note,
    )


SUPPORT = [
    (None, None),
    ("26.0.0", None),
    ("26.0.3", None),
    ("26.1.0", None),
    ("27.0.0", None),
    ("unknown_version", None),
    (
        "25.1.4",
        "KurrentDB 25.1.4 is not supported: use a KurrentDB 26.0 or newer image, e.g. docker.kurrent.io/kurrent-lts/kurrentdb:26.0.3",
    ),
    (
        "25.0.0",
        "KurrentDB 25.0.0 is not supported: use a KurrentDB 26.0 or newer image, e.g. docker.kurrent.io/kurrent-lts/kurrentdb:26.0.3",
    ),
    (
        "24.10.0",
        "KurrentDB 24.10.0 is not supported: use a KurrentDB 26.0 or newer image, e.g. docker.kurrent.io/kurrent-lts/kurrentdb:26.0.3",
    ),
]


@pytest.mark.parametrize(("version", "message"), SUPPORT)
def test_image_support(version, message):
    assert config.image_support(version) == message


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("KurrentDB version 26.0.3 ee (1234/85be5b4ffd49)\n", "26.0.3"),
        ("KurrentDB version 26.0.0-prerelease local (/abc)\n", "26.0.0-prerelease"),
        ("[ 1,12:00:00,INF] starting\nKurrentDB version 26.1.0 oss (x/y)", "26.1.0"),
        ("Could not execute because the application was not found", None),
        ("", None),
    ],
)
def test_version_from_cli(output, version):
    assert config.version_from_cli(output) == version


# --- what extra-options accepts and refuses ---------------------------------------------


@pytest.mark.parametrize(("tag", "line"), RELEASES)
def test_each_release_accepts_all_its_own_settable_options(tag, line):
    options = settable(line)
    assert parse_extra_options(yaml.safe_dump(options), tag) == options


@pytest.mark.parametrize(("tag", "line"), RELEASES)
def test_each_release_refuses_what_only_newer_lines_have(tag, line):
    index = LINES.index(line)
    for before, newer in zip(LINES[index:], LINES[index + 1 :], strict=False):
        for name in names(newer) - names(before):  # first added in `newer`
            assert refused_message(f"{{{name}: true}}", tag) == (
                f"invalid config extra-options={name!r}: not in KurrentDB {tag}"
                f" (added in {newer}): remove it or use a {newer}+ image"
            )


@pytest.mark.parametrize("version", ["26.0.2", "26.0.3", "26.1.0"])
def test_eku_validation_switch_is_accepted_from_26_0_2(version):
    assert parse_extra_options("{DisableClientAuthEkuValidation: true}", version) == {
        "DisableClientAuthEkuValidation": True
    }


def test_partition_cache_size_is_accepted_from_26_1():
    assert parse_extra_options("{MaxPartitionStateCacheSize: 5000}", "26.1.0") == {
        "MaxPartitionStateCacheSize": 5000
    }
    assert "added in 26.1.0" in refused_message("{MaxPartitionStateCacheSize: 5000}", None)


REFUSED = [
    (
        "OverrideAnonymousEndpointAccessForGossip: false",
        "invalid config extra-options='OverrideAnonymousEndpointAccessForGossip': the charm reads /gossip without credentials for its health checks",
    ),
    (
        "AuthorizationType: policy",
        "invalid config extra-options='AuthorizationType': the charm's users and anonymous /gossip need the built-in authorization",
    ),
    (
        "AuthorizationConfig: /etc/authz.conf",
        "invalid config extra-options='AuthorizationConfig': the charm's users and anonymous /gossip need the built-in authorization",
    ),
    (
        "Authorization: {DefaultPolicyType: streampolicy}",
        "invalid config extra-options='Authorization': the charm's users and anonymous /gossip need the built-in authorization",
    ),
    (
        "EnableTrustedAuth: true",
        "invalid config extra-options='EnableTrustedAuth': lets any client act as any user, $admins too, by sending a header",
    ),
    (
        "LogHttpRequests: true",
        "invalid config extra-options='LogHttpRequests': logs request headers and bodies: the charm's passwords would be logged",
    ),
    (
        "AdvertiseHostToClientAs: db.example",
        "invalid config extra-options='AdvertiseHostToClientAs': the charm finds its node in /gossip by the address this changes",
    ),
    (
        "UnsafeAllowSurplusNodes: true",
        "invalid config extra-options='UnsafeAllowSurplusNodes': the charm's resize plans need surplus nodes to exit; as clones they can lose data",
    ),
    (
        "DisableAdminUi: true",
        "invalid config extra-options='DisableAdminUi': the charm needs the admin API (resign, reload, shutdown)",
    ),
    (
        "DisableGossipOnHttp: true",
        "invalid config extra-options='DisableGossipOnHttp': the charm reads /gossip for its health checks",
    ),
    (
        "DisableStatsOnHttp: true",
        "invalid config extra-options='DisableStatsOnHttp': Prometheus scrapes /metrics, which this turns off",
    ),
    (
        "QuorumSize: 2",
        "invalid config extra-options='QuorumSize': KurrentDB computes it from ClusterSize; it cannot be set",
    ),
    (
        "insecure: true",  # KurrentDB ignores the case of names, so the charm does too
        "invalid config extra-options='Insecure': the charm always runs KurrentDB with TLS and authentication",
    ),
    (
        "TelemetryOptout: true",
        "invalid config extra-options='TelemetryOptout': KurrentDB takes it only from the environment; in the file it stops",
    ),
    (
        "LogLevel: Debug",
        "invalid config extra-options='LogLevel': use the charm's log-level option",
    ),
    (
        "Metrics: {ExpectedScrapeIntervalSeconds: 5}",
        "invalid config extra-options='Metrics.ExpectedScrapeIntervalSeconds': set by the charm (it follows the profile's scrape interval)",
    ),
    (
        "metrics: {expectedScrapeIntervalSeconds: 5}",
        "invalid config extra-options='Metrics.expectedScrapeIntervalSeconds': set by the charm (it follows the profile's scrape interval)",
    ),
    (
        "Metrics: {Meters: [EventStore.Core]}",
        "invalid config extra-options='Metrics.Meters': the charm's dashboards and alert rules need KurrentDB's own metric names",
    ),
    (
        "{GossipSeed: a:2113, ClusterDns: x, AdvertiseHostToClientAs: y}",
        "invalid config extra-options='AdvertiseHostToClientAs': the charm finds its node in /gossip by the address this changes (and 2 more refused)",
    ),
    (
        "{GossipSeed: a:2113, ClusterDns: x}",
        "invalid config extra-options='ClusterDns, GossipSeed': set by the charm (it forms the cluster from its units)",
    ),
]


@pytest.mark.parametrize(("raw", "message"), REFUSED)
@pytest.mark.parametrize("tag", [tag for tag, _ in RELEASES])
def test_options_that_break_the_charm_are_refused_with_the_reason(raw, message, tag):
    assert refused_message(raw, tag) == message


UNKNOWN = [
    (
        "ClusterSise: 3",
        "invalid config extra-options='ClusterSise': not a KurrentDB 26.0.3 option: remove it (did you mean ClusterSize?)",
    ),
    (
        "maxappendsise: 3",
        "invalid config extra-options='maxappendsise': not a KurrentDB 26.0.3 option: remove it (did you mean MaxAppendSize?)",
    ),
    (
        "IntTcpPort: 1112",
        "invalid config extra-options='IntTcpPort': removed in KurrentDB 25.0: use ReplicationPort",
    ),
    (
        "AdminOnExt: true",  # still in the networking docs, gone from the code
        "invalid config extra-options='AdminOnExt': not a KurrentDB 26.0.3 option: remove it",
    ),
    (
        # A section named after an option group is not bound: KurrentDB would ignore it.
        "Cluster: {ClusterSize: 5}",
        "invalid config extra-options='Cluster': not a KurrentDB 26.0.3 option: remove it (did you mean ClusterDns?)",
    ),
    (
        "{MaxAppendSize: 5, maxAppendSize: 6}",
        "invalid config extra-options='MaxAppendSize, maxAppendSize': given twice (KurrentDB ignores the case of option names)",
    ),
]


@pytest.mark.parametrize(("raw", "message"), UNKNOWN)
def test_unknown_names_say_which_version_and_what_to_do(raw, message):
    assert refused_message(raw) == message


def test_names_come_back_in_kurrentdbs_spelling():
    assert parse_extra_options("{maxappendsize: 5, secondaryINDEXING: {Enabled: false}}") == {
        "MaxAppendSize": 5,
        "SecondaryIndexing": {"Enabled": False},
    }


def test_a_stored_configuration_can_be_checked_against_a_new_version():
    stored = parse_config({"extra-options": "{MaxPartitionStateCacheSize: 10}"}, "26.1.0")
    assert config.validate_extra_options(stored.extra_options, "26.1.0") == {
        "MaxPartitionStateCacheSize": 10
    }
    with pytest.raises(ConfigError, match=r"added in 26\.1\.0"):
        config.validate_extra_options(stored.extra_options, "26.0.3")


# --- properties, over seeded random cases -----------------------------------------------

SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_any_subset_of_settable_options_in_any_case_is_accepted(seed):
    rng = random.Random(seed)
    tag, line = rng.choice(RELEASES)
    options = settable(line)
    chosen = rng.sample(sorted(options), rng.randint(1, 12))
    raw = {random_case(rng, name): options[name] for name in chosen}
    assert parse_extra_options(yaml.safe_dump(raw), tag) == {name: options[name] for name in chosen}


@pytest.mark.parametrize("seed", SEEDS)
def test_one_refused_option_among_good_ones_is_named(seed):
    rng = random.Random(seed)
    tag, line = rng.choice(RELEASES)
    options = settable(line)
    good = {name: options[name] for name in rng.sample(sorted(options), rng.randint(0, 8))}
    bad = rng.choice(sorted(set(config.REFUSED_OPTIONS) & names(line)))
    spelled = random_case(rng, bad)
    message = refused_message(yaml.safe_dump({**good, spelled: True}), tag)
    assert message == f"invalid config extra-options={bad!r}: {config.REFUSED_OPTIONS[bad]}"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_name_no_release_has_is_refused_naming_the_version(seed):
    rng = random.Random(seed)
    tag, _ = rng.choice(RELEASES)
    every = {name.lower() for name in set().union(*(names(x) for x in LINES))}
    known = every | {name.lower() for name in config.PLUGIN_SECTIONS | set(config.REFUSED_OPTIONS)}
    known |= {name.lower() for name in config.RENAMED_OPTIONS}
    name = ""
    while not name or name.lower() in known:
        name = "".join(rng.choice("AbCdEeIiLlMnOoPsTx") for _ in range(rng.randint(3, 20)))
    message = refused_message(yaml.safe_dump({name: 1}), tag)
    assert message.startswith(
        f"invalid config extra-options={name!r}: not a KurrentDB {tag} option: remove it"
    )
