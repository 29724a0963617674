"""Where test backups come from: one source, varied per test with `source`."""

from __future__ import annotations

import dataclasses

from backup.manifest import SourceInfo

SOURCE = SourceInfo(
    kurrentdb_version="26.1.0",
    cluster="kurrentdb",
    application="kurrentdb",
    unit="kurrentdb/1",
    model="prod",
    model_uuid="0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f",
    charm_revision=7,
)


def source(**changes: object) -> SourceInfo:
    """`SOURCE` with some fields changed."""
    return dataclasses.replace(SOURCE, **changes)  # type: ignore[arg-type]
