"""Scavenge control for backups: the client against the double, and against hostile answers.

A backup must not copy files while a scavenge runs (docs/server/operations/backup.md):
it stops the node's scavenge (`/admin/scavenge/...`) and pauses the cluster's
auto-scavenge (`/auto-scavenge/...`). The double answers as the v26.1.0 source does
(AdminController.cs, StorageScavenger.cs, AutoScavengePlugin.cs, AutoScavengeProcessManager.cs).
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Iterator

import pytest
from doubles.kurrentdb import KurrentDBDouble
from hypothesis import given
from hypothesis import strategies as st
from test_kurrentdb_api import raw_request
from test_kurrentdb_api_untrusted import SETTINGS, answering, json_values

from kurrentdb_api import (
    AUTO_SCAVENGE_STATES,
    SCAVENGE_RESULTS,
    AutoScavengeStatus,
    KurrentDBAPIError,
    KurrentDBAuthError,
    KurrentDBClient,
    KurrentDBNotFound,
    KurrentDBUnreachable,
    LastScavenge,
)

ADMIN_PASSWORD = "adm1n-S3cret!"
OPS_PASSWORD = "0ps-S3cret!"


@pytest.fixture
def double() -> Iterator[KurrentDBDouble]:
    with KurrentDBDouble(admin_password=ADMIN_PASSWORD, ops_password=OPS_PASSWORD) as d:
        yield d


def client(double: KurrentDBDouble, user: str = "ops", password: str = OPS_PASSWORD, **kw):
    return KurrentDBClient(double.url, ca_pem=double.ca_pem, username=user, password=password, **kw)


def licensed(double: KurrentDBDouble, status: str = "Waiting", schedule: str | None = "0 6 * * 6"):
    double.auto_scavenge.enabled = True
    double.auto_scavenge.status, double.auto_scavenge.schedule = status, schedule


# -- the node's scavenge ------------------------------------------------------------------


def test_no_scavenge_running(double: KurrentDBDouble):
    assert client(double).current_scavenge() is None
    assert client(double).last_scavenge() == LastScavenge(None, "Unknown")


def test_a_running_scavenge_is_found_and_stopped(double: KurrentDBDouble):
    running = double.start_scavenge()
    ops = client(double)

    assert ops.current_scavenge() == running
    assert ops.last_scavenge() == LastScavenge(running, "InProgress")
    assert ops.stop_scavenge() == running

    assert ops.current_scavenge() is None
    assert ops.last_scavenge() == LastScavenge(running, "Stopped")
    assert [r.path for r in double.requests if r.method == "DELETE"] == ["/admin/scavenge/current"]


def test_stopping_by_id_stops_only_that_scavenge(double: KurrentDBDouble):
    running = double.start_scavenge()
    ops = client(double)

    assert ops.stop_scavenge(str(uuid.uuid4())) is None  # 404: not the running one
    assert ops.current_scavenge() == running
    assert ops.stop_scavenge(running) == running
    assert ops.current_scavenge() is None


def test_stopping_when_nothing_runs_is_not_an_error(double: KurrentDBDouble):
    assert client(double).stop_scavenge() is None


def test_scavenge_wire_format(double: KurrentDBDouble):
    running = double.start_scavenge()
    ops = ("ops", OPS_PASSWORD)

    status, _, body = raw_request(double, "GET", "/admin/scavenge/current", auth=ops)
    assert (status, json.loads(body)) == (
        200,
        {"scavengeId": running, "scavengeLink": f"/admin/scavenge/{running}"},
    )
    status, _, body = raw_request(double, "DELETE", "/admin/scavenge/current", auth=ops)
    assert (status, json.loads(body)) == (200, running)  # a bare JSON string
    status, _, body = raw_request(double, "DELETE", "/admin/scavenge/current", auth=ops)
    assert (status, body) == (404, b"Scavenge Id does not exist")
    status, _, body = raw_request(double, "GET", "/admin/scavenge/current", auth=ops)
    assert json.loads(body) == {"scavengeId": "", "scavengeLink": ""}


def test_a_node_still_initialising_never_answers_a_stop(double: KurrentDBDouble):
    double.start_scavenge()
    double.state = "Initializing"

    with pytest.raises(KurrentDBUnreachable) as e:
        client(double).stop_scavenge(timeout=0.3)
    assert e.value.reason == "timeout"
    assert "timed out after 0.3s" in str(e.value)


@pytest.mark.parametrize("user", [None, "reader"])
def test_scavenge_control_needs_admins_or_ops(double: KurrentDBDouble, user: str | None):
    double.start_scavenge()
    double.add_user("reader", "r3ader!", [])
    someone = (
        KurrentDBClient(double.url, ca_pem=double.ca_pem)
        if user is None
        else client(double, "reader", "r3ader!")
    )

    for call in (someone.current_scavenge, someone.last_scavenge, someone.stop_scavenge):
        with pytest.raises(KurrentDBAuthError, match="HTTP 401"):
            call()
    assert double.scavenge_id is not None
    assert client(double, "admin", ADMIN_PASSWORD).current_scavenge() == double.scavenge_id


def test_without_the_admin_api_there_is_no_scavenge_control(double: KurrentDBDouble):
    double.fail_with, double.fail_body = 404, ""  # DisableAdminUi: the controller is absent
    with pytest.raises(KurrentDBNotFound):
        client(double).current_scavenge()


# -- auto-scavenge --------------------------------------------------------------------------


def test_without_a_licence_auto_scavenge_is_disabled(double: KurrentDBDouble):
    ops = client(double)

    assert ops.auto_scavenge_enabled() is False
    for call in (ops.auto_scavenge_status, ops.pause_auto_scavenge, ops.resume_auto_scavenge):
        with pytest.raises(KurrentDBAPIError, match=r"HTTP 503: .*AutoScavenge is not enabled"):
            call()


def test_a_server_without_the_plugin_has_no_auto_scavenge(double: KurrentDBDouble):
    double.fail_with, double.fail_body = 404, ""
    assert client(double).auto_scavenge_enabled() is False


def test_status_of_a_waiting_auto_scavenge(double: KurrentDBDouble):
    licensed(double)

    assert client(double).auto_scavenge_enabled() is True
    assert client(double).auto_scavenge_status() == AutoScavengeStatus(
        "Waiting", "0 6 * * 6", 1 * 86400 + 13 * 3600 + 14 * 60 + 32.6299115
    )


def test_status_of_an_unconfigured_auto_scavenge(double: KurrentDBDouble):
    licensed(double, "NotConfigured", None)
    assert client(double).auto_scavenge_status() == AutoScavengeStatus("NotConfigured", None, None)


def test_pause_and_resume_while_idle(double: KurrentDBDouble):
    licensed(double)
    ops = client(double)

    assert ops.pause_auto_scavenge() is True
    assert ops.auto_scavenge_status().paused
    assert ops.pause_auto_scavenge() is True  # pausing a paused process: 200 again

    ops.resume_auto_scavenge()
    assert ops.auto_scavenge_status().state == "Waiting"


def test_pausing_while_a_node_scavenge_runs_takes_until_it_stopped(double: KurrentDBDouble):
    licensed(double, "MonitoringNodeScavenge")
    double.start_scavenge()
    ops = client(double)

    assert ops.pause_auto_scavenge() is False  # 202: still stopping the node scavenge
    assert ops.auto_scavenge_status().state == "Paused"  # the double's one poll of patience
    assert ops.current_scavenge() is None
    assert ops.last_scavenge().result == "Stopped"

    ops.resume_auto_scavenge()
    assert ops.auto_scavenge_status() == AutoScavengeStatus("InProgress", "0 6 * * 6", 0.0)


def test_resume_while_still_pausing_is_refused_with_the_reason(double: KurrentDBDouble):
    licensed(double, "MonitoringNodeScavenge")
    double.auto_scavenge.pausing_polls = 3
    ops = client(double)
    ops.pause_auto_scavenge()

    with pytest.raises(KurrentDBAPIError, match=r"HTTP 400: .*currently pausing") as e:
        ops.resume_auto_scavenge()
    assert e.value.status == 400
    assert ops.auto_scavenge_status().state == "Pausing"


def test_a_follower_proxies_pause_and_always_says_accepted(double: KurrentDBDouble):
    licensed(double)
    double.state = "Follower"
    ops = client(double)

    assert ops.pause_auto_scavenge() is False  # 202 from the proxy, though it paused
    assert ops.auto_scavenge_status().paused


def test_auto_scavenge_rights(double: KurrentDBDouble):
    licensed(double)
    double.add_user("reader", "r3ader!", [])
    reader = client(double, "reader", "r3ader!")
    anonymous = KurrentDBClient(double.url, ca_pem=double.ca_pem)

    assert reader.auto_scavenge_status().state == "Waiting"  # any authenticated user
    for call in (reader.pause_auto_scavenge, reader.resume_auto_scavenge):
        with pytest.raises(KurrentDBAuthError, match="HTTP 403"):
            call()
    with pytest.raises(KurrentDBAuthError, match="HTTP 401"):
        anonymous.auto_scavenge_status()
    assert double.auto_scavenge.status == "Waiting"


def test_auto_scavenge_wire_format(double: KurrentDBDouble):
    licensed(double)
    ops = ("ops", OPS_PASSWORD)

    assert raw_request(double, "GET", "/auto-scavenge/enabled", auth=ops)[2] == b'{"enabled": true}'
    status, _, body = raw_request(double, "POST", "/auto-scavenge/pause", auth=ops)
    assert (status, json.loads(body)) == (200, {})
    double.auto_scavenge.enabled = False
    status, _, body = raw_request(double, "GET", "/auto-scavenge/status", auth=ops)
    assert status == 503
    assert json.loads(body)["detail"] == "AutoScavenge is not enabled"


# -- the answers are untrusted --------------------------------------------------------------


GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    ("timespan", "seconds"),
    [
        ("00:00:00", 0.0),
        ("1.13:14:32.6299115", 134072.6299115),
        ("23:59:59.9999999", 86399.9999999),
        ("10675199.02:48:05.4775807", 922337203685.4775807),  # TimeSpan.MaxValue
        ("00:00:01.5", 1.5),
    ],
)
def test_time_until_next_cycle_is_read_as_seconds(monkeypatch, timespan: str, seconds: float):
    body = {"state": "Waiting", "schedule": "* * * * *", "timeUntilNextCycle": timespan}
    status = answering(monkeypatch, json.dumps(body).encode()).auto_scavenge_status()
    assert status.seconds_until_next_cycle == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        {"state": "Waiting", "schedule": None, "timeUntilNextCycle": "24:00:00"},
        {"state": "Waiting", "schedule": None, "timeUntilNextCycle": "1:2:3"},
        {"state": "Waiting", "schedule": None, "timeUntilNextCycle": 60},
        {"state": "Sleeping", "schedule": None, "timeUntilNextCycle": None},
        {"state": 3, "schedule": None, "timeUntilNextCycle": None},
        {"state": "Paused", "schedule": ["0 6 * * 6"], "timeUntilNextCycle": None},
        {"schedule": None},
    ],
)
def test_a_hostile_auto_scavenge_status_is_an_api_error(monkeypatch, body):
    with pytest.raises(KurrentDBAPIError, match="GET /auto-scavenge/status: HTTP 200"):
        answering(monkeypatch, json.dumps(body).encode()).auto_scavenge_status()


@pytest.mark.parametrize(
    ("call", "body"),
    [
        ("current_scavenge", {"scavengeId": "../../users/admin", "scavengeLink": ""}),
        ("current_scavenge", {"scavengeId": None}),
        ("current_scavenge", [GUID]),
        ("last_scavenge", {"scavengeId": GUID, "scavengeResult": "Done"}),
        ("last_scavenge", {"scavengeId": 5, "scavengeResult": "Success"}),
        ("stop_scavenge", {"scavengeId": GUID}),
        ("stop_scavenge", "not-a-guid"),
        ("auto_scavenge_enabled", {"enabled": "true"}),
        ("auto_scavenge_enabled", {}),
    ],
)
def test_hostile_scavenge_answers_are_api_errors(monkeypatch, call: str, body):
    with pytest.raises(KurrentDBAPIError, match="HTTP 200 with JSON of an unexpected shape"):
        getattr(answering(monkeypatch, json.dumps(body).encode()), call)()


def test_ids_are_read_in_one_spelling(monkeypatch):
    body = {"scavengeId": GUID.upper(), "scavengeLink": ""}
    assert answering(monkeypatch, json.dumps(body).encode()).current_scavenge() == GUID


ANSWER_KEYS = ["scavengeId", "scavengeLink", "scavengeResult", "enabled", "state", "schedule",
               "timeUntilNextCycle", "x"]  # fmt: skip
LIKELY = st.sampled_from([GUID, "", str(uuid.UUID(int=0)), "Paused", "Success", "1.00:00:00"])
answers = (
    json_values
    | LIKELY
    | st.dictionaries(st.sampled_from(ANSWER_KEYS), json_values | LIKELY, max_size=5)
)


@SETTINGS
@given(body=answers)
def test_any_answer_is_typed_or_refused(body):
    with pytest.MonkeyPatch.context() as patch:
        api = answering(patch, json.dumps(body).encode())
        with contextlib.suppress(KurrentDBAPIError):
            found = api.current_scavenge()
            assert found is None or (len(found) == 36 and found == found.lower())
        with contextlib.suppress(KurrentDBAPIError):
            assert api.last_scavenge().result in SCAVENGE_RESULTS
        with contextlib.suppress(KurrentDBAPIError):
            stopped = api.stop_scavenge()
            assert stopped is None or len(stopped) == 36
        with contextlib.suppress(KurrentDBAPIError):
            assert type(api.auto_scavenge_enabled()) is bool
        with contextlib.suppress(KurrentDBAPIError):
            status = api.auto_scavenge_status()
            assert status.state in AUTO_SCAVENGE_STATES
            assert status.schedule is None or isinstance(status.schedule, str)
            until = status.seconds_until_next_cycle
            assert until is None or math.isfinite(until)
