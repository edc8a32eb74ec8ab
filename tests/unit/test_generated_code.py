"""The committed gRPC/protobuf code is exactly what scripts/gen_proto.sh makes from proto/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "src" / "authloyalty" / "rpc"


def _tree(base: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(base)): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_generated_code_matches_the_proto_sources(tmp_path: Path) -> None:
    out = tmp_path / "rpc"
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(out)],
        check=True, capture_output=True, env={**os.environ, "PYTHON": sys.executable},
    )
    fresh, committed = _tree(out), _tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run scripts/gen_proto.sh"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert changed == [], f"edited by hand or stale, run scripts/gen_proto.sh: {changed}"


def test_event_schemas_keep_the_original_file_names_and_packages() -> None:
    from authloyalty.rpc.registration.v1 import registration_pb2
    from authloyalty.rpc.session.v1 import session_pb2

    registration = registration_pb2.RegistrationMessage.DESCRIPTOR
    assert registration.file.name == "registration.v1/registration.proto"
    assert registration.full_name == "Registration.v1.RegistrationMessage"
    assert session_pb2.SessionRevoked.DESCRIPTOR.full_name == "Session.v1.SessionRevoked"
