"""Reload timing in the cluster model (rule 11), and the charm's log level change played on it.

A node's configuration sees the pushed file only once its file watcher fired; a SIGHUP
re-binds what the configuration holds then; only LogLevel (not "Default") changes live.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from doubles.process import LEVELS, WATCH_DEBOUNCE, KurrentDBProcess
from hypothesis import given
from hypothesis import strategies as st

import workload.kurrentdb as workload_module
from kurrentdb_api import KurrentDBClient
from sim.harness import HOOK_ORDERS, UPDATE_STATUS_INTERVAL, Simulation
from sim.kurrentdb_cluster import SimCluster
from sim.scenarios import add_units, run_step
from sim.test_scaling import assert_healthy_cluster
from tls import KeyPair
from workload import paths

ADMIN, OPS = "admin-pw", "ops-pw"
NODE = "kurrentdb/0"
ADJUSTED = "The log level was adjusted to: "


def fqdn(n: int) -> str:
    return f"kurrentdb-{n}.kurrentdb-endpoints.prod.svc.cluster.local"


def conf_text(n: int, size: int, level: str) -> str:
    """kurrentdb.conf of unit n as the charm renders it: seeds of the other nodes of `size`."""
    seeds = ",".join(f"{fqdn(p)}:2113" for p in range(size) if p != n)
    lines = [f"ClusterSize: {size}", f"NodeHostAdvertiseAs: {fqdn(n)}", f"LogLevel: {level}"]
    if seeds:
        lines += ["DiscoverViaDns: false", f"GossipSeed: {seeds}"]
    return "\n".join(lines) + "\n"


class Clock:
    """Simulated seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cluster(bootstrap_ca: KeyPair, clock: Clock) -> Iterator[SimCluster]:
    with SimCluster(ca=bootstrap_ca, admin_password=ADMIN, ops_password=OPS, clock=clock) as sim:
        for n in range(3):
            sim.add_node(f"kurrentdb/{n}", fqdn(n))
        yield sim


def start_three(cluster: SimCluster, level: str = "Warning") -> None:
    for n in range(3):
        cluster.write_config(f"kurrentdb/{n}", conf_text(n, 3, level))
        cluster.start_process(f"kurrentdb/{n}")
    for _ in range(20):
        cluster.tick()
        if cluster.is_quiet():
            return
    raise AssertionError(f"no quiet cluster: {cluster.events[-10:]}")


def logged_levels(cluster: SimCluster, name: str) -> list[str]:
    """Every level the node's log says it adjusted to, as `pebble logs` shows them."""
    logs = cluster.node(name).service.pebble_logs([paths.PEBBLE_BINARY, "logs", "-n", "-1"])
    assert logs is not None
    output, _ = logs.wait_output()
    return [line.split(ADJUSTED)[1] for line in output.splitlines() if ADJUSTED in line]


def level(cluster: SimCluster, name: str = NODE) -> str | None:
    return cluster.node(name).service.log_level


# --- the model ------------------------------------------------------------------------------


def test_a_sighup_before_the_watcher_fired_keeps_the_old_level(cluster, clock):
    start_three(cluster)
    cluster.write_config(NODE, conf_text(0, 3, "Debug"))
    clock.now += 0.2  # the watcher fires 250 ms after the change
    cluster.sighup(NODE)
    assert level(cluster) == "Warning"
    assert logged_levels(cluster, NODE) == ["Warning"], "only the start adjusted the level"


def test_after_the_watcher_fired_a_sighup_applies_the_level_and_logs_it(cluster, clock):
    start_three(cluster)
    cluster.write_config(NODE, conf_text(0, 3, "Debug"))
    clock.now += 0.25
    assert level(cluster) == "Warning", "the watcher alone changes nothing: a reload binds"
    cluster.sighup(NODE)
    assert level(cluster) == "Debug"
    log = cluster.node(NODE).service.log
    # Debug lets Serilog's Information line through; the reload's own lines follow it.
    assert log[-2:] == [
        "[ 1,14,INF] The log level was adjusted to: Debug",
        "[ 1,14,INF] The node's configuration was successfully reloaded",
    ]
    cluster.sighup(NODE)
    assert logged_levels(cluster, NODE) == ["Warning", "Debug"], "logged only when it changed"
    assert [level(cluster, f"kurrentdb/{n}") for n in (1, 2)] == ["Warning", "Warning"]


def test_a_file_rewritten_while_the_watcher_sleeps_is_read_when_it_wakes(cluster, clock):
    start_three(cluster)
    cluster.write_config(NODE, conf_text(0, 3, "Error"))
    clock.now += 0.2
    cluster.write_config(NODE, conf_text(0, 3, "Debug"))
    clock.now += 0.05  # 250 ms after the first change: the watcher reads the file as it is
    cluster.sighup(NODE)
    assert level(cluster) == "Debug"
    assert logged_levels(cluster, NODE) == ["Warning", "Debug"], "Error never was in force"


def watched(level: str = "Warning") -> tuple[KurrentDBProcess, Clock]:
    """A process started at `level`, on a clock of its own."""
    clock = Clock()
    process = KurrentDBProcess(clock)
    process.file_written(f"LogLevel: {level}\n")
    process.started()
    return process, clock


def test_the_watcher_reads_the_file_as_it_was_when_it_woke():
    process, clock = watched()
    process.file_written("LogLevel: Error\n")
    clock.now += 0.3
    process.file_written("LogLevel: Debug\n")  # after the watcher woke at 0.25
    clock.now += 0.01
    process.sighup()
    assert process.log_level == "Error", "Debug's own read comes 250 ms after it"
    clock.now += 0.24
    process.sighup()
    assert process.log_level == "Debug"


def test_each_change_during_a_sleep_makes_the_watcher_read_once_more():
    process, clock = watched()
    process.file_written("LogLevel: Error\n")
    clock.now += 0.2
    process.file_written("LogLevel: Debug\n")  # fires the next token: read again at 0.5
    clock.now += 0.1
    process.file_written("LogLevel: Information\n")  # during that second sleep
    clock.now += 0.2  # 0.5: the second read, not 250 ms after this change
    process.sighup()
    assert process.log_level == "Information"


Step = tuple[str, str | float | None]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from((*LEVELS, "Default"))),
        st.tuples(st.just("wait"), st.sampled_from((0.0, 0.1, 0.2, 0.25, 0.3, 1.0))),
        st.tuples(st.just("sighup"), st.none()),
        st.tuples(st.just("restart"), st.none()),
    ),
    max_size=25,
)


@given(steps)
def test_the_level_in_force_was_in_the_file_and_a_settled_file_applies(steps: list[Step]):
    """Whatever the charm writes and signals, when: the node logs only at levels its file
    held, and a SIGHUP once the file has been unchanged for the watcher's delay applies it."""
    clock = Clock()
    process = KurrentDBProcess(clock)
    process.file_written("LogLevel: Warning\n")
    process.started()
    written, last_write = {"Warning"}, clock.now
    file_level = "Warning"
    for kind, value in steps:
        if kind == "write":
            assert isinstance(value, str)
            if value != file_level:
                last_write = clock.now
            process.file_written(f"LogLevel: {value}\n")
            written.add(value)
            file_level = value
        elif kind == "wait":
            assert isinstance(value, float)
            clock.now += value
        elif kind == "sighup":
            before = process.log_level
            process.sighup()
            if clock.now - last_write >= WATCH_DEBOUNCE:
                assert process.log_level == (before if file_level == "Default" else file_level)
        else:
            before = process.log_level
            process.started()
            assert process.log_level == ("Debug" if file_level == "Default" else file_level)
        assert process.log_level in written | {"Debug"}  # Debug: logconfig.json's default
    changes = [line for line in process.log if ADJUSTED in line]
    assert len(changes) <= sum(kind in ("sighup", "restart") for kind, _ in steps) + 1


def test_a_level_above_information_is_logged_on_stdout_only(cluster, clock):
    start_three(cluster, level="Information")
    cluster.write_config(NODE, conf_text(0, 3, "Error"))
    clock.now += 1
    cluster.sighup(NODE)
    assert level(cluster) == "Error"
    # Serilog now filters Information out: the line is the plain Console.WriteLine.
    assert cluster.node(NODE).service.log[-1] == "The log level was adjusted to: Error"


def test_default_leaves_the_level_in_force(cluster, clock):
    start_three(cluster)
    cluster.write_config(NODE, conf_text(0, 3, "Default"))
    clock.now += 1
    cluster.sighup(NODE)
    assert level(cluster) == "Warning"
    assert logged_levels(cluster, NODE) == ["Warning"]


def test_a_reload_does_not_change_the_cluster_size_a_restart_does(cluster, clock):
    start_three(cluster)
    leader = cluster.leader()
    cluster.write_config(NODE, conf_text(0, 5, "Debug"))
    clock.now += 1
    cluster.sighup(NODE)
    node = cluster.node(NODE)
    assert level(cluster) == "Debug", "the log level of the same file did apply"
    assert node.cluster_size == 3 and node.config["ClusterSize"] == 3
    cluster.tick()
    assert cluster.leader() == leader and cluster.restarts[NODE] == 0
    # A restart reads the file as it is: no watcher in between.
    cluster.write_config(NODE, conf_text(0, 5, "Error"))
    cluster.restart_process(NODE)
    assert node.cluster_size == 5 and node.seeds == {fqdn(p) for p in range(1, 5)}
    assert level(cluster) == "Error" and logged_levels(cluster, NODE)[-1] == "Error"
    assert cluster.restarts[NODE] == 1


def test_the_reloadconfig_endpoint_reloads_as_a_sighup_does(cluster, clock):
    start_three(cluster)
    cluster.write_config(NODE, conf_text(0, 3, "Verbose"))
    node = cluster.node(NODE)
    ops_client = KurrentDBClient(node.url, ca_pem=node.ca_pem, username="ops", password=OPS)
    ops_client.reload_config()
    assert level(cluster) == "Warning", "too early for the watcher"
    clock.now += 0.3
    ops_client.reload_config()
    assert level(cluster) == "Verbose" and node.service.sighups == 0


def test_a_stopped_node_ignores_a_sighup(cluster, clock):
    start_three(cluster)
    cluster.stop_process(NODE)
    cluster.write_config(NODE, conf_text(0, 3, "Debug"))
    clock.now += 1
    cluster.sighup(NODE)
    assert cluster.node(NODE).service.sighups == 0 and level(cluster) == "Warning"


# --- the charm on three units ----------------------------------------------------------------


def deploy_three(make_sim, hook_order: str) -> Simulation:
    sim: Simulation = make_sim(hook_order)
    run_step(sim, "deploy 3", add_units(3))
    assert all(node.service.log_level == "Warning" for node in sim.cluster.nodes.values())
    return sim


def assert_all_run(sim: Simulation, wanted: str) -> None:
    for name, node in sim.cluster.nodes.items():
        assert node.service.log_level == wanted, name
        assert logged_levels(sim.cluster, name)[-1] == wanted, name
        assert sim.units[name].rendered_config()["LogLevel"] == wanted


@pytest.mark.parametrize("hook_order", HOOK_ORDERS)
def test_a_log_level_change_reaches_every_node_without_a_restart(make_sim, hook_order):
    sim = deploy_three(make_sim, hook_order)
    starts = {name: node.starts for name, node in sim.cluster.nodes.items()}
    step = run_step(sim, "log-level=Debug", lambda s: s.set_config(log_level="Debug"))
    assert_all_run(sim, "Debug")
    assert step.restarts == {} and step.process_exits == {}
    assert {name: node.starts for name, node in sim.cluster.nodes.items()} == starts
    # Each charm waited for its node's watcher, so one signal was enough.
    assert [node.service.sighups for node in sim.cluster.nodes.values()] == [1, 1, 1]
    assert step.write_unavailable_ticks == 0
    assert_healthy_cluster(sim)


@pytest.mark.parametrize("hook_order", HOOK_ORDERS)
def test_a_watcher_slower_than_the_charms_wait_is_signalled_again(make_sim, hook_order):
    sim = deploy_three(make_sim, hook_order)
    # The first SIGHUP, CONFIG_WATCH_DELAY after the push, comes before the watcher fired.
    for node in sim.cluster.nodes.values():
        node.service.watch_delay = 1.5 * workload_module.CONFIG_WATCH_DELAY
    step = run_step(sim, "log-level=Debug", lambda s: s.set_config(log_level="Debug"))
    assert_all_run(sim, "Debug")
    assert [node.service.sighups for node in sim.cluster.nodes.values()] == [2, 2, 2]
    assert step.restarts == {} and sum(sim.cluster.restarts.values()) == 0
    assert_healthy_cluster(sim)


def slow_watchers(sim: Simulation) -> int:
    """Watchers slower than all of one hook's attempts (each signal comes CONFIG_WATCH_DELAY
    after the push or the last log read, the log is read CONFIG_WATCH_DELAY after it);
    returns the attempts a hook makes."""
    attempts = workload_module.LOG_LEVEL_ATTEMPTS
    for node in sim.cluster.nodes.values():
        node.service.watch_delay = (2 * attempts + 0.5) * workload_module.CONFIG_WATCH_DELAY
    return attempts


@pytest.mark.parametrize("hook_order", HOOK_ORDERS)
def test_a_level_not_taken_within_a_hook_is_signalled_again_by_the_next(make_sim, hook_order):
    sim = deploy_three(make_sim, hook_order)
    attempts = slow_watchers(sim)
    sim.set_config(log_level="Debug")
    sim.run_hooks(1)  # the first unit's config-changed
    first = sim.cluster.node(sim.ordered(sim.units)[0]).service
    assert first.sighups == attempts and first.log_level == "Warning", "bounded within a hook"
    # No peer data changed, so in a quiet model the next hook is update-status.
    sim.drain()
    sim.run_for(UPDATE_STATUS_INTERVAL)
    assert_all_run(sim, "Debug")
    assert all(node.service.sighups <= 2 * attempts for node in sim.cluster.nodes.values())
    assert sum(sim.charm_restarts.values()) == 0 and sum(sim.cluster.restarts.values()) == 0


def test_a_level_not_taken_within_a_hook_shows_in_the_status(make_sim):
    sim = deploy_three(make_sim, "number")
    slow_watchers(sim)
    sim.set_config(log_level="Debug")
    sim.run_hooks(1)
    first = sim.ordered(sim.units)[0]
    assert sim.cluster.node(first).service.log_level == "Warning"
    assert "Debug" in sim.status(first).message, sim.status(first)
