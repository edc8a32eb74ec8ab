"""The installed package holds the services only: no provisioning or dev-stack code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Words only provisioning code has: package managers, process managers, the Kafka jars.
PROVISIONING = ("apt-get", "supervisord", "pom.xml", "pg_basebackup")


def test_the_wheel_holds_the_services_only(tmp_path: Path) -> None:
    # Build from a copy of what deploy/Dockerfile copies, so no build files land in the tree.
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(tmp_path / "wheel"),
         "--no-deps", "--no-build-isolation", "-q"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "wheel").glob("authloyalty-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = {n: archive.read(n).decode() for n in names if n.endswith(".py")}
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"authloyalty", dist_info}
    assert "authloyalty/cli.py" in names
    assert not [n for n in names if "devinfra" in n or "devstack" in n]
    offending = {n: [w for w in PROVISIONING if w in text] for n, text in sources.items()
                 if "rpc/" not in n}
    assert not {n: w for n, w in offending.items() if w}, offending


def test_the_docker_image_copies_only_the_package_sources() -> None:
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    admitted = [line for line in ignore if line.startswith("!")]
    assert admitted == ["!pyproject.toml", "!README.md", "!src/"]
    assert not (ROOT / "src" / "devstack").exists()
    assert not (ROOT / "src" / "authloyalty" / "devinfra").exists()
