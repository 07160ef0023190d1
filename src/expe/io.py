"""Atomic writes and checksums: nothing half-written ever sits under its final name, and a write that
fails for lack of space or permission ends in one line naming the path, the free space and what was
kept (`WriteError`), never a traceback."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from expe.errors import DataError, ExpeError

_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}
_ACCESS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system"}


class WriteError(ExpeError):
    """A file could not be written (disk full, no permission); the message says what was kept."""


def free_space(path: str | os.PathLike) -> int | None:
    """Bytes free on the filesystem holding `path` (its nearest existing parent), or None."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _mb(n: int | None) -> str:
    return "free space unknown" if n is None else f"{n / 2**20:.0f} MB free" if n >= 2**20 else f"{n / 1024:.0f} kB free"


def write_failure(path: str | os.PathLike, exc: BaseException, what: str = "", kept: str = "",
                  needed: int | None = None) -> WriteError | None:
    """The one-line error for a write that failed for lack of space or permission, or None for other
    failures. torch's own writer reports a full disk as RuntimeError('... unexpected pos ...'): then
    the free space (the partial file already removed) is compared with the bytes the write needed."""
    code = getattr(exc, "errno", None)
    free = free_space(path)
    need = f", {needed / 2**20:.1f} MB needed" if needed else ""
    if code in _SPACE:
        reason = f"{_SPACE[code]} ({_mb(free)}{need})"
    elif code in _ACCESS:
        reason = _ACCESS[code]
        kept = kept.replace("free space and ", "make it writable and ")
    elif isinstance(exc, RuntimeError) and ("unexpected pos" in str(exc) or "file write failed" in str(exc)) \
            and free is not None and (needed is None or free < needed + (1 << 20)):
        reason = f"no space left on device ({_mb(free)}{need})"
    else:
        return None
    return WriteError(f"{what or 'file'} not written: {reason} at {path}" + (f"; {kept}" if kept else ""))


@contextlib.contextmanager
def guard_write(path: str | os.PathLike, what: str = "", kept: str = "", needed: int | None = None) -> Iterator[None]:
    """Turn a failed write inside the block into a one-line WriteError (space, permission)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        err = write_failure(path, e, what, kept, needed)
        if err is None:
            raise
        raise err from None


def ensure_dir(path: str | os.PathLike, what: str = "folder", kept: str = "") -> Path:
    """Create a directory (and parents), failing with one line if it cannot be written (`what`: the
    file that was to be written in it)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err = write_failure(p, e, what, kept)
        raise (err or ExpeError(f"cannot create output folder {p}: {e.strerror}")) from None
    if not os.access(p, os.W_OK):
        reason = _ACCESS[errno.EROFS] if os.statvfs(p).f_flag & os.ST_RDONLY else _ACCESS[errno.EACCES]
        kept = kept.replace("free space and ", "make it writable and ")
        raise WriteError(f"{what} not written: {reason} at {p}" + (f"; {kept}" if kept else ""))
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "", kept: str = "", needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. A failure
    for lack of space or permission (in the block, the flush or the rename) is a WriteError naming
    `what` and what was `kept`; the temporary file is always removed."""
    final = Path(path)
    ensure_dir(final.parent, what or "file", kept)
    with guard_write(final, what, kept, needed):
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
    except (OSError, RuntimeError) as e:
        tmp_path.unlink(missing_ok=True)  # first, so the free space reported is what the disk really has
        err = write_failure(final, e, what, kept, needed)
        if err is None:
            raise
        raise err from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold `<folder>/.lock` for the block: a second process on the same folder (two runs of one
    training, with Snakemake's own lock bypassed or from two working folders) ends in one line instead
    of appending to the same files. The kernel drops the lock with its process, even on SIGKILL, so no
    stale lock is ever left; a filesystem without locks (some network mounts) runs unguarded."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    path = ensure_dir(folder, "lock file") / ".lock"
    with guard_write(path, "lock file"):
        f = open(path, "a+b", buffering=0)  # unbuffered: nothing left to flush at close
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().decode("utf-8", "replace").strip() or "another process"
            raise ExpeError(f"{what} {folder} is in use by {holder}; wait for it to end, or stop it") from None
        except OSError:
            pass
        else:
            with contextlib.suppress(OSError):  # who holds it, for the second process's message; a full disk may refuse
                f.seek(0)
                f.truncate()
                f.write(f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        f.close()


def write_text(path: str | os.PathLike, text: str, what: str = "", kept: str = "") -> None:
    with atomic_path(path, what, kept) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, what: str = "", kept: str = "") -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", what, kept)


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


def write_checksum(path: str | os.PathLike, what: str = "", kept: str = "") -> str:
    """Write `<path>.sha256` beside a finished file; returns the digest."""
    digest = sha256_file(path)
    write_text(f"{path}.sha256", f"{digest}  {Path(path).name}\n", f"checksum of {what or Path(path).name}", kept)
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
