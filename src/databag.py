"""Write relation data only when it changed: each write wakes the other side with a hook."""

from __future__ import annotations

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
