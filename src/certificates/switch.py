"""Moving every node from one CA to another without two nodes ever failing to authenticate.

A KurrentDB node accepts a peer only if the peer's certificate chains to a root in its own
trusted-roots directory, in both directions (node-to-node TLS is mutual). So a node may
present a certificate from a new root only once every other node trusts that root, and a
node may stop trusting a root only once no node presents it. Both facts come from the
nodes themselves, through peer data, and peer data arrives late and in any order; so the
leader decides and each unit acknowledges what it applied:

- each unit publishes (`UnitTls`) the root it wants to present (the root of the newest
  certificate it holds that KurrentDB would accept: the provider's when related, else the
  internal CA's), the roots its node trusts and the root it presents, the last two only
  once applied (files pushed, KurrentDB reloaded);
- the leader publishes (`Plan`) the roots every node must trust and, per unit, the root it
  may present (its grant). It adds a root to the trust at once; it grants a unit its wanted
  root only once every unit acknowledged trusting it; it drops a root from the trust only
  once no unit wants it, is granted it or acknowledges presenting it;
- a unit trusts exactly the plan's roots, and presents its grant.

Why that is safe when units act on stale data: a unit only ever presents a root the leader
granted, and the leader grants a root only after every unit acknowledged trusting it; a
root leaves the trust only after every unit acknowledged presenting something else, and no
grant names it any more, so no unit can move back to it on a stale read. A unit that has
published nothing yet (a new pod) starts from the plan: it trusts the plan's roots and
presents its grant, the internal CA's root until it has one.

Each step is a certificate reload, never a restart. The steps the issue lists (trust old +
new everywhere; switch node certificates; drop the old root) are what this produces; the
multi-unit tests play it in every order hypothesis finds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tls

_LIMIT = 16  # roots a databag may name; more is not a real deployment
_PEM_LIMIT = 16_384  # one root certificate in PEM; real ones are 1-2 KiB


@dataclass(frozen=True)
class UnitTls:
    """One unit's TLS facts in its peer databag (roots by fingerprint)."""

    wants: str | None = None  # the root of the certificate it would present if granted
    trusts: frozenset[str] = frozenset()  # applied on its node
    presents: str | None = None  # applied on its node

    def to_json(self) -> str:
        """The databag form."""
        return json.dumps(
            {"wants": self.wants, "trusts": sorted(self.trusts), "presents": self.presents},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> UnitTls | None:
        """None for a unit that published nothing usable (it has not applied anything)."""
        raw = _object(text)
        if raw is None:
            return None
        trusts = _fingerprints(raw.get("trusts"))
        if trusts is None:
            return None
        return cls(
            wants=_fingerprint(raw.get("wants")),
            trusts=trusts,
            presents=_fingerprint(raw.get("presents")),
        )


@dataclass(frozen=True)
class Plan:
    """The leader's TLS plan in the peer app databag."""

    trust: frozenset[str] = frozenset()
    grants: Mapping[str, str] = field(default_factory=dict)
    # The PEM of every trusted root but the internal CA's (every unit has that one), so
    # that a unit can trust a root it holds no certificate from.
    pems: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The databag form."""
        return json.dumps(
            {
                "trust": sorted(self.trust),
                "grants": dict(sorted(self.grants.items())),
                "pems": dict(sorted(self.pems.items())),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Plan:
        """The plan a databag holds; anything unusable reads as no plan."""
        raw = _object(text) or {}
        trust = _fingerprints(raw.get("trust")) or frozenset()
        grants_raw = raw.get("grants")
        grants = {}
        if isinstance(grants_raw, dict) and len(grants_raw) <= 1000:
            for unit, root in grants_raw.items():
                if isinstance(unit, str) and len(unit) <= 100 and _fingerprint(root):
                    grants[unit] = root
        return cls(trust=trust, grants=grants, pems=verified_pems(raw.get("pems")))

    def grant(self, unit: str, fallback: str) -> str:
        """The root ``unit`` may present; ``fallback`` (the internal root) before any."""
        return self.grants.get(unit, fallback)


def verified_pems(raw: Any) -> dict[str, str]:
    """The {fingerprint: PEM} pairs whose PEM has that fingerprint (untrusted input)."""
    if not isinstance(raw, dict) or len(raw) > _LIMIT:
        return {}
    return {
        fp: pem
        for fp, pem in raw.items()
        if isinstance(pem, str) and len(pem) <= _PEM_LIMIT and tls.fingerprint(pem) == fp
    }


def next_plan(
    plan: Plan,
    units: Mapping[str, UnitTls | None],
    internal_root: str,
    offered: Mapping[str, str] | None = None,
) -> Plan:
    """The leader's plan, from every unit's acknowledgements.

    ``units`` holds every unit in the relation, the leader included: None for one that
    published nothing yet. ``offered`` holds the PEMs of the roots units want ({fingerprint:
    PEM}, checked); a root with no PEM anywhere is not added to the trust, since no node
    could load it. One call moves each unit at most one step; repeated calls, as
    acknowledgements arrive, complete a switch.
    """
    pems = {**plan.pems, **verified_pems(dict(offered or {}))}
    known = {name: facts for name, facts in units.items() if facts is not None}
    grants = {name: plan.grants[name] for name in units if name in plan.grants}
    # 1. Trust what anybody wants, is granted or presents: adding is always safe.
    needed = {internal_root} if not known else set()
    for name, facts in known.items():
        needed |= {r for r in (facts.wants, facts.presents, grants.get(name)) if r}
    for name in units:
        if name not in known:
            needed.add(grants.get(name, internal_root))  # what a new pod would present
    trust = set(plan.trust) | {r for r in needed if r == internal_root or r in pems}
    # 2. Grant a unit its wanted root once every unit acknowledged trusting it. A unit that
    #    published nothing yet blocks it: it may have started from an older plan.
    everyone_known = len(known) == len(units)
    for name, facts in known.items():
        wanted = facts.wants
        if not wanted or grants.get(name) == wanted or not everyone_known:
            continue
        if all(wanted in other.trusts for other in known.values()):
            grants[name] = wanted
    # 3. Drop a root nobody wants, is granted or presents, once every unit presents
    #    something else (a grant the leader just changed is not acknowledged yet).
    in_use = set(grants.values())
    for facts in known.values():
        in_use |= {r for r in (facts.wants, facts.presents) if r}
    for name in units:
        if name not in known:
            in_use.add(grants.get(name, internal_root))
    trust = {root for root in trust if root in in_use}
    kept = {fp: pem for fp, pem in pems.items() if fp in trust and fp != internal_root}
    return Plan(trust=frozenset(trust), grants=grants, pems=kept)


def _object(text: str | None) -> dict[str, Any] | None:
    try:
        raw = json.loads(text or "")
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


def _fingerprint(value: Any) -> str | None:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    return None


def _fingerprints(value: Any) -> frozenset[str] | None:
    if not isinstance(value, list) or len(value) > _LIMIT:
        return None
    found = [_fingerprint(v) for v in value]
    if any(f is None for f in found):
        return None
    return frozenset(f for f in found if f)


def unit_applies(plan: Plan, unit: str, internal_root: str) -> tuple[frozenset[str], str]:
    """What ``unit``'s node must trust and present under ``plan`` (roots by fingerprint).

    Before any plan (a new application, or one deployed before the plan existed) that is
    the internal CA alone, which every node has always trusted and presented.
    """
    present = plan.grant(unit, internal_root)
    trust = plan.trust or frozenset({internal_root})
    return trust | {present}, present
