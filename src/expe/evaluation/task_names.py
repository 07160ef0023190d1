"""The lm-evaluation-harness task names a config may use, read from lm-eval's task YAML files (and a
local include_path) without importing lm-eval: validating a config stays fast and torch-free."""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

OURS = ("heldout_continuation",)  # built by the workflow from the held-out documents (expe.evaluation.continuation_task)
_NAME = re.compile(r"^['\"]?(?:task|group|tag)['\"]?:\s*['\"]?([A-Za-z0-9_.\-]+)['\"]?\s*$")
_ITEM = re.compile(r"^\s*-\s*['\"]?([A-Za-z0-9_.\-]+)['\"]?\s*$")


def _names(folder: Path) -> set[str]:
    out: set[str] = set()
    for path in folder.rglob("*.yaml"):
        listing = False
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            m = _NAME.match(line)
            if m:
                out.add(m.group(1))
                listing = False
            elif re.match(r"^['\"]?tag['\"]?:\s*$", line):
                listing = True  # a list of tags follows
            elif listing:
                item = _ITEM.match(line)
                if item:
                    out.add(item.group(1))
                else:
                    listing = False
    return out


@lru_cache(maxsize=8)
def known_tasks(include_path: str | None = None) -> frozenset[str] | None:
    """Task, group and tag names lm-eval knows (None when lm-eval is not installed)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    names = _names(Path(list(spec.submodule_search_locations)[0]) / "tasks") | set(OURS)
    if include_path and Path(include_path).is_dir():
        names |= _names(Path(include_path))
    return frozenset(names)
