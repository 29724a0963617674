"""KurrentDB's HTTP answers, Pebble faults and action parameters, generated.

A bad answer or a failing Pebble call gives a status that names the cause (or an action
failure), never a hook error and never a secret; with the fault gone, the unit recovers.
"""

from __future__ import annotations

import datetime
import json

import ops
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ops import testing
from scenario_fixtures import ADMIN_PASSWORD, replace_config

from fuzz.fuzz_harness import encodings, example, fuzz_settings

ACTIVE = testing.ActiveStatus("Leader")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["false", "Leader", "", "1e400"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=10,
)  # fmt: skip
echoes = st.just(
    "<html>\n<pre>" + " ".join(sorted(encodings(ADMIN_PASSWORD, user="admin"))) + "</pre>\n</html>"
)
bodies = st.one_of(st.text(max_size=60), json_values, echoes)


@fuzz_settings(40)
@given(
    fail_with=st.none() | st.sampled_from([200, 204, 301, 400, 401, 403, 404, 500, 502, 503]),
    body=bodies,
    node_state=st.sampled_from(["Leader", "Follower", "Unknown", "", "  ", "None"]) | st.text(max_size=12),
    version=st.sampled_from(["26.1.0", "", "x", "99.0.0"]) | st.text(max_size=10),
    members=st.none() | st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=4), max_size=3),
    event=st.sampled_from(["update-status", "get-cluster-status", "get-password"]),
)  # fmt: skip
def test_any_kurrentdb_answer_is_a_status_or_an_action_failure(
    world, fail_with, body, node_state, version, members, event
):
    with example(world, "KurrentDB HTTP answers") as ex:
        double = world.double
        double.fail_with, double.fail_body = fail_with, body
        double.state, double.version, double.members = node_state, version, members
        ctx = ex.ctx
        ev = {
            "update-status": ctx.on.update_status,
            "get-cluster-status": lambda: ctx.on.action("get-cluster-status"),
            "get-password": lambda: ctx.on.action("get-password"),
        }[event]()
        hook = ex.run(ev)
        if "KurrentDB node is " in hook.status.message and not node_state.strip():
            ex.fail_status(f"{hook.status!r} for state {node_state!r}")
        world.reset_double()
        again = ex.run(ctx.on.update_status(), hook.state)
        if again.status != ACTIVE:
            ex.fail_status(f"{again.status!r} once KurrentDB answered well again")


def _change() -> ops.pebble.Change:
    now = datetime.datetime.now(datetime.timezone.utc)
    return ops.pebble.Change(
        ops.pebble.ChangeID("1"), "replan", "", "Error", [], True, "boom", now, now
    )


ERRORS = {
    "PathError": lambda m: ops.pebble.PathError("generic-file-error", m),
    "ConnectionError": lambda m: ops.pebble.ConnectionError(m),
    "APIError": lambda m: ops.pebble.APIError({}, 500, "Internal Server Error", m),
    "ChangeError": lambda m: ops.pebble.ChangeError(m, _change()),
    "ExecError": lambda m: ops.pebble.ExecError(["chown"], 1, "", m),
}
METHODS = ["push", "pull", "get_plan", "replan", "exec", "list_files", "add_layer", "restart",
           "get_services", "send_signal", "make_dir", "remove_path"]  # fmt: skip


@fuzz_settings(40)
@given(
    method=st.sampled_from(METHODS),
    error=st.sampled_from(sorted(ERRORS)),
    message=st.sampled_from(["no space left on device", "read-only file system", "", "a\nb"])
    | st.text(max_size=30),
    after=st.integers(min_value=0, max_value=3),
    event=st.sampled_from(["config-changed", "update-status", "pebble-ready"]),
)  # fmt: skip
def test_any_pebble_fault_is_a_status_and_later_hooks_recover(
    world, method, error, message, after, event
):
    with example(world, "Pebble faults") as ex:
        ctx = ex.ctx
        state = replace_config(ex.state, run_projections="all")
        real = getattr(ops.Container, method)
        calls = {"n": 0}

        def faulty(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                raise ERRORS[error](message)
            return real(self, *args, **kwargs)

        ev = {
            "config-changed": ctx.on.config_changed,
            "update-status": ctx.on.update_status,
            "pebble-ready": lambda: ctx.on.pebble_ready(state.get_container("kurrentdb")),
        }[event]()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ops.Container, method, faulty)
            hook = ex.run(ev, state)
        out = hook.state
        for _ in range(3):
            out = ex.run(ctx.on.update_status(), out).state
            if out.unit_status == ACTIVE:
                break
        if out.unit_status != ACTIVE:
            ex.fail_status(f"{out.unit_status!r} after Pebble's {method} works again")
        assert 'RunProjections: "All"' in ex.config_file


@fuzz_settings(20)
@given(username=st.sampled_from(["admin", "ops"]) | st.text(max_size=20), give=st.booleans())
def test_any_get_password_username_is_a_result_or_a_failure(world, username, give):
    with example(world, "action params") as ex:
        params = {"username": username} if give else {}
        hook = ex.run(ex.ctx.on.action("get-password", params=params))
        wanted = username if give else "admin"
        if wanted in ("admin", "ops"):
            assert hook.results and hook.results["username"] == wanted
        else:
            assert hook.failure and "unknown user" in hook.failure
            assert "\n" not in hook.failure or "\n" in username
        assert json.dumps(hook.results or {})  # results are plain data
