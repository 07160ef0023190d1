"""`expe train`, `expe speed`: training runs and their step time."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from expe.cli.args import common, config, job_spec, positive_int, progress
from expe.errors import ConfigError


def _spec(args) -> dict:
    import json

    from expe import config as C
    from expe.io import read_json

    if args.spec_file:
        return read_json(args.spec_file)
    if args.spec:
        try:
            return json.loads(args.spec)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--spec: not valid JSON ({e})") from None
    if not (args.config and args.model):
        raise ConfigError("train: give --config FILE --model NAME, --spec-file FILE or --spec JSON")
    cfg = C.load(args.config)
    return C.model_spec(cfg, args.model, args.seed)


class _QuietOnFullDisk(logging.FileHandler):
    """A log line that cannot be written (full disk) is dropped without logging's traceback on stderr;
    the checkpoint or metrics write that follows reports the full disk in one line."""

    def handleError(self, record):
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)

    def close(self):
        try:
            super().close()  # closes the file even when its last flush fails
        except OSError:
            pass


def keep_log(ckpt: str) -> None:
    """Append this process's log to <checkpoints>/train.log as well. Snakemake deletes a failed job's
    `log:` file before it retries the job, so the log of a preempted or crashed attempt (SIGTERM,
    NaN, out of memory) would be lost; the checkpoint folder is outside its outputs and keeps every
    attempt's lines, one after the other. Only rank 0 of a DDP run writes it."""
    from expe.cli import LOG_FORMAT

    if os.environ.get("RANK", "0") != "0":
        return
    os.makedirs(ckpt, exist_ok=True)
    handler = _QuietOnFullDisk(Path(ckpt) / "train.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("expe")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:  # the step and checkpoint lines are INFO
        logger.setLevel(logging.INFO)


def cmd_train(args):
    from expe.training.launch import needs_relaunch, relaunch_under_torchrun
    from expe.training.loop import train

    if needs_relaunch(args.nproc):
        relaunch_under_torchrun(args.argv, args.nproc, args.threads)
    spec = _spec(args)
    ckpt = args.checkpoints or str(Path(args.out) / "checkpoints")
    keep_log(ckpt)
    track = {"dir": args.track_dir, "group": args.track_group} if args.track_dir or args.track_group else None
    r = train(spec, args.data, args.out, ckpt, threads=args.threads, device=args.device,
              stop_after=args.stop_after, progress=progress(args), track=track)
    if "rank" in r:  # a non-zero DDP rank: rank 0 reports
        return
    if "stopped_at" in r:
        print(f"stopped after step {r['stopped_at']} (checkpoint in {ckpt})")
    else:
        print(f"{spec['name']}: final train loss {r['final_train_loss']:.4f}, {r['train_seconds']:.1f} s, "
              f"{r['param_counts']['total']:,} parameters -> {args.out}")


def cmd_speed(args):
    from expe.io import write_json
    from expe.training.speed import measure_specs

    if args.spec_file:  # the workflow's: the speed settings and each model's spec (Plan.speed_settings)
        if args.config or args.models:
            raise ConfigError("speed: give --spec-file FILE or --config FILE --models A,B, not both")
        job = job_spec(args.spec_file)
        specs, sp = job["models"], job["settings"]
    elif args.config and args.models:
        from expe import config as C

        cfg = config(args)
        specs, sp = {m: C.model_spec(cfg, m) for m in args.models.split(",")}, cfg["speed"]
    else:
        raise ConfigError("speed: give --config FILE --models A,B (model entries) or --spec-file FILE")
    r = measure_specs(specs, sp, args.data, device=args.device, threads=sp["threads"],
                      log=lambda m: print(m, flush=True))
    write_json(args.out, r, what="speed measurement", kept="the models are kept; free space and rerun")
    for m, v in r["models"].items():
        print(f"{m}: median {v['median_ms']:.1f} ms/step (range {v['min_ms']:.1f}-{v['max_ms']:.1f}), "
              f"{v['tokens_per_s']:,.0f} tokens/s")


def add_commands(sub) -> None:
    h = "train one model entry (resumes from its latest checkpoint)"
    sp = sub.add_parser("train", help=h, description=h)
    sp.add_argument("--config", help="config YAML (with --model)")
    sp.add_argument("--model", help="model entry name in the config")
    sp.add_argument("--seed", type=int, help="training seed (with --config/--model; default: the entry's first)")
    sp.add_argument("--spec", help="resolved model spec as JSON")
    sp.add_argument("--spec-file", help="resolved model spec as a JSON file (what the workflow passes)")
    sp.add_argument("--data", help="shards folder (not needed for a synthetic recall task)")
    sp.add_argument("--out", required=True, help="folder for model.safetensors, config.json, metrics.jsonl")
    sp.add_argument("--checkpoints", help="checkpoint folder (default: <out>/checkpoints)")
    sp.add_argument("--stop-after", type=positive_int, help="stop (with a checkpoint) after this many steps")
    sp.add_argument("--nproc", type=positive_int, default=1,
                    help="processes (one GPU each; gloo on CPU): > 1 relaunches this command under torchrun (DDP)")
    sp.add_argument("--track-dir", help="folder of the live trackers (train.trackers; default <checkpoints>/tracking)")
    sp.add_argument("--track-group", help="experiment name the trackers group runs under (default: the model entry)")
    common(sp, device=True)
    sp.set_defaults(fn=cmd_train)

    h = "training step time of model entries, side by side in one process"
    sp = sub.add_parser("speed", help=h, description=h)
    sp.add_argument("--config", help="config YAML or the workflow's resolved config (with --models)")
    sp.add_argument("--models", help="comma-separated model entries of --config")
    sp.add_argument("--spec-file", help="the workflow's settings file: speed settings and model specs")
    sp.add_argument("--data", required=True, help="shards folder (batches from its train split)")
    sp.add_argument("--out", required=True)
    common(sp, threads=False, device=True)
    sp.set_defaults(fn=cmd_speed)
