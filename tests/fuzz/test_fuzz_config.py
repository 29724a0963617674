"""Config options, the `system-users` secret id and the secret's content, generated.

The oracle is the charm's own parser (`config.parse_config`, `credentials` rules): a value
it refuses must block with the parser's message and leave the rendered file as it was; a
value it takes must be applied; either way, setting the value back recovers.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from ops import testing
from scenario_fixtures import IMAGE_VERSION, replace_config

import config
from config import LOG_LEVELS, ConfigError, Profile, RunProjections
from fuzz.fuzz_harness import example, fuzz_settings

ACTIVE = testing.ActiveStatus("Leader")


def variants(words: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(words).flatmap(
        lambda w: st.sampled_from([w, w.upper(), w.title(), f" {w} ", f"{w}\n", w[:-1], f"{w}x"])
    )


option_names = sorted(config.options_for(IMAGE_VERSION).options.names)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
extra_values = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)
yaml_ish = st.lists(
    st.sampled_from(
        [*"{}[],:&*!|>-'\"#~ \n\tabcMAX019.eE+", "!!binary ", "!!set ", "&a ", "*a", "2020-01-01"]
    ),
    max_size=40,
).map("".join)
extra_options = st.one_of(
    st.just(""),
    yaml_ish,
    st.dictionaries(
        st.sampled_from(
            [*option_names, "Licensing", "Metrics", "Db", "insecure", "CertificateFile"]
        ),
        extra_values,
        max_size=3,
    ).map(lambda d: yaml.safe_dump(d, default_flow_style=True, width=10_000)),
    st.sampled_from(
        [
            "{MaxAppendSize: 1048576}",
            "{maxappendsize: 1048576}",
            "{MaxAppendSize: .nan}",
            "{Licensing: {Nested: {CertificateFile: /x}}}",
            "a: &a [x, x]\nb: [*a, *a]",
            "{MaxAppendSize: 1, MaxAppendSize: 2}",
            "{Transform: !!binary aGVsbG8=}",
            "{SkipIndexVerify: 'yes'}",
            "{Licensing: " + "{a: " * 50 + "1" + "}" * 50 + "}",
        ]
    ),
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "profile": variants([p.value for p in Profile]) | st.text(max_size=10),
        "log-level": variants(list(LOG_LEVELS)) | st.just("") | st.text(max_size=10),
        "run-projections": variants([r.value for r in RunProjections]) | st.text(max_size=10),
        "start-standard-projections": st.booleans(),
        "extra-options": extra_options,
    },
)


@fuzz_settings(60)
@given(cfg=configs)
def test_any_config_blocks_with_its_reason_or_is_applied_and_recovers(world, cfg):
    with example(world, "config options") as ex:
        rendered = ex.config_file
        try:
            expected = config.parse_config(cfg, IMAGE_VERSION)
            refusal = None
        except ConfigError as e:
            refusal, expected = e, None
        hook = ex.run(ex.ctx.on.config_changed(), replace_config(ex.state, **_kw(cfg)))
        if refusal is not None:
            if hook.status != testing.BlockedStatus(refusal.message):
                ex.fail_status(f"{hook.status!r} for a refused value: {refusal.message}")
            if "None" in hook.status.message and "None" not in str(cfg):
                ex.fail_status(f"{hook.status!r} says None; the user wrote {cfg}")
            assert ex.config_file == rendered, "a refused value changed the rendered file"
        else:
            assert expected is not None
            if hook.status != ACTIVE:
                ex.fail_status(f"{hook.status!r} for a value the parser takes: {cfg}")
            assert f'LogLevel: "{expected.log_level}"' in ex.config_file
        # Setting the options back recovers, and renders what was there before.
        back = dataclasses.replace(hook.state, config=dict(world.base.config))
        fixed = ex.run(ex.ctx.on.config_changed(), back)
        if fixed.status != ACTIVE:
            ex.fail_status(f"{fixed.status!r} after the value was fixed")
        assert ex.config_file == rendered


def _kw(cfg: dict) -> dict:
    return {k.replace("-", "_"): v for k, v in cfg.items()}


# --- the system-users secret id -----------------------------------------------------------------

ids = st.text(alphabet="0123456789abcdefghijklmnopqrstuv", min_size=20, max_size=20).map(
    lambda s: f"secret:{s}"
)


@fuzz_settings(25)
@given(
    kind=st.sampled_from(["not granted", "own ca secret", "own passwords secret", "unit secret",
                          "malformed"]),
    missing=ids,
    malformed=st.text(max_size=40),
)  # fmt: skip
def test_any_system_users_id_blocks_naming_the_option_and_recovers(world, kind, missing, malformed):
    with example(world, "system-users secret id") as ex:
        rendered = ex.config_file
        peer = ex.state.get_relations("kurrentdb-peers")[0]
        unit_secret = next(s for s in ex.state.secrets if s.owner == "unit")
        secret_id = {
            "not granted": missing,
            "own ca secret": peer.local_app_data["ca-secret-id"],
            "own passwords secret": peer.local_app_data["passwords-secret-id"],
            "unit secret": unit_secret.id,
            "malformed": malformed,
        }[kind]
        state = replace_config(ex.state, system_users=secret_id)
        with pytest.MonkeyPatch.context() as patch:
            if kind == "malformed":  # Juju refuses these before the charm; the charm copes too
                patch.setenv("SCENARIO_SKIP_CONSISTENCY_CHECKS", "1")
            hook = ex.run(ex.ctx.on.config_changed(), state)
        if secret_id.strip() and not _blocked_on(hook.status, "system-users"):
            ex.fail_status(f"{hook.status!r} for system-users={secret_id!r} ({kind})")
        assert ex.config_file == rendered
        fixed = ex.run(
            ex.ctx.on.config_changed(),
            dataclasses.replace(hook.state, config=dict(world.base.config)),
        )
        if fixed.status != ACTIVE:
            ex.fail_status(f"{fixed.status!r} after system-users was unset")


def _blocked_on(status: testing.StatusBase, option: str) -> bool:
    return status.name == "blocked" and status.message.startswith(f"invalid config {option}=")


# --- the system-users secret's content ----------------------------------------------------------

passwords = st.one_of(
    st.sampled_from(["", " ", "\n", "\t \n"]),
    st.text(min_size=1, max_size=40),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=8, max_size=30
    ),
    st.builds(
        lambda a, b: f"{a}\n{b}", st.text(min_size=4, max_size=10), st.text(min_size=4, max_size=10)
    ),
    st.integers(min_value=1000, max_value=200_000).map(lambda n: ("Huge-Pw-" * (n // 8 + 1))[:n]),
)
keys = st.sampled_from(["admin", "ops"]) | st.sampled_from(
    ["Admin", "admin ", "root", "admin-password", "", "ops\n", "пароль"]
)


def _accepted(content: dict[str, str]) -> bool:
    return set(content) <= {"admin", "ops"} and all(v.strip() for v in content.values())


@fuzz_settings(40)
@given(content=st.dictionaries(keys, passwords, min_size=1, max_size=3), fixed_admin=st.text(
    alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGH23456789-_", min_size=12, max_size=20))  # fmt: skip
def test_any_system_users_content_is_rotated_or_refused_and_recovers(world, content, fixed_admin):
    with example(world, "system-users secret content") as ex:
        secret = testing.Secret(content, owner=None)
        state = dataclasses.replace(ex.state, secrets=[*ex.state.secrets, secret])
        state = replace_config(state, system_users=secret.id)
        hook = ex.run(ex.ctx.on.config_changed(), state)
        double = world.double
        if _accepted(content):
            if hook.status != ACTIVE:
                ex.fail_status(f"{hook.status!r} for a usable system-users secret")
            for user, password in content.items():
                assert double.users[user].password == password, f"{user} was not rotated"
        elif not _blocked_on(hook.status, "system-users"):
            ex.fail_status(f"{hook.status!r} for an unusable system-users secret")
        # A new revision with a usable password rotates, whatever came before.
        newer = dataclasses.replace(
            secret, tracked_content=content, latest_content={"admin": fixed_admin}
        )
        after = dataclasses.replace(
            hook.state, secrets=[*(s for s in hook.state.secrets if s.id != secret.id), newer]
        )
        fixed = ex.run(ex.ctx.on.secret_changed(newer), after)
        if fixed.status != ACTIVE:
            ex.fail_status(f"{fixed.status!r} after the secret was fixed")
        assert double.users["admin"].password == fixed_admin
