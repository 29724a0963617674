"""Named regression tests for what the fuzz suite found, one per defect class (plain tests)."""

from __future__ import annotations

import pytest

from config import ConfigError, parse_extra_options


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("{EnableAtomPubOverHttp: null}", "EnableAtomPubOverHttp: null"),
        ("{SkipIndexVerify: ~}", "SkipIndexVerify: null"),
        ("{SkipIndexVerify: {a: 1}}", 'SkipIndexVerify: {"a": 1}'),
        ("{MaxAppendSize: [true, null]}", "MaxAppendSize: [true, null]"),
    ],
)
def test_a_refused_extra_option_value_is_shown_as_written_not_as_python(text, shown):
    """Found by the fuzz suite: `null` showed as "None", maps as Python dicts."""
    with pytest.raises(ConfigError) as refused:
        parse_extra_options(text)
    assert shown in refused.value.message
    assert "None" not in refused.value.message and "True" not in refused.value.message
