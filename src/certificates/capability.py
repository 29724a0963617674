"""The certificates capability: node certificates from a related provider, and the CA switch.

What it owns:
- the `certificates` relation (tls-certificates, through charmlibs'
  `TLSCertificatesRequiresV4`, built only while the relation exists, so a deployment without
  it never imports the library) and the CSR KurrentDB needs (`node_request`);
- this unit's TLS acknowledgement (`switch.UnitTls`, peer unit key `tls`) and the PEM of the
  root it wants (`tls-root`), the leader's plan (`switch.Plan`, peer app key `tls-plan`);
- the provider certificate this node last presented, in a unit-owned Juju secret, so that a
  recreated pod can go on presenting it while the plan still grants it (a provider rotates
  certificates whenever it likes; the plan moves on its own time);
- what the node trusts and presents each hook (`node_tls`) and the statuses about it.

Without the relation nothing changes for a cluster on the internal CA: the plan trusts and
grants the internal root only, which is what every node already trusts and presents.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ops

import tls
from certificates.switch import Plan, UnitTls, next_plan, unit_applies
from databag import relation_library_needed

if TYPE_CHECKING:
    from certificates.compliance import NodeMaterial
    from state import CharmState
    from workload.render import NodeIdentity

logger = logging.getLogger(__name__)

RELATION = "certificates"
UNIT_KEY = "tls"
ROOT_KEY = "tls-root"
PLAN_KEY = "tls-plan"
PRESENTED_LABEL = "presented-provider-certificate"
# KurrentDB's option that lets a certificate without the clientAuth EKU be a node
# certificate (26.0.2+, `ClusterVNodeOptions.cs`); the user sets it in extra-options.
CLIENT_AUTH_OPTION = "DisableClientAuthEkuValidation"


class Certificates(ops.Object):
    """Node certificates from the user's CA, switched in and out without an outage."""

    def __init__(self, charm: ops.CharmBase, state: CharmState, identity: NodeIdentity):
        super().__init__(charm, RELATION)
        self._charm = charm
        self._state = state
        self._identity = identity
        self.problem: ops.StatusBase | None = None
        self._applied: UnitTls | None = None
        self._wanted_pem: str | None = None
        self._private_key = ""
        self._progress: tuple[Plan, dict[str, UnitTls | None]] | None = None
        self._requirer: Any = None
        if relation_library_needed(charm.model, RELATION):
            self._requirer = self._build_requirer()

    def _build_requirer(self) -> Any:
        from charmlibs.interfaces.tls_certificates import Mode, TLSCertificatesRequiresV4

        return TLSCertificatesRequiresV4(
            self._charm,
            RELATION,
            certificate_requests=[node_request(self._identity)],
            mode=Mode.UNIT,
            refresh_events=[self._charm.on.update_status, self._charm.on.config_changed],
        )

    @property
    def events(self) -> tuple[ops.BoundEvent, ...]:
        """The events on which the charm must reconcile for this capability."""
        endpoint = self._charm.on[RELATION]
        return endpoint.relation_joined, endpoint.relation_changed, endpoint.relation_broken

    # --- this hook's TLS ---------------------------------------------------------------------

    def node_tls(
        self, ca: tls.KeyPair, internal: tls.NodeCertificate, extra_options: Any
    ) -> tls.NodeTls:
        """What this node must present and trust now, under the leader's plan."""
        internal_root = tls.fingerprint(ca.certificate)
        material = self._provider_material(internal, client_auth_optional(extra_options))
        plan = self._plan()
        if material is not None:
            wanted, self._wanted_pem = material.root_fingerprint, material.root
        elif isinstance(self.problem, ops.BlockedStatus):
            # A refused certificate: keep what the node presents, do not fall back.
            previous = self._acknowledged()
            wanted = previous.presents if previous and previous.presents else internal_root
            self._wanted_pem = plan.pems.get(wanted)
        else:
            wanted = internal_root
        trust, present = unit_applies(plan, self._charm.unit.name, internal_root)
        pems = {internal_root: ca.certificate, **plan.pems}
        chosen: tuple[str, str] | None = (internal.certificate, internal.private_key)
        if present != internal_root:
            chosen = self._presentable(present, material)
            if material is not None:
                pems.setdefault(material.root_fingerprint, material.root)
        if chosen is None:
            # The plan grants a root this unit holds no certificate from any more (its pod
            # was recreated after the provider moved on): the internal one is all it has.
            self.problem = ops.WaitingStatus(
                "the certificate the CA switch grants this node is gone; waiting for the switch"
            )
            present, chosen = internal_root, (internal.certificate, internal.private_key)
            trust = trust | {internal_root}
        roots = {fp: pems[fp] for fp in sorted(trust) if fp in pems}
        self._applied = UnitTls(wants=wanted, trusts=frozenset(roots), presents=present)
        files = {
            (tls.INTERNAL_ROOT_FILE if fp == internal_root else f"{fp[:16]}.crt"): pem
            for fp, pem in roots.items()
        }
        return tls.NodeTls(chosen[0], chosen[1], files)

    def _acknowledged(self) -> UnitTls | None:
        relation = self._state.peer_relation
        if relation is None:
            return None
        return UnitTls.from_json(relation.data[self._charm.unit].get(UNIT_KEY))

    def _provider_material(
        self, internal: tls.NodeCertificate, client_auth_is_optional: bool
    ) -> NodeMaterial | None:
        """The provider's certificate for this node, if KurrentDB would accept it."""
        if self._requirer is None or self._charm.model.get_relation(RELATION) is None:
            return None
        from certificates.compliance import Expectations, RejectedError, accept

        provider, key = self._requirer.get_assigned_certificate(node_request(self._identity))
        if provider is None or key is None:
            self.problem = ops.WaitingStatus("waiting for the certificates provider to sign")
            return None
        expected = Expectations(
            reserved_common_name=tls.NODE_COMMON_NAME,
            sans=internal.sans,
            client_auth_optional=client_auth_is_optional,
        )
        try:
            material = accept(
                str(provider.certificate),
                [str(c) for c in provider.chain],
                str(provider.ca),
                str(key),
                expected,
            )
        except RejectedError as refused:
            self.problem = ops.BlockedStatus(
                f"the certificate the provider issued is refused: {refused}; "
                "this node keeps its current certificate"
            )
            return None
        except ValueError as e:  # an unreadable key or certificate from the relation
            self.problem = ops.BlockedStatus(
                f"the certificates provider sent something unreadable ({type(e).__name__}); "
                "this node keeps its current certificate"
            )
            return None
        self._private_key = str(key)
        return material

    def _presentable(self, root: str, material: NodeMaterial | None) -> tuple[str, str] | None:
        """A certificate and key from ``root``, or None.

        The provider's current certificate, or the last one this node presented (kept in a
        secret).
        """
        if material is not None and material.root_fingerprint == root:
            self._remember(material)
            return material.certificate, self._private_key
        kept = self._presented()
        if kept is not None and kept.get("root-fingerprint") == root:
            return kept["certificate"], kept["private-key"]
        return None

    def _presented(self) -> dict[str, str] | None:
        try:
            secret = self._charm.model.get_secret(label=PRESENTED_LABEL)
            content = secret.get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError):
            return None
        if {"certificate", "private-key", "root-fingerprint"} <= set(content):
            return content
        return None

    def _remember(self, material: NodeMaterial) -> None:
        """Keep the provider certificate this node presents, once per certificate."""
        relation = self._state.peer_relation
        marker = tls.fingerprint(material.certificate)
        if relation is None or relation.data[self._charm.unit].get("tls-presented") == marker:
            return
        content = {
            "certificate": material.certificate,
            "private-key": self._private_key,
            "root-fingerprint": material.root_fingerprint,
        }
        try:
            self._charm.model.get_secret(label=PRESENTED_LABEL).set_content(content)
        except ops.SecretNotFoundError:
            self._charm.unit.add_secret(content, label=PRESENTED_LABEL)
        relation.data[self._charm.unit]["tls-presented"] = marker

    # --- after the node applied it ---------------------------------------------------------

    def acknowledge(self) -> None:
        """Every unit, once `node_tls` was pushed and reloaded: what its node now has."""
        relation = self._state.peer_relation
        applied = self._applied
        if relation is None or applied is None:
            return
        data = relation.data[self._charm.unit]
        text = applied.to_json()
        if data.get(UNIT_KEY) != text:
            data[UNIT_KEY] = text
        pem = self._wanted_pem or ""
        if data.get(ROOT_KEY, "") != pem:
            data[ROOT_KEY] = pem

    def coordinate(self, ca: tls.KeyPair) -> None:
        """Leader: the next step of the plan, from every unit's acknowledgement."""
        relation = self._state.peer_relation
        if relation is None or not self._charm.unit.is_leader():
            return
        units: dict[str, UnitTls | None] = {}
        offered: dict[str, str] = {}
        for unit in (self._charm.unit, *relation.units):
            data = relation.data[unit]
            units[unit.name] = UnitTls.from_json(data.get(UNIT_KEY))
            pem = data.get(ROOT_KEY) or ""
            if pem:
                offered[tls.fingerprint(pem)] = pem
        plan = next_plan(self._plan(), units, tls.fingerprint(ca.certificate), offered)
        self._progress = (plan, units)
        text = plan.to_json()
        if relation.data[relation.app].get(PLAN_KEY) != text:
            relation.data[relation.app][PLAN_KEY] = text

    def _plan(self) -> Plan:
        relation = self._state.peer_relation
        if relation is None:
            return Plan()
        return Plan.from_json(relation.data[relation.app].get(PLAN_KEY))

    def trusted_roots_pem(self, ca: tls.KeyPair | None) -> str | None:
        """The roots this node trusts, as one bundle for the charm's own clients."""
        if ca is None:
            return None
        plan = self._plan()
        internal_root = tls.fingerprint(ca.certificate)
        trust = plan.trust or {internal_root}
        pems = [ca.certificate] if internal_root in trust else []
        pems += [plan.pems[fp] for fp in sorted(trust) if fp in plan.pems]
        return tls.pem_bundle(pems) or ca.certificate

    # --- statuses ------------------------------------------------------------------------------

    def unit_statuses(self) -> list[ops.StatusBase]:
        """This hook's certificate problem, if any."""
        return [self.problem] if self.problem is not None else []

    def app_status(self) -> ops.StatusBase | None:
        """The leader's view of a CA switch under way (None when every node is settled)."""
        progress = self._progress
        if progress is None:
            return None
        plan, units = progress
        known = {n: u for n, u in units.items() if u is not None}
        settled = all(
            u.presents == u.wants and u.trusts == {w.wants for w in known.values()}
            for u in known.values()
        )
        if settled and len(known) == len(units):
            return None
        presenting = sum(1 for u in known.values() if u.presents == u.wants)
        waiting = sorted(n for n, u in units.items() if u is None)
        detail = f"; waiting for {', '.join(waiting)} to report" if waiting else ""
        return ops.MaintenanceStatus(
            f"switching certificates: {presenting}/{len(units)} nodes present their new "
            f"certificate, {len(plan.trust)} roots trusted{detail}"
        )


def node_request(identity: NodeIdentity) -> Any:
    """The CSR every node sends: what KurrentDB checks, as critical extensions.

    Providers such as self-signed-certificates copy the CSR's extensions and add none, so
    without KeyUsage and both EKUs here the certificate would fail node-to-node
    authentication. Every node asks for the same CN (the reserved node CN), and for every
    name it is reached by.
    """
    import ipaddress

    from charmlibs.interfaces.tls_certificates import CertificateRequestAttributes

    dns, ips = [], []
    for name in identity.sans():
        try:
            ipaddress.ip_address(name)
        except ValueError:
            dns.append(name)
        else:
            ips.append(name)
    return CertificateRequestAttributes(
        common_name=tls.NODE_COMMON_NAME,
        sans_dns=frozenset(dns),
        sans_ip=frozenset(ips),
        add_unique_id_to_subject_name=False,
        additional_critical_extensions=[tls.node_key_usage(), tls.node_extended_key_usage()],
    )


def client_auth_optional(extra_options: Any) -> bool:
    """Whether the user set DisableClientAuthEkuValidation in extra-options."""
    if not isinstance(extra_options, dict):
        return False
    value = extra_options.get(CLIENT_AUTH_OPTION)
    return value is True or (isinstance(value, str) and value.lower() == "true")
