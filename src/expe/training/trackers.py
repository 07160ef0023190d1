"""Live experiment tracking: TensorBoard and Weights & Biases (as nanoGPT and torchtitan do).

    with open_trackers(["tensorboard", "wandb"], log_dir, run="expe_s/seed3", group="paper/expe_s",
                       config=spec, enabled=dist.is_main) as trackers:
        trackers.log(step, {"loss": 2.31, "lr": 3e-4, "grad_norm": 0.8, "tokens_per_s": 1.2e5})
        trackers.summary({"eval/loss_ev4": 2.25})

* TensorBoard writes `<log_dir>/<run>/events.out.tfevents.*` (view: `tensorboard --logdir <log_dir>`).
* W&B: project `expe` (or $WANDB_PROJECT), group = the experiment, name = the run, files under
  `<log_dir>/wandb/`. The mode is $WANDB_MODE when set; otherwise one short TCP connect to the W&B
  server decides between "online" and "offline" (no network: an offline run, uploaded later with
  `wandb sync <dir>`, which is logged).

Only the main process logs (`enabled=False` elsewhere), but every rank validates the names and the
imports, so a configuration error stops all ranks alike. `.log` is meant to be called at the
trainer's existing host-sync points (the log step): it converts values with `float()` and hands them
to TensorBoard's background writer / the W&B service process, never waiting on the disk or network.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from expe.errors import ConfigError

log = logging.getLogger("expe.trackers")

KEY = "train.trackers"
ALLOWED = ("tensorboard", "wandb")
EXTRA = "pip install 'expe-repro[trackers]'"
DEFAULT_PROJECT = "expe"
WANDB_HOST = "api.wandb.ai"


def _require(package: str, tracker: str) -> Any:
    """Import an optional package, or stop with one line naming the key, package and extra."""
    try:
        if package == "tensorboard":
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it; import it first so a
            from torch.utils.tensorboard import SummaryWriter  # cached torch module cannot hide its absence)
            return SummaryWriter
        import wandb
        return wandb
    except ImportError as e:
        missing = e.name in (None, package) or package in str(e)
        why = "" if missing else f" (importing it failed: {str(e).splitlines()[0] if str(e) else type(e).__name__})"
        raise ConfigError(f"{KEY}: {tracker!r} needs the {package} package{why} ({EXTRA})") from None


def check_names(names: Iterable[str] | str | None) -> list[str]:
    """The tracker names, validated and de-duplicated (order kept)."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for n in names:
        if n not in ALLOWED:
            raise ConfigError(f"{KEY}: unknown tracker {n!r}; allowed: {', '.join(ALLOWED)} (or an empty list)")
        if n not in out:
            out.append(n)
    return out


def wandb_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the W&B server ($WANDB_BASE_URL or api.wandb.ai:443); no retry loop."""
    base = os.environ.get("WANDB_BASE_URL")
    host, port = WANDB_HOST, 443
    if base:
        u = urlparse(base if "//" in base else f"https://{base}")
        host = u.hostname or WANDB_HOST
        port = u.port or (80 if u.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def wandb_mode() -> tuple[str, bool]:
    """(mode, chosen_by_user): $WANDB_MODE if set ($WANDB_DISABLED=true: "disabled"), else a probe."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        return mode, True
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled", True
    return ("online" if wandb_reachable() else "offline"), False


def _plain(x: Any) -> Any:
    """A JSON-friendly copy of a config (Paths, tuples, dataclass-ish objects -> str/list)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def _flatten(d: Mapping, sep: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, sep, key))
        else:
            out[key] = v
    return out


def _scalar(v: Any) -> float | None:
    """float(v) for numbers (and 0-d tensors/arrays); None for anything else."""
    if v is None or isinstance(v, (str, bytes)):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Trackers:
    """A set of open trackers; with none (or `enabled=False`) every method is a no-op."""

    def __init__(self, names: list[str], log_dir: Path, run: str, group: str, config: dict, *,
                 enabled: bool = True, project: str | None = None, run_id: str | None = None,
                 start_step: int = 0):
        self.names = names if enabled else []
        self.log_dir, self.run, self.group = Path(log_dir), run, group
        self.config = _plain(config or {})
        self.tb = None        # torch.utils.tensorboard.SummaryWriter
        self.wandb_run = None  # wandb.Run
        self.wandb_offline_dir: Path | None = None
        self.last_step = start_step
        self._summary: dict[str, float] = {}
        self._closed = False
        try:
            if "tensorboard" in self.names:
                self._open_tensorboard(start_step)
            if "wandb" in self.names:
                self._open_wandb(project, run_id)
        except BaseException:
            self.close()
            raise

    @property
    def active(self) -> bool:
        return bool(self.names) and not self._closed

    # ---------------------------------------------------------------- opening
    def _open_tensorboard(self, start_step: int) -> None:
        SummaryWriter = _require("tensorboard", "tensorboard")
        path = self.log_dir / self.run
        path.mkdir(parents=True, exist_ok=True)
        # purge_step: after a resume, TensorBoard hides what an interrupted attempt wrote past it
        self.tb = SummaryWriter(log_dir=str(path), flush_secs=30, purge_step=start_step or None)
        log.info("TensorBoard: %s (view: tensorboard --logdir %s)", path, self.log_dir)

    def _open_wandb(self, project: str | None, run_id: str | None) -> None:
        wandb = _require("wandb", "wandb")
        mode, by_user = wandb_mode()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        kw = dict(project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, group=self.group,
                  name=self.run, dir=str(self.log_dir), config=self.config, job_type="train")
        if run_id:
            kw.update(id=run_id, resume="allow")
        try:
            self.wandb_run = wandb.init(mode=mode, **kw)
        except (wandb.errors.AuthenticationError, wandb.errors.UsageError, wandb.errors.CommError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if mode != "online" or by_user:
                raise ConfigError(f"{KEY}: wandb ({mode}) could not start: {msg} "
                                  "(run `wandb login`, or set WANDB_MODE=offline)") from None
            log.warning("W&B online could not start (%s); logging offline instead", msg)
            mode = "offline"
            self.wandb_run = wandb.init(mode=mode, **kw)
        if mode in ("offline", "dryrun") and self.wandb_run is not None:
            self.wandb_offline_dir = Path(self.wandb_run.dir).parent  # <log_dir>/wandb/offline-run-*/
            log.info("W&B offline run in %s (no network); upload it later with: wandb sync %s",
                     self.wandb_offline_dir, self.wandb_offline_dir)
        elif self.wandb_run is not None and mode == "online":
            log.info("W&B run: %s", getattr(self.wandb_run, "url", None) or self.wandb_run.id)

    # ---------------------------------------------------------------- logging
    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Scalars at `step` (None values skipped; call only where the trainer already syncs)."""
        if not self.active:
            return
        values = {k: f for k, v in metrics.items() if (f := _scalar(v)) is not None}
        if not values:
            return
        step = int(step)
        self.last_step = max(self.last_step, step)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, global_step=step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def summary(self, metrics: Mapping[str, Any]) -> None:
        """Final / evaluation results: the W&B run summary; in TensorBoard `summary/<key>` scalars at
        the last logged step (nested dicts flattened with "/") and, at close, an hparams entry
        (the flattened config against those metrics)."""
        if not self.active:
            return
        if self.wandb_run is not None:
            self.wandb_run.summary.update(_plain(dict(metrics)))
        if self.tb is not None:
            for k, v in _flatten(metrics, "/").items():
                f = _scalar(v)
                if f is None:
                    continue
                tag = f"summary/{k}"
                self._summary[tag] = f
                self.tb.add_scalar(tag, f, global_step=self.last_step)

    def _write_hparams(self) -> None:
        from torch.utils.tensorboard.summary import hparams
        hp = {}
        for k, v in _flatten(self.config, ".").items():
            hp[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
        metrics = {k: v for k, v in self._summary.items() if math.isfinite(v)}
        if not hp or not metrics:
            return
        writer = self.tb._get_file_writer()
        for s in hparams(hp, metrics):  # experiment, session start, session end (no sub-folder)
            writer.add_summary(s)

    # ---------------------------------------------------------------- closing
    def close(self, exit_code: int = 0) -> None:
        if self._closed:
            return
        self._closed = True
        if self.tb is not None:
            try:
                self._write_hparams()
            except Exception as e:  # noqa: BLE001  (hparams are a convenience; never fail a finished run)
                log.warning("TensorBoard hparams not written: %s", e)
            self.tb.close()
            self.tb = None
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
            self.wandb_run = None
            if self.wandb_offline_dir is not None:
                log.info("W&B offline run saved in %s; upload with: wandb sync %s",
                         self.wandb_offline_dir, self.wandb_offline_dir)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exit_code=0 if exc_type is None else 1)

    def __del__(self) -> None:  # pragma: no cover  (a forgotten close still flushes TensorBoard)
        try:
            if self.tb is not None:
                self.tb.close()
        except Exception:  # noqa: BLE001
            pass


def open_trackers(names: Iterable[str] | str | None, log_dir: str | Path, run: str, group: str, config: dict,
                  *, enabled: bool = True, project: str | None = None, run_id: str | None = None,
                  start_step: int = 0) -> Trackers:
    """Open the trackers named in `train.trackers` ("tensorboard", "wandb"; [] = none).

    run: the run name ("expe_s/seed3"): W&B's `name`, TensorBoard's sub-folder `<log_dir>/<run>`.
    group: the experiment (workflow run_name and model entry): W&B's `group`.
    enabled: False on every rank but the main one (nothing is opened or written there, but the
        names and imports are still checked so that all ranks fail alike).
    project: the W&B project (default $WANDB_PROJECT, else "expe").
    run_id: a stable W&B run id (e.g. kept in the checkpoint) to continue the same run on resume.
    start_step: the step a resumed run starts from (TensorBoard drops later events of the lost attempt).
    """
    names = check_names(names)
    for n in names:
        _require(n, n)
    return Trackers(names, Path(log_dir), run, group, config, enabled=enabled, project=project,
                    run_id=run_id, start_step=start_step)
