"""`extra-options` is untrusted YAML: bounded to read, typed to render, never a hook error."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config
from config import ConfigError, parse_extra_options

SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("{MaxAppendSize: 2020-01-01}", "a date cannot be written for KurrentDB; quote it"),
        ("{Transform: !!binary aGVsbG8=}", "binary data cannot be written for KurrentDB"),
        ("{Transform: !!set {a, b}}", "a set cannot be written for KurrentDB"),
        ("{Licensing: {1: a}}", "keys must be names (strings)"),
        ("{Licensing: {When: 2020-01-01}}", "a date cannot be written"),
        ("a: &a [x, x]\nb: [*a, *a]", "YAML aliases (*name) are not allowed"),
        ("{Licensing: " + "{a: " * 5000 + "1" + "}" * 5000 + "}", "nested deeper than 8"),
        ("{MaxAppendSize: 1, MaxAppendSize: 2}", "given twice"),
        ("{SecondaryIndexing: {insecure: true}}", "TLS"),
        ("{Licensing: {Nested: {CertificateFile: /x}}}", "set by the charm"),
        ("{MaxAppendSize: .nan}", "a finite number"),
        ("{MaxAppendSize: -.inf}", "a finite number"),
        ("{MaxAppendSize: 123456789012345678901234567890123}", "64-bit at most"),
        ("{MaxAppendSize: true}", "a whole number from"),
        ("{MaxAppendSize: 999999999999}", "to 268435456"),
        ("{MaxAppendSize: ~}", "a whole number from"),
        ("{SkipIndexVerify: 'yes'}", "true or false"),
        ("{DbLogFormat: Bogus}", "one of V2, ExperimentalV3"),
        ("{Transform: '" + "x" * 70_000 + "'}", "at most 65536 bytes"),
    ],
)
def test_unusable_values_are_refused_with_the_reason(text, allowed):
    with pytest.raises(ConfigError) as refused:
        parse_extra_options(text)
    assert allowed in refused.value.message
    assert refused.value.message.startswith("invalid config extra-options=")
    assert len(refused.value.message) < 200 and "\n" not in refused.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{maxappendsize: 1048576}", {"MaxAppendSize": 1048576}),
        ("{DbLogFormat: v2}", {"DbLogFormat": "v2"}),
        ("{SkipIndexVerify: true, ChunkInitialReaderCount: 5}", None),
        ("{Licensing: {LicenseKey: abc, Nested: {Deep: [1, 2.5, x]}}}", None),
    ],
)
def test_usable_values_are_kept(text, expected):
    options = parse_extra_options(text)
    assert options == (expected or yaml.safe_load(text))


def test_the_loader_refuses_before_recursing_or_expanding():
    # A billion-laughs chain of 10 levels: refused at its first alias, never built.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    with pytest.raises(ConfigError, match="aliases"):
        parse_extra_options("\n".join(lines))


yaml_ish = st.lists(
    st.sampled_from(
        [*"{}[],:&*!|>-'\"#~ \n\tabcxyzMAX019.eE+", "!!binary ", "!!set ", "&a ", "*a"]
    ),
    max_size=60,
).map("".join)


@SETTINGS
@given(text=yaml_ish)
def test_any_text_is_options_or_a_config_error(text):
    try:
        options = parse_extra_options(text)
    except ConfigError as e:
        assert "\n" not in e.message
        return
    assert isinstance(options, dict)
    assert all(isinstance(k, str) for k in options)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    name=st.sampled_from([*sorted(config.options_for().options.names), "Licensing", "Metrics"]),
    value=json_values,
)
def test_any_value_of_any_option_is_kept_typed_or_refused(name, value):
    try:
        options = config.validate_extra_options({name: value})
    except ConfigError as e:
        assert "\n" not in e.message
        return
    spec = config.options_for().options.specs.get(name)
    kept = next(iter(options.values()))
    if spec is not None and spec.type == "bool":
        assert isinstance(kept, bool)
    if spec is not None and spec.type in ("int", "long"):
        assert isinstance(kept, int) and not isinstance(kept, bool)
