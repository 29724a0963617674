"""`extra-options` as untrusted YAML: bounded to load, and every value of the type KurrentDB wants.

The text comes from `juju config`; the rendered file is read by KurrentDB, which stops on
a value it cannot bind. So the YAML is read without aliases (a 400-byte alias chain can
expand to megabytes), with bounded size and depth, without duplicate keys, and only into
what JSON can carry (no dates, binary, sets or non-string keys). Then each value of a known
option is checked against the type and limits in the option list of the node's version
(`src/kurrentdb_options/*.txt`, from ClusterVNodeOptions and its validator).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any

import yaml

MAX_TEXT_BYTES = 64 * 1024
MAX_DEPTH = 8  # a plugin section is a map of maps at most a few levels deep
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class OptionValueError(ValueError):
    """Why a value cannot be used: `path` names the option, `allowed` what would be."""

    def __init__(self, path: str, value: object, allowed: str):
        super().__init__(f"{path}: {allowed}")
        self.path, self.value, self.allowed = path, value, allowed


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: refused as a non-string key later
            continue
        if duplicate:
            raise OptionValueError(str(key), key, "given twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load(text: str) -> Any:
    """Parse the option's YAML; raises OptionValueError or yaml.YAMLError."""
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise OptionValueError("extra-options", text, f"at most {MAX_TEXT_BYTES} bytes")
    depth = 0
    # The event stream is flat, so depth and aliases are checked before anything recursive
    # (PyYAML's composer recurses once per level).
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise OptionValueError("extra-options", text, "YAML aliases (*name) are not allowed")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise OptionValueError("extra-options", text, f"nested deeper than {MAX_DEPTH}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def check_plain(path: str, value: Any) -> None:
    """Only what JSON can render, so the file KurrentDB reads says what the user wrote."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise OptionValueError(path, value, "a number KurrentDB can hold (64-bit at most)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OptionValueError(path, value, "a finite number (no .nan or .inf)")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_plain(f"{path}[{index}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise OptionValueError(f"{path}.{key}", key, "keys must be names (strings)")
            check_plain(f"{path}.{key}", item)
        return
    kind = {"date": "a date", "datetime": "a date", "bytes": "binary data", "set": "a set"}.get(
        type(value).__name__, "this kind of value"
    )
    raise OptionValueError(path, value, f"{kind} cannot be written for KurrentDB; quote it")


def refuse_names_at_depth(path: str, value: Any, refused: Callable[[str], str | None]) -> None:
    """No key below the top level may be one the charm refuses (KurrentDB ignores case)."""
    if isinstance(value, dict):
        for key, item in value.items():
            reason = refused(str(key))
            if reason:
                raise OptionValueError(f"{path}.{key}", key, reason)
            refuse_names_at_depth(f"{path}.{key}", item, refused)
    elif isinstance(value, list):
        for item in value:
            refuse_names_at_depth(path, item, refused)


def check_typed(name: str, value: Any, spec: Any) -> None:
    """A known option's value against its type and limits (`config.OptionSpec`)."""
    kind = spec.type
    if "env-only" in spec.flags:
        raise OptionValueError(name, value, "KurrentDB reads it from the environment only")
    if kind == "bool":
        if not isinstance(value, bool):
            raise OptionValueError(name, value, "true or false")
    elif kind in ("int", "long"):
        low, high = _INT32 if kind == "int" else _INT64
        low = spec.minimum if spec.minimum is not None else low
        high = spec.maximum if spec.maximum is not None else high
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise OptionValueError(name, value, f"a whole number from {low} to {high}")
    elif kind == "double":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value):
            raise OptionValueError(name, value, "a number")
    elif kind == "enum":
        choices = {choice.lower(): choice for choice in spec.choices}
        if not isinstance(value, str) or value.lower() not in choices:
            raise OptionValueError(name, value, f"one of {', '.join(spec.choices)}")
    elif kind == "ip":
        try:
            ipaddress.ip_address(value if isinstance(value, str) else "")
        except ValueError:
            raise OptionValueError(name, value, "an IP address") from None
    elif kind in ("string", "endpoints") and (
        not isinstance(value, str | int | float) or isinstance(value, bool)
    ):
        raise OptionValueError(name, value, "a string")


def check_known(options: Mapping[str, Any], specs: Mapping[str, Any]) -> None:
    """Every option with a declared type holds a value of it."""
    for name, value in options.items():
        if name in specs:
            check_typed(name, value, specs[name])
