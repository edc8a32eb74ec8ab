"""Check that the pgbench ceilings still run the SQL the services send.

The ceilings are only fair while ``sql/*.sql`` mirror what loyalty sends per request. The code
changes; this check catches drift: it turns on ``log_statement = all`` for a moment, makes one
request of each kind, reads back the statements of the backend that served it, and compares
their sequence of commands (BEGIN, SELECT, UPDATE, INSERT, COMMIT, ...) with the pgbench
script's, and the words of the statement itself (tables, columns, keywords: a column added to
the service's statement shows even when the commands stay the same). A mismatch is reported in
the results (and should be fixed in ``sql/``).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from benchlib.loadgen import SQL_DIR
from benchlib.stack import Stack

_STATEMENT = re.compile(r"\[(\d+)\] LOG:  (?:statement|execute [^:]+): (.*)$")
_COMMANDS = ("BEGIN", "START", "SELECT", "UPDATE", "INSERT", "DELETE", "COMMIT", "ROLLBACK",
             "END", "WITH")


def _command(sql: str) -> str:
    word = sql.strip().split(None, 1)[0].rstrip(";").upper() if sql.strip() else ""
    return {"END": "COMMIT", "START": "BEGIN"}.get(word, word)


def script_shape(name: str) -> list[str]:
    """Commands of ``sql/<name>.sql`` in order (meta-commands and comments skipped)."""
    shape = []
    for line in (SQL_DIR / f"{name}.sql").read_text().splitlines():
        text = line.strip()
        if not text or text.startswith(("--", "\\")):
            continue
        word = _command(text)
        if word in _COMMANDS:
            shape.append(word)
    return shape


_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_LITERAL = re.compile(r"'[^']*'")
# Words pgbench needs to build the values the service passes as parameters.
_VALUE_WORDS = frozenset({"array", "lpad", "to_hex", "now", "null", "false", "true", "text",
                          "integer"})
_COMMENT = re.compile(r"--[^\n]*")


def _words(sql: str) -> set[str]:
    return set(_WORD.findall(_LITERAL.sub("", _COMMENT.sub("", sql)).lower()))


def script_statement(name: str) -> str:
    """The SQL of ``sql/<name>.sql`` without meta-commands, comments and ``:variables``."""
    lines = [line for line in (SQL_DIR / f"{name}.sql").read_text().splitlines()
             if line.strip() and not line.strip().startswith(("--", "\\"))]
    return re.sub(r"(?<!:):[a-z_]+", " ", " ".join(lines))


def word_difference(service_sql: str, script_sql: str) -> dict[str, list[str]]:
    """Words only the service's statement has, and only the script's (values aside)."""
    service, script = _words(service_sql), _words(script_sql)
    return {"service_only": sorted(service - script),
            "pgbench_only": sorted(script - service - _VALUE_WORDS)}


def _is_driver_introspection(sql: str) -> bool:
    # asyncpg looks up the types of a prepared statement's parameters (arrays, ...) the first
    # time a connection prepares it: once per connection, not per request.
    return "typeinfo_tree" in sql


def _served_by(log_text: str, marker: str) -> tuple[list[str], str]:
    """Commands of the backend whose statements mention ``marker``, in order, and that
    statement."""
    by_pid: dict[str, list[str]] = defaultdict(list)
    current: list[str] | None = None
    for line in log_text.splitlines():
        match = _STATEMENT.search(line)
        if match:
            current = by_pid[match.group(1)]
            current.append(match.group(2))
        elif line.startswith("\t") and current:
            current[-1] += "\n" + line.strip()  # a multi-line statement goes on
        else:
            current = None
    for pid, statements in by_pid.items():
        by_pid[pid] = [s for s in statements if not _is_driver_introspection(s)]
    for statements in by_pid.values():
        commands = [_command(s) for s in statements]
        hits = [i for i, s in enumerate(statements) if marker in s]
        if hits:
            return _request_of(commands, hits[0]), statements[hits[0]]
    return [], ""


def _request_of(commands: list[str], at: int) -> list[str]:
    """The commands of the request whose statement is ``commands[at]``: its transaction
    (BEGIN … COMMIT/ROLLBACK) if it ran in one, else that statement alone. A pooled
    connection also serves other work (background jobs, other requests) in the same window."""
    start = at
    for i in range(at - 1, -1, -1):
        if commands[i] in ("COMMIT", "ROLLBACK"):
            break
        if commands[i] == "BEGIN":
            start = i
            break
    end = at
    if start < at:
        for i in range(at + 1, len(commands)):
            if commands[i] in ("COMMIT", "ROLLBACK"):
                end = i
                break
    return [c for c in commands[start:end + 1] if c in _COMMANDS]


def check(stack: Stack, token: str) -> dict[str, Any]:
    """{"balance": {...}, "withdrawal": {...}}: the service's and pgbench's command sequences."""
    assert stack.pg is not None
    log_file: Path = stack.pg.log_file
    base = stack.loyalty_urls[0]
    headers = {"Authorization": f"Bearer {token}"}
    requests = {
        "balance": ("GET", f"{base}/loyalty/me", None, "FROM accounts WHERE user_id = ANY("),
        "withdrawal": ("POST", f"{base}/loyalty/me/withdrawals",
                       {"amount": 1, "comment": "sql shape check"}, "INSERT INTO ledger_entries"),
    }
    result: dict[str, Any] = {}
    stack.sql("postgres", "ALTER SYSTEM SET log_statement = 'all';\nSELECT pg_reload_conf();")
    try:
        time.sleep(0.5)
        with httpx.Client(timeout=10) as client:
            for name, (method, url, body, marker) in requests.items():
                offset = log_file.stat().st_size
                response = client.request(method, url, headers=headers, json=body)
                time.sleep(0.3)
                with log_file.open("rb") as fh:
                    fh.seek(offset)
                    text = fh.read().decode(errors="replace")
                app, statement = _served_by(text, marker)
                bench = script_shape(name)
                words = word_difference(statement, script_statement(name))
                result[name] = {"status": response.status_code, "service": app,
                                "pgbench": bench, "words": words,
                                "match": app == bench and not any(words.values())}
    finally:
        stack.sql("postgres", "ALTER SYSTEM RESET log_statement;\nSELECT pg_reload_conf();")
    return result
