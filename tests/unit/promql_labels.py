"""Which labels a PromQL expression uses, checked against what KurrentDB exports.

tests/data/kurrentdb-metrics.txt lists every metric family KurrentDB exports with its labels (and
the values a label can take when the source fixes them), rebuilt from the server's source. This
module reads it and follows the labels through an expression: the label matchers of each
selector, `by`/`without`, `on`/`ignoring`, `group_left`/`group_right`, `histogram_quantile`'s
`le`, and what labels the result carries (for legends and `$labels` in alert annotations). It
parses the PromQL the charm's rules and dashboard are written in; promtool checks the syntax.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cos.topology import Topology

METRICS_FILE = Path(__file__).resolve().parents[1] / "data" / "kurrentdb-metrics.txt"

# Labels Prometheus puts on every scraped series: its target labels, and the Juju topology the
# prometheus_scrape relation adds (the same names the charm's Topology gives logs).
TARGET_LABELS = frozenset(
    {"instance", "job"} | set(Topology("m", "uuid", "app", "app/0", "charm").labels())
)
# Labels the OpenTelemetry Prometheus exporter writes on every KurrentDB series
# (PrometheusSerializer.WriteTags: the meter's name and version).
EXPORTER_LABELS = frozenset({"otel_scope_name", "otel_scope_version"})

Values = frozenset[str] | None  # None: any value (from data or configuration)


@dataclass(frozen=True)
class Family:
    """One line of the metrics file."""

    name: str
    type: str
    labels: Mapping[str, Values]
    since: str | None = None
    until: str | None = None
    default_on: bool = True


@dataclass(frozen=True)
class Series:
    """A name a selector can use: a family, or a histogram's _bucket, _sum or _count."""

    name: str
    family: Family | None  # None for Prometheus' own `up`
    labels: Mapping[str, Values]


def parse_metrics_file(text: str) -> dict[str, Family]:
    families: dict[str, Family] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, kind, labels_text, *attributes = line.split()
        assert kind in ("counter", "gauge", "histogram"), f"line {number}: type {kind!r}"
        assert name not in families, f"line {number}: {name} listed twice"
        labels: dict[str, Values] = {}
        for item in [] if labels_text == "-" else labels_text.split(","):
            label, _, values = item.partition("=")
            assert re.fullmatch(r"[a-zA-Z_]\w*", label), f"line {number}: label {label!r}"
            labels[label] = frozenset(values.split("|")) if values else None
        default_on, versions = True, {"since": None, "until": None}
        for attribute in attributes:
            key, _, value = attribute.partition("=")
            if key == "off" and not value:
                default_on = False
            elif key in versions and re.fullmatch(r"\d+\.\d+", value):
                versions[key] = value
            else:
                raise AssertionError(f"line {number}: attribute {attribute!r}")
        if kind == "counter":
            assert name.endswith("_total"), f"line {number}: a counter's name ends in _total"
        families[name] = Family(
            name, kind, labels, versions["since"], versions["until"], default_on
        )
    return families


@functools.cache
def families(path: Path = METRICS_FILE) -> dict[str, Family]:
    return parse_metrics_file(path.read_text())


@functools.cache
def catalog(path: Path = METRICS_FILE) -> dict[str, Series]:
    """Every selectable series name, with the labels a scraped series of it can have."""
    common: dict[str, Values] = dict.fromkeys(TARGET_LABELS | EXPORTER_LABELS)
    out = {"up": Series("up", None, dict.fromkeys(TARGET_LABELS))}
    for family in families(path).values():
        labels = {**common, **family.labels}
        if family.type == "histogram":
            out[f"{family.name}_bucket"] = Series(
                f"{family.name}_bucket", family, {**labels, "le": None}
            )
            for suffix in ("_sum", "_count"):
                out[family.name + suffix] = Series(family.name + suffix, family, labels)
        else:
            out[family.name] = Series(family.name, family, labels)
    return out


# ---- tokens ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\[\]]*\])
    |(?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w.]))
    |(?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<ident>[A-Za-z_:][\w:]*)
    |(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)

_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
_PARAMETER_AGGREGATIONS = frozenset(
    {"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
_KEEP_LABELS_AGGREGATIONS = frozenset({"bottomk", "topk", "limitk", "limit_ratio"})
# Functions whose result keeps the labels of their (first vector or range) argument.
_KEEP_LABELS_FUNCTIONS = frozenset(
    {"abs", "ceil", "floor", "exp", "ln", "log2", "log10", "sqrt", "sgn", "round"}
    | {"clamp", "clamp_min", "clamp_max", "sort", "sort_desc", "timestamp", "deg", "rad"}
    | {"rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets"}
    | {"predict_linear", "holt_winters", "double_exponential_smoothing"}
    | {f"{f}_over_time" for f in ("avg", "min", "max", "sum", "count", "quantile")}
    | {f"{f}_over_time" for f in ("stddev", "stdvar", "last", "present", "mad")}
)
_NO_LABELS_FUNCTIONS = frozenset({"vector", "absent", "absent_over_time"})
_SCALAR_FUNCTIONS = frozenset({"scalar", "time", "pi"})
_CALENDAR_FUNCTIONS = frozenset(
    {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month"}
    | {"year"}
)
_BINARY_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"or"}),
    frozenset({"and", "unless"}),
    frozenset({"==", "!=", ">", "<", ">=", "<="}),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%", "atan2"}),
    frozenset({"^"}),
)
_SET_OPERATORS = frozenset({"and", "or", "unless"})
_LITERAL_ALTERNATION = re.compile(r"[\w.:-]+(?:\|[\w.:-]+)*")


@dataclass(frozen=True)
class Value:
    """What an expression evaluates to: its type and the labels its elements can carry."""

    kind: str  # "vector", "scalar" or "string"
    labels: frozenset[str] = frozenset()
    text: str = ""  # a string literal's value


@dataclass
class Analysis:
    """The result of reading one expression."""

    value: Value
    problems: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)  # selected series names, in order
    # (name, matchers) of each selector, matchers written `label op "value"`, ", "-separated
    selectors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> frozenset[str]:
        return self.value.labels


@dataclass(frozen=True)
class _Matching:
    on: tuple[str, ...] | None = None
    ignoring: tuple[str, ...] | None = None
    group: tuple[str, tuple[str, ...]] | None = None  # ("left"|"right", include labels)


class _Parser:
    def __init__(self, expr: str, known: Mapping[str, Series]):
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(expr):
            match = _TOKEN.match(expr, pos)
            if not match:
                raise SyntaxError(f"cannot read {expr[pos : pos + 20]!r}")
            if match.lastgroup != "space":
                self.tokens.append((match.lastgroup or "", match.group()))
            pos = match.end()
        self.pos = 0
        self.known = known
        self.problems: list[str] = []
        self.series: list[str] = []
        self.selectors: list[tuple[str, str]] = []

    # -- token helpers
    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def accept(self, text: str) -> bool:
        kind, value = self.peek()
        if kind in ("op", "ident") and value == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise SyntaxError(f"expected {text!r}, found {self.peek()[1]!r}")

    def label_list(self) -> tuple[str, ...]:
        self.expect("(")
        labels: list[str] = []
        while not self.accept(")"):
            kind, value = self.take()
            if kind != "ident":
                raise SyntaxError(f"expected a label name, found {value!r}")
            labels.append(value)
            self.accept(",")
        return tuple(labels)

    # -- grammar
    def parse(self) -> Value:
        value = self.binary(0)
        if self.peek()[0] != "end":
            raise SyntaxError(f"unexpected {self.peek()[1]!r}")
        return value

    def binary(self, level: int) -> Value:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        lhs = self.binary(level + 1)
        while self.peek()[1] in _BINARY_LEVELS[level] and self.peek()[0] in ("op", "ident"):
            op = self.take()[1]
            self.accept("bool")
            matching = self.matching()
            # `^` is right-associative; the others left.
            rhs = self.binary(level if op == "^" else level + 1)
            lhs = self.combine(op, lhs, rhs, matching)
        return lhs

    def matching(self) -> _Matching:
        on = ignoring = group = None
        if self.accept("on"):
            on = self.label_list()
        elif self.accept("ignoring"):
            ignoring = self.label_list()
        for side in ("left", "right"):
            if self.accept(f"group_{side}"):
                include = self.label_list() if self.peek()[1] == "(" else ()
                group = (side, include)
        return _Matching(on, ignoring, group)

    def unary(self) -> Value:
        if self.peek() in (("op", "-"), ("op", "+")):
            self.take()
            return self.unary()
        return self.postfix()

    def postfix(self) -> Value:
        value = self.primary()
        while True:
            kind, text = self.peek()
            if kind == "range":
                self.take()
            elif (kind, text) == ("ident", "offset"):
                self.take()
                self.accept("-")
                if self.take()[0] != "duration":
                    raise SyntaxError("offset needs a duration")
            elif (kind, text) == ("op", "@"):
                self.take()
                self.take()
            else:
                return value

    def primary(self) -> Value:
        kind, text = self.peek()
        if kind == "number" or (kind == "ident" and text.lower() in ("inf", "nan")):
            self.take()
            return Value("scalar")
        if kind == "string":
            self.take()
            return Value("string", text=text[1:-1])
        if (kind, text) == ("op", "("):
            self.take()
            value = self.binary(0)
            self.expect(")")
            return value
        if kind == "ident" and text in _AGGREGATIONS:
            return self.aggregation()
        if kind == "ident" and self.peek(1) == ("op", "("):
            return self.call()
        if kind == "ident" or (kind, text) == ("op", "{"):
            return self.selector()
        raise SyntaxError(f"unexpected {text!r}")

    def arguments(self) -> list[Value]:
        self.expect("(")
        args: list[Value] = []
        while not self.accept(")"):
            args.append(self.binary(0))
            self.accept(",")
        return args

    def aggregation(self) -> Value:
        name = self.take()[1]
        grouping = None
        if self.peek()[1] in ("by", "without"):
            grouping = (self.take()[1], self.label_list())
        args = self.arguments()
        if self.peek()[1] in ("by", "without"):
            grouping = (self.take()[1], self.label_list())
        vectors = [a for a in args if a.kind == "vector"]
        if len(vectors) != 1:
            raise SyntaxError(f"{name} needs one vector argument")
        inner = vectors[-1].labels
        if grouping:
            keyword, labels = grouping
            missing = sorted(set(labels) - inner)
            if missing:
                self.problems.append(
                    f"`{name} {keyword} ({', '.join(labels)})`: the aggregated series have no "
                    f"{', '.join(missing)} (they have {_names(inner)})"
                )
            out = frozenset(labels) if keyword == "by" else inner - set(labels)
        else:
            out = frozenset()
        if name in _KEEP_LABELS_AGGREGATIONS:
            out = inner
        if name == "count_values" and args and args[0].kind == "string":
            out |= {args[0].text}
        return Value("vector", out)

    def call(self) -> Value:
        name = self.take()[1]
        args = self.arguments()
        vectors = [a for a in args if a.kind == "vector"]
        if name in _KEEP_LABELS_FUNCTIONS or (name in _CALENDAR_FUNCTIONS and vectors):
            if not vectors:
                raise SyntaxError(f"{name} needs a vector argument")
            return Value("vector", vectors[0].labels)
        if name in _CALENDAR_FUNCTIONS:
            return Value("vector")
        if name == "histogram_quantile":
            (inner,) = vectors
            if "le" not in inner.labels:
                self.problems.append(
                    "histogram_quantile needs the `le` label: aggregate the _bucket series "
                    "`by (..., le)`"
                )
            return Value("vector", inner.labels - {"le"})
        if name in ("label_replace", "label_join"):
            inner = vectors[0].labels
            strings = [a.text for a in args if a.kind == "string"]
            sources = strings[2:3] if name == "label_replace" else strings[2:]
            for source in sources:
                if source and source not in inner:
                    self.problems.append(f"{name} reads a label the series lack: {source}")
            return Value("vector", inner | {strings[0]})
        if name in _NO_LABELS_FUNCTIONS:
            return Value("vector")
        if name in _SCALAR_FUNCTIONS:
            return Value("scalar")
        raise SyntaxError(f"unknown function {name}")

    def selector(self) -> Value:
        name = ""
        if self.peek()[0] == "ident":
            name = self.take()[1]
        matchers: list[tuple[str, str, str]] = []
        if self.accept("{"):
            while not self.accept("}"):
                kind, label = self.take()
                if kind not in ("ident", "string"):
                    raise SyntaxError(f"expected a label name, found {label!r}")
                op = self.take()[1]
                if op not in ("=", "!=", "=~", "!~"):
                    raise SyntaxError(f"bad matcher operator {op!r}")
                kind, value = self.take()
                if kind != "string":
                    raise SyntaxError(f"a matcher needs a string, found {value!r}")
                matchers.append((label.strip("\"'"), op, value[1:-1]))
                self.accept(",")
        for label, _, value in matchers:
            if label == "__name__" and not name:
                name = value
        if not name:
            self.problems.append("a selector without a metric name")
            return Value("vector")
        self.series.append(name)
        self.selectors.append((name, ", ".join(f'{k}{op}"{v}"' for k, op, v in matchers)))
        series = self.known.get(name)
        if series is None:
            self.problems.append(f"{name}: not a metric KurrentDB exports")
            return Value("vector", TARGET_LABELS)
        for label, op, value in matchers:
            self.check_matcher(series, label, op, value)
        return Value("vector", frozenset(series.labels) | {"__name__"})

    def check_matcher(self, series: Series, label: str, op: str, value: str) -> None:
        if label == "__name__":
            return
        if label not in series.labels:
            self.problems.append(
                f'{series.name}{{{label}{op}"{value}"}}: {series.name} has no label {label} '
                f"(it has {_names(frozenset(series.labels))})"
            )
            return
        allowed = series.labels[label]
        if allowed is None or "$" in value or value == "":
            return
        if op in ("=", "!="):
            candidates = [value]
        elif _LITERAL_ALTERNATION.fullmatch(value):
            candidates = value.split("|")
        else:
            return  # a real regular expression: not checked
        unknown = [v for v in candidates if v not in allowed]
        if unknown:
            self.problems.append(
                f'{series.name}{{{label}{op}"{value}"}}: {label} is never '
                f"{', '.join(unknown)} (it is one of {', '.join(sorted(allowed))})"
            )

    def combine(self, op: str, lhs: Value, rhs: Value, matching: _Matching) -> Value:
        if "string" in (lhs.kind, rhs.kind):
            raise SyntaxError(f"a string cannot be an operand of {op}")
        if lhs.kind == "scalar" and rhs.kind == "scalar":
            return Value("scalar")
        if lhs.kind == "scalar":
            return Value("vector", rhs.labels)
        if rhs.kind == "scalar":
            return Value("vector", lhs.labels)
        # Vector matching, as Prometheus does it (promql/engine.go VectorBinop, resultMetric).
        # The metric name never takes part in matching.
        left, right = lhs.labels - {"__name__"}, rhs.labels - {"__name__"}
        if matching.on is not None:
            for side, labels in (("left", left), ("right", right)):
                missing = sorted(set(matching.on) - labels)
                if missing:
                    self.problems.append(
                        f"`{op} on ({', '.join(matching.on)})`: the {side}-hand side has no "
                        f"{', '.join(missing)}"
                    )
        ignored = set(matching.ignoring or ())
        if ignored - (left | right):
            self.problems.append(
                f"`{op} ignoring ({', '.join(matching.ignoring or ())})`: neither side has "
                f"{', '.join(sorted(ignored - (left | right)))}"
            )
        if matching.group is not None:
            side, include = matching.group
            one, many = (rhs, lhs) if side == "left" else (lhs, rhs)
            missing = sorted(set(include) - one.labels)
            if missing:
                self.problems.append(
                    f"`group_{side} ({', '.join(include)})`: the other side has no "
                    f"{', '.join(missing)}"
                )
            return Value("vector", many.labels | set(include))
        if op == "or":
            return Value("vector", lhs.labels | rhs.labels)
        if matching.on is None and (left - ignored) != (right - ignored):
            self.problems.append(
                f"`{op}` matches on every label, but the sides differ in "
                f"{', '.join(sorted((left ^ right) - ignored))}: no pair ever matches"
            )
        if op in _SET_OPERATORS:
            return Value("vector", lhs.labels)
        if matching.on is not None:
            # One-to-one matching with on(): the result keeps only the on() labels.
            return Value("vector", frozenset(matching.on))
        return Value("vector", left - ignored)


def _names(labels: frozenset[str]) -> str:
    """Labels for a message, without those every series has."""
    own = sorted(labels - TARGET_LABELS - EXPORTER_LABELS - {"__name__"})
    return ", ".join(own) or "only the target and exporter labels"


def analyse(expr: str, known: Mapping[str, Series] | None = None) -> Analysis:
    """Read a PromQL expression; SyntaxError when it is outside what this module reads."""
    parser = _Parser(expr, catalog() if known is None else known)
    value = parser.parse()
    return Analysis(value, parser.problems, parser.series, parser.selectors)


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matchers) of every selector of `expr`."""
    return analyse(expr).selectors


# Series that describe the Kubernetes node a pod runs on, not the pod or the KurrentDB process
# (src/KurrentDB.SystemRuntime/Diagnostics/RuntimeStats.cs at v26.1.0): MemAvailable of
# /proc/meminfo (kurrentdb_sys_mem_bytes{kind="free"}) and /proc/loadavg
# (kurrentdb_sys_load_avg), neither of which a container has for itself. Name -> the matcher
# that makes a selector of it pod-level (None: none does).
NODE_WIDE: dict[str, str | None] = {
    "kurrentdb_sys_mem_bytes": 'kind="total"',
    "kurrentdb_sys_load_avg": None,
}


def node_wide_selectors(expr: str) -> list[str]:
    """The selectors of `expr` that read the Kubernetes node's figures (see NODE_WIDE)."""
    found = []
    for name, matchers in selectors(expr):
        if name in NODE_WIDE:
            pod_level = NODE_WIDE[name]
            if pod_level is None or pod_level not in matchers:
                found.append(f"{name}{{{matchers}}}")
    return found


LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
ANNOTATION_LABEL = re.compile(r"\$labels\.([A-Za-z_]\w*)")
