"""monitoring/: the alert rules pass promtool and their unit tests, the runbooks exist, and every
query of the rules and the dashboard names a metric the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import required_tool

PROJECT = Path(__file__).resolve().parents[1]
MONITORING = PROJECT / "monitoring"
# The service's metric names, a contract with everything that queries them.
HISTOGRAMS = frozenset(
    {
        "db_client_connection_create_time_seconds",
        "db_client_connection_wait_time_seconds",
        "db_client_connection_use_time_seconds",
        "http_server_request_duration_seconds",
    }
)
METRICS = frozenset(
    {
        "db_client_connection_count",
        "db_client_connection_max",
        "db_client_connection_idle_max",
        "db_client_connection_pending_requests",
        "db_client_connection_timeouts_total",
        "db_client_connection_invalidated_total",
        "db_client_connection_leaks_total",
    }
) | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
ALERTS = ["DatabasePoolSaturated", "RequestsShedWith503", "DatabaseCheckoutWaitHigh"]
ALERTS += ["DatabaseConnectionChurn", "DatabaseConnectionLeak"]
PROMQL_WORDS = frozenset({"and", "or", "unless", "bool", "offset", "group_left", "group_right"})
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""")
IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*(?![\w:]|\s*\()")
GRAFANA_LABEL_VALUES = re.compile(r"label_values\((\w+),\s*\w+\)")


@pytest.fixture(scope="module")
def promtool() -> str:
    return required_tool(
        shutil.which("promtool"),
        "promtool tests need promtool on PATH (it comes with Prometheus; Debian: prometheus)",
        "REQUIRE_PROMTOOL",
    )


def load_yaml(name: str) -> Any:
    return yaml.safe_load((MONITORING / name).read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml("alerts.yml")["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    queries = [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            label_values = GRAFANA_LABEL_VALUES.fullmatch(variable["query"]["query"])
            assert label_values is not None, variable["name"]
            queries.append(label_values[1])
    return queries


def metric_names(expression: str) -> set[str]:
    """The metric names of a PromQL expression: what is left without strings, label matchers,
    ranges, grouping clauses, functions and keywords."""
    for pattern in (STRING, re.compile(r"\{[^}]*\}"), re.compile(r"\[[^\]]*\]"), GROUPING):
        expression = pattern.sub(" ", expression)
    return set(IDENTIFIER.findall(expression)) - PROMQL_WORDS


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_metric_names_are_read_from_promql() -> None:
    expression = (
        'sum by (job, le) (rate(a_seconds_bucket{route!~"/x|y", le="+Inf"}[5m])) * 60 '
        "> on (job) group_left max without (pid) (b_total offset 5m) or vector(1e3)"
    )

    assert metric_names(expression) == {"a_seconds_bucket", "b_total"}


def run_promtool(promtool: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *arguments],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", "alerts.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_alert_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", "alerts.test.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [
        (case["alertname"], bool(case["exp_alerts"]))
        for test in load_yaml("alerts.test.yml")["tests"]
        for case in test["alert_rule_test"]
    ]

    assert sorted(rule["alert"] for rule in rules()) == sorted(ALERTS)
    for alert in ALERTS:
        assert (alert, True) in cases, f"{alert} is never shown firing"
        assert (alert, False) in cases, f"{alert} is never shown quiet"


def test_every_alert_links_a_runbook_section_of_the_readme() -> None:
    readme = (PROJECT / "README.md").read_text()
    anchors = {
        github_anchor(heading)
        for heading in re.findall(r"^#{2,4} (.+)$", readme, flags=re.MULTILINE)
    }

    for rule in rules():
        document, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert document == "README.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: README.md has no section #{anchor}"
        assert rule["annotations"]["summary"], rule["alert"]


def test_rules_and_dashboard_query_only_the_service_metrics() -> None:
    used = {
        query: metric_names(query)
        for query in [rule["expr"] for rule in rules()] + dashboard_queries()
    }

    assert all(used.values()), [query for query, names in used.items() if not names]
    unknown = {query: names - METRICS for query, names in used.items() if names - METRICS}
    assert unknown == {}


def test_dashboard_shows_every_metric_of_the_service() -> None:
    shown = set().union(*(metric_names(query) for query in dashboard_queries()))

    families = {
        next((histogram for histogram in HISTOGRAMS if name.startswith(f"{histogram}_")), name)
        for name in shown
    }

    assert {name for name in METRICS if not name.startswith(tuple(HISTOGRAMS))} | HISTOGRAMS == (
        families
    )


def test_dashboard_panels_each_query_prometheus() -> None:
    panels = dashboard()["panels"]

    assert len(panels) >= 9
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["legendFormat"], panel["title"]
