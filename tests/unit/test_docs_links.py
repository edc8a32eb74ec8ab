"""Every relative link of the project's Markdown pages resolves to a file inside the repository.

A clone holds nothing but the repository: a link to a file outside it, or to one that was moved
or deleted, is a dead end for the reader. Anchors (``page.md#section``) must name a heading of
the target page, spelled as GitHub derives heading anchors.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted({ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / "bench" / "README.md",
                *(ROOT / "docs").glob("*.md")})

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target "title") and ![alt](target); text may hold one level of brackets.
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _prose(markdown: str) -> str:
    """``markdown`` without fenced code blocks and code spans (their brackets are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", markdown))


def links(markdown: str) -> list[str]:
    """The link targets of ``markdown``, in order."""
    prose = _prose(markdown)
    return [m.group(1) for m in _INLINE.finditer(prose)] + [
        m.group(1) for m in _REFERENCE.finditer(prose)]


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of ``markdown`` (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(_FENCE.sub("", markdown)):
        base = anchor_of(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Why each relative link of ``page`` does not resolve inside ``root``; [] when all do."""
    problems = []
    root = root.resolve()
    for target in links(page.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        if path_part.startswith("/"):
            resolved = (root / path_part.lstrip("/")).resolve()
        elif path_part:
            resolved = (page.parent / path_part).resolve()
        else:
            resolved = page.resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: {resolved.relative_to(root)} does not exist")
            continue
        if (fragment and resolved.suffix == ".md" and resolved.is_file()
                and fragment not in anchors(resolved.read_text(encoding="utf-8"))):
            problems.append(f"{target}: no heading #{fragment} in "
                            f"{resolved.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    assert page.is_file(), page
    assert broken_links(page) == []


def test_the_docs_pages_exist() -> None:
    names = {p.name for p in PAGES if p.parent.name == "docs"}
    assert {"contract.md", "architecture.md", "operations.md"} <= names


def test_a_broken_link_an_outside_link_and_a_missing_anchor_are_reported(
        tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## Keys and `rotation`\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n"
        "[fine](other.md) [fine too](other.md#keys-and-rotation) [here](#page)\n"
        "[web](https://example.com) `[not a link](nowhere.md)`\n"
        "```\n[also not a link](nowhere.md)\n```\n"
        "[gone](missing.md) [outside](../../elsewhere/SPEC.md) [bad anchor](other.md#nope)\n"
        "[ref]: ../missing-too.md\n")
    assert broken_links(page, tmp_path) == [
        "missing.md: docs/missing.md does not exist",
        "../../elsewhere/SPEC.md: points outside the repository",
        "other.md#nope: no heading #nope in docs/other.md",
        "../missing-too.md: missing-too.md does not exist",
    ]
