"""Maintainer script: write the committed tables' generated summaries into README.md's marked sections
(<!-- name:begin --> ... <!-- name:end -->). Run after regenerating paper_tables/:

    python scripts/update_readme.py [README.md]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECTIONS = {"results": "paper_tables/summary.md", "beyond": "paper_tables/beyond/summary.md",
            "cpu_study": "paper_tables/cpu_study/summary.md"}


def update(readme: Path) -> list[str]:
    text = readme.read_text()
    done = []
    for name, summary in SECTIONS.items():
        src = readme.parent / summary
        if not src.exists():
            print(f"{name}: {src} not found, section left as it is")
            continue
        body = src.read_text()
        text, n = re.subn(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)",
                          lambda m: m.group(1) + body + m.group(2), text, flags=re.S)
        if not n:
            sys.exit(f"{readme}: no <!-- {name}:begin --> ... <!-- {name}:end --> section")
        done.append(name)
        print(f"{name}: {src}")
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(readme)
    return done


if __name__ == "__main__":
    update(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
