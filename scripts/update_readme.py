"""Maintainer script: write the committed tables' generated summaries and the claims into README.md's
marked sections (<!-- name:begin --> ... <!-- name:end -->). Run after regenerating paper_tables/:

    python scripts/update_readme.py [README.md]

Summaries (`SECTIONS`) are copied from the tables folders. Claims (`CLAIMS`) are prose written by people
in docs/claims/*.md, whose every number is a placeholder naming the table cell it comes from:

    {{primary|ExPE − RoPE|4|A − B}}          the cell of column "A − B" in the row whose first columns
                                             are "ExPE − RoPE" and "4" of paper_tables/primary.md
    {{section41|ExPE|Loss ev=4|first}}       only the first number of that cell
    {{beyond/passkey|ExPE|rank 1 of candidates|ev=4}}

A placeholder that names no cell stops the script; tests/test_docs.py checks that the README's claims
are the rendered templates and that no template writes a number outside a placeholder.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECTIONS = {"results": "paper_tables/summary.md", "beyond": "paper_tables/beyond/summary.md",
            "recall": "paper_tables/recall/summary.md"}
CLAIMS = {"claims": ("docs/claims/default.md", "paper_tables"),
          "recall_claims": ("docs/claims/recall.md", "paper_tables")}
PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")
NUMBER = re.compile(r"[-+−]?\d+\.\d+")  # a number of a cell
RESULT = re.compile(r"[-+−]?\d+\.\d{2,}")  # a number with 2+ decimals: a result, never "Section 4.1"


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first Markdown table of a file."""
    rows = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    if len(rows) < 2:
        raise ValueError(f"{path}: no Markdown table")
    split = lambda ln: [c.strip() for c in ln.strip().strip("|").split("|")]
    return split(rows[0]), [split(r) for r in rows[2:]]


def cell(tables: Path, ref: str) -> str:
    """The text of the cell a placeholder names (see the module docstring)."""
    parts = [p.strip() for p in ref.split("|")]
    first = parts[-1] == "first"
    if first:
        parts = parts[:-1]
    name, *keys, column = parts
    header, rows = read_table(tables / f"{name}.md")
    if column not in header:
        raise KeyError(f"{{{{{ref}}}}}: {name}.md has no column {column!r} (columns: {', '.join(header)})")
    hits = [r for r in rows if r[: len(keys)] == keys]
    if len(hits) != 1:
        raise KeyError(f"{{{{{ref}}}}}: {len(hits)} rows of {name}.md start with {keys}")
    text = hits[0][header.index(column)]
    if first:
        m = NUMBER.search(text)
        if not m:
            raise KeyError(f"{{{{{ref}}}}}: no number in the cell {text!r}")
        return m.group(0)
    return text


def render(template: Path, tables: Path) -> str:
    return PLACEHOLDER.sub(lambda m: cell(tables, m.group(1)), template.read_text())


def update(readme: Path) -> list[str]:
    root = readme.parent
    text = readme.read_text()
    done = []
    bodies = {name: (root / src).read_text() for name, src in SECTIONS.items() if (root / src).exists()}
    bodies.update({name: render(root / tpl, root / tables) for name, (tpl, tables) in CLAIMS.items()
                   if (root / tpl).exists() and (root / tables).exists()})
    for name, body in bodies.items():
        text, n = re.subn(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)",
                          lambda m: m.group(1) + body + m.group(2), text, flags=re.S)
        if not n:
            sys.exit(f"{readme}: no <!-- {name}:begin --> ... <!-- {name}:end --> section")
        done.append(name)
        print(f"{name}: written")
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(readme)
    return done


if __name__ == "__main__":
    update(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
