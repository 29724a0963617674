"""KurrentDB's answers are untrusted: the client raises nothing but its own errors, typed.

And no secret the client sent comes back in an error message, in any encoding.
"""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from doubles.kurrentdb import KurrentDBDouble, NodeState
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secret_forms import encodings

import kurrentdb_api
from kurrentdb_api import KurrentDBAPIError, KurrentDBClient, KurrentDBError

SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
GOOD_MEMBER = NodeState(
    state="Follower", http_host="kurrentdb-1.x", writer_checkpoint=7
).gossip_json()
GOOD_GOSSIP = {"members": [GOOD_MEMBER], "serverIp": "10.1.1.1", "serverPort": 2113}
GOOD_INFO = NodeState().info_json()


def answering(monkeypatch: pytest.MonkeyPatch, body: bytes, status: int = 200) -> KurrentDBClient:
    """A client whose every request gets this answer (no network: fast enough to fuzz)."""
    monkeypatch.setattr(KurrentDBClient, "_request", lambda self, *a, **k: (status, body))
    return KurrentDBClient("http://localhost:2113")  # no TLS context to build per example


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["false", "true", "Leader", "", "1e400"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(key=st.sampled_from(sorted(GOOD_MEMBER)), value=json_values)
def test_a_gossip_member_with_any_field_replaced_is_typed_or_refused(key, value):
    with pytest.MonkeyPatch.context() as patch:
        member = {**GOOD_MEMBER, key: value}
        client = answering(patch, json.dumps({**GOOD_GOSSIP, "members": [member]}).encode())
        try:
            gossip = client.gossip()
        except KurrentDBAPIError:
            return
    parsed = gossip.members[0]
    assert isinstance(parsed.is_alive, bool) and isinstance(parsed.is_read_only_replica, bool)
    for number in (parsed.writer_checkpoint, parsed.chaser_checkpoint, parsed.http_port):
        assert type(number) is int and abs(number) < 2**63
    assert parsed.state


@SETTINGS
@given(body=json_values)
def test_any_json_body_is_typed_or_refused(body):
    with pytest.MonkeyPatch.context() as patch:
        client = answering(patch, json.dumps(body).encode())
        for call in (client.info, client.gossip, lambda: client.get_user("admin")):
            with contextlib.suppress(KurrentDBError):
                call()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's JSON parser recurses
        json.dumps({**GOOD_GOSSIP, "serverPort": 1e400}).encode(),
        json.dumps({**GOOD_GOSSIP, "members": [{**GOOD_MEMBER, "writerCheckpoint": 10**40}]}).encode(),
        json.dumps({**GOOD_GOSSIP, "members": [{**GOOD_MEMBER, "isAlive": "false"}]}).encode(),
        json.dumps({**GOOD_GOSSIP, "members": [{**GOOD_MEMBER, "writerCheckpoint": None}]}).encode(),
        json.dumps({**GOOD_GOSSIP, "members": [{**GOOD_MEMBER, "state": ""}]}).encode(),
        json.dumps({**GOOD_GOSSIP, "members": [{**GOOD_MEMBER, "writerCheckpoint": 1.5}]}).encode(),
        json.dumps({**GOOD_GOSSIP, "members": "5"}).encode(),
        json.dumps([GOOD_GOSSIP]).encode(),
        b"1e400",
        b"null",
    ],
    ids=["deep", "1e400", "huge-int", "false-string", "null", "empty-state", "float", "members-str",
         "list-body", "bare-number", "null-body"],
)  # fmt: skip
def test_hostile_gossip_is_an_api_error(monkeypatch, body):
    with pytest.raises(KurrentDBAPIError, match="GET /gossip: HTTP 200"):
        answering(monkeypatch, body).gossip()


@pytest.mark.parametrize(
    "info",
    [
        {**GOOD_INFO, "features": {"projections": "false"}},
        {**GOOD_INFO, "state": None},
        {**GOOD_INFO, "dbVersion": 26},
        {**GOOD_INFO, "authentication": "internal"},
        {**GOOD_INFO, "features": ["projections"]},
    ],
)
def test_hostile_info_is_an_api_error(monkeypatch, info):
    with pytest.raises(KurrentDBAPIError, match="GET /info: HTTP 200"):
        answering(monkeypatch, json.dumps(info).encode()).info()


def test_a_body_over_the_limit_is_refused():
    with KurrentDBDouble() as double:
        double.fail_with, double.fail_body = 200, "x" * (kurrentdb_api.MAX_BODY_BYTES + 10)
        with pytest.raises(KurrentDBAPIError, match="body over"):
            KurrentDBClient(double.url, ca_pem=double.ca_pem).info()


def test_the_node_is_known_by_its_own_endpoint_not_the_advertised_one():
    with KurrentDBDouble() as double:
        me = NodeState(http_host="kurrentdb-0.kurrentdb-endpoints.m.svc.cluster.local")
        me.advertise_host_to_client_as = "203.0.113.7"
        double.members = [me.gossip_json()]
        [member] = KurrentDBClient(double.url, ca_pem=double.ca_pem).gossip().members
    assert member.http_host == "203.0.113.7"
    assert member.node_host == "kurrentdb-0.kurrentdb-endpoints.m.svc.cluster.local"
    assert member.db_version == "26.1.0"


# --- secrets in every encoding ----------------------------------------------------------------


passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=8, max_size=24
).filter(lambda s: s.strip() == s and len(set(s)) > 3)


@SETTINGS
@given(admin=passwords, new=passwords, noise=st.text(max_size=30))
def test_no_encoding_of_a_sent_secret_survives_redaction(admin, new, noise):
    token = base64.b64encode(f"admin:{admin}".encode()).decode()  # what the client sends
    echoed = (
        f"{noise}\n<pre>"
        + "|".join(encodings(admin, "admin") | encodings(new, "admin"))
        + "</pre>\nline 3"
    )
    message = kurrentdb_api.redact(echoed, (admin, token, new))
    for form in encodings(admin, "admin") | encodings(new, "admin"):
        assert form not in message


def test_error_messages_are_one_line_and_redacted():
    with KurrentDBDouble(admin_password="Pässwörd/+ 1") as double:
        secret = "Pässwörd/+ 1"
        double.fail_with = 500
        double.fail_body = (
            "<html>\n<body>\n" + " ".join(encodings(secret, "admin")) + "\n</body>\n</html>"
        )
        client = KurrentDBClient(
            double.url, ca_pem=double.ca_pem, username="admin", password=secret
        )
        with pytest.raises(KurrentDBAPIError) as caught:
            client.reset_password("ops", "n3w-Sécret&x=1")
    message = str(caught.value)
    assert "\n" not in message
    for form in encodings(secret, "admin") | encodings("n3w-Sécret&x=1", "admin"):
        assert form not in message, form


@pytest.mark.parametrize("status", [301, 400, 500, 503])
def test_an_answer_echoing_a_password_to_an_anonymous_request_is_redacted(
    ctx, volumes, internal_ca, kurrentdb, status
):
    """Found by tests/fuzz: the health check asks without credentials, so only the secrets
    a client sent were redacted, and a body holding the admin password reached the status."""
    from scenario_fixtures import ADMIN_PASSWORD, unit_state

    from workload import paths

    state = unit_state(volumes, internal_ca)
    state = ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)
    kurrentdb.fail_with = status
    kurrentdb.fail_body = "<pre>\n" + " ".join(encodings(ADMIN_PASSWORD, "admin")) + "\n</pre>"
    out = ctx.run(ctx.on.update_status(), state)
    shown = [out.unit_status.message, *(line.message for line in ctx.juju_log)]
    for form in encodings(ADMIN_PASSWORD, "admin"):
        assert not [text for text in shown if form in text], form
