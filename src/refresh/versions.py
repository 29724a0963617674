"""Which KurrentDB version changes a refresh may make online, from KurrentDB's own rules.

Facts (KurrentDB docs, `docs/server/quick-start/upgrade-guide.md` at v26.1.0, "Upgrade
procedure"; `docs/server/release-schedule/README.md`):
- versions are `Major.Minor.Patch`, the major being the year; LTS releases are `26.0`,
  `27.0` (before 26: `23.10`, `24.10`);
- an online rolling upgrade into 26.x is supported from 25.1, 25.0, 24.10, 23.10 and 22.10,
  one node at a time, followers first, each back as a follower before the next;
- "except during rolling upgrades, cluster nodes should be running the exact same version".

The charm adds one rule of its own: the data must never be handed to an older major than
the newest one every node has run, since a major may change what it writes (24.10 renamed
persistent-subscription checkpoints, 25.1 added the secondary index). A rollback to the
version the refresh started from stays allowed while the refresh is under way: until it
completes, the data counts as written by the version it started from.
"""

from __future__ import annotations

from dataclasses import dataclass

from config import Release, parse_version

# The release lines each major can be reached from online (upgrade-guide.md, v26.1.0).
ONLINE_FROM: dict[int, frozenset[tuple[int, int]]] = {
    26: frozenset({(25, 1), (25, 0), (24, 10), (23, 10), (22, 10)}),
}


@dataclass(frozen=True)
class Refusal:
    """Why a version change may not go ahead online, and what would make it go."""

    reason: str


def _line(release: Release) -> str:
    return f"{release[0]}.{release[1]}"


def check_change(
    running: str | None, target: str | None, data_written_by: str | None
) -> Refusal | None:
    """None when nodes running ``running`` may be refreshed to ``target`` one at a time.

    ``data_written_by`` is the newest KurrentDB every node has run on this data (None when
    unknown: a cluster deployed before the charm recorded it). A version the charm cannot
    read is not refused here: the image check says what it makes of it.
    """
    new = parse_version(target)
    if new is None:
        return None
    written = parse_version(data_written_by)
    if written is not None and new[0] < written[0]:
        return Refusal(
            f"KurrentDB {target} is an older major than {data_written_by}, which every node "
            "has run on this data: it may not read what that version wrote"
        )
    old = parse_version(running)
    if old is None or new[0] <= old[0]:
        return None  # the same major (any minor or patch, either way), or an older one
    allowed = ONLINE_FROM.get(new[0])
    if allowed is None:
        return Refusal(
            f"the charm does not know whether KurrentDB {_line(new)} rolls online from "
            f"{_line(old)}: KurrentDB's upgrade guide for {_line(new)} says"
        )
    if (old[0], old[1]) not in allowed:
        lines = ", ".join(f"{a}.{b}" for a, b in sorted(allowed, reverse=True))
        return Refusal(
            f"KurrentDB {_line(new)} rolls online only from {lines}, not from {running}: "
            "refresh to one of those first"
        )
    return None


def newest(*versions: str | None) -> str | None:
    """The newest of the readable versions given (None when there is none)."""
    readable = [(parse_version(v), v) for v in versions if parse_version(v) is not None]
    if not readable:
        return None
    return max(readable, key=lambda pair: pair[0] or (0, 0, 0))[1]
