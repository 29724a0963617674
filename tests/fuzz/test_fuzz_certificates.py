"""The certificates relation's inputs, generated: whatever the provider writes in its app
databag (certificates, CAs and chains that are junk, PEMs of the wrong kind, a certificate
for another key, lists of the wrong shape), and the switch plan and acknowledgements in
peer data.

Whatever they are: no hook error, no secret shown, and the node never presents a
certificate that did not come from the internal CA or pass KurrentDB's rules.
"""

from __future__ import annotations

import dataclasses
import json

from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from issuing_ca import IssuingCA, rsa_key

import tls
from fuzz.fuzz_harness import example, fuzz_settings
from workload import paths

PROVIDER = IssuingCA(name="fuzzed provider")
SANS = ("kurrentdb-0.kurrentdb-endpoints.prod.svc.cluster.local", "localhost", "127.0.0.1")
STRANGER = PROVIDER.issue(rsa_key().public_key(), SANS)  # a certificate for another key
pems = st.sampled_from(
    [STRANGER, PROVIDER.root_pem, PROVIDER.ca_pem, "-----BEGIN CERTIFICATE-----\nAAAA\n"
     "-----END CERTIFICATE-----\n", "", "not a pem", tls.generate_ca().private_key]
) | st.text(max_size=40)  # fmt: skip
entries = st.fixed_dictionaries(
    {},
    optional={
        "certificate": pems,
        "certificate_signing_request": pems,
        "ca": pems,
        "chain": st.lists(pems, max_size=3) | pems,
        "revoked": st.booleans() | st.text(max_size=5),
    },
)
provider_data = st.dictionaries(
    st.sampled_from(["certificates", "request_errors", "capabilities", "other"]),
    st.one_of(
        st.lists(entries, max_size=3).map(json.dumps),
        st.text(max_size=30),
        st.sampled_from(["[]", "{}", "null", "[1]", '[{"certificate": 3}]']),
    ),
    max_size=3,
)
plan_values = st.sampled_from(
    ['{"trust": ["' + "a" * 64 + '"], "grants": {"kurrentdb/0": "' + "a" * 64 + '"}}',
     '{"trust": "x"}', "[]", '{"pems": {"' + "b" * 64 + '": "x"}}', "{", ""]
) | st.text(max_size=20)  # fmt: skip


@fuzz_settings(40)
@given(remote=provider_data, plan=plan_values, own=plan_values, root=pems)
def test_any_provider_answer_is_used_only_if_kurrentdb_would_take_it(
    world, remote, plan, own, root
):
    with example(world, "certificates relation data") as ex:
        from ops import testing

        peer = next(iter(ex.state.relations))
        peer = dataclasses.replace(
            peer,
            local_app_data={**peer.local_app_data, "tls-plan": plan},
            local_unit_data={**peer.local_unit_data, "tls": own, "tls-root": root},
        )
        relation = testing.Relation(
            "certificates", remote_app_name="self-signed-certificates", remote_app_data=remote
        )
        state = dataclasses.replace(ex.state, relations={peer, relation})
        hook = ex.run(ex.ctx.on.relation_changed(relation), state)
        hook = ex.run(ex.ctx.on.update_status(), hook.state)
        pushed = ex.volumes.host_path(paths.NODE_CERT_FILE)
        if pushed.exists():
            chain = x509.load_pem_x509_certificates(pushed.read_bytes())
            assert chain[0].issuer != PROVIDER.root.subject, "a junk answer was presented"
