"""What both backends do with a failure before it leaves them: a checked code, quiet loggers.

A storage server's error code is the server's text, so it is checked before it reaches an
action result; the client libraries' own loggers print requests (botocore's debug log has
the `Authorization` header, with the access key in it), and a charm's root logger sends
everything to `juju debug-log`, so those loggers are held at WARNING.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from backup.store import StorageError

_SAFE_CODE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Every backend says "no such object" this one way, so the engine need not know which.
ABSENT = "NoSuchKey"


def checked_code(code: object, status: int | None) -> str:
    """``code`` when it looks like an error code, else one made from the HTTP status."""
    text = code if isinstance(code, str) else ""
    if _SAFE_CODE.fullmatch(text):
        return text
    return f"HTTP{status}" if status else "UnknownError"


def storage_error(code: str, status: int | None, transient_codes: frozenset[str]) -> StorageError:
    """A StorageError for a server's answer: retry on throttling codes and any 5xx."""
    return StorageError(code, transient=code in transient_codes or (status or 0) >= 500)


def quiet(*logger_names: str) -> None:
    """Hold the client library's loggers at WARNING (their debug lines carry credentials)."""
    for name in logger_names:
        library_logger = logging.getLogger(name)
        if library_logger.getEffectiveLevel() < logging.WARNING:
            library_logger.setLevel(logging.WARNING)


def find_in_chain(error: BaseException, kind: type[Any]) -> Any:
    """``error`` or the first exception it was raised from that is a ``kind``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
