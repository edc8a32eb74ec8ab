"""The alerting rules (deploy/prometheus/alerts.yml) under ``promtool test rules``.

promtool is Debian's ``prometheus`` package, which ``make system-deps`` installs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts_test.yml"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run `make system-deps` (Debian package "
                    "prometheus)")
    return found


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_are_valid() -> None:
    proc = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_fires_and_stays_silent_as_its_cases_say() -> None:
    proc = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True,
                          text=True, check=False, cwd=RULES_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_case_and_a_runbook_section() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case["alert_rule_test"]
             if check["exp_alerts"]}
    silent = {check["alertname"] for case in cases for check in case["alert_rule_test"]
              if not check["exp_alerts"]}
    operations = (RULES_DIR.parents[1] / "docs" / "operations.md").read_text()
    for rule in _alerts():
        name = rule["alert"]
        assert name in fired, f"{name}: no case where it fires"
        assert name in silent, f"{name}: no case where it stays silent"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert f"#### {name}\n" in operations, f"{name}: no runbook section in operations.md"
