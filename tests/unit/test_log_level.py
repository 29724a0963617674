"""A log level change really applies: the reload waits for KurrentDB's file watcher.

Against `doubles/process.py`, which follows the server: a SIGHUP re-binds what the
configuration already read, and the YAML file is re-read only 250 ms after it changed.
"""

from __future__ import annotations

import json
import types
from typing import Any

import ops
import pytest
from conftest import replace_config, unit_state
from doubles.process import KurrentDBProcess

import workload.kurrentdb as workload_module
from workload import paths


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch, kurrentdb) -> tuple[KurrentDBProcess, Clock]:
    """The node's process behind Pebble's push, start, restart, signal and logs."""
    import time

    clock = Clock()
    node = KurrentDBProcess(lambda: clock.now)
    fake_time = types.SimpleNamespace(sleep=clock.sleep, time=time.time, monotonic=time.monotonic)
    monkeypatch.setattr(workload_module, "time", fake_time)
    push, replan, restart, signal, exec_ = (
        ops.Container.push,
        ops.Container.replan,
        ops.Container.restart,
        ops.Container.send_signal,
        ops.Container.exec,
    )

    def pushed(self, path, source, **kwargs):
        push(self, path, source, **kwargs)
        if path == paths.CONFIG_FILE:
            node.file_written(source)

    def replanned(self):
        replan(self)
        node.started()

    def restarted(self, *names):
        restart(self, *names)
        node.started()

    def signalled(self, sig, *names):
        signal(self, sig, *names)
        node.sighup()

    def executed(self, command, **kwargs: Any):
        logs = node.pebble_logs(command)
        if logs is not None:
            assert kwargs["environment"] == {"PEBBLE_SOCKET": paths.PEBBLE_SOCKET}
            return logs
        return exec_(self, command, **kwargs)

    for name, patched in (
        ("push", pushed),
        ("replan", replanned),
        ("restart", restarted),
        ("send_signal", signalled),
        ("exec", executed),
    ):
        monkeypatch.setattr(ops.Container, name, patched)
    return node, clock


def started(ctx, volumes, ca, **config):
    state = unit_state(volumes, ca, config=config)
    return ctx.run(ctx.on.pebble_ready(state.get_container(paths.CONTAINER)), state)


def applied(volumes) -> dict:
    return json.loads(volumes.read(paths.APPLIED_FILE))


def test_the_double_ignores_a_sighup_before_its_watcher_fired():
    clock = Clock()
    node = KurrentDBProcess(lambda: clock.now)
    node.file_written("LogLevel: Warning\n")
    node.started()
    node.file_written("LogLevel: Debug\n")
    clock.sleep(0.1)
    node.sighup()
    assert node.log_level == "Warning"
    clock.sleep(0.2)
    node.sighup()
    assert node.log_level == "Debug"
    assert node.log[-2] == "[ 1,14,INF] The log level was adjusted to: Debug"


def test_a_sighup_sent_before_the_file_watcher_fires_is_not_enough(
    ctx, volumes, internal_ca, process, monkeypatch
):
    node, _ = process
    monkeypatch.setattr(workload_module, "CONFIG_WATCH_DELAY", 0.0)  # signal at once
    state = started(ctx, volumes, internal_ca)
    assert node.log_level == "Warning"
    ctx.run(ctx.on.config_changed(), replace_config(state, log_level="Debug"))
    assert node.sighups == workload_module.LOG_LEVEL_ATTEMPTS
    assert node.log_level == "Warning", "every signal came before the watcher re-read the file"
    # Not recorded as applied: the next hook signals again.
    assert applied(volumes)["log-level"] == "Warning"


def test_the_reload_waits_for_the_watcher_and_confirms_the_level(
    ctx, volumes, internal_ca, process, monkeypatch, pebble_calls
):
    node, clock = process
    monkeypatch.setattr(workload_module, "CONFIG_WATCH_DELAY", 1.0)
    state = started(ctx, volumes, internal_ca)
    before = clock.now
    state = ctx.run(ctx.on.config_changed(), replace_config(state, log_level="Debug"))
    assert node.log_level == "Debug"
    assert node.sighups == 1 and pebble_calls.restarts == 0
    assert clock.now - before == pytest.approx(2.0), "one watcher wait, one wait for the log"
    assert applied(volumes)["log-level"] == "Debug"
    # Nothing more to do on the next hook.
    ctx.run(ctx.on.update_status(), state)
    assert node.sighups == 1


def test_a_level_not_taken_is_signalled_again_by_the_next_hook(
    ctx, volumes, internal_ca, process, monkeypatch
):
    node, _ = process
    monkeypatch.setattr(workload_module, "CONFIG_WATCH_DELAY", 0.0)
    state = started(ctx, volumes, internal_ca)
    state = ctx.run(ctx.on.config_changed(), replace_config(state, log_level="Debug"))
    assert node.log_level == "Warning"
    monkeypatch.setattr(workload_module, "CONFIG_WATCH_DELAY", 1.0)
    ctx.run(ctx.on.update_status(), state)
    assert node.log_level == "Debug"
    assert applied(volumes)["log-level"] == "Debug"


def test_without_a_readable_log_one_signal_after_the_watcher_is_sent(
    ctx, volumes, internal_ca, kurrentdb, pebble_calls
):
    # Scenario has no `pebble logs` mock here: the exec fails and the charm cannot confirm.
    state = started(ctx, volumes, internal_ca)
    ctx.run(ctx.on.config_changed(), replace_config(state, log_level="Error"))
    assert pebble_calls.signals == ["SIGHUP"]
    assert applied(volumes)["log-level"] == "Error"
