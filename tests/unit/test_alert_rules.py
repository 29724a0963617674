"""The alert rules the charm ships to Prometheus and Loki, and their promtool tests.

With promtool (found through $PROMTOOL or on PATH; `scripts/run-tests.sh` installs it):
`promtool check rules` on every Prometheus rule file and `promtool test rules` on every
file in tests/alerts. Without it those two tests are skipped, and the structural checks
below still run: annotations, severities, metric names and labels KurrentDB really exports
(tests/data/kurrentdb-metrics.txt, rebuilt from the server's source; every label matcher,
grouping label and `$labels` of an annotation is checked against it), Juju topology grouping,
a firing test for every alert, a quiet healthy cluster, and Loki line filters that are the
server's own log messages.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import promql_labels
import pytest
import yaml

from cos.topology import Topology

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROM_RULES_DIR = ROOT / "src" / "prometheus_alert_rules"
LOKI_RULES_DIR = ROOT / "src" / "loki_alert_rules"
ALERT_TESTS_DIR = ROOT / "tests" / "alerts"
METRICS_FILE = ROOT / "tests" / "data" / "kurrentdb-metrics.txt"

SEVERITIES = {"critical", "warning"}
# Alerts about client applications (persistent subscription consumers): their fix is in the
# application, so their description points at it rather than at a juju or kubectl command.
APPLICATION_ALERTS = {
    "KurrentDBPersistentSubscriptionLagging",
    "KurrentDBPersistentSubscriptionParkingMessages",
}
# Labels the prometheus_scrape/loki_push_api libraries inject as matchers: every
# aggregation must keep them, or one deployment's series would mix with another's.
TOPOLOGY = ("juju_model", "juju_model_uuid", "juju_application")
# Labels every synthetic series in tests/alerts must carry, as a scraped series does.
SERIES_TOPOLOGY = (*TOPOLOGY, "juju_unit")
HEALTHY_TEST = ALERT_TESTS_DIR / "healthy_cluster.test.yaml"
RULE_FILE_SUFFIXES = (".yaml", ".yml", ".rule", ".rules")


# ---- loading ------------------------------------------------------------------------------


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in RULE_FILE_SUFFIXES)


def _load(path: pathlib.Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alerts(directory: pathlib.Path) -> list[tuple[pathlib.Path, dict[str, Any]]]:
    return [
        (path, rule)
        for path in _files(directory)
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


PROM_ALERTS = _alerts(PROM_RULES_DIR)
LOKI_ALERTS = _alerts(LOKI_RULES_DIR)
ALERT_TESTS = _files(ALERT_TESTS_DIR)


@functools.cache
def _known_metrics() -> frozenset[str]:
    """Series names KurrentDB exports (a histogram as _bucket/_sum/_count), and `up`."""
    return frozenset(promql_labels.catalog(METRICS_FILE))


# ---- PromQL and series parsing --------------------------------------------------------------

_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    return {
        name
        for name, call in _IDENTIFIER.findall(text)
        if not call and name.lower() not in _PROMQL_KEYWORDS
    }


def grouping_clauses(expr: str) -> list[tuple[str, list[str]]]:
    """Every `by (...)`, `on (...)` ... clause of an expression, with its label names."""
    text = _STRING.sub('""', expr)
    return [
        (keyword, [label.strip() for label in labels.split(",") if label.strip()])
        for keyword, labels in _GROUPING.findall(text)
    ]


_SERIES = re.compile(r"^\s*([A-Za-z_:][\w:]*)\s*(?:\{(.*)\})?\s*$")
_LABEL = re.compile(r'\s*([A-Za-z_]\w*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    """Split a promtool input series such as `up{a="b"}` into its name and labels."""
    match = _SERIES.match(series)
    assert match, f"not a series: {series!r}"
    name, body = match.group(1), match.group(2) or ""
    labels, pos = {}, 0
    while pos < len(body):
        label = _LABEL.match(body, pos)
        assert label, f"bad labels at {body[pos:]!r} in {series!r}"
        labels[label.group(1)] = label.group(2)
        pos = label.end()
    return name, labels


def test_parsers_understand_promql() -> None:
    expr = (
        'sum by (juju_unit) (rate(foo_total{kind="a", x=~"b|c"}[5m])) / on (juju_model) '
        "group_left () max(bar_seconds offset 15m) > 100e6 and bool baz:ratio < 0.8"
    )
    assert metric_names(expr) == {"foo_total", "bar_seconds", "baz:ratio"}
    assert grouping_clauses(expr) == [
        ("by", ["juju_unit"]),
        ("on", ["juju_model"]),
        ("group_left", []),
    ]
    assert parse_series('up{a="1",b="x,y=\\"z\\""}') == ("up", {"a": "1", "b": 'x,y=\\"z\\"'})


# ---- promtool -----------------------------------------------------------------------------


@functools.cache
def _promtool() -> str | None:
    """promtool from $PROMTOOL (which must then work) or PATH; None when not installed."""
    configured = os.environ.get("PROMTOOL")
    if configured:
        found = shutil.which(configured)
        assert found, f"PROMTOOL={configured!r} is not an executable"
        return found
    return shutil.which("promtool")


def _run_promtool(*args: str | pathlib.Path) -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip(
            "promtool is not installed (Debian package `prometheus`; scripts/run-tests.sh "
            "installs it): alert rules were not checked by promtool"
        )
    result = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize("path", _files(PROM_RULES_DIR), ids=lambda p: p.name)
def test_promtool_check_rules(path: pathlib.Path) -> None:
    _run_promtool("check", "rules", path)


@pytest.mark.parametrize("path", ALERT_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(path: pathlib.Path) -> None:
    _run_promtool("test", "rules", path)


# ---- Prometheus rules ---------------------------------------------------------------------


def test_rule_files_exist() -> None:
    assert PROM_ALERTS, f"no alert rules under {PROM_RULES_DIR}"
    assert LOKI_ALERTS, f"no alert rules under {LOKI_RULES_DIR}"
    assert HEALTHY_TEST in ALERT_TESTS


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for _, rule in PROM_ALERTS + LOKI_ALERTS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize(
    "rule", [rule for _, rule in PROM_ALERTS + LOKI_ALERTS], ids=lambda r: r["alert"]
)
def test_alert_is_documented(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"KurrentDB[A-Z]\w+", rule["alert"])
    assert rule.get("expr", "").strip()
    assert re.fullmatch(r"\d+[smhd]", str(rule.get("for", ""))), "every alert states its `for`"
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    assert len(annotations.get("summary", "")) > 10
    description = annotations.get("description", "")
    # What it means and what to do: long enough for both, and naming a command to run.
    assert len(description) > 150, "the description says what it means and what to do"
    if rule["alert"] not in APPLICATION_ALERTS:
        assert re.search(r"`(juju|kubectl) ", description), "the description names a command"


@pytest.mark.parametrize("rule", [rule for _, rule in PROM_ALERTS], ids=lambda r: r["alert"])
def test_prometheus_rule_uses_known_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, "the expression selects no metric"
    assert names <= _known_metrics(), (
        f"not exposed by KurrentDB: {sorted(names - _known_metrics())}"
    )


def _annotation_labels(rule: dict[str, Any]) -> set[str]:
    return {
        label
        for text in rule.get("annotations", {}).values()
        for label in promql_labels.ANNOTATION_LABEL.findall(text)
    }


@pytest.mark.parametrize("rule", [rule for _, rule in PROM_ALERTS], ids=lambda r: r["alert"])
def test_prometheus_rule_uses_only_labels_kurrentdb_exports(rule: dict[str, Any]) -> None:
    """Matchers, `by`, `on`, `group_left` and `$labels` name labels the series really have.

    The labels, and the values a label can take where the source fixes them, are those of
    tests/data/kurrentdb-metrics.txt; promql_labels follows them through the expression.
    """
    analysis = promql_labels.analyse(rule["expr"])
    assert not analysis.problems, "\n".join(analysis.problems)
    missing = _annotation_labels(rule) - analysis.labels
    assert not missing, (
        f"the annotations print {sorted(missing)}, which the result of the expression lacks "
        f"(it has {sorted(analysis.labels - {'__name__'})})"
    )


@pytest.mark.parametrize("rule", [rule for _, rule in PROM_ALERTS], ids=lambda r: r["alert"])
def test_prometheus_rule_reads_metrics_kurrentdb_exports_by_default(rule: dict[str, Any]) -> None:
    """An alert on a metric the default metricsconfig.json turns off would never fire."""
    catalog = promql_labels.catalog(METRICS_FILE)
    off = {
        name
        for name in promql_labels.analyse(rule["expr"]).series
        if (family := catalog[name].family) is not None and not family.default_on
    }
    assert not off, f"off by default in KurrentDB: {sorted(off)}"


node_wide_selectors = promql_labels.node_wide_selectors


def test_node_wide_check_catches_the_old_memory_rule() -> None:
    old = (
        'max by (juju_unit) (kurrentdb_sys_mem_bytes{kind="free"}) / '
        'max by (juju_unit) (kurrentdb_sys_mem_bytes{kind="total"})'
    )
    assert node_wide_selectors(old) == ['kurrentdb_sys_mem_bytes{kind="free"}']
    assert node_wide_selectors('kurrentdb_sys_mem_bytes{kind="total", juju_unit="a/0"}') == []


@pytest.mark.parametrize("rule", [rule for _, rule in PROM_ALERTS], ids=lambda r: r["alert"])
def test_alerts_measure_the_pod_not_the_kubernetes_node(rule: dict[str, Any]) -> None:
    assert not node_wide_selectors(rule["expr"]), "a pod's alert reads the node's figures"


def test_memory_alerts_use_the_process_and_its_limits() -> None:
    """Resident memory against the container limit, the GC heap against the GC's limit."""
    rules = {rule["alert"]: rule for _, rule in PROM_ALERTS}
    memory = promql_labels.analyse(rules["KurrentDBMemoryHigh"]["expr"]).series
    assert memory == ["kurrentdb_proc_mem_bytes", "kurrentdb_sys_mem_bytes"]
    assert 'kurrentdb_proc_mem_bytes{kind="working-set"}' in rules["KurrentDBMemoryHigh"]["expr"]
    heap = promql_labels.analyse(rules["KurrentDBGcHeapNearLimit"]["expr"]).series
    assert heap == ["kurrentdb_gc_heap_size_bytes", "kurrentdb_sys_mem_bytes"]
    for name in ("KurrentDBMemoryHigh", "KurrentDBGcHeapNearLimit"):
        # The description says which figures it compares, and that the limit is the pod's.
        description = rules[name]["annotations"]["description"]
        assert "60%" in description and "container" in description, name


# ---- the label checker itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('kurrentdb_sys_mem_bytes{kind="available"}', "kind is never available"),
        ('kurrentdb_proc_cpu{kind="x"}', "has no label kind"),
        ("sum by (projection) (kurrentdb_projection_state_size_bound)", "have no projection"),
        (
            "max by (juju_unit) (kurrentdb_proc_cpu) / on (juju_unit, disk) "
            "max by (juju_unit, disk) (kurrentdb_sys_disk_bytes)",
            "left-hand side has no disk",
        ),
        (
            "max by (juju_unit) (kurrentdb_proc_cpu) / on (juju_unit) group_left (disk) "
            "max by (juju_unit) (kurrentdb_sys_disk_bytes)",
            "other side has no disk",
        ),
        (
            "sum by (juju_unit) (kurrentdb_proc_cpu) / sum by (juju_model) (kurrentdb_sys_cpu)",
            "no pair ever matches",
        ),
        (
            "histogram_quantile(0.9, sum by (juju_unit) (rate(kurrentdb_grpc_method_duration_seconds_bucket[5m])))",
            "`le`",
        ),
        ("kurrentdb_persistent_sub_parked_message_truncations", "not a metric KurrentDB exports"),
    ],
)
def test_label_check_catches(expr: str, problem: str) -> None:
    problems = promql_labels.analyse(expr).problems
    assert any(problem in p for p in problems), problems


def test_label_check_follows_labels_through_the_expression() -> None:
    analyse = promql_labels.analyse
    # on() one-to-one keeps the on() labels; group_left keeps the many side's.
    assert analyse("kurrentdb_proc_cpu / on (juju_unit) kurrentdb_sys_cpu").labels == {"juju_unit"}
    joined = analyse(
        'kurrentdb_statuses{status="Leader"} == on (juju_unit) group_left () '
        "max by (juju_unit) (kurrentdb_statuses)"
    ).labels
    assert {"status", "name", "juju_unit"} <= joined
    assert analyse("count(up == 0) or vector(0)").labels == set()
    quantile = "histogram_quantile(0.5, sum by (le, activity) (rate(kurrentdb_gossip_latency_seconds_bucket[5m])))"
    assert analyse(quantile).labels == {"activity"}
    assert analyse('kurrentdb_checkpoints{name=~"writer|replication"}').problems == []
    assert analyse('kurrentdb_checkpoints{name=~"writer|leader"}').problems
    assert analyse("kurrentdb_persistent_sub_parked_messages offset 15m").problems == []


def test_metrics_file_is_well_formed() -> None:
    families = promql_labels.families(METRICS_FILE)
    assert len(families) > 50
    for name, family in families.items():
        assert re.fullmatch(r"kurrentdb_[a-z_]+", name), name
        if family.type == "histogram":
            series = {name + suffix for suffix in ("_bucket", "_sum", "_count")}
            assert not series & families.keys(), f"{name}: list a histogram once"
        assert (family.type == "counter") == name.endswith("_total"), name
        assert not set(family.labels) & (promql_labels.TARGET_LABELS | {"le"}), name
    # Facts the rules rely on, straight from the source (see the file's comments).
    assert families["kurrentdb_queue_processing_duration_seconds"].labels.keys() == {
        "queue",
        "message_type",
    }
    assert not families["kurrentdb_queue_processing_duration_seconds"].default_on
    assert families["kurrentdb_projection_state_size_bound"].labels == {
        "bound": frozenset({"THRESHOLD", "LIMIT"})
    }
    for name in (
        "kurrentdb_projection_execution_duration_max_seconds",
        "kurrentdb_projection_state_serialization_duration_max_seconds",
        "kurrentdb_queue_queueing_duration_max_seconds",
    ):
        assert families[name].labels.keys() == {"name", "range"}, name


@pytest.mark.parametrize(
    "rule", [rule for _, rule in PROM_ALERTS + LOKI_ALERTS], ids=lambda r: r["alert"]
)
def test_rule_groups_by_juju_topology(rule: dict[str, Any]) -> None:
    clauses = grouping_clauses(rule["expr"])
    for keyword, labels in clauses:
        if keyword in ("by", "on"):
            missing = set(TOPOLOGY) - set(labels)
            assert not missing, f"`{keyword} ({', '.join(labels)})` drops {sorted(missing)}"
        else:
            assert keyword in ("group_left", "group_right"), f"`{keyword}` may drop topology labels"
    # An aggregation without `by` would merge deployments.
    bare = re.findall(
        r"\b(sum|max|min|count|avg|topk|bottomk|quantile)\s*\(", _STRING.sub('""', rule["expr"])
    )
    assert not bare, f"aggregation without `by`: {bare}"


# ---- the promtool tests, read without promtool ----------------------------------------------


def _unit_tests(path: pathlib.Path) -> list[dict[str, Any]]:
    return _load(path)["tests"]


def test_alert_tests_load_the_shipped_rules() -> None:
    shipped = {p.resolve() for p in _files(PROM_RULES_DIR)}
    for path in ALERT_TESTS:
        rule_files = {(path.parent / f).resolve() for f in _load(path)["rule_files"]}
        assert rule_files == shipped, f"{path.name} must load every file in {PROM_RULES_DIR}"


@pytest.mark.parametrize("path", ALERT_TESTS, ids=lambda p: p.name)
def test_alert_test_series_are_realistic(path: pathlib.Path) -> None:
    """Series KurrentDB exports, with its labels and label values, as Prometheus scrapes them."""
    for test in _unit_tests(path):
        for item in test["input_series"]:
            name, labels = parse_series(item["series"])
            assert name in _known_metrics(), f"{name} is not a KurrentDB metric"
            missing = [label for label in SERIES_TOPOLOGY if label not in labels]
            assert not missing, f"{item['series']} lacks Juju topology labels {missing}"
            problems = promql_labels.analyse(item["series"]).problems
            assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", ALERT_TESTS, ids=lambda p: p.name)
def test_alert_test_expectations_match_the_rules(path: pathlib.Path) -> None:
    severities = {rule["alert"]: rule["labels"]["severity"] for _, rule in PROM_ALERTS}
    for test in _unit_tests(path):
        for case in test.get("alert_rule_test", []):
            assert case["alertname"] in severities, f"{case['alertname']} is no shipped alert"
            for alert in case.get("exp_alerts") or []:
                labels = alert.get("exp_labels", {})
                assert labels.get("severity") == severities[case["alertname"]]
                assert all(labels.get(label) for label in TOPOLOGY), labels
                assert set(alert.get("exp_annotations", {})) == {"summary", "description"}


def test_every_alert_has_a_test_where_it_fires() -> None:
    firing = {
        case["alertname"]
        for path in ALERT_TESTS
        for test in _unit_tests(path)
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    missing = {rule["alert"] for _, rule in PROM_ALERTS} - firing
    assert not missing, f"no promtool test makes these fire: {sorted(missing)}"


def test_healthy_cluster_raises_no_alert() -> None:
    """Every alert is checked against the healthy cluster at several times, and stays quiet."""
    (test,) = _unit_tests(HEALTHY_TEST)
    checked: dict[str, set[str]] = {}
    for case in test["alert_rule_test"]:
        assert case["exp_alerts"] == [], f"{case['alertname']} fires on a healthy cluster"
        checked.setdefault(case["alertname"], set()).add(case["eval_time"])
    for _, rule in PROM_ALERTS:
        assert len(checked.get(rule["alert"], ())) >= 3, f"{rule['alert']}: check it at 3+ times"
    units = {
        (labels["juju_model"], labels["juju_unit"])
        for labels in (parse_series(s["series"])[1] for s in test["input_series"])
    }
    assert len({unit for model, unit in units if model == "prod"}) == 3, "a 3-node cluster"
    assert len({model for model, _ in units}) > 1, "with a second deployment beside it"


# ---- Loki rules ---------------------------------------------------------------------------

_LINE_FILTER = re.compile(r'\|=\s*"((?:[^"\\]|\\.)*)"')
_REGEXP_STAGE = re.compile(r"\|\s*regexp\s*`([^`]*)`")


def _balanced(text: str) -> bool:
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for char in _STRING.sub('""', text):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


@pytest.mark.parametrize("rule", [rule for _, rule in LOKI_ALERTS], ids=lambda r: r["alert"])
def test_loki_rule_is_a_log_count(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    assert _balanced(expr), "unbalanced brackets"
    assert re.search(r'\{juju_application=~"\.\+"\}', expr), "select streams by topology"
    assert re.search(r"count_over_time\(", expr)
    assert re.search(r"\[\d+[smhd]\]\s*\)", expr), "a log range closes count_over_time"
    assert re.search(r"\)\s*(>|>=)\s*\d+\s*$", expr.strip()), "compared with a count"
    assert _LINE_FILTER.search(expr), "a line filter"


# Lines KurrentDB writes, in its Plain and Json (CLEF) console formats.
LOG_LINES = {
    "KurrentDBCertificatesExpiring": [
        "[    1,21,14:02:11.375,WRN] Certificates are going to expire in 9.6 days",
        '{"@t":"2026-10-13T02:43:38.94+00:00","@mt":"Certificates are going to expire in '
        '{daysUntilExpiry:N1} days","@r":["9.6"],"@l":"Warning","daysUntilExpiry":9.602558584}',
    ],
    "KurrentDBCertificatesExpiringSoon": [
        "[    1,21,14:02:11.375,WRN] Certificates are going to expire in 2.0 days",
        '{"@mt":"Certificates are going to expire in {daysUntilExpiry:N1} days",'
        '"daysUntilExpiry": 1.98}',
    ],
    "KurrentDBMultipleVersions": [
        "[    1,17,12:15:53.146,WRN] MULTIPLE DB VERSIONS ON CLUSTER NODES FOUND [ "
        "(Unspecified/kurrentdb-0.kurrentdb-endpoints:2113,26.1.0), "
        "(Unspecified/kurrentdb-1.kurrentdb-endpoints:2113,26.0.3) ]",
        '{"@t":"2026-05-02T09:14:03.1+00:00","@mt":"MULTIPLE DB VERSIONS ON CLUSTER NODES FOUND '
        "[ (Unspecified/kurrentdb-0.kurrentdb-endpoints:2113,26.1.0), "
        '(Unspecified/kurrentdb-1.kurrentdb-endpoints:2113,26.0.3) ]","@l":"Warning",'
        '"SourceContext":"KurrentDB.Core.Services.Gossip.ClusterMultipleVersionsLogger"}',
    ],
    "KurrentDBNodeRejectedAsSurplus": [
        "[    1,12,09:01:02.003,INF] ========== [kurrentdb-3:2113] DROP SUBSCRIPTION REQUEST "
        "RECEIVED FROM [n/a,kurrentdb-0:1112,{4f0e...}]. THIS MEANS THAT THERE IS A SURPLUS "
        "OF NODES IN THE CLUSTER, SHUTTING DOWN.",
    ],
    "KurrentDBOfflineTruncation": [
        "[    1,12,09:01:02.003,INF] OFFLINE TRUNCATION IS NEEDED (SubscribedAt 1234 (0x4D2) "
        "<= LastCommitPosition 5678 (0x162E)). SHUTTING DOWN NODE.",
        "[    1,12,09:01:02.003,INF] ONLINE TRUNCATION IS NEEDED. NOT IMPLEMENTED. OFFLINE "
        "TRUNCATION WILL BE PERFORMED. SHUTTING DOWN NODE.",
    ],
}


# The message templates the Loki rules look for, as KurrentDB's source writes them (v26.1.0;
# the same text in v25.0.0 to v26.0.3): file, then template. A line filter must be a piece of
# the template's fixed text, so a reworded message breaks this test, not the alert.
SOURCE_MESSAGES = {
    "KurrentDBCertificatesExpiring": (
        "src/KurrentDB.Core/Certificates/CertificateExpiryMonitor.cs",
        "Certificates are going to expire in {daysUntilExpiry:N1} days",
    ),
    "KurrentDBCertificatesExpiringSoon": (
        "src/KurrentDB.Core/Certificates/CertificateExpiryMonitor.cs",
        "Certificates are going to expire in {daysUntilExpiry:N1} days",
    ),
    # "MULTIPLE ES VERSIONS ..." until EventStoreDB 24.10; "DB" from KurrentDB 25.0.
    "KurrentDBMultipleVersions": (
        "src/KurrentDB.Core/Services/Gossip/ClusterMultipleVersionsLogger.cs",
        'MULTIPLE DB VERSIONS ON CLUSTER NODES FOUND [ {string.Join(", ", ipAndVersion)} ]',
    ),
    "KurrentDBNodeRejectedAsSurplus": (
        "src/KurrentDB.Core/Services/VNode/ClusterVNodeController.cs",
        "========== [{httpEndPoint}] DROP SUBSCRIPTION REQUEST RECEIVED FROM [{internalTcp},"
        "{internalSecureTcp},{leaderId:B}]. THIS MEANS THAT THERE IS A SURPLUS OF NODES IN THE "
        "CLUSTER, SHUTTING DOWN.",
    ),
    "KurrentDBOfflineTruncation": (
        "src/KurrentDB.Core/Services/ClusterStorageWriterService.cs",
        "OFFLINE TRUNCATION IS NEEDED (SubscribedAt {subscriptionPosition} "
        "(0x{subscriptionPosition:X}) <= LastCommitPosition {lastCommitPosition} "
        "(0x{lastCommitPosition:X})). SHUTTING DOWN NODE.",
    ),
}


def test_every_loki_rule_has_sample_lines() -> None:
    assert set(LOG_LINES) == {rule["alert"] for _, rule in LOKI_ALERTS}
    assert set(SOURCE_MESSAGES) == set(LOG_LINES)


@pytest.mark.parametrize("rule", [rule for _, rule in LOKI_ALERTS], ids=lambda r: r["alert"])
def test_loki_rule_looks_for_the_servers_own_message(rule: dict[str, Any]) -> None:
    _, template = SOURCE_MESSAGES[rule["alert"]]
    fixed_text = re.split(r"\{[^{}]*\}", template)
    for needle in _LINE_FILTER.findall(rule["expr"]):
        assert any(needle in piece for piece in fixed_text), (
            f"{needle!r} is not in KurrentDB's message {template!r}"
        )


@pytest.mark.parametrize("rule", [rule for _, rule in LOKI_ALERTS], ids=lambda r: r["alert"])
def test_loki_rule_uses_only_labels_the_log_streams_have(rule: dict[str, Any]) -> None:
    """Stream selectors, `by` and `$labels` use the labels Pebble puts on the streams.

    The charm's log targets label every stream with its Juju topology (cos.topology.Topology,
    see tests/unit/test_cos.py); a `regexp` stage adds its named groups.
    """
    expr = rule["expr"]
    available = set(Topology("m", "uuid", "app", "app/0", "charm").labels())
    for pattern in _REGEXP_STAGE.findall(expr):
        available |= set(re.compile(pattern).groupindex)
    stream_labels = {
        label
        for block in re.findall(r"\{([^{}]*)\}", _STRING.sub('""', expr))
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", block)
    }
    grouping = {label for _, labels in grouping_clauses(expr) for label in labels}
    used = stream_labels | grouping | _annotation_labels(rule)
    assert used <= available, f"not on KurrentDB's log streams: {sorted(used - available)}"


@pytest.mark.parametrize("rule", [rule for _, rule in LOKI_ALERTS], ids=lambda r: r["alert"])
def test_loki_rule_matches_kurrentdb_lines(rule: dict[str, Any]) -> None:
    """The line filters (and a days threshold, if any) accept KurrentDB's real lines."""
    expr = rule["expr"]
    threshold = re.search(r"\|\s*days\s*<\s*([\d.]+)", expr)
    for line in LOG_LINES[rule["alert"]]:
        for needle in _LINE_FILTER.findall(expr):
            assert needle in line, f"{needle!r} does not match {line!r}"
        for pattern in _REGEXP_STAGE.findall(expr):
            match = re.search(pattern, line)
            assert match, f"{pattern!r} does not match {line!r}"
            if threshold:
                assert float(match.group("days")) < float(threshold.group(1))


def test_certificate_rules_ignore_distant_expiry() -> None:
    (expiring,) = [
        rule for _, rule in LOKI_ALERTS if rule["alert"] == "KurrentDBCertificatesExpiring"
    ]
    (pattern,) = _REGEXP_STAGE.findall(expiring["expr"])
    limit = float(re.search(r"\|\s*days\s*<\s*([\d.]+)", expiring["expr"]).group(1))
    match = re.search(pattern, "Certificates are going to expire in 29.0 days")
    assert match and float(match.group("days")) >= limit
