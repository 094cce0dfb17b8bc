"""The repository explains itself: code, tests and docs cite the repository's own ``docs/``,
every document they cite exists, and none points to a design file kept elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    *sorted((ROOT / "asyncsync").rglob("*.py")),
    *sorted((ROOT / "tests").rglob("*.py")),
    *sorted((ROOT / "benchmarks").rglob("*.py")),
    *sorted((ROOT / "docs").rglob("*.md")),
    ROOT / "README.md",
]
OUTSIDE = "DESIGN" + ".md"  # spelled apart so that this file does not cite it either


def test_no_file_cites_a_design_document_outside_the_repository() -> None:
    citing = [str(p.relative_to(ROOT)) for p in SOURCES if OUTSIDE in p.read_text("utf-8")]
    assert citing == []


def test_every_cited_doc_exists() -> None:
    cited = {
        name
        for p in SOURCES
        for name in re.findall(r"docs/([\w-]+\.md)", p.read_text("utf-8", "replace"))
    }
    assert cited, "nothing cites docs/"
    assert sorted(n for n in cited if not (ROOT / "docs" / n).is_file()) == []
