"""Provenance of a regenerated report: the config hash, the git commit of the code that made it,
package versions, hardware and date."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from expe.config import dumps


def config_hash(config: dict) -> str:
    """The one config hash: sha256 of the resolved config (the workflow names its file by the first 12)."""
    return hashlib.sha256(dumps(config).encode()).hexdigest()


def provenance(config: dict, config_path: str) -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        src = Path(__file__).resolve().parent  # the commit of the code that made the tables
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=src)
        commit = git.stdout.strip() if git.returncode == 0 else ""
        # the regenerated tables themselves are tracked files: they do not make the code dirty
        dirty = None if not commit else bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)paper_tables"],
            capture_output=True, text=True, timeout=10, cwd=src).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", None
    import torch

    return {
        "config_file": str(config_path),
        "config_sha256": config_hash(config),
        "run_name": config["run_name"],
        "git_commit": commit or "unknown (not a git checkout)",
        "git_dirty": dirty,
        "packages": {p: version(p) for p in ("expe-repro", "torch", "numpy", "sentencepiece", "lm_eval", "snakemake",
                                              "pandas", "seaborn", "datasets")},
        "python": platform.python_version(),
        "hardware": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "device_config": config["device"],
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
