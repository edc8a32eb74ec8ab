"""Commands on a directory without a stack say so and leave no directory behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.__main__ import main


@pytest.mark.parametrize("command", [["stop", "kafka"], ["start", "kafka"],
                                     ["restart", "sso-1"], ["down"]])
def test_a_command_on_a_missing_stack_refuses_and_creates_nothing(
        tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo"
    assert main([*command, "--dir", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"error: no stack in {missing}"
    assert not missing.exists()
