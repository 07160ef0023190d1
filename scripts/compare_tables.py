"""Maintainer script: do two regenerated table folders hold the same tables? Every .md/.tex/.csv file is
compared line by line, except the provenance lines that name the date, the git commit and the config
hash (and provenance.json, and an index page's provenance block); plots are not compared. Prints the differing files and exits 1 if any.

    python scripts/compare_tables.py paper_tables /tmp/regenerated
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROVENANCE = re.compile(r"^(- |% )?(Generated \d{4}-|Config sha256 )")


def lines(path: Path) -> list[str]:
    text = path.read_text().split("\n## Provenance\n")[0]  # an index page's provenance block
    return [ln for ln in text.splitlines() if not PROVENANCE.match(ln)]


def compare(a: Path, b: Path) -> list[str]:
    diff = []
    names = {p.relative_to(a) for p in a.rglob("*") if p.suffix in (".md", ".tex", ".csv")}
    names |= {p.relative_to(b) for p in b.rglob("*") if p.suffix in (".md", ".tex", ".csv")}
    for rel in sorted(names):
        if "plots" in rel.parts:
            continue
        pa, pb = a / rel, b / rel
        if not pa.exists() or not pb.exists():
            diff.append(f"{rel}: only in {a if pa.exists() else b}")
        elif lines(pa) != lines(pb):
            diff.append(f"{rel}: differs")
    return diff


if __name__ == "__main__":
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    found = compare(a, b)
    print("\n".join(found) if found else f"identical: {a} and {b} (provenance lines aside)")
    sys.exit(1 if found else 0)
