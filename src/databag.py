"""Relation plumbing shared by the capabilities.

Write relation data only when it changed (each write wakes the other side with a hook), and
build a relation library's object only in the hooks that need it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import ops


def update_databag(databag: ops.RelationDataContent, data: Mapping[str, str]) -> bool:
    """Set the given keys (an empty value removes one); return whether anything changed."""
    changed = False
    for key, value in data.items():
        if databag.get(key, "") != value:
            databag[key] = value
            changed = True
    return changed


def relation_library_needed(model: ops.Model, endpoint: str) -> bool:
    """Whether this hook must build the library object that serves `endpoint`.

    Such objects observe events and cost their import in every hook, so they are built only
    while the relation exists, and in its relation-broken hook, where ops no longer lists
    the relation but the library still has to clean up after it.
    """
    if model.relations.get(endpoint):
        return True
    return os.environ.get("JUJU_DISPATCH_PATH", "").endswith(f"hooks/{endpoint}-relation-broken")
