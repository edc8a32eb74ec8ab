"""The Kafka broker's classpath, resolved from Maven Central with ``scripts/kafka/pom.xml``.

No Kafka tarball: ``mvn dependency:copy-dependencies`` copies the jars of
``org.apache.kafka:kafka_2.13`` into ``<cache>/kafka-<version>/lib`` once; ``kafka.Kafka`` then
runs as a plain JVM. Environment:

``AUTHLOYALTY_CACHE_DIR``
    where the jars go; default ``~/.cache/authloyalty``.
``AUTHLOYALTY_KAFKA_POM``
    the pom (or the directory holding it) to resolve instead of ``scripts/kafka/pom.xml``.
``AUTHLOYALTY_KAFKA_LOG4J2``
    a log4j2 configuration file instead of ``scripts/kafka/log4j2.properties``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from devstack.common import REPO_ROOT, DevstackError, file_lock, require_commands, tail

CACHE_ENV = "AUTHLOYALTY_CACHE_DIR"
POM_ENV = "AUTHLOYALTY_KAFKA_POM"
LOG4J2_ENV = "AUTHLOYALTY_KAFKA_LOG4J2"
MIN_JAVA = 17
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MARKER = ".complete"
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_path() -> Path:
    """The pom resolving the broker classpath (``$AUTHLOYALTY_KAFKA_POM`` or the repo's)."""
    override = os.environ.get(POM_ENV)
    path = Path(override).expanduser() if override else REPO_ROOT / "scripts" / "kafka"
    if path.is_dir():
        path = path / "pom.xml"
    if not path.is_file():
        raise DevstackError(f"Kafka classpath pom not found at {path}; set {POM_ENV}")
    return path


def log4j2_config() -> Path:
    """The brokers' log4j2 configuration (everything to stdout, which supervisord logs)."""
    override = os.environ.get(LOG4J2_ENV)
    return (Path(override).expanduser() if override
            else pom_path().parent / "log4j2.properties").absolute()


def kafka_version(pom: Path | None = None) -> str:
    """The ``kafka.version`` property of the classpath pom."""
    pom = pom or pom_path()
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise DevstackError(f"{pom} has no <properties><kafka.version>")
    return (node.text or "").strip()


def cache_root() -> Path:
    """Where downloaded artefacts are kept across runs."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "authloyalty"


def find_java() -> str:
    """The ``java`` to run brokers with (``$JAVA_HOME/bin/java`` or PATH), at least 17."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = require_commands({"java": "default-jre-headless"})["java"]
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None:
        raise DevstackError(f"cannot run `{java} -version`:\n{tail(proc.stderr + proc.stdout)}")
    major = int(match.group(1))
    major = int(match.group(2) or 0) if major == 1 else major
    if major < MIN_JAVA:
        raise DevstackError(f"{java} is Java {major}; Kafka 4.x needs Java {MIN_JAVA} or newer")
    return java


def ensure_classpath(pom: Path | None = None) -> Path:
    """Resolve the broker jars into ``<cache>/kafka-<version>/lib`` (once) and return that dir.

    A marker holding the pom's hash is written after Maven succeeded; without it (or after the
    pom changed) the directory is copied again. Concurrent callers serialise on a lock file.
    """
    pom = (pom or pom_path()).resolve()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    lib = cache_root() / f"kafka-{kafka_version(pom)}" / "lib"
    marker = lib / _MARKER

    def complete() -> bool:
        with contextlib.suppress(OSError):
            return marker.read_text().strip() == digest
        return False

    if complete():
        return lib
    mvn = require_commands({"mvn": "maven"})["mvn"]
    lib.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lib.parent / ".lock"):
        if complete():
            return lib
        shutil.rmtree(lib, ignore_errors=True)
        cmd = [mvn, "-B", "-q", "--no-transfer-progress", "-Dstyle.color=never", "-f", str(pom),
               f"{_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
               f"-DoutputDirectory={lib}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DevstackError(
                f"resolving the Kafka classpath failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{tail(proc.stdout + proc.stderr)}")
        if not any(lib.glob("kafka_2.13-*.jar")):
            raise DevstackError(f"mvn succeeded but {lib} holds no kafka_2.13 jar")
        marker.write_text(digest + "\n")
    return lib
