"""The Grafana dashboard shipped in src/grafana_dashboards loads as a sound dashboard model.

COS Grafana renders whatever the charm ships, so these tests stand in for a Grafana import:
the JSON shape, the datasource and Juju topology variables, panel ids and layout, and every
PromQL expression: topology filters, and metric names and labels from
tests/data/kurrentdb-metrics.txt (rebuilt from KurrentDB's source), down to the labels a
legend prints and a table shows.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_labels
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = ROOT / "src" / "grafana_dashboards" / "kurrentdb.json"
METRICS_PATH = ROOT / "tests" / "data" / "kurrentdb-metrics.txt"

DATASOURCE_VAR = "${prometheusds}"
TOPOLOGY_VARS = ("juju_model", "juju_model_uuid", "juju_application", "juju_unit")
CLUSTER_VARS = TOPOLOGY_VARS[:3]
GRID_COLUMNS = 24


def matcher(var: str) -> str:
    return f'{var}=~"${var}"'


# --------------------------------------------------------------------------------------------
# A small PromQL lexer: enough to tell metric names from functions, keywords, label names,
# strings, durations and Grafana variables.

_TOKEN_RE = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<matchers>\{[^{}]*\})
    |(?P<range>\[[^\]]*\])
    |(?P<var>\$\{?\w+\}?)
    |(?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)
    |(?P<number>(?:0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
    |(?P<ident>[A-Za-z_:][\w:]*)
    |(?P<space>\s+)
    |(?P<other>.)
    """,
    re.VERBOSE,
)
# Keywords followed by a parenthesised list of label names.
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregations may put `by (...)` between their name and their parenthesised argument.
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_KEYWORDS = (
    _LABEL_LIST_KEYWORDS
    | _AGGREGATIONS
    | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
)


@dataclass(frozen=True)
class Selector:
    """One vector selector: metric name ("" for a bare `{...}`) and its matcher block."""

    name: str
    matchers: str


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN_RE.finditer(expr):
        kind = m.lastgroup or "other"
        if kind != "space":
            out.append((kind, m.group()))
    return out


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of a PromQL expression, in order."""
    tokens = _tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and text.lower() in _LABEL_LIST_KEYWORDS:
            i += 1
            if tokens[i : i + 1] == [("other", "(")]:  # skip the label list
                while i < len(tokens) and tokens[i] != ("other", ")"):
                    i += 1
            i += 1
            continue
        if kind == "ident" and (text.lower() in _KEYWORDS or nxt == ("other", "(")):
            i += 1  # a keyword, or a function / aggregation name
            continue
        if kind == "ident":
            has_matchers = nxt[0] == "matchers"
            found.append(Selector(text, nxt[1] if has_matchers else ""))
            i += 2 if has_matchers else 1
            continue
        if kind == "matchers":
            found.append(Selector("", text))
        i += 1
    return found


def metric_names(expr: str) -> set[str]:
    return {sel.name for sel in selectors(expr)}


def load_known_metrics(path: Path = METRICS_PATH) -> set[str]:
    """Names from the metrics file; histograms only exist as _bucket, _sum and _count."""
    return set(promql_labels.catalog(path))


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    return {name for name in metric_names(expr) if name not in known}


def topology_problems(expr: str) -> list[str]:
    """What is missing for `expr` to be scoped by the dashboard's Juju topology variables.

    Every selector names a metric and filters on model, model uuid and application. Every
    selector filters on the unit too, with one exception: the cluster-wide reference for
    replication lag (the leader's writer checkpoint, `kurrentdb_checkpoints{name="writer"}`)
    must see all units even when a single unit is selected, so it may omit the unit filter
    as long as another selector in the same expression carries it.
    """
    problems = []
    sels = selectors(expr)
    if not sels:
        problems.append("no selector")
    for sel in sels:
        if not sel.name:
            problems.append(f"selector without a metric name: {sel.matchers}")
        for var in CLUSTER_VARS:
            if matcher(var) not in sel.matchers:
                problems.append(f"{sel.name}{sel.matchers or '{}'} lacks {matcher(var)}")
        if matcher("juju_unit") not in sel.matchers and not (
            sel.name == "kurrentdb_checkpoints" and 'name="writer"' in sel.matchers
        ):
            problems.append(f"{sel.name}{sel.matchers or '{}'} lacks {matcher('juju_unit')}")
    if not any(matcher("juju_unit") in sel.matchers for sel in sels):
        problems.append(f"no selector filters on {matcher('juju_unit')}")
    return problems


# --------------------------------------------------------------------------------------------
# Dashboard helpers


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_PATH.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def all_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def layout_groups(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Panels grouped by the row they sit in (as Grafana lays them out when expanded)."""
    groups: dict[str, list[dict[str, Any]]] = {"(top)": []}
    current = "(top)"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            groups[current] = list(panel.get("panels", []))
        else:
            groups[current].append(panel)
    return groups


def overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def template_var(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(matches) == 1, f"expected exactly one variable {name!r}, found {len(matches)}"
    return matches[0]


def var_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


_LABEL_VALUES_RE = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


def label_values_selector(query: str) -> str:
    match = _LABEL_VALUES_RE.fullmatch(query)
    assert match, f"{query!r} is not label_values(<selector>, <label>)"
    return match["selector"]


def label_values_label(query: str) -> str:
    match = _LABEL_VALUES_RE.fullmatch(query)
    assert match, f"{query!r} is not label_values(<selector>, <label>)"
    return match["label"]


def is_prometheus_ds(datasource: Any) -> bool:
    if isinstance(datasource, str):
        return datasource == DATASOURCE_VAR
    return datasource == {"type": "prometheus", "uid": DATASOURCE_VAR}


# --------------------------------------------------------------------------------------------
# The dashboard model


def test_top_level_fields(dashboard: dict[str, Any]):
    assert dashboard["title"] == "KurrentDB"
    assert isinstance(dashboard["uid"], str) and 0 < len(dashboard["uid"]) <= 40
    assert "kurrentdb" in dashboard["tags"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert isinstance(dashboard["templating"]["list"], list)
    # No hard-wired datasource from an export: COS substitutes ${prometheusds}.
    assert "__inputs" not in dashboard


def test_panel_ids_are_unique_integers(dashboard: dict[str, Any]):
    ids = [panel.get("id") for panel in all_panels(dashboard)]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in ids), ids
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate panel ids: {duplicates}"


def test_every_panel_has_title_description_and_known_type(dashboard: dict[str, Any]):
    types = {"row", "timeseries", "stat", "table", "state-timeline", "bargauge", "gauge"}
    for panel in all_panels(dashboard):
        assert panel.get("title"), f"panel {panel['id']} has no title"
        assert panel["type"] in types, f"{panel['title']}: unexpected type {panel['type']}"
        if panel["type"] != "row":
            assert len(panel.get("description", "")) >= 40, f"{panel['title']}: no description"
            assert panel.get("targets"), f"{panel['title']}: no query"


def test_graph_panels_declare_a_unit(dashboard: dict[str, Any]):
    for panel in all_panels(dashboard):
        if panel["type"] in {"timeseries", "stat", "bargauge", "gauge"}:
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"


def test_every_panel_uses_the_prometheus_datasource_variable(dashboard: dict[str, Any]):
    for panel in all_panels(dashboard):
        assert is_prometheus_ds(panel.get("datasource")), (
            f"{panel['title']}: datasource {panel.get('datasource')!r}"
        )
        for target in panel.get("targets", []):
            if "datasource" in target:
                assert is_prometheus_ds(target["datasource"]), f"{panel['title']}: target ds"


def test_target_ref_ids_are_unique_per_panel(dashboard: dict[str, Any]):
    for panel in all_panels(dashboard):
        refs = [t.get("refId") for t in panel.get("targets", [])]
        assert all(refs) and len(refs) == len(set(refs)), f"{panel['title']}: refIds {refs}"


# --------------------------------------------------------------------------------------------
# Variables


def test_datasource_variable(dashboard: dict[str, Any]):
    ds = template_var(dashboard, "prometheusds")
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"


def test_topology_variables_are_chained_queries(dashboard: dict[str, Any]):
    for position, name in enumerate(TOPOLOGY_VARS):
        variable = template_var(dashboard, name)
        assert variable["type"] == "query"
        assert is_prometheus_ds(variable["datasource"])
        query = var_query(variable)
        assert label_values_label(query) == name, f"{name}: {query!r}"
        (sel,) = selectors(label_values_selector(query))
        assert sel.name.startswith("kurrentdb_"), f"{name}: values from {sel.name!r}"
        for parent in TOPOLOGY_VARS[:position]:  # filtered by the variables before it
            assert matcher(parent) in sel.matchers, f"{name}: not filtered by ${parent}"
    unit = template_var(dashboard, "juju_unit")
    assert unit["multi"] is True
    assert unit["includeAll"] is True


def test_variables_are_defined_before_use(dashboard: dict[str, Any]):
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("prometheusds") < min(names.index(v) for v in TOPOLOGY_VARS)
    assert [n for n in names if n in TOPOLOGY_VARS] == list(TOPOLOGY_VARS)


# --------------------------------------------------------------------------------------------
# Layout


def test_grid_positions_fit_in_24_columns(dashboard: dict[str, Any]):
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, f"{panel['title']}: {pos}"
        if panel["type"] == "row":
            assert pos == {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": pos["y"]}, panel["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]):
    # What Grafana shows with every row collapsed as saved: rows and expanded panels.
    top = dashboard["panels"]
    for i, a in enumerate(top):
        for b in top[i + 1 :]:
            assert not overlap(a["gridPos"], b["gridPos"]), f"{a['title']!r} / {b['title']!r}"
    # Within each row, including the panels of collapsed rows.
    for row, panels in layout_groups(dashboard).items():
        for i, a in enumerate(panels):
            for b in panels[i + 1 :]:
                assert not overlap(a["gridPos"], b["gridPos"]), (
                    f"row {row!r}: {a['title']!r} overlaps {b['title']!r}"
                )


def test_rows_hold_their_panels_below_them(dashboard: dict[str, Any]):
    rows = {p["title"]: p for p in dashboard["panels"] if p["type"] == "row"}
    for title, panels in layout_groups(dashboard).items():
        if title in rows:
            assert all(p["gridPos"]["y"] > rows[title]["gridPos"]["y"] for p in panels), title
        assert all(p["type"] != "row" for p in panels), f"nested row in {title!r}"


def test_detail_rows_exist_and_optional_features_are_collapsed(dashboard: dict[str, Any]):
    rows = {p["title"]: p for p in dashboard["panels"] if p["type"] == "row"}
    assert not dashboard["panels"][0].get("collapsed"), "the health row must open expanded"
    for title in ("Projections", "Persistent subscriptions"):
        assert rows[title]["collapsed"] is True, title
        assert rows[title]["panels"], title
    for row in rows.values():
        if not row["collapsed"]:
            assert row["panels"] == [], f"{row['title']}: expanded rows keep panels top-level"


def test_cluster_health_is_covered(dashboard: dict[str, Any]):
    """The 3 a.m. questions each have a panel that queries the metric answering them."""
    used = set()
    for _, target in all_targets(dashboard):
        used |= metric_names(target["expr"])
    expected = {
        "up",
        "kurrentdb_statuses",
        "kurrentdb_elections_count_total",
        "kurrentdb_checkpoints",
        "kurrentdb_io_events_total",
        "kurrentdb_io_bytes_total",
        "kurrentdb_grpc_method_duration_seconds_bucket",
        "kurrentdb_incoming_grpc_calls_total",
        "kurrentdb_queue_queueing_duration_max_seconds",
        "kurrentdb_queue_processing_duration_seconds_bucket",
        "kurrentdb_gc_pause_duration_max_seconds",
        "kurrentdb_gc_time_in_gc",
        "kurrentdb_gc_heap_size_bytes",
        "kurrentdb_gc_allocated_bytes_total",
        "kurrentdb_cache_hits_misses_total",
        "kurrentdb_proc_cpu",
        "kurrentdb_proc_mem_bytes",
        "kurrentdb_sys_mem_bytes",
        "kurrentdb_sys_disk_bytes",
        "kurrentdb_disk_io_bytes_total",
        "kurrentdb_projection_status",
        "kurrentdb_persistent_sub_parked_messages",
    }
    assert expected <= used, f"not shown: {sorted(expected - used)}"


# --------------------------------------------------------------------------------------------
# Queries


def test_every_query_filters_on_the_topology_variables(dashboard: dict[str, Any]):
    problems = []
    for panel, target in all_targets(dashboard):
        problems += [f"{panel['title']}: {p}" for p in topology_problems(target["expr"])]
    assert not problems, "\n".join(problems)


def test_every_metric_is_a_known_kurrentdb_metric(dashboard: dict[str, Any]):
    known = load_known_metrics()
    problems = []
    for panel, target in all_targets(dashboard):
        for name in sorted(unknown_metrics(target["expr"], known)):
            problems.append(f"{panel['title']} ({target['refId']}): {name}")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = label_values_selector(var_query(variable))
            problems += [f"${variable['name']}: {n}" for n in unknown_metrics(selector, known)]
    assert not problems, "unknown metrics:\n" + "\n".join(problems)


# Columns Grafana adds to a table besides the series' labels.
TABLE_FIELDS = {"Time", "Value", "Metric"}


def label_problems(panel: dict[str, Any]) -> list[str]:
    """Every label a panel uses that its series do not have.

    Label matchers, `by`/`on`/`group_left` labels and label values (promql_labels, against
    tests/data/kurrentdb-metrics.txt), the labels each legend prints, and the label columns a
    table keeps.
    """
    problems = []
    shown: set[str] = set()
    for target in panel.get("targets", []):
        ref = f"{panel['title']} ({target['refId']})"
        analysis = promql_labels.analyse(target["expr"])
        problems += [f"{ref}: {problem}" for problem in analysis.problems]
        legend = set(promql_labels.LEGEND_LABEL.findall(target.get("legendFormat", "")))
        for label in sorted(legend - analysis.labels):
            problems.append(f"{ref}: the legend prints {{{{{label}}}}}, which the result lacks")
        shown |= analysis.labels
    for transformation in panel.get("transformations", []):
        if transformation["id"] == "filterFieldsByName":
            names = set(transformation["options"]["include"].get("names", []))
            for name in sorted(names - shown - TABLE_FIELDS):
                if not name.startswith("Value #"):
                    problems.append(f"{panel['title']}: the table shows {name!r}, no label of it")
    return problems


def test_every_label_a_panel_uses_is_a_label_kurrentdb_exports(dashboard: dict[str, Any]):
    problems = [problem for panel in all_panels(dashboard) for problem in label_problems(panel)]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = var_query(variable)
            analysis = promql_labels.analyse(label_values_selector(query))
            problems += [f"${variable['name']}: {p}" for p in analysis.problems]
            if label_values_label(query) not in analysis.labels:
                problems.append(f"${variable['name']}: no label {label_values_label(query)}")
    assert not problems, "\n".join(problems)


# Queries of the dashboard as it was before the metric and label definitions were checked
# against KurrentDB's source: each groups by or prints a label its metric does not have.
WRONG_PANELS = [
    (
        "sum by (queue, name, le) (rate(kurrentdb_queue_processing_duration_seconds_bucket[5m]))",
        "{{queue}}{{name}}",
        "have no name",
    ),
    (
        "max by (juju_unit, projection) (kurrentdb_projection_state_size) / max by (juju_unit, "
        "projection) (kurrentdb_projection_state_size_bound)",
        "{{projection}}",
        "have no projection",
    ),
    (
        "max by (juju_unit, projection) (kurrentdb_projection_execution_duration_max_seconds)",
        "{{projection}}",
        "have no projection",
    ),
    (
        "max by (juju_unit) (kurrentdb_projection_state_serialization_duration_max_seconds)",
        "{{projection}}",
        "the legend prints {{projection}}",
    ),
    (
        "sum by (group_name) (rate(kurrentdb_persistent_sub_parked_message_truncations[5m]))",
        "{{group_name}}",
        "not a metric KurrentDB exports",
    ),
]


@pytest.mark.parametrize(("expr", "legend", "problem"), WRONG_PANELS)
def test_label_check_catches_the_old_panels(expr: str, legend: str, problem: str):
    panel = {"title": "old", "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}]}
    problems = label_problems(panel)
    assert any(problem in p for p in problems), problems


def test_label_check_catches_a_table_column_no_series_has():
    panel = {
        "title": "table",
        "targets": [{"refId": "A", "expr": "kurrentdb_proc_cpu", "legendFormat": "__auto"}],
        "transformations": [
            {"id": "filterFieldsByName", "options": {"include": {"names": ["status", "Value"]}}}
        ],
    }
    assert label_problems(panel) == ["table: the table shows 'status', no label of it"]


def test_panels_on_metrics_off_by_default_say_so(dashboard: dict[str, Any]):
    catalog = promql_labels.catalog()
    for panel in all_panels(dashboard):
        off = {
            name
            for target in panel.get("targets", [])
            for name in promql_labels.analyse(target["expr"]).series
            if (family := catalog[name].family) is not None and not family.default_on
        }
        if off:
            assert "off by default" in panel["description"].lower(), (
                f"{panel['title']} reads {sorted(off)}, which KurrentDB does not export with "
                "its default metricsconfig.json: the description must say so"
            )


def test_node_wide_figures_are_shown_as_the_nodes(dashboard: dict[str, Any]):
    """Only panels titled as the Kubernetes node's show the node's load or free memory."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if promql_labels.node_wide_selectors(target["expr"]):
                assert "node" in panel["title"].lower(), (
                    f"{panel['title']} shows the Kubernetes node's figures as the pod's"
                )


def test_memory_panels_compare_the_process_with_its_limits(dashboard: dict[str, Any]):
    """Resident memory against the pod limit, never the node's MemAvailable (kind="free")."""
    memory = [
        (name, matchers)
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
        for name, matchers in promql_labels.selectors(target["expr"])
        if name in ("kurrentdb_proc_mem_bytes", "kurrentdb_sys_mem_bytes")
    ]
    assert ("kurrentdb_proc_mem_bytes", 'kind="working-set"') in {
        (name, matchers.split(", ")[0]) for name, matchers in memory
    }
    assert not [m for m in memory if 'kind="free"' in m[1]], (
        'kurrentdb_sys_mem_bytes{kind="free"} is the Kubernetes node\'s MemAvailable'
    )


def test_metric_check_catches_a_made_up_metric():
    known = load_known_metrics()
    expr = (
        f'sum by (juju_unit) (rate(kurrentdb_made_up_total{{kind="x", {matcher("juju_unit")}}}'
        "[$__rate_interval])) / on (juju_unit) group_left () "
        f"sum by (juju_unit) (kurrentdb_io_events_total{{{matcher('juju_unit')}}})"
    )
    assert unknown_metrics(expr, known) == {"kurrentdb_made_up_total"}
    # A histogram is only queryable through its _bucket/_sum/_count series.
    assert unknown_metrics("kurrentdb_grpc_method_duration_seconds{}", known) == {
        "kurrentdb_grpc_method_duration_seconds"
    }


def test_topology_check_catches_a_missing_filter():
    full = ", ".join(matcher(v) for v in TOPOLOGY_VARS)
    assert topology_problems(f"kurrentdb_proc_cpu{{{full}}}") == []
    assert topology_problems(f"kurrentdb_proc_cpu{{{matcher('juju_model')}}}")
    assert topology_problems("up") == [
        *(f"up{{}} lacks {matcher(v)}" for v in TOPOLOGY_VARS),
        f"no selector filters on {matcher('juju_unit')}",
    ]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="x"}', {"up"}),
        ("sum by (le, juju_unit) (rate(a_bucket[5m])) > bool 0.5", {"a_bucket"}),
        (
            'histogram_quantile(0.99, sum without (instance) (rate(b_bucket{le!="1e3"}[1h])))',
            {"b_bucket"},
        ),
        ("a - on (x, y) group_right (z) b offset 5m", {"a", "b"}),
        ('count(c{d="e"} == 0) or vector(0) and ignoring (f) g', {"c", "g"}),
        ("max(increase(h[$__range])) * 1e6 + clamp_min(i, -Inf)", {"h", "i"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]):
    assert metric_names(expr) == names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_queries_parse_as_promql(dashboard: dict[str, Any], tmp_path: Path):
    """promtool parses every expression, with Grafana's interval variables filled in."""
    rules = []
    for panel, target in all_targets(dashboard):
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h")
        rules.append({"record": f"panel_{panel['id']}_{target['refId']}", "expr": expr})
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
