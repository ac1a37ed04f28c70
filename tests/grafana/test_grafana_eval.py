"""The stand-in for Grafana's substitutions agrees with Grafana's own macro tests
(pkg/tsdb/grafana-postgresql-datasource/macros_test.go) and its SQL variable formatting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from grafana_eval import ALL, Variable, expand_macros, interpolate_variables, numeric_instances, render_query

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
TO = FROM + timedelta(minutes=5)


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("select $__time(time_column)", 'select time_column AS "time"'),
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        ("SELECT $__timeGroup(time_column,'5m')", "SELECT floor(extract(epoch from time_column)/300)*300"),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
        ),
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        ),
        ("$__timeGroup(time_column , '5m')", "floor(extract(epoch from time_column)/300)*300"),
        (
            "select $__unixEpochFilter(time)",
            f"select time >= {int(FROM.timestamp())} AND time <= {int(TO.timestamp())}",
        ),
        ("select $__unixEpochNanoFrom()", f"select {int(FROM.timestamp()) * 10**9}"),
        (
            "SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')",
            "SELECT floor((time_column+time_adjustment)/300)*300",
        ),
        ("select $__unixEpochFrom(), $__unixEpochTo()", f"select {int(FROM.timestamp())}, {int(TO.timestamp())}"),
    ],
)
def test_macros_expand_as_grafana_does(sql, expected):
    assert expand_macros(sql, FROM, TO) == expected


def test_fractional_seconds_are_formatted_like_go():
    start = datetime(1960, 2, 1, 7, 0, 0, 500000, tzinfo=UTC)
    end = datetime(1980, 2, 3, 8, 0, 0, 500000, tzinfo=UTC)
    assert (
        expand_macros("$__timeFilter(t)", start, end)
        == "t BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'"
    )


def test_unknown_macro_is_an_error():
    with pytest.raises(ValueError, match="unknown macro"):
        expand_macros("select $__nope(x)", FROM, TO)


def test_variables_are_quoted_for_multi_value_and_all():
    customer = Variable("customer", multi=True, include_all=True, all_value="'__all'", options=["a", "b"])
    currency = Variable("currency", multi=True, include_all=True, options=["EUR", "USD"])
    top_n = Variable("top_n")
    variables = {"customer": customer, "currency": currency, "top_n": top_n}
    sql = "x in ($customer) and y in (${currency}) and z in ([[currency]]) limit $top_n -- $__timeFrom()"
    assert (
        interpolate_variables(sql, variables, {"customer": ALL, "currency": ALL, "top_n": "5"})
        == "x in ('__all') and y in ('EUR','USD') and z in ('EUR','USD') limit 5 -- $__timeFrom()"
    )
    assert interpolate_variables("x in ($customer)", variables, {"customer": ["o'brien"]}) == "x in ('o''brien')"


def test_render_refuses_leftovers():
    with pytest.raises(AssertionError, match="nothing substitutes"):
        render_query("select $undefined", FROM, TO)


def test_tables_become_alert_instances_like_grafana_requires():
    assert numeric_instances(["stage", "stale"], [("loader", 1), ("staging", 0)]) == {
        frozenset({("stage", "loader")}): 1.0,
        frozenset({("stage", "staging")}): 0.0,
    }
    with pytest.raises(AssertionError, match="exactly one numeric column"):
        numeric_instances(["a", "b"], [(1, 2)])
    with pytest.raises(AssertionError, match="same labels"):
        numeric_instances(["stage", "stale"], [("loader", 1), ("loader", 0)])
    with pytest.raises(AssertionError, match="must be text"):
        numeric_instances(["at", "stale"], [(FROM, 1)])
