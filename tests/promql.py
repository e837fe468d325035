"""PromQL helpers shared by the dashboard and alert tests (this module holds no tests).

`dashboard_exprs` turns the Grafana dashboard into plain PromQL that a real Prometheus can run;
`vector_selectors` finds the series selectors in an expression, so tests can check metric names and
label matchers without a full PromQL parser (promtool checks the syntax itself).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Grafana formats a variable used in a regex matcher by escaping regex metacharacters; only these are
# escaped because RE2 rejects backslash before some other characters (a space, for one).
_REGEX_META = set("\\.+*?()|[]{}^$")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration such as "15s" or "1h30m"."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def regex_literal(value: str) -> str:
    """`value` as a regex matching exactly it, escaped for a double-quoted PromQL string."""
    escaped = "".join("\\" + c if c in _REGEX_META else c for c in value)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's `$var`, `${var}`, `${var:fmt}` and `[[var]]`; an unknown variable is an error."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"expression uses undefined variable ${name}: {expr}")
        return values[name]

    return _VARIABLE.sub(repl, expr)


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def raw_dashboard_exprs(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(title, expr) for every panel target and annotation query, variables left in place."""
    out: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                out.append((panel.get("title", ""), target["expr"]))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out.append((f"annotation: {annotation['name']}", annotation["expr"]))
    return out


def dashboard_exprs(
    path: str | Path,
    job: str,
    instance: str,
    interval: str,
    *,
    rate_interval: str | None = None,
    range_: str = "1h",
    datasource: str = "prometheus",
) -> list[tuple[str, str]]:
    """(panel title, runnable PromQL) for every query in the dashboard at `path`.

    `job` and `instance` are literal values, escaped the way Grafana escapes a selected value for a
    `=~` matcher. `interval` stands for `$__interval` and, unless `rate_interval` is given, for
    `$__rate_interval` too (Grafana makes that at least four scrape intervals: pass one that is).
    `range_` is the dashboard time range (`$__range`).
    """
    dashboard = json.loads(Path(path).read_text())
    interval_s = duration_seconds(interval)
    range_s = duration_seconds(range_)
    values = {
        "job": regex_literal(job),
        "instance": regex_literal(instance),
        "datasource": datasource,
        "__interval": interval,
        "__interval_ms": str(int(interval_s * 1000)),
        "__rate_interval": rate_interval or interval,
        "__range": range_,
        "__range_s": str(int(range_s)),
        "__range_ms": str(int(range_s * 1000)),
    }
    return [(title, substitute(expr, values)) for title, expr in raw_dashboard_exprs(dashboard)]


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str  # as written between the quotes, escapes untouched


@dataclass(frozen=True)
class Selector:
    metric: str  # "" when the selector names no metric
    matchers: tuple[Matcher, ...]

    def has(self, label: str, op: str, value: str) -> bool:
        return Matcher(label, op, value) in self.matchers


_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(
    r"(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?"
)
_MATCHER = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"
    r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(,|$)",
    re.S,
)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    j = i + 1
    while j < len(expr):
        if expr[j] == "\\" and quote != "`":
            j += 2
            continue
        if expr[j] == quote:
            return j + 1
        j += 1
    raise ValueError(f"unterminated string in {expr!r}")


def _closing(expr: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket matching the one at `i`, skipping strings."""
    depth = 0
    j = i
    while j < len(expr):
        c = expr[j]
        if c in "\"'`":
            j = _skip_string(expr, j)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise ValueError(f"unbalanced {open_!r} in {expr!r}")


def _matchers(body: str) -> tuple[Matcher, ...]:
    out: list[Matcher] = []
    pos = 0
    body = body.strip()
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if not m:
            raise ValueError(f"cannot read label matchers {{{body}}}")
        out.append(Matcher(m.group(1), m.group(2), m.group(3)[1:-1]))
        pos = m.end()
    return tuple(out)


def _next_nonspace(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def vector_selectors(expr: str) -> list[Selector]:
    """The series selectors in a PromQL expression, in order of appearance."""
    out: list[Selector] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":
            nl = expr.find("\n", i)
            i = len(expr) if nl < 0 else nl
        elif c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "[":
            i = _closing(expr, i, "[", "]")
        elif c == "{":
            end = _closing(expr, i, "{", "}")
            out.append(Selector("", _matchers(expr[i + 1 : end - 1])))
            i = end
        elif c.isdigit() or (c == "." and expr[i + 1 : i + 2].isdigit()):
            m = _NUMBER.match(expr, i)
            assert m is not None
            i = m.end()
        elif m := _IDENT.match(expr, i):
            name = m.group(0)
            i = _next_nonspace(expr, m.end())
            following = expr[i : i + 1]
            if name.lower() in _KEYWORDS:
                continue
            if name in _LABEL_LIST_KEYWORDS:
                if following == "(":
                    i = _closing(expr, i, "(", ")")
                continue
            if following == "(":
                continue  # a function call
            if name in _AGGREGATIONS and _IDENT.match(expr, i) is not None:
                continue  # `sum by (...) (...)`
            matchers: tuple[Matcher, ...] = ()
            if following == "{":
                end = _closing(expr, i, "{", "}")
                matchers = _matchers(expr[i + 1 : end - 1])
                i = end
            out.append(Selector(name, matchers))
        else:
            i += 1
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads, including `{__name__="..."}` selectors."""
    names: set[str] = set()
    for sel in vector_selectors(expr):
        if sel.metric:
            names.add(sel.metric)
        names.update(m.value for m in sel.matchers if m.label == "__name__" and m.op == "=")
    return names
