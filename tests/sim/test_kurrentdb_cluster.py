"""Tests of the cluster model alone (no charm): elections, catch-up, surplus, lost writes, HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kurrentdb_api import KurrentDBAuthError, KurrentDBClient, KurrentDBUnreachable
from sim.kurrentdb_cluster import Segment, SimCluster, common_bytes, prefix, split_brain_possible
from tls import KeyPair, generate_ca

ADMIN, OPS = "admin-pw", "ops-pw"
MiB = 2**20


def fqdn(n: int) -> str:
    return f"kurrentdb-{n}.kurrentdb-endpoints.prod.svc.cluster.local"


def conf(n: int, size: int, peers: tuple[int, ...] = (), **extra: object) -> dict[str, object]:
    """The parsed kurrentdb.conf of unit n, as the charm renders it."""
    config: dict[str, object] = {"ClusterSize": size, "NodeHostAdvertiseAs": fqdn(n), **extra}
    if peers:
        config |= {
            "DiscoverViaDns": False,
            "GossipSeed": ",".join(f"{fqdn(p)}:2113" for p in peers),
        }
    return config


def conf3(n: int, **extra: object) -> dict[str, object]:
    return conf(n, 3, tuple(p for p in range(3) if p != n), **extra)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return generate_ca()


@pytest.fixture
def cluster(ca: KeyPair) -> Iterator[SimCluster]:
    with SimCluster(ca=ca, admin_password=ADMIN, ops_password=OPS) as sim:
        for n in range(3):
            sim.add_node(f"kurrentdb/{n}", fqdn(n))
        yield sim


def settle(sim: SimCluster, limit: int = 20) -> int:
    for ticks in range(1, limit + 1):
        sim.tick()
        if sim.is_quiet():
            return ticks
    raise AssertionError(f"not quiet after {limit} ticks: {sim.events[-10:]}")


def form_three(sim: SimCluster) -> str:
    for n in range(3):
        sim.start_process(f"kurrentdb/{n}", conf3(n))
    settle(sim)
    leader = sim.leader()
    assert leader is not None
    return leader


def states(sim: SimCluster) -> dict[str, str]:
    return {name: node.state for name, node in sim.nodes.items()}


def client(sim: SimCluster, name: str, user: str | None = "admin") -> KurrentDBClient:
    node = sim.node(name)
    password = ADMIN if user == "admin" else None
    return KurrentDBClient(node.url, ca_pem=node.ca_pem, username=user, password=password)


def test_logs_agree_up_to_the_first_byte_of_another_term():
    S = Segment  # noqa: N806
    a = (S(1, 0, 0, 100), S(2, 1, 100, 150))
    assert common_bytes(a, (S(1, 0, 0, 120),)) == 100
    assert common_bytes(a, (S(1, 0, 0, 100), S(2, 1, 100, 300))) == 150
    assert common_bytes(a, (S(3, 0, 0, 100),)) == 0
    assert prefix(a, 100) == (S(1, 0, 0, 100), S(2, 1, 100, 100))  # with the epoch record
    assert prefix(a, 100, markers=False) == (S(1, 0, 0, 100),)


def test_three_nodes_elect_one_leader_and_followers_catch_up(cluster: SimCluster):
    leader = form_three(cluster)
    assert sorted(states(cluster).values()) == ["Follower", "Follower", "Leader"]
    assert cluster.election_count == 1
    assert {n.leader for n in cluster.nodes.values()} == {leader}
    cluster.tick()
    checkpoints = {n.writer_checkpoint for n in cluster.nodes.values()}
    assert len(checkpoints) == 1 and checkpoints.pop() > 0
    assert cluster.history[-1].writable and cluster.history[-1].leader == leader
    assert cluster.lost_acknowledged_writes() == 0
    assert cluster.acknowledged_bytes() == cluster.node(leader).writer_checkpoint


def test_fresh_nodes_take_a_tick_to_boot_and_one_to_elect(cluster: SimCluster):
    for n in range(3):
        cluster.start_process(f"kurrentdb/{n}", conf3(n))
    assert set(states(cluster).values()) == {"Initializing"}
    cluster.tick()
    assert set(states(cluster).values()) == {"DiscoverLeader"}
    assert cluster.leader() is None
    cluster.tick()
    assert cluster.leader() == "kurrentdb/0"  # all empty: the first added wins the tie
    assert cluster.history[-1].writable  # elected, then it writes in the same tick
    assert cluster.write_unavailable_ticks == 1


def test_leader_stopped_a_new_leader_is_elected_and_writes_continue(cluster: SimCluster):
    old = form_three(cluster)
    unavailable = cluster.write_unavailable_ticks
    cluster.stop_process(old)
    cluster.tick()  # the followers notice the leader is gone
    assert cluster.leader() is None
    cluster.tick()
    new = cluster.leader()
    assert new not in (None, old)
    before = cluster.node(new).writer_checkpoint
    cluster.tick()
    assert cluster.node(new).writer_checkpoint == before + MiB
    assert cluster.history[-1].writable
    assert cluster.write_unavailable_ticks == unavailable + 1
    assert cluster.leader_restart_order == [old]

    cluster.start_process(old, conf3(int(old[-1])))
    settle(cluster)
    assert cluster.node(old).state == "Follower"
    assert cluster.restarts[old] == 1
    assert cluster.lost_acknowledged_writes() == 0


def test_two_of_three_down_means_no_leader_and_no_writes(cluster: SimCluster):
    leader = form_three(cluster)
    followers = [name for name in cluster.nodes if name != leader]
    unavailable = cluster.write_unavailable_ticks
    for name in followers:
        cluster.stop_process(name)
    for _ in range(3):
        cluster.tick()
    assert cluster.leader() is None
    assert cluster.node(leader).state == "Unknown"
    assert cluster.write_unavailable_ticks == unavailable + 3
    assert cluster.history[-1].voting_down == 2
    assert any(what.startswith("no quorum emerged") for _, _, what in cluster.events)

    for name in followers:
        cluster.start_process(name, conf3(int(name[-1])))
    settle(cluster)
    assert cluster.leader() is not None
    assert cluster.lost_acknowledged_writes() == 0


def test_empty_node_never_wins_over_a_node_with_data(ca: KeyPair):
    # Unit 0 ran alone and is being reconfigured for 3 nodes. The empty unit 1 has a higher
    # priority and is ready to vote first: the data must still decide.
    with SimCluster(
        ca=ca, admin_password=ADMIN, ops_password=OPS, catch_up_bytes_per_tick=4 * MiB
    ) as sim:
        sim.add_node("kurrentdb/0", fqdn(0))
        sim.add_node("kurrentdb/1", fqdn(1))
        sim.start_process("kurrentdb/0", conf(0, 1))
        for _ in range(12):
            sim.tick()
        data = sim.node("kurrentdb/0").writer_checkpoint
        assert data > 8 * MiB and sim.acknowledged_bytes() == data
        sim.stop_process("kurrentdb/0")
        sim.start_process("kurrentdb/1", conf3(1, NodePriority=10))
        sim.tick()
        sim.start_process("kurrentdb/0", conf3(0))
        sim.tick()  # unit 1 is ready, but the best node it sees (unit 0) is not yet
        assert sim.leader() is None
        sim.tick()
        assert sim.leader() == "kurrentdb/0"
        assert sim.node("kurrentdb/1").state == "CatchingUp"
        assert not sim.history[-1].writable  # a quorum of two must hold every write
        settle(sim)
        assert sim.node("kurrentdb/1").state == "Follower"
        assert sim.lost_acknowledged_writes() == 0


def test_resign_moves_leadership_without_unavailability(cluster: SimCluster):
    old = form_three(cluster)
    follower = next(name for name in cluster.nodes if name != old)
    client(cluster, follower).resign_node()  # ignored on a follower, still 200
    assert cluster.node(old).state == "Leader"

    client(cluster, old).resign_node()
    assert cluster.node(old).state == "ResigningLeader"
    assert client(cluster, old).info().state == "ResigningLeader"
    unavailable = cluster.write_unavailable_ticks
    cluster.tick()
    new = cluster.leader()
    assert new not in (None, old)
    assert cluster.node(old).state == "Follower"
    settle(cluster)
    assert cluster.write_unavailable_ticks == unavailable
    assert cluster.lost_acknowledged_writes() == 0
    assert cluster.node(old).double.resign_count == 1


def test_surplus_node_shuts_down(cluster: SimCluster):
    cluster.start_process("kurrentdb/0", conf(0, 1))
    settle(cluster)
    assert cluster.leader() == "kurrentdb/0"
    cluster.start_process("kurrentdb/1", conf3(1))
    cluster.tick()
    assert not cluster.process_running("kurrentdb/1")
    assert cluster.surplus_shutdowns == {"kurrentdb/1": 1}
    assert cluster.leader() == "kurrentdb/0"
    with pytest.raises(KurrentDBUnreachable):
        client(cluster, "kurrentdb/1").info()


def test_rolling_restart_followers_then_leader_loses_nothing(cluster: SimCluster):
    leader = form_three(cluster)
    order = [name for name in cluster.nodes if name != leader]
    for name in order:
        cluster.restart_process(name, conf3(int(name[-1])))
        settle(cluster)
    client(cluster, leader).resign_node()
    settle(cluster)
    cluster.restart_process(leader, conf3(int(leader[-1])))
    settle(cluster)
    assert max(record.voting_down for record in cluster.history) == 1
    assert cluster.lost_acknowledged_writes() == 0
    assert cluster.leader_restart_order == []  # it had resigned before its restart


def test_empty_nodes_elected_while_the_data_node_is_down_lose_writes(cluster: SimCluster):
    cluster.start_process("kurrentdb/0", conf(0, 1))
    for _ in range(6):
        cluster.tick()
    acknowledged = cluster.acknowledged_bytes()
    assert acknowledged > 0
    cluster.stop_process("kurrentdb/0")
    for n in (1, 2):  # the hazard: a size-3 quorum of empty nodes
        cluster.start_process(f"kurrentdb/{n}", conf3(n))
    cluster.tick()
    cluster.tick()
    assert cluster.leader() in ("kurrentdb/1", "kurrentdb/2")
    assert cluster.lost_acknowledged_writes() == acknowledged

    # The data node comes back and finds a divergent history: it truncates and exits.
    cluster.start_process("kurrentdb/0", conf3(0))
    cluster.tick()
    assert not cluster.process_running("kurrentdb/0")
    assert cluster.node("kurrentdb/0").writer_checkpoint == 0
    assert any("offline truncation" in what for _, _, what in cluster.events)
    cluster.start_process("kurrentdb/0", conf3(0))  # Pebble restarts it
    settle(cluster)
    assert cluster.node("kurrentdb/0").state == "Follower"
    assert cluster.lost_acknowledged_writes() == acknowledged  # counted once


def test_split_brain_of_mixed_sizes_loses_the_lesser_leaders_writes(cluster: SimCluster):
    # Units 0 and 1 form a size-3 cluster; unit 2 runs as a single node nobody lists.
    cluster.start_process("kurrentdb/0", conf(0, 3, (1,)))
    cluster.start_process("kurrentdb/1", conf(1, 3, (0,)))
    cluster.start_process("kurrentdb/2", conf(2, 1))
    for _ in range(5):
        cluster.tick()
    assert [n.state for n in cluster.nodes.values()] == ["Leader", "Follower", "Leader"]
    assert cluster.leader() == "kurrentdb/0"  # the best of the two
    lonely = cluster.node("kurrentdb/2").writer_checkpoint
    assert lonely > 0 and cluster.lost_acknowledged_writes() == lonely

    cluster.restart_process("kurrentdb/2", conf3(2))
    cluster.tick()
    assert not cluster.process_running("kurrentdb/2")  # offline truncation
    assert cluster.lost_acknowledged_writes() == lonely


def test_config_the_server_would_reject_exits_at_boot(cluster: SimCluster):
    cluster.start_process("kurrentdb/0", conf(0, 1, (1, 2)))  # two seeds with ClusterSize 1
    cluster.start_process("kurrentdb/1", conf(1, 3, DiscoverViaDns=False))  # no seeds
    cluster.tick()
    assert not cluster.process_running("kurrentdb/0")
    assert not cluster.process_running("kurrentdb/1")


def test_seeds_are_ignored_while_dns_discovery_is_on(cluster: SimCluster):
    for n in range(3):
        config = conf3(n)
        del config["DiscoverViaDns"]
        cluster.start_process(f"kurrentdb/{n}", config)
    for _ in range(5):
        cluster.tick()
    assert cluster.leader() is None


def test_one_listing_is_enough_to_gossip(cluster: SimCluster):
    # Unit 2 joins later: units 0 and 1 do not list it, but it lists them.
    cluster.start_process("kurrentdb/0", conf(0, 3, (1,)))
    cluster.start_process("kurrentdb/1", conf(1, 3, (0,)))
    settle(cluster)
    cluster.start_process("kurrentdb/2", conf3(2))
    settle(cluster)
    assert sorted(states(cluster).values()) == ["Follower", "Follower", "Leader"]


def test_http_doubles_reflect_the_model(cluster: SimCluster):
    with pytest.raises(KurrentDBUnreachable):
        client(cluster, "kurrentdb/0").info()  # no process yet
    for n in range(3):
        cluster.start_process(f"kurrentdb/{n}", conf3(n))
    assert not client(cluster, "kurrentdb/0").is_live()
    assert client(cluster, "kurrentdb/0", None).info().state == "Initializing"
    with pytest.raises(KurrentDBAuthError):  # no users before the first leader
        client(cluster, "kurrentdb/0").get_user("admin")
    settle(cluster)
    leader = cluster.leader()
    assert leader is not None
    assert client(cluster, "kurrentdb/0").is_live()
    assert client(cluster, leader).get_user("admin") is not None

    for name, node in cluster.nodes.items():
        api = client(cluster, name, None)
        assert api.info().state == node.state
        gossip = api.gossip()
        assert {m.http_host for m in gossip.members} == {fqdn(n) for n in range(3)}
        assert {m.http_port for m in gossip.members} == {2113}
        assert gossip.leader is not None and gossip.leader.http_host == cluster.node(leader).fqdn
        me = next(m for m in gossip.members if m.http_host == node.fqdn)
        assert me.writer_checkpoint == node.writer_checkpoint
        assert me.epoch_number == node.epoch_number == 0

    follower = next(name for name in cluster.nodes if name != leader)
    cluster.stop_process(follower)
    stale = client(cluster, leader, None).gossip().members  # until the next tick
    assert all(m.is_alive for m in stale)
    cluster.tick()
    with pytest.raises(KurrentDBUnreachable):
        client(cluster, follower, None).gossip()
    gone = [m for m in client(cluster, leader, None).gossip().members if not m.is_alive]
    assert [m.http_host for m in gone] == [cluster.node(follower).fqdn]


def test_set_ca_switches_the_certificates(cluster: SimCluster):
    cluster.start_process("kurrentdb/0", conf(0, 1))
    cluster.set_ca(other := generate_ca())
    node = cluster.node("kurrentdb/0")
    assert node.ca_pem == other.certificate
    assert KurrentDBClient(node.url, ca_pem=other.certificate).info().state == "Initializing"


def test_deterministic(ca: KeyPair):
    def run() -> list[object]:
        with SimCluster(ca=ca, admin_password=ADMIN, ops_password=OPS) as sim:
            for n in range(3):
                sim.add_node(f"kurrentdb/{n}", fqdn(n))
            leader = form_three(sim)
            sim.stop_process(leader)
            for _ in range(4):
                sim.tick()
            return [*sim.history, *sim.events]

    assert run() == run()


def test_lag_jitter_shows_in_followers_gossip_not_in_what_they_hold(cluster: SimCluster):
    leader = form_three(cluster)
    cluster.lag_jitter_bytes = 8 * MiB
    acked, unavailable = cluster.acknowledged_bytes(), cluster.write_unavailable_ticks
    lags: set[int] = set()
    for _ in range(10):
        cluster.tick()
        members = {m.http_host: m for m in client(cluster, leader).gossip().members}
        top = members[fqdn(int(leader[-1]))].writer_checkpoint
        for name, node in cluster.nodes.items():
            if name != leader:
                assert node.writer_checkpoint == top, "followers hold every byte"
                lag = (
                    top
                    - {m.http_host: m for m in client(cluster, name).gossip().members}[
                        node.fqdn
                    ].writer_checkpoint
                )
                assert 0 <= lag <= 8 * MiB
                lags.add(lag)
    assert len(lags) > 5, "a fresh draw each tick"
    assert states(cluster) == {leader: "Leader"} | {
        n: "Follower" for n in cluster.nodes if n != leader
    }
    assert cluster.write_unavailable_ticks == unavailable
    assert cluster.acknowledged_bytes() == acked + 10 * MiB


def test_each_node_elects_by_its_own_cluster_size(ca: KeyPair):
    """ElectionsService counts votes against the node's own ClusterSize: two size-3 nodes
    elect each other while a size-5 node beside them cannot reach its majority of 3."""
    with SimCluster(ca=ca, admin_password=ADMIN, ops_password=OPS) as sim:
        for n in range(3):
            sim.add_node(f"kurrentdb/{n}", fqdn(n))
        sim.start_process("kurrentdb/0", conf(0, 5, (1, 2)))
        sim.start_process("kurrentdb/1", conf(1, 5, (0, 2)))
        settle_ticks = [sim.tick() for _ in range(4)]
        assert len(settle_ticks) == 4 and sim.leader() is None  # 2 of 5: no majority
        sim.start_process("kurrentdb/2", conf(2, 3, (0, 1)))
        for _ in range(4):
            sim.tick()
        # Three running nodes: a majority of 5 for the size-5 nodes, elected among them.
        assert sim.leader() in ("kurrentdb/0", "kurrentdb/1")
    assert not split_brain_possible([5, 5, 3])
    assert split_brain_possible([3, 3, 3, 5])
    assert split_brain_possible([1, 3, 3])


def test_a_size_1_node_and_two_size_3_nodes_can_both_lead(cluster: SimCluster):
    cluster.start_process("kurrentdb/0", conf(0, 1))
    cluster.start_process("kurrentdb/1", conf(1, 3, (2,)))
    cluster.start_process("kurrentdb/2", conf(2, 3, (1,)))
    for _ in range(4):
        cluster.tick()
    leaders = sorted(n for n, s in states(cluster).items() if s == "Leader")
    assert leaders[0] == "kurrentdb/0" and len(leaders) == 2
    assert cluster.first_breach is not None
    assert cluster.first_breach.invariant.startswith("a:")


def test_caught_up_clone_is_promoted_when_a_follower_is_missing(cluster: SimCluster):
    leader = form_three(cluster)
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.stop_process(follower)
    cluster.tick()
    cluster.start_process(follower, conf3(int(follower[-1])))
    seen = []
    for _ in range(6):
        cluster.tick()
        seen.append(cluster.node(follower).state)
    assert "Follower" in seen and cluster.surplus_shutdowns == {}


def test_clones_beyond_the_leaders_size_are_dropped_as_surplus(cluster: SimCluster):
    form_three(cluster)
    cluster.add_node("kurrentdb/3", fqdn(3))
    cluster.start_process("kurrentdb/3", conf(3, 5, (0, 1, 2)))
    for _ in range(3):
        cluster.tick()
    # The size-3 leader has its 2 followers: the caught-up clone exits (code 0).
    assert cluster.surplus_shutdowns == {"kurrentdb/3": 1}
    assert any("SURPLUS OF NODES" in what for _, n, what in cluster.events if n == "kurrentdb/3")


def test_leader_short_of_subscriptions_retires_after_the_timeout(cluster: SimCluster):
    leader = form_three(cluster)
    for name in cluster.nodes:
        if name != leader:
            cluster.stop_process(name)
    cluster.tick()
    assert cluster.node(leader).state == "Leader"  # not yet: NoQuorumTimeout is 3 s
    cluster.tick()
    assert cluster.node(leader).state == "Unknown"


def test_health_live_answers_204_only_once_the_node_served(cluster: SimCluster):
    import urllib.request

    def live(name: str) -> int:
        node = cluster.node(name)
        import ssl

        context = ssl.create_default_context(cadata=node.ca_pem)
        context.check_hostname = False
        request = urllib.request.Request(node.url + "/health/live")  # noqa: S310 (https)
        request.add_header("Authorization", "Basic YmFkOmJhZA==")  # bad credentials: ignored
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    cluster.start_process("kurrentdb/0", conf3(0))
    cluster.tick()
    assert cluster.node("kurrentdb/0").process == "up"
    assert live("kurrentdb/0") == 503  # up, discovering: not SystemReady
    cluster.start_process("kurrentdb/1", conf3(1))
    for _ in range(4):
        cluster.tick()
    assert live("kurrentdb/0") == 204 and live("kurrentdb/1") == 204


def test_a_restore_runs_the_backups_history_and_drops_later_writes_on_purpose(
    cluster: SimCluster,
):
    """Every node stopped by a restore (exempt from invariant b), loaded with the backup's
    log in a history of its own: what was written after the backup is dropped, not lost."""
    form_three(cluster)
    for _ in range(3):
        cluster.tick()
    backup = cluster.node("kurrentdb/1").log
    for _ in range(3):
        cluster.tick()
    for n in range(3):
        cluster.stop_process(f"kurrentdb/{n}", by_charm=True, for_restore=True)
    cluster.tick()
    for n in range(3):
        cluster.load_data(f"kurrentdb/{n}", "restored:x", backup)
        cluster.start_process(f"kurrentdb/{n}", conf3(n))
    settle(cluster)
    for _ in range(2):
        cluster.tick()
    assert cluster.breaches == []
    leader = cluster.node(cluster.leader() or "")
    assert common_bytes(leader.log, backup) == backup[-1].end
    assert cluster.acknowledged_bytes() == leader.writer_checkpoint


def test_the_same_stops_without_a_restore_break_invariant_b(cluster: SimCluster):
    form_three(cluster)
    for n in range(2):
        cluster.stop_process(f"kurrentdb/{n}", by_charm=True)
    cluster.tick()
    assert [b.invariant for b in cluster.breaches] == ["b: two voting nodes down by the charm"]


def test_nodes_of_two_histories_running_at_once_break_invariant_e(cluster: SimCluster):
    form_three(cluster)
    cluster.stop_process("kurrentdb/2", by_charm=True, for_restore=True)
    cluster.load_data("kurrentdb/2", "restored:x", cluster.node("kurrentdb/2").log[:1])
    cluster.start_process("kurrentdb/2", conf3(2))
    cluster.tick()
    assert "e: running nodes hold different histories" in [b.invariant for b in cluster.breaches]


def test_data_never_changes_under_a_running_node(cluster: SimCluster):
    form_three(cluster)
    with pytest.raises(RuntimeError, match="under a running KurrentDB"):
        cluster.load_data("kurrentdb/0", "restored:x", ())


def test_anonymous_metrics_follow_the_option_the_node_started_with(cluster: SimCluster):
    """Rule 13: AllowAnonymousEndpointAccess as read at start; a reload does not change it."""
    import yaml

    def metrics(name: str, user: str | None = None) -> int:
        node = cluster.node(name)
        try:
            client(cluster, name, user)._request("GET", "/metrics")
        except KurrentDBAuthError as e:
            assert e.status == 401
            return 401
        assert node.double.requests[-1].path == "/metrics"
        return 200

    cluster.start_process("kurrentdb/0", conf(0, 1, AllowAnonymousEndpointAccess=True))
    cluster.start_process("kurrentdb/1", conf(1, 1))
    settle(cluster)
    assert metrics("kurrentdb/0") == 200
    assert metrics("kurrentdb/1") == 401
    assert metrics("kurrentdb/1", "admin") == 200

    # The file says true now, but the running process keeps the policy it built at start.
    text = yaml.safe_dump(conf(1, 1, AllowAnonymousEndpointAccess=True))
    cluster.write_config("kurrentdb/1", text)
    cluster.sighup("kurrentdb/1")
    assert metrics("kurrentdb/1") == 401
    cluster.restart_process("kurrentdb/1")
    assert metrics("kurrentdb/1") == 200
