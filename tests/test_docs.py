"""Every Markdown file a module or test cites is in the repository.

A docstring that points a reader at ``docs/protocols.md §1.4`` is only useful if the file is there; notes kept
outside the repository are not citable.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w.-]+\.md)\b")


def _cited(path: Path) -> set[str]:
    """Names read as citations: a path under ``docs/`` or a note-style upper-case name (``DESIGN.md``); lower-case
    bare names (``summary.md``, ``report.md``) are files irisbench writes, not citations."""
    names = set(CITED.findall(path.read_text(encoding="utf-8")))
    return {n for n in names if n.startswith("docs/") or (n[:-3].isupper() and n != "README.md")}


def test_every_cited_markdown_file_exists() -> None:
    sources = [*ROOT.glob("irisbench/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py"),
               *ROOT.glob("tools/*.py"), *ROOT.glob("docs/*.md")]
    sources = [s for s in sources if s.name != "test_docs.py"]
    missing = {}
    for src in sources:
        for name in _cited(src):
            # a path is read from the repository root, or (a bare name) from docs/ or the root
            if not any((ROOT / base / name).is_file() for base in ("", "docs")):
                missing.setdefault(str(src.relative_to(ROOT)), []).append(name)
    assert not missing, f"cited Markdown files that are not in the repository: {missing}"


def test_the_checker_sees_a_missing_file(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text('"""See PROTOCOLS.md §1 and docs/protocols.md §2."""\n')
    assert _cited(src) == {"PROTOCOLS.md", "docs/protocols.md"}
    assert not (ROOT / "PROTOCOLS.md").exists() and not (ROOT / "docs" / "PROTOCOLS.md").exists()
