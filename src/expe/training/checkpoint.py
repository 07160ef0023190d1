"""Checkpoints that survive a kill at any instant, and the identity of a training run.

`step-XXXXXXXX.pt`, each with a `.sha256` written after it is complete; the newest that verifies is
the one resumed from, and the previous one is deleted only after a newer one is complete: a kill
during a write leaves either the new checkpoint (complete with its checksum) or the previous one. A
disk that fills up during a write ends in one line naming the path, the free space and the step kept.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from expe.config.resolve import spec_identity
from expe.errors import CheckpointError, DataError
from expe.io import atomic_path, ensure_dir, sha256_file, write_checksum

log = logging.getLogger("expe.train")


def identity_text(spec: dict[str, Any]) -> str:
    """What a checkpoint must match to be resumed: the spec's seed, model and training settings (not
    the settings that never change the weights: logging, checkpoint interval, trackers)."""
    return json.dumps(spec_identity(spec), sort_keys=True)


class Checkpointer:
    def __init__(self, directory: str | Path, spec: dict[str, Any]):
        self.dir = ensure_dir(directory)
        self.spec = spec

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("step-*.pt"), reverse=True)  # newest first (zero-padded step)

    @property
    def path(self) -> Path | None:
        f = self.files()
        return f[0] if f else None

    def save(self, model, optimizer, scaler, step: int, train_seconds: float, kept_step: int = 0) -> Path:
        state = {
            "spec_hash": identity_text(self.spec),
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "train_seconds": train_seconds,
        }
        path = self.dir / f"step-{step:08d}.pt"
        kept = f"step {kept_step} is kept" if kept_step else "no earlier checkpoint exists"
        needed = sum(t.numel() * t.element_size() for t in _tensors(state))
        with atomic_path(path, what=f"checkpoint step {step}", kept=kept, needed=needed) as tmp:
            with open(tmp, "wb") as f:  # our file: closed before the free space is read, if the disk is full
                torch.save(state, f)
        try:
            write_checksum(path, what=f"checkpoint step {step}", kept=kept)  # a checkpoint counts only once this exists
        except BaseException:
            path.unlink(missing_ok=True)  # a checkpoint without its checksum never counts: give its space back
            raise
        for old in self.files():
            if old != path:
                Path(f"{old}.sha256").unlink(missing_ok=True)  # checksum first: never a checksum without its file
                old.unlink(missing_ok=True)
        return path

    def _verified(self, path: Path) -> bool | None:
        """True: intact; False: checksum mismatch (corrupt); None: no checksum (its write never finished)."""
        side = Path(f"{path}.sha256")
        if not side.exists():
            return None
        try:
            expected = side.read_text().split()[0]
        except (IndexError, OSError, UnicodeDecodeError):
            return None  # the checksum file itself was being written
        return sha256_file(path) == expected

    def load(self, model, optimizer, scaler) -> tuple[int, float]:
        """Restore the newest intact checkpoint; returns (next step, training seconds so far); (0, 0) if none."""
        corrupt = []
        for path in self.files():
            ok = self._verified(path)
            if ok is None:
                log.warning("%s: ignoring %s (its write did not finish)", self.spec["name"], path.name)
                continue
            if ok is False:
                corrupt.append(path)
                log.warning("%s: %s is corrupt (checksum mismatch); trying an older checkpoint", self.spec["name"], path)
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e:
                raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
            if state["spec_hash"] != identity_text(self.spec):
                raise CheckpointError(f"checkpoint {path} was written for a different config of model "
                                      f"{self.spec['name']!r}; delete {self.dir} to start over")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            return state["step"], state["train_seconds"]
        if corrupt:
            raise DataError(f"checkpoint {corrupt[0]} is corrupt or truncated (checksum mismatch) and no older "
                            f"intact checkpoint exists; delete {self.dir} to start over")
        return 0, 0.0


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
