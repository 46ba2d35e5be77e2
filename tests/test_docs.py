"""Every pointer resolves: ``videolens.x.y`` names in the library's docstrings and docs import, and
every ``docs/<page>.md#<section>`` pointer names a page and section that exist; the official files
the docstrings cite are the ones docs/methods.md describes."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for pkg in ("videolens", "weights_conversion", "tiny_lab") for p in (ROOT / pkg).rglob("*.py")]
TEXTS = SOURCES + [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

CODE_REF = re.compile(r"(?<![\w/.-])((?:videolens|weights_conversion)(?:\.[A-Za-z_]\w*)+)")
DOC_REF = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?")
OFFICIAL = re.compile(r"official (?:code[,:]? )?((?:analysis|tasks|models|scripts)/[\w/.*-]+\.(?:py|sh))")


def resolves(name: str) -> bool:
    """Whether a dotted name imports (a module, then attributes or dataclass fields)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if attr in getattr(obj, "__dataclass_fields__", {}):
                return True
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def anchors(page: Path) -> set:
    """GitHub's heading anchors of a markdown page."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def test_every_code_pointer_resolves():
    bad = sorted({(str(p.relative_to(ROOT)), m) for p in TEXTS for m in CODE_REF.findall(p.read_text())
                  if not m.endswith((".py", ".md", ".json", ".lock")) and not resolves(m)})
    assert bad == []
    assert not resolves("videolens.knockout.no_such_thing")  # the check can fail


def test_every_docs_pointer_names_a_page_and_section():
    bad = []
    for p in TEXTS:
        for page, anchor in DOC_REF.findall(p.read_text()):
            target = ROOT / "docs" / page
            if not target.is_file() or (anchor and anchor not in anchors(target)):
                bad.append((str(p.relative_to(ROOT)), page, anchor))
    assert bad == []
    assert "attention-knockout" in anchors(ROOT / "docs" / "methods.md")


def test_the_official_files_cited_are_described_in_docs_methods():
    described = set(re.findall(r"`((?:analysis|tasks|models|scripts)/[\w/.*-]+)`",
                               (ROOT / "docs" / "methods.md").read_text()))
    cited = {m for p in SOURCES for m in OFFICIAL.findall(p.read_text())}
    assert cited, "no docstring cites an official file"
    missing = {c for c in cited if c not in described and not any(
        d.endswith("*.sh") and c.startswith(d[:-4]) for d in described)}
    assert missing == set()
