"""The generated reference pages in docs/ must match the code they are generated from."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"configuration.md": [], "cli.md": ["cli"]}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_generated_reference_is_in_sync(page: str):
    args = PAGES[page]
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_reference.py"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    command = " ".join([".venv/bin/python docs/gen_reference.py", *args, f"> docs/{page}"])
    path = ROOT / "docs" / page
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    assert current == done.stdout, (
        f"docs/{page} is out of date with the code; regenerate it with:\n    {command}"
    )


def test_relative_links_in_docs_point_at_existing_files():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_files_quoted_in_docs_match_the_files():
    """A block after ``<!-- file: PATH -->`` must be PATH's content (the plugin example stays runnable)."""
    pattern = re.compile(r"<!-- file: (\S+) -->\n.*?```[a-z]*\n(.*?)```\n", re.S)
    stale = []
    quoted = 0
    for page in sorted((ROOT / "docs").glob("*.md")):
        for path, block in pattern.findall(page.read_text(encoding="utf-8")):
            quoted += 1
            if (ROOT / path).read_text(encoding="utf-8") != block:
                stale.append(f"{page.name}: the copy of {path} differs from the file")
    assert quoted, "no quoted files found"
    assert not stale, stale
