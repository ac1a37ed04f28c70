"""What Grafana does to a query before and after the database sees it, for tests without a Grafana binary.

- `interpolate_variables`: the dashboard's template variables, as Grafana's frontend substitutes them in
  SQL datasource queries (multi-value / include-All variables are single-quoted and comma-joined; a
  custom all value is inserted as it is, unescaped).
- `expand_macros`: the PostgreSQL datasource's macros, as its backend expands them
  (pkg/tsdb/grafana-postgresql-datasource/macros.go and sqleng's $__interval / $__unixEpochFrom()).
- `numeric_instances`: how Grafana Alerting turns a table into alert instances (one numeric column is
  the value, the text columns are the labels, label sets unique) and `math_compare` / `threshold_gt`
  the expressions used by the provisioned rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

ALL = "$__all"


@dataclass
class Variable:
    name: str
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    options: list[str] = field(default_factory=list)

    @classmethod
    def from_dashboard(cls, definition: dict, options: list[str] | None = None) -> Variable:
        return cls(
            definition["name"],
            bool(definition.get("multi")),
            bool(definition.get("includeAll")),
            definition.get("allValue") or None,
            options if options is not None else [o["value"] for o in definition.get("options", [])],
        )

    def format(self, selected: str | list[str]) -> str:
        values = [selected] if isinstance(selected, str) else list(selected)
        if values == [ALL]:
            if self.all_value:  # Grafana inserts a custom all value as it is
                return self.all_value
            values = self.options
        if self.multi or self.include_all:
            return ",".join("'" + v.replace("'", "''") + "'" for v in values)
        return values[0]


def interpolate_variables(sql: str, variables: dict[str, Variable], selection: dict[str, str | list[str]]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group("plain") or match.group("braced") or match.group("bracket")
        if name not in variables:
            return match.group(0)  # not a dashboard variable: a macro, left for the backend
        return variables[name].format(selection[name])

    pattern = r"\$(?P<plain>\w+)\b|\$\{(?P<braced>\w+)\}|\[\[(?P<bracket>\w+)\]\]"
    return re.sub(pattern, replace, sql)


def _rfc3339nano(moment: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: trailing zeros of the fraction dropped, 'Z' suffix."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += ("." + f"{moment.microsecond:06d}").rstrip("0")
    return text + "Z"


def _parse_interval(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", text.strip().strip("'"))
    if not match:
        raise ValueError(f"error parsing interval {text}")
    number, unit = int(match.group(1)), match.group(2)
    seconds = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[unit]
    return timedelta(seconds=number * seconds)


def _unix_nanos(moment: datetime) -> int:
    whole = moment.replace(microsecond=0)
    return int(whole.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _go_float(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def expand_macros(sql: str, time_from: datetime, time_to: datetime, interval: timedelta = timedelta(minutes=1)) -> str:
    interval_ms = int(interval.total_seconds() * 1000)
    sql = sql.replace("$__interval_ms", str(interval_ms))
    sql = sql.replace("$__interval", f"{int(interval.total_seconds())}s")
    sql = sql.replace("$__unixEpochFrom()", str(int(time_from.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_to.timestamp())))

    def evaluate(match: re.Match) -> str:
        name = match.group(1)
        args = [a.strip() for a in match.group(2).split(",")]
        # Grafana < 5.3 compatibility, kept by the backend: "$__timeGroup(...)," means the alias form.
        if name == "__timeGroup" and match.string[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339nano(time_from)}' AND '{_rfc3339nano(time_to)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339nano(time_from)}'"
        if name == "__timeTo":
            return f"'{_rfc3339nano(time_to)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            seconds = _go_float(_parse_interval(args[1]).total_seconds())
            group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(time_from.timestamp())} AND {args[0]} <= {int(time_to.timestamp())}"
        if name == "__unixEpochNanoFilter":
            return f"{args[0]} >= {_unix_nanos(time_from)} AND {args[0]} <= {_unix_nanos(time_to)}"
        if name == "__unixEpochNanoFrom":
            return str(_unix_nanos(time_from))
        if name == "__unixEpochNanoTo":
            return str(_unix_nanos(time_to))
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            seconds = _go_float(_parse_interval(args[1]).total_seconds())
            group = f"floor(({args[0]})/{seconds})*{seconds}"
            return group + (' AS "time"' if name == "__unixEpochGroupAlias" else "")
        raise ValueError(f"unknown macro {name!r}")

    return re.sub(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)", evaluate, sql)


def render_query(
    sql: str,
    time_from: datetime,
    time_to: datetime,
    variables: dict[str, Variable] | None = None,
    selection: dict[str, str | list[str]] | None = None,
) -> str:
    """The SQL Grafana would send for `sql`; fails if anything Grafana would substitute is left over."""
    text = expand_macros(interpolate_variables(sql, variables or {}, selection or {}), time_from, time_to)
    leftover = re.findall(r"\$\{?\w+|\[\[\w+\]\]", text)
    if leftover:
        raise AssertionError(f"nothing substitutes {leftover} in:\n{text}")
    return text


# --- Alerting on tabular data ------------------------------------------------------------------------

Labels = frozenset  # of (name, value) pairs


def numeric_instances(columns: list[str], rows: list[tuple]) -> dict[Labels, float | None]:
    """Grafana's conversion of a table into alert instances; raises where Grafana's rule would fail."""
    if not rows:
        return {}
    numeric = [i for i, v in enumerate(rows[0]) if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)]
    if len(numeric) != 1:
        raise AssertionError(f"an alert query must return exactly one numeric column, got {columns} {rows[0]}")
    value_index = numeric[0]
    instances: dict[Labels, float | None] = {}
    for row in rows:
        labels = []
        for i, cell in enumerate(row):
            if i == value_index:
                continue
            if not isinstance(cell, str):
                raise AssertionError(f"column {columns[i]} must be text to become a label, got {cell!r}")
            labels.append((columns[i], cell))
        key = frozenset(labels)
        if key in instances:
            raise AssertionError(f"two rows with the same labels {dict(key)}")
        value = row[value_index]
        instances[key] = None if value is None else float(value)
    return instances


def math_compare(left: dict[Labels, float | None], right: dict[Labels, float | None], op: str) -> dict[Labels, float]:
    """`$A >= $T` and friends: Grafana's math expression joins instances with equal label sets."""
    compare = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        "==": lambda a, b: a == b,
    }[op]
    result = {}
    for labels, a in left.items():
        b = right.get(labels)
        if a is None or b is None:
            continue
        result[labels] = 1.0 if compare(a, b) else 0.0
    return result


def threshold_gt(values: dict[Labels, float | None], limit: float) -> dict[Labels, float]:
    return {labels: 1.0 if v is not None and v > limit else 0.0 for labels, v in values.items()}


def firing(condition: dict[Labels, float]) -> set[Labels]:
    return {labels for labels, v in condition.items() if v != 0}
