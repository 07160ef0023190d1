"""Atomic writes and checksums: nothing half-written ever sits under its final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from expe.errors import DataError, ExpeError


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create a directory (and parents), failing with one line if it cannot be written."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExpeError(f"cannot create output folder {p}: {e.strerror}") from None
    if not os.access(p, os.W_OK):
        raise ExpeError(f"output folder {p} is not writable")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    final = Path(path)
    ensure_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; published files get the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not valid JSON ({e})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_checksum(path: str | os.PathLike) -> str:
    """Write `<path>.sha256` beside a finished file; returns the digest."""
    digest = sha256_file(path)
    write_text(f"{path}.sha256", f"{digest}  {Path(path).name}\n")
    return digest


def verify_checksum(path: str | os.PathLike, what: str = "file") -> None:
    """Raise a one-line error naming `path` if it is missing, truncated or altered."""
    p = Path(path)
    side = Path(f"{p}.sha256")
    if not p.exists():
        raise DataError(f"{what} {p} is missing")
    if not side.exists():
        raise DataError(f"{what} {p} has no checksum file {side.name}; it may be incomplete")
    expected = side.read_text().split()[0]
    if sha256_file(p) != expected:
        raise DataError(f"{what} {p} is corrupt or truncated (checksum mismatch)")
