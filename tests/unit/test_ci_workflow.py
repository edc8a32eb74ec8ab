"""The GitHub Actions workflow and the install: actionlint accepts ours and refuses a broken
copy; `make run` installs the runtime dependencies from uv.lock only, `make venv` adds the dev
ones."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.kafka_jars import cache_root

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _actionlint() -> Path:
    """The binary `make lint` installs (scripts/actionlint.sh); tests never install it."""
    binary = cache_root() / "bin" / "actionlint"
    if not binary.is_file():
        pytest.skip(f"{binary} is missing: `make lint` installs it")
    return binary


def _lint(workflow: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_actionlint()), "-no-color", str(workflow)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_actionlint_accepts_the_workflow() -> None:
    proc = _lint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_actionlint_refuses_a_broken_workflow(tmp_path: Path) -> None:
    text = WORKFLOW.read_text()
    assert 'java-version: "17"' in text
    broken = tmp_path / "ci.yml"
    broken.write_text(text.replace('java-version: "17"', 'java-versio: "17"'))
    proc = _lint(broken)
    assert proc.returncode == 1
    assert 'input "java-versio" is not defined in action "actions/setup-java@' in proc.stdout


def test_the_workflow_runs_make_test_with_its_toolchain() -> None:
    (job,) = yaml.safe_load(WORKFLOW.read_text())["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    steps = job["steps"]
    used = {step["uses"].split("@")[0]: step.get("with", {}) for step in steps if "uses" in step}
    assert used["actions/setup-python"]["python-version"] == "3.11"
    assert used["actions/setup-java"] == {"distribution": "temurin", "java-version": "17",
                                          "cache": "maven"}
    assert "actions/setup-go" in used
    cached = "\n".join(step["with"]["path"] for step in steps
                       if step.get("uses", "").startswith("actions/cache@"))
    assert "~/.cache/authloyalty/uv" in cached
    runs = [step["run"] for step in steps if "run" in step]
    assert runs == ["sudo bash scripts/install-system-deps.sh", "make test"]


def _dry_run(target: str) -> list[str]:
    """The commands `make <target>` would run after pyproject.toml changed."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    proc = subprocess.run([make, "-n", "-W", "pyproject.toml", target], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if " sync " in line]


def test_make_run_installs_the_locked_runtime_dependencies_only() -> None:
    (sync,) = _dry_run("run")
    assert "sync --frozen" in sync
    assert "--extra" not in sync


def test_make_venv_adds_the_dev_dependencies() -> None:
    (sync,) = _dry_run("venv")
    assert "sync --frozen" in sync
    assert sync.endswith("--extra dev")
