"""Argument types and the parser class of the `expe` command line: a bad argument is one line
(`expe: error: ...`) and exit status 2; defaults come from the config schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from expe.errors import ConfigError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        sub = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        print(f"expe: error: {sub}{message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def nonnegative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {v}")
    return v


def int_list(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; every item a positive integer."""
    out = []
    for item in text.split(","):
        try:
            v = int(item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {item.strip()!r} in {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {v} in {text!r}")
        out.append(v)
    return out


def float_list(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive numbers, got {text!r}") from None
    if any(not x > 0 for x in out):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive numbers, got {text!r}")
    return out


def choices(dotted: str) -> list[str]:
    """The allowed values of a config key (argparse `choices` from the schema's enum)."""
    from expe.config.schema import node

    return list(node(dotted)["enum"])


def default(dotted: str) -> Any:
    from expe.config.schema import default as schema_default

    return schema_default(dotted)


def common(sp: argparse.ArgumentParser, threads: bool = True, device: bool = False) -> None:
    if threads:
        sp.add_argument("--threads", type=positive_int, default=1, help="CPU threads")
    if device:
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    sp.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")


def progress(args) -> bool:
    return not getattr(args, "no_progress", False)


def config(args) -> dict:
    """--config: a user's YAML (validated) or the resolved config a workflow job gets (read as it is)."""
    from expe import config as C

    if not getattr(args, "config", None):
        raise ConfigError("give --config FILE")
    return C.load(args.config)


def job_spec(path: str | Path) -> dict:
    """A job's settings file, written by the workflow from the validated config (never re-checked)."""
    from expe.io import read_json

    return read_json(path)
