"""Tests of the KurrentDB HTTP client against the loopback double, and a real node when given.

Set KURRENTDB_TEST_URL, KURRENTDB_TEST_CA_FILE and KURRENTDB_TEST_ADMIN_PASSWORD to run the
`target` tests against a real KurrentDB too. Tests that change the server's state in ways only
the double can undo (role, faults, shutdown, priority) take the `double` fixture instead; tests
that write on a real server use unique user names and delete them afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from doubles.kurrentdb import KurrentDBDouble, NodeState

from kurrentdb_api import (
    VNODE_STATES,
    ClusterGossip,
    GossipMember,
    KurrentDBAPIError,
    KurrentDBAuthError,
    KurrentDBClient,
    KurrentDBConflict,
    KurrentDBError,
    KurrentDBNotFound,
    KurrentDBUnreachable,
    NodeInfo,
    User,
)
from tls import generate_ca

ADMIN_PASSWORD = "adm1n-S3cret!"
OPS_PASSWORD = "0ps-S3cret!"
REAL_URL = os.environ.get("KURRENTDB_TEST_URL")
REAL_CA_FILE = os.environ.get("KURRENTDB_TEST_CA_FILE")
REAL_ADMIN_PASSWORD = os.environ.get("KURRENTDB_TEST_ADMIN_PASSWORD")
HAVE_REAL = bool(REAL_URL and REAL_CA_FILE and REAL_ADMIN_PASSWORD)


@dataclass
class Target:
    """A KurrentDB node to test against: the double, or a real server."""

    url: str
    ca_pem: str
    admin_password: str
    double: KurrentDBDouble | None = None

    def client(self, username: str | None = "admin", password: str | None = None, **kw: Any):
        if username == "admin" and password is None:
            password = self.admin_password
        return KurrentDBClient(
            self.url, ca_pem=self.ca_pem, username=username, password=password, **kw
        )

    def anonymous(self) -> KurrentDBClient:
        return KurrentDBClient(self.url, ca_pem=self.ca_pem)


@pytest.fixture
def double() -> Iterator[KurrentDBDouble]:
    with KurrentDBDouble(admin_password=ADMIN_PASSWORD, ops_password=OPS_PASSWORD) as d:
        yield d


@pytest.fixture(params=["double", "real"] if HAVE_REAL else ["double"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "real":
        assert REAL_URL and REAL_CA_FILE and REAL_ADMIN_PASSWORD
        yield Target(REAL_URL, Path(REAL_CA_FILE).read_text(), REAL_ADMIN_PASSWORD)
        return
    d = request.getfixturevalue("double")
    yield Target(d.url, d.ca_pem, ADMIN_PASSWORD, d)


@pytest.fixture
def new_login(target: Target) -> Iterator[str]:
    """A user name nobody has; the user is deleted afterwards if a test created it."""
    login = f"charm-test-{uuid.uuid4().hex[:12]}"
    yield login
    with contextlib.suppress(KurrentDBNotFound):
        target.client().delete_user(login)


@pytest.fixture(scope="module")
def other_ca_pem() -> str:
    return generate_ca("Some other CA").certificate


def _eventually(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """A real server applies a password change asynchronously; the double at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except KurrentDBAuthError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def raw_request(
    double: KurrentDBDouble,
    method: str,
    path: str,
    *,
    auth: tuple[str, str] | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], bytes]:
    """Talk to the double without the client, to check its wire format against the contract."""
    context = ssl.create_default_context(cadata=double.ca_pem)
    conn = http.client.HTTPSConnection("127.0.0.1", double.port, timeout=5, context=context)
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# -- node info, gossip, health ------------------------------------------------------------------


def test_info_returns_typed_node_info(target: Target):
    info = target.anonymous().info()

    assert isinstance(info, NodeInfo)
    assert info.state in VNODE_STATES
    assert info.db_version
    assert info.authentication_type == "internal"
    assert isinstance(info.features.get("userManagement"), bool)
    if target.double:
        assert info == NodeInfo(
            "26.1.0",
            "Leader",
            {"projections": False, "userManagement": True, "atomPub": False},
            "internal",
        )
        assert target.double.requests[-1].path == "/info"
        assert target.double.requests[-1].user is None


@pytest.mark.parametrize("state", VNODE_STATES)
def test_info_state_is_spelled_as_vnodestate(double: KurrentDBDouble, state: str):
    double.state = state

    status, _, body = raw_request(double, "GET", "/info")
    assert status == 200
    assert json.loads(body)["state"] == state.lower()  # the wire format (contract §4.3)
    assert KurrentDBClient(double.url, ca_pem=double.ca_pem).info().state == state


def test_info_reports_version_set_on_the_double(double: KurrentDBDouble):
    double.version = "25.1.4"

    assert KurrentDBClient(double.url, ca_pem=double.ca_pem).info().db_version == "25.1.4"


def test_info_keeps_an_unknown_state_as_sent(double: KurrentDBDouble):
    double.state = "SomethingNew"

    assert KurrentDBClient(double.url, ca_pem=double.ca_pem).info().state == "somethingnew"


def test_gossip_returns_typed_members(target: Target):
    gossip = target.anonymous().gossip()

    assert isinstance(gossip, ClusterGossip)
    assert gossip.members and all(isinstance(m, GossipMember) for m in gossip.members)
    assert gossip.leader is not None and gossip.leader.is_alive
    assert gossip.server_port > 0
    for member in gossip.members:
        assert member.state in VNODE_STATES
        assert member.http_port > 0
    if target.double:
        node = target.double.node
        (member,) = gossip.members
        assert member.instance_id == node.instance_id
        assert (member.http_host, member.http_port) == ("127.0.0.1", target.double.port)
        assert (member.internal_tcp_port, member.replication_port) == (0, 1112)
        assert (gossip.server_ip, gossip.server_port) == ("127.0.0.1", target.double.port)


def test_gossip_wire_format_follows_the_contract(double: KurrentDBDouble):
    status, _, body = raw_request(double, "GET", "/gossip")

    payload = json.loads(body)
    assert status == 200
    assert set(payload) == {"members", "serverIp", "serverPort"}
    assert set(payload["members"][0]) == {
        "instanceId", "timeStamp", "state", "isAlive", "internalTcpIp", "internalTcpPort",
        "internalSecureTcpPort", "externalTcpIp", "externalTcpPort", "externalSecureTcpPort",
        "internalHttpEndPointIp", "internalHttpEndPointPort", "httpEndPointIp",
        "httpEndPointPort", "lastCommitPosition", "writerCheckpoint", "chaserCheckpoint",
        "epochPosition", "epochNumber", "epochId", "nodePriority", "isReadOnlyReplica",
        "esVersion",
    }  # fmt: skip


def test_gossip_of_a_three_node_cluster(double: KurrentDBDouble):
    dead_leader = NodeState(state="Leader", is_alive=False, http_host="10.0.0.1")
    follower = NodeState(state="Follower", http_host="10.0.0.2", writer_checkpoint=42)
    new_leader = NodeState(state="Leader", http_host="10.0.0.3", epoch_number=7, node_priority=3)
    double.members = [n.gossip_json() for n in (dead_leader, follower, new_leader)]

    gossip = KurrentDBClient(double.url, ca_pem=double.ca_pem).gossip()

    assert [m.http_host for m in gossip.alive_members] == ["10.0.0.2", "10.0.0.3"]
    assert gossip.leader is not None
    assert gossip.leader.instance_id == new_leader.instance_id
    assert (gossip.leader.epoch_number, gossip.leader.node_priority) == (7, 3)
    assert gossip.members[1].writer_checkpoint == 42


def test_gossip_without_an_alive_leader(double: KurrentDBDouble):
    double.members = [
        NodeState(state="Leader", is_alive=False).gossip_json(),
        NodeState(state="Follower").gossip_json(),
    ]

    assert KurrentDBClient(double.url, ca_pem=double.ca_pem).gossip().leader is None


def test_is_live(target: Target):
    assert target.anonymous().is_live() is True
    if target.double:
        assert target.double.requests[-1].path == "/health/live"


def test_is_live_false_while_not_ready(double: KurrentDBDouble):
    double.live = False

    assert KurrentDBClient(double.url, ca_pem=double.ca_pem).is_live() is False


def test_is_live_is_anonymous_even_with_bad_credentials(double: KurrentDBDouble):
    client = KurrentDBClient(double.url, ca_pem=double.ca_pem, username="admin", password="no")

    assert client.is_live() is True


def test_is_live_raises_on_other_statuses(double: KurrentDBDouble):
    double.fail_with = 500

    with pytest.raises(KurrentDBAPIError) as caught:
        KurrentDBClient(double.url, ca_pem=double.ca_pem).is_live()
    assert caught.value.status == 500


def test_health_live_wire_format(double: KurrentDBDouble):
    assert raw_request(double, "GET", "/health/live")[::2] == (204, b"")
    assert raw_request(double, "HEAD", "/health/live")[0] == 204
    assert raw_request(double, "GET", "/health/live?liveCode=200")[0] == 200
    double.live = False
    assert raw_request(double, "GET", "/health/live?liveCode=200")[0] == 503


# -- statistics endpoints: AllowAnonymousEndpointAccess ---------------------------------------
# LegacyPolicySelectorFactory.cs (v26.1.0) l.56-70: Node.Statistics.Read (/metrics, /stats),
# .Replication, .Tcp and .Custom are anonymous when the node runs with
# AllowAnonymousEndpointAccess, else they need an authenticated user (any group, or none).

STATISTICS_PATHS = ("/metrics", "/stats", "/stats/replication", "/stats/tcp", "/stats/proc/mem")


@pytest.mark.parametrize("path", STATISTICS_PATHS)
def test_statistics_need_a_user_unless_the_node_allows_anonymous_endpoint_access(
    double: KurrentDBDouble, path: str
):
    double.add_user("nobody-special", "pw-0001", [])
    assert double.node.allow_anonymous_endpoint_access is False  # KurrentDB's default
    assert raw_request(double, "GET", path)[0] == 401
    assert raw_request(double, "GET", path, auth=("nobody-special", "pw-0001"))[0] == 200

    double.node.allow_anonymous_endpoint_access = True
    assert raw_request(double, "GET", path)[0] == 200
    assert raw_request(double, "GET", path, auth=("nobody-special", "pw-0001"))[0] == 200
    # Credentials that fail are refused before any policy, anonymous access or not.
    assert raw_request(double, "GET", path, auth=("nobody-special", "wrong"))[0] == 401
    assert raw_request(double, "GET", path, auth=("charm-metrics", "gone"))[0] == 401
    assert [r.user for r in double.requests if r.status == 200] == [
        "nobody-special",
        None,
        "nobody-special",
    ]


def test_anonymous_endpoint_access_opens_no_user_admin_or_other_endpoint(
    double: KurrentDBDouble,
):
    double.node.allow_anonymous_endpoint_access = True
    for method, path in [
        ("GET", "/users/"),
        ("GET", "/users/admin"),
        ("GET", "/users/$current"),
        ("POST", "/admin/reloadconfig"),
        ("POST", "/admin/node/resign"),
        ("GET", "/admin/scavenge/current"),
        ("GET", "/auto-scavenge/enabled"),
    ]:
        assert raw_request(double, method, path)[0] == 401, path
    # What was anonymous already stays so either way.
    for path in ("/info", "/gossip", "/ping"):
        assert raw_request(double, "GET", path)[0] == 200, path
        double.node.allow_anonymous_endpoint_access = False
        assert raw_request(double, "GET", path)[0] == 200, path
        double.node.allow_anonymous_endpoint_access = True


def test_metrics_answer_is_prometheus_text(double: KurrentDBDouble):
    double.node.allow_anonymous_endpoint_access = True
    status, headers, body = raw_request(double, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'kurrentdb_statuses{name="Node",status="Leader"} 1' in body.decode()


# -- users --------------------------------------------------------------------------------------


def test_get_user_returns_typed_user(target: Target):
    user = target.client().get_user("admin")

    assert isinstance(user, User)
    assert user.login_name == "admin"
    assert "$admins" in user.groups
    assert user.disabled is False


def test_get_user_wire_format(double: KurrentDBDouble):
    status, _, body = raw_request(double, "GET", "/users/ops", auth=("admin", ADMIN_PASSWORD))

    payload = json.loads(body)
    assert status == 200
    assert payload["success"] is True and payload["error"] == "Success"
    assert payload["data"]["loginName"] == "ops"
    assert payload["data"]["groups"] == ["$ops"]
    assert {"fullName", "dateLastUpdated", "disabled", "links"} <= set(payload["data"])


def test_get_unknown_user_returns_none(target: Target, new_login: str):
    assert target.client().get_user(new_login) is None


def test_create_get_reset_password_and_delete_user(target: Target, new_login: str):
    admin = target.client()

    admin.create_user(new_login, "Charm Test", ["$ops"], "first-Passw0rd")

    assert admin.get_user(new_login) == User(new_login, "Charm Test", ("$ops",), False)
    assert target.client(new_login, "first-Passw0rd").get_user(new_login) is not None
    admin.reset_password(new_login, "second-Passw0rd")
    assert _eventually(lambda: target.client(new_login, "second-Passw0rd").get_user(new_login))
    with pytest.raises(KurrentDBAuthError):
        target.client(new_login, "first-Passw0rd").get_user(new_login)
    admin.delete_user(new_login)
    assert admin.get_user(new_login) is None


def test_user_requests_match_the_contract(double: KurrentDBDouble):
    client = KurrentDBClient(
        double.url, ca_pem=double.ca_pem, username="admin", password=ADMIN_PASSWORD
    )

    client.create_user("app", "App", ["readers"], "app-pw")
    client.reset_password("app", "app-pw-2")
    client.get_user("app")

    create, reset, get = double.requests[-3:]
    assert (create.method, create.path, create.user, create.status) == (
        "POST", "/users", "admin", 201,
    )  # fmt: skip
    assert create.body == {
        "LoginName": "app", "FullName": "App", "Groups": ["readers"], "Password": "app-pw",
    }  # fmt: skip
    assert (reset.method, reset.path, reset.body) == (
        "POST", "/users/app/command/reset-password", {"NewPassword": "app-pw-2"},
    )  # fmt: skip
    assert (get.method, get.path, get.status) == ("GET", "/users/app", 200)
    assert double.users["app"].password == "app-pw-2"


def test_create_user_answers_201_with_location(double: KurrentDBDouble):
    body = {"loginName": "x", "fullName": "X", "groups": [], "password": "p"}  # any case binds

    status, headers, raw = raw_request(
        double, "POST", "/users", auth=("admin", ADMIN_PASSWORD), body=body
    )

    assert status == 201
    assert headers["Location"].endswith("/users/x")
    assert json.loads(raw) == {
        "loginName": "x",
        "success": True,
        "error": "Success",
        "msgTypeId": 0,
    }


def test_create_existing_user_conflicts(target: Target, new_login: str):
    admin = target.client()
    admin.create_user(new_login, "Charm Test", [], "Passw0rd-1")

    with pytest.raises(KurrentDBConflict) as caught:
        admin.create_user(new_login, "Charm Test", [], "Passw0rd-1")
    assert caught.value.status == 409
    assert caught.value.path == "/users"


def test_reset_password_of_unknown_user_is_not_found(target: Target, new_login: str):
    with pytest.raises(KurrentDBNotFound) as caught:
        target.client().reset_password(new_login, "whatever-1")
    assert caught.value.status == 404
    assert f"POST /users/{new_login}/command/reset-password" in str(caught.value)


def test_delete_unknown_user_is_not_found(target: Target, new_login: str):
    with pytest.raises(KurrentDBNotFound):
        target.client().delete_user(new_login)


def test_login_names_are_escaped_in_paths(double: KurrentDBDouble):
    double.add_user("a/b c", "pw")
    client = KurrentDBClient(
        double.url, ca_pem=double.ca_pem, username="admin", password=ADMIN_PASSWORD
    )

    assert client.get_user("a/b c") == User("a/b c", "", (), False)


def test_users_need_admins(double: KurrentDBDouble):
    ops = KurrentDBClient(double.url, ca_pem=double.ca_pem, username="ops", password=OPS_PASSWORD)

    with pytest.raises(KurrentDBAuthError):
        ops.create_user("x", "X", [], "pw")
    with pytest.raises(KurrentDBAuthError):
        ops.get_user("admin")
    assert ops.get_user("ops") is not None  # a user may read itself
    assert "x" not in double.users


def test_anonymous_cannot_read_users(target: Target):
    with pytest.raises(KurrentDBAuthError) as caught:
        target.anonymous().get_user("admin")
    assert caught.value.status == 401


def test_disabled_user_cannot_authenticate(double: KurrentDBDouble):
    double.add_user("old", "pw", ["$admins"]).disabled = True

    with pytest.raises(KurrentDBAuthError):
        KurrentDBClient(double.url, ca_pem=double.ca_pem, username="old", password="pw").info()


def test_not_initialised_node_has_no_users_and_is_not_live():
    with KurrentDBDouble(admin_password=ADMIN_PASSWORD, initialised=False) as double:
        admin = KurrentDBClient(
            double.url, ca_pem=double.ca_pem, username="admin", password=ADMIN_PASSWORD
        )
        assert admin.is_live() is False
        with pytest.raises(KurrentDBAuthError):
            admin.get_user("admin")
        assert KurrentDBClient(double.url, ca_pem=double.ca_pem).info().state == "Initializing"

        double.initialise()

        assert admin.is_live() is True
        assert admin.get_user("admin") is not None
        assert admin.info().state == "Leader"


# -- admin --------------------------------------------------------------------------------------


def test_reload_config(target: Target):
    target.client().reload_config()

    if target.double:
        assert target.double.reload_count == 1
        assert target.double.requests[-1].path == "/admin/reloadconfig"


def test_admin_actions_as_ops(double: KurrentDBDouble):
    ops = KurrentDBClient(double.url, ca_pem=double.ca_pem, username="ops", password=OPS_PASSWORD)

    ops.resign_node()
    ops.set_node_priority(-3)
    ops.reload_config()

    assert (double.resign_count, double.reload_count) == (1, 1)
    assert [(r.method, r.path, r.user, r.status) for r in double.requests] == [
        ("POST", "/admin/node/resign", "ops", 200),
        ("POST", "/admin/node/priority/-3", "ops", 200),
        ("POST", "/admin/reloadconfig", "ops", 200),
    ]
    assert ops.gossip().members[0].node_priority == -3


def test_resign_runs_the_election_hook_on_the_leader_only(double: KurrentDBDouble):
    elections: list[str] = []
    double.on_resign = lambda d: elections.append(d.state)
    client = KurrentDBClient(
        double.url, ca_pem=double.ca_pem, username="ops", password=OPS_PASSWORD
    )

    client.resign_node()
    double.state = "Follower"
    client.resign_node()  # followers answer 200 and ignore it (contract §4.5)

    assert elections == ["Leader"]
    assert double.resign_count == 2


def test_shutdown_takes_the_node_down(double: KurrentDBDouble):
    client = KurrentDBClient(
        double.url, ca_pem=double.ca_pem, username="admin", password=ADMIN_PASSWORD
    )

    client.shutdown()

    assert double.shutdown_count == 1
    assert double.wait_until_down()
    with pytest.raises(KurrentDBUnreachable):
        client.info()


def test_admin_needs_credentials(target: Target):
    with pytest.raises(KurrentDBAuthError) as caught:
        target.anonymous().reload_config()
    assert caught.value.status == 401
    assert "POST /admin/reloadconfig" in str(caught.value)


def test_admin_needs_admins_or_ops(double: KurrentDBDouble):
    double.add_user("reader", "pw", ["readers"])
    client = KurrentDBClient(double.url, ca_pem=double.ca_pem, username="reader", password="pw")

    with pytest.raises(KurrentDBAuthError):
        client.resign_node()
    assert double.resign_count == 0


def test_priority_that_is_not_a_number_is_a_bad_request(double: KurrentDBDouble):
    status, _, _ = raw_request(double, "POST", "/admin/node/priority/x", auth=("ops", OPS_PASSWORD))

    assert status == 400


# -- errors -------------------------------------------------------------------------------------


def test_wrong_password_is_an_auth_error(target: Target):
    with pytest.raises(KurrentDBAuthError) as caught:
        target.client(password="not-the-password").get_user("admin")

    assert caught.value.status == 401
    assert "GET /users/admin" in str(caught.value)
    assert "401" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, KurrentDBAuthError),
        (403, KurrentDBAuthError),
        (404, KurrentDBNotFound),
        (409, KurrentDBConflict),
        (400, KurrentDBAPIError),
        (500, KurrentDBAPIError),
        (503, KurrentDBAPIError),
    ],
)
def test_status_codes_map_to_errors(
    double: KurrentDBDouble, status: int, error: type[KurrentDBError]
):
    double.fail_with = status
    client = KurrentDBClient(double.url, ca_pem=double.ca_pem)

    with pytest.raises(error) as caught:
        client.info()

    assert type(caught.value) is error
    assert (caught.value.method, caught.value.path, caught.value.status) == ("GET", "/info", status)
    assert f"GET /info: HTTP {status}" in str(caught.value)


def test_server_error_message_carries_the_body(double: KurrentDBDouble):
    double.fail_with, double.fail_body = 500, "database on fire"

    with pytest.raises(KurrentDBAPIError, match="HTTP 500: database on fire"):
        KurrentDBClient(double.url, ca_pem=double.ca_pem).gossip()


def test_body_that_is_not_json_is_an_api_error(double: KurrentDBDouble):
    double.fail_with, double.fail_body = 200, "<html>proxy</html>"

    with pytest.raises(KurrentDBAPIError, match="not JSON") as caught:
        KurrentDBClient(double.url, ca_pem=double.ca_pem).info()
    assert caught.value.status == 200


@pytest.mark.parametrize("body", [{"members": [{"state": "Leader"}]}, {"members": 3}, []])
def test_json_of_the_wrong_shape_is_an_api_error(double: KurrentDBDouble, body: Any):
    double.fail_with, double.fail_body = 200, body

    with pytest.raises(KurrentDBAPIError, match="unexpected shape"):
        KurrentDBClient(double.url, ca_pem=double.ca_pem).gossip()


def test_server_down_is_unreachable(double: KurrentDBDouble):
    client = KurrentDBClient(double.url, ca_pem=double.ca_pem)
    double.down()

    with pytest.raises(KurrentDBUnreachable, match="connection refused") as caught:
        client.info()
    assert caught.value.reason == "refused"
    assert caught.value.status is None

    double.up()
    assert client.is_live() is True


def test_wrong_ca_is_unreachable_with_tls_reason(target: Target, other_ca_pem: str):
    client = KurrentDBClient(target.url, ca_pem=other_ca_pem)

    with pytest.raises(KurrentDBUnreachable, match="TLS verification failed") as caught:
        client.info()
    assert caught.value.reason == "tls"


def test_hostname_is_checked():
    with (
        KurrentDBDouble(sans=("kurrentdb-0.example",)) as double,
        pytest.raises(KurrentDBUnreachable, match=r"TLS verification failed.*mismatch") as caught,
    ):
        KurrentDBClient(double.url, ca_pem=double.ca_pem).info()
    assert caught.value.reason == "tls"


def test_plain_http_to_a_tls_port_is_unreachable(double: KurrentDBDouble):
    client = KurrentDBClient(f"http://127.0.0.1:{double.port}", timeout=2)

    with pytest.raises(KurrentDBUnreachable) as caught:
        client.info()
    assert caught.value.reason == "connection"


def test_timeout_is_unreachable(double: KurrentDBDouble):
    double.delay = 5
    client = KurrentDBClient(double.url, ca_pem=double.ca_pem, timeout=0.2)

    started = time.monotonic()
    with pytest.raises(KurrentDBUnreachable, match=r"timed out after 0.2s") as caught:
        client.info()
    assert caught.value.reason == "timeout"
    assert time.monotonic() - started < 2


def test_dns_failure_is_unreachable(monkeypatch: pytest.MonkeyPatch):
    def no_such_host(*args: Any, **kwargs: Any):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)

    with pytest.raises(KurrentDBUnreachable, match="DNS lookup failed") as caught:
        KurrentDBClient("https://kurrentdb-0.invalid:2113").info()
    assert caught.value.reason == "dns"


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="not in the url") as caught:
        KurrentDBClient("https://admin:hunter2@localhost:2113")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="https://host:2113"):
        KurrentDBClient("localhost:2113")
    with pytest.raises(ValueError, match="ca_pem"):
        KurrentDBClient(ca_pem="not a certificate")


# -- secrets never leak -------------------------------------------------------------------------


def _leaks(text: str, password: str, username: str = "admin") -> bool:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return password in text or token in text or "Authorization" in text


def _everything_about(error: BaseException) -> str:
    """What a log would show of an error and the errors chained to it (not the source lines)."""
    text = ""
    seen: BaseException | None = error
    while seen is not None:
        text += repr(seen) + "".join(traceback.format_exception_only(seen))
        seen = seen.__cause__ or seen.__context__
    return text


def test_repr_of_the_client_has_no_password():
    client = KurrentDBClient(username="admin", password="hunter2-secret")

    assert not _leaks(repr(client) + str(client), "hunter2-secret")
    assert "admin" in repr(client)


def test_auth_error_has_no_password(target: Target):
    with pytest.raises(KurrentDBAuthError) as caught:
        target.client(password="hunter2-secret").get_user("admin")

    assert not _leaks(_everything_about(caught.value), "hunter2-secret")


def test_unreachable_errors_have_no_password(double: KurrentDBDouble):
    client = KurrentDBClient(double.url, username="admin", password=ADMIN_PASSWORD)  # wrong CA

    with pytest.raises(KurrentDBUnreachable) as tls_error:
        client.info()
    double.down()
    with pytest.raises(KurrentDBUnreachable) as refused:
        client.info()

    for error in (tls_error.value, refused.value):
        assert not _leaks(_everything_about(error), ADMIN_PASSWORD)


def test_passwords_echoed_by_the_server_are_redacted(double: KurrentDBDouble):
    token = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    double.fail_with = 500
    double.fail_body = f"echo: Basic {token} {ADMIN_PASSWORD} new-Passw0rd"
    client = KurrentDBClient(
        double.url, ca_pem=double.ca_pem, username="admin", password=ADMIN_PASSWORD
    )

    with pytest.raises(KurrentDBAPIError) as caught:
        client.reset_password("ops", "new-Passw0rd")

    text = _everything_about(caught.value)
    assert not _leaks(text, ADMIN_PASSWORD)
    assert "new-Passw0rd" not in text
    assert "***" in text


def test_new_passwords_never_appear_in_errors(double: KurrentDBDouble):
    client = KurrentDBClient(
        double.url, ca_pem=double.ca_pem, username="admin", password=ADMIN_PASSWORD
    )
    client.create_user("dup", "Dup", [], "first-secret")

    with pytest.raises(KurrentDBConflict) as conflict:
        client.create_user("dup", "Dup", [], "second-secret")
    with pytest.raises(KurrentDBNotFound) as not_found:
        client.reset_password("nobody", "third-secret")

    text = _everything_about(conflict.value) + _everything_about(not_found.value)
    for secret in ("first-secret", "second-secret", "third-secret", ADMIN_PASSWORD):
        assert secret not in text
