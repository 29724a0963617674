"""Properties of the version-aware `extra-options` check, with hypothesis.

Skipped where hypothesis is not installed; test_config_versions.py checks the same
properties over seeded random cases, and the tables.
"""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config_versions import LINES, LISTS, RELEASES, names, settable

import config
from config import ConfigError, options_for, parse_extra_options, parse_version

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

releases = st.sampled_from(RELEASES)
suffixes = st.sampled_from(["", "-rc.1", "-prerelease", "-alpha.2", "+build.7"])
versions = st.builds(
    lambda major, minor, patch, suffix: f"{major}.{minor}.{patch}{suffix}",
    st.integers(24, 28),
    st.integers(0, 12),
    st.integers(0, 12),
    suffixes,
)


def cased(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(name, upper, strict=True)
        )
    )


@SETTINGS
@given(versions)
def test_a_fallback_list_never_holds_an_option_a_newer_release_lacks(version):
    # Whatever list a version gets, every verified release at or after it has all of it:
    # an unknown version may see options refused, never accepted where they stop the node.
    chosen = options_for(version).options.names
    parsed = parse_version(version)
    for tag, line in RELEASES:
        if parse_version(tag) >= parsed:
            assert chosen <= names(line), (version, tag)


@SETTINGS
@given(versions)
def test_only_releases_before_26_are_blocked(version):
    message = config.image_support(version)
    assert (message is not None) == (parse_version(version) < (26, 0, 0))
    if message:
        assert message.startswith(f"KurrentDB {version} is not supported: use a KurrentDB 26.0")


@SETTINGS
@given(releases, st.data())
def test_settable_options_in_any_case_are_accepted_in_kurrentdbs_spelling(release, data):
    tag, line = release
    options = settable(line)
    chosen = data.draw(
        st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=15, unique=True)
    )
    raw = {data.draw(cased(name)): options[name] for name in chosen}
    assert parse_extra_options(yaml.safe_dump(raw), tag) == {name: options[name] for name in chosen}


@SETTINGS
@given(releases, st.data())
def test_a_refused_option_in_any_case_is_refused_with_its_reason(release, data):
    tag, line = release
    options = settable(line)
    good = data.draw(st.lists(st.sampled_from(sorted(options)), max_size=8, unique=True))
    bad = data.draw(st.sampled_from(sorted(set(config.REFUSED_OPTIONS) & names(line))))
    raw = {**{name: options[name] for name in good}, data.draw(cased(bad)): True}
    with pytest.raises(ConfigError) as error:
        parse_extra_options(yaml.safe_dump(raw), tag)
    assert error.value.message == (
        f"invalid config extra-options={bad!r}: {config.REFUSED_OPTIONS[bad]}"
    )


@SETTINGS
@given(releases, st.data())
def test_options_of_newer_lines_are_refused_naming_the_line_that_added_them(release, data):
    tag, line = release
    later = LINES[LINES.index(line) + 1 :]
    if not later:
        return
    added = sorted(set().union(*(names(x) for x in later)) - names(line))
    name = data.draw(st.sampled_from(added))
    since = next(x for x in LINES if name in LISTS[x][1])
    with pytest.raises(ConfigError) as error:
        parse_extra_options(yaml.safe_dump({name: 1}), tag)
    assert error.value.message == (
        f"invalid config extra-options={name!r}: not in KurrentDB {tag}"
        f" (added in {since}): remove it or use a {since}+ image"
    )


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.one_of(
    st.sampled_from(sorted(names("26.1.0") | config.PLUGIN_SECTIONS | set(config.REFUSED_OPTIONS))),
    st.text(min_size=1, max_size=30),
)


@SETTINGS
@given(st.dictionaries(keys, values, min_size=1, max_size=6), versions)
def test_any_map_is_accepted_or_refused_with_a_short_message(options, version):
    # Never another exception: the charm shows ConfigError as a blocked status.
    try:
        result = config.validate_extra_options(options, version)
    except ConfigError as e:
        assert e.message.startswith("invalid config extra-options=")
        assert len(e.message) < 200
    else:
        known = options_for(version).options
        for name in result:
            assert known.canonical(name) == name or name in config.PLUGIN_SECTIONS
            assert name not in config.REFUSED_OPTIONS


@SETTINGS
@given(
    versions, st.sampled_from(["ee", "oss", "local", ""]), st.text("abcdef0123456789", max_size=12)
)
def test_the_cli_version_is_read_back(version, edition, sha):
    assert config.version_from_cli(f"KurrentDB version {version} {edition} (1/{sha})\n") == version
