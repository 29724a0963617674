"""The refresh's inputs, generated: `pause-after-unit-refresh`, the refresh actions' params,
and what Kubernetes answers about the StatefulSet.

Whatever they are: no hook error, no secret shown, an invalid pause value blocks naming
the allowed values, and every action either does its job or fails with a sentence.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ops import testing

from fuzz.fuzz_harness import example, fuzz_settings
from refresh import statefulset
from refresh.plan import PAUSE_VALUES, StatefulSetView

answers = st.one_of(
    st.builds(StatefulSetView, st.text(min_size=1, max_size=20), st.integers(-2, 9)),
    st.builds(statefulset.KubernetesUnavailable, st.text(max_size=30), st.booleans()),
)


# Juju checks action params against actions.yaml (types, no unknown keys) before the
# charm sees them: every combination it lets through.
ACTION_PARAMS = {
    "pre-refresh-check": [],
    "resume-refresh": ["check-health-of-refreshed-units"],
    "force-refresh-start": [
        "check-compatibility",
        "run-pre-refresh-checks",
        "check-workload-container",
    ],
}
actions = st.sampled_from(sorted(ACTION_PARAMS)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.dictionaries(st.sampled_from(ACTION_PARAMS[name] or ["-"]), st.booleans()).map(
            lambda d: {k: v for k, v in d.items() if k != "-"}
        ),
    )
)


@fuzz_settings(40)
@given(
    pause=st.one_of(st.sampled_from(PAUSE_VALUES), st.text(max_size=10)),
    action=actions,
    answer=answers,
    revision=st.one_of(
        st.text(min_size=1, max_size=12),
        st.builds(statefulset.KubernetesUnavailable, st.text(max_size=5)),
    ),
)
def test_any_refresh_input_fails_cleanly_or_works(world, pause, action, answer, revision):
    action, params = action
    with pytest.MonkeyPatch.context() as patch, example(world, "refresh config, params, k8s") as ex:
        patch.setattr(statefulset, "read", lambda app, ns: answer)
        patch.setattr(statefulset, "set_partition", lambda app, ns, n: None)
        patch.setattr(statefulset, "pod_revision", lambda pod, ns: revision)
        state = dataclasses.replace(
            ex.state, config={**ex.state.config, "pause-after-unit-refresh": pause}
        )
        hook = ex.run(ex.ctx.on.config_changed(), state)
        if pause not in PAUSE_VALUES:
            status = hook.state.unit_status
            assert isinstance(status, testing.BlockedStatus), status
            assert "all, first or none" in status.message
        hook = ex.run(ex.ctx.on.action(action, params=params), hook.state)
        if hook.failure is not None:
            assert hook.failure and "\n" not in hook.failure and "Traceback" not in hook.failure
