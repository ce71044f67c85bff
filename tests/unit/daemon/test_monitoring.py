"""The monitoring pack (docs/monitoring/): the alert rules pass promtool's
check and unit tests, and the dashboard and the alerts use only metrics the
daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rulebot.daemon.metrics import Metrics
from rulebot.engine.compare import Difference

ROOT = Path(__file__).resolve().parents[3]
PACK = ROOT / "docs" / "monitoring"
METRIC = re.compile(r"\b((?:rulebot|process|python)_[a-z_]+)\b")


def exported() -> set[str]:
    """Every sample name /metrics can show (a shadow set's metrics included)."""
    metrics = Metrics()
    metrics.observe_shadow(Difference(("a",), (), (), (), ("a",)))
    names = set()
    for line in metrics.render().decode().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool missing: scripts/install-system-deps installs Debian's prometheus"
    return found


def test_the_alert_rules_pass_promtool_check_and_its_unit_tests() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        run = subprocess.run([promtool(), *args], cwd=PACK, capture_output=True, text=True,
                             timeout=60, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCESS" in run.stdout


def test_every_alert_is_unit_tested_or_named_here() -> None:
    rules = yaml.safe_load((PACK / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = {t["alertname"] for case in yaml.safe_load((PACK / "alerts.test.yml").read_text())
              ["tests"] for t in case["alert_rule_test"]}
    untested = {"RulebotUnackedStanzas", "RulebotSlowDecisions"}  # plain thresholds
    assert {r["alert"] for r in rules} == tested | untested
    assert all(r["annotations"]["summary"] and r["labels"]["severity"] for r in rules)


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    names = exported()
    alerts = (PACK / "alerts.yml").read_text()
    used = set(METRIC.findall(alerts))
    dashboard = json.loads((PACK / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used |= {m for e in exprs for m in METRIC.findall(e)}
    assert used - names == set()
    # the alerts: reload failing, disconnected, queue, errors, shadow
    for needed in ("rulebot_last_reload_successful", "rulebot_connected",
                   "rulebot_outbound_queue", "rulebot_rule_errors_total",
                   "rulebot_shadow_diff_total", "rulebot_events_total"):
        assert needed in used


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads((PACK / "grafana-dashboard.json").read_text())
    assert (dashboard["uid"], dashboard["title"]) == ("rulebot", "rulebot")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert '$instance' in t["expr"], t["expr"]
            assert t["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("name", ["rulebot_build_info", "process_resident_memory_bytes",
                                  "process_cpu_seconds_total", "python_info"])
def test_build_and_process_metrics(name: str) -> None:
    assert name in exported()
