"""Every form a leaked secret could take: the tests' oracle, kept apart from `redact`."""

from __future__ import annotations

import base64
import json
import urllib.parse


def encodings(secret: str, user: str | None = None) -> set[str]:
    """Raw, JSON-escaped, URL-encoded, base64, and base64 of `<user>:<secret>` (Basic auth)."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
    }
    for login in (user,) if user else ("admin", "ops"):
        forms.add(base64.b64encode(f"{login}:{secret}".encode()).decode())
    return forms
