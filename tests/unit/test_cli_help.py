"""The CLI's help, version and banner: what a newcomer reads first."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import pytest

from authloyalty import __version__, cli

ROOT = Path(__file__).resolve().parents[2]


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _every_command() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for name, sub in _subparsers(cli._parser()).items():
        nested = _subparsers(sub)
        if nested:
            found.update({f"{name} {inner}": parser for inner, parser in nested.items()})
        else:
            found[name] = sub
    return found


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"authloyalty {__version__}\n"


def test_top_level_help_lists_every_command_without_markup(
        capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    assert "`" not in text
    assert "authloyalty: a loyalty-points platform" in text
    for name in ("up", "migrate", "sso", "loyalty", "relay", "admin", "keys"):
        assert re.search(rf"\b{name} [a-z]", text), name
    assert "--version" in text
    # The production topology is not a subcommand; the help says where it is.
    assert "make stack-up" in text


def test_every_option_of_every_command_has_help() -> None:
    for command, parser in _every_command().items():
        for action in parser._actions:
            assert action.help, f"authloyalty {command} {action.option_strings} has no help"


@pytest.mark.parametrize(("command", "expected"), [
    ("up", ["--sso-port N sso's HTTP port (default 8000; 0 picks a free one)",
            "--loyalty-port N loyalty's HTTP port (default 8001; 0 picks a free one)",
            "--grpc-port N sso's gRPC port (default 44044; 0 picks a free one)"]),
    ("admin create", ["--email EMAIL the admin's email (their login)",
                      "--password PASSWORD the new admin's password (at least 8 characters); "
                      "an existing user's stays unless --reset-password",
                      "--reset-password set an existing user's password to --password",
                      "--init initialise a data dir that holds no authloyalty data yet"]),
    ("keys generate", ["--dir DIR directory of the signing keys, created if missing "
                       "(sso.signing_keys_dir)",
                       "--algorithm {EdDSA,ES256,RS256} signature algorithm (default EdDSA)"]),
])
def test_options_say_what_they_do_and_their_default(
        capsys: pytest.CaptureFixture[str], command: str, expected: list[str]) -> None:
    text = _help(capsys, *command.split())
    for line in expected:
        assert line in text, text


def test_readme_command_table_names_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `authloyalty ")]
    for command in _every_command():
        first = command.split()[0]
        if first in ("sso", "loyalty", "relay"):
            assert any(f"`authloyalty {first}`" in row for row in table), command
        else:
            assert any(row.startswith(f"| `authloyalty {command}") for row in table), command
    assert any("migrate [--service sso\\|loyalty\\|all]" in row for row in table)


@pytest.mark.parametrize(("argv0", "on_path", "shown"), [
    (".venv/bin/authloyalty", None, ".venv/bin/authloyalty"),  # what `make run` starts
    ("/usr/local/bin/authloyalty", "/usr/local/bin/authloyalty", "authloyalty"),
    ("/elsewhere/bin/authloyalty", None, "/elsewhere/bin/authloyalty"),
])
def test_banner_prints_a_command_that_runs_as_shown(
        monkeypatch: pytest.MonkeyPatch, argv0: str, on_path: str | None, shown: str) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "up"])
    monkeypatch.setattr(shutil, "which", lambda name: on_path)
    assert cli._self_command() == shown
