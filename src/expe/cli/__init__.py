"""`expe` command line: one subcommand per workflow step, each with --help.

Every user-caused failure (ExpeError) prints one line `expe: error: ...` and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from expe.errors import ConfigError, ExpeError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (`expe: error: ...`) and exit status 2."""

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


def _json_arg(text: str, flag: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag}: not valid JSON ({e})") from None


def _config(args) -> dict:
    from expe import config as C

    if getattr(args, "config_json", None):  # the workflow passes the data steps only their keys
        return C.validate(_json_arg(args.config_json, "--config-json"), data_only=True)
    if not args.config:
        raise ConfigError("give --config FILE (or --config-json)")
    return C.load(args.config)


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False)


def cmd_validate(args):
    from expe import config as C

    cfg = C.load(args.config)
    runs = sum(len(C.seeds(cfg, m)) for m in cfg["models"])
    print(f"{args.config}: valid ({len(cfg['models'])} models, {runs} training runs over their seeds: "
          f"{', '.join(cfg['models'])})")


def cmd_dump_config(args):
    from expe import config as C
    from expe.io import write_json

    write_json(args.out, C.validate(_json_arg(args.json, "--json")))


def cmd_dump_spec(args):
    from expe.io import write_json

    write_json(args.out, _json_arg(args.json, "--json"))


def cmd_tokenizer(args):
    from expe.data.prepare import build_tokenizer

    info = build_tokenizer(_config(args), args.out, threads=args.threads)
    print(f"tokenizer: {info['path']} ({info['type']}, vocab {info['vocab_size']})")


def cmd_prepare(args):
    from expe.data.prepare import prepare

    s = prepare(_config(args), args.tokenizer, args.out, work_dir=args.work, progress=_progress(args))
    c = s["corpus"]
    print(f"data: {c['documents_kept']} of {c['documents_seen']} documents kept, {c['tokens_kept']:,} tokens "
          f"({c['documents_too_short']} shorter than data.min_tokens)")
    for split, v in s["splits"].items():
        print(f"{split}: {v['n_docs']} docs, {v['n_tokens']:,} tokens")


def _spec(args) -> dict:
    from expe import config as C
    from expe.io import read_json

    if args.spec_file:
        return read_json(args.spec_file)
    if args.spec:
        return _json_arg(args.spec, "--spec")
    if not (args.config and args.model):
        raise ConfigError("train: give --config FILE --model NAME, --spec-file FILE or --spec JSON")
    return C.model_spec(C.load(args.config), args.model)


def launch_command(argv: list[str], nproc: int, env: dict) -> list[str]:
    """The command that runs `expe <argv>` as a DDP job: torchrun (through expe.launch) with `nproc`
    processes on this node; inside a Slurm allocation of several nodes, one torchrun per node
    through srun, meeting by c10d rendezvous on the first node (the multi-node recipe of dist.py)."""
    import sys as _sys

    rest = _strip_nproc(argv)
    nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    tail = ["-m", "expe.cli"] + rest
    if nodes > 1:
        head = env.get("EXPE_RDZV_HOST") or _first_host(env["SLURM_JOB_NODELIST"])
        return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", _sys.executable, "-m",
                "expe.training.launch", f"--nnodes={nodes}", f"--nproc_per_node={nproc}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={head}:{env.get('EXPE_RDZV_PORT', '29500')}",
                f"--rdzv_id={env.get('SLURM_JOB_ID', 'expe')}"] + tail
    return [_sys.executable, "-m", "expe.training.launch", "--standalone", f"--nproc_per_node={nproc}"] + tail


def _first_host(nodelist: str) -> str:
    import subprocess as sp

    try:
        return sp.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                      check=True).stdout.split()[0]
    except (OSError, sp.CalledProcessError, IndexError):
        return nodelist.split(",")[0].split("[")[0]


def _strip_nproc(argv: list[str]) -> list[str]:
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    return rest


def _relaunch_under_torchrun(argv: list[str], nproc: int, threads: int) -> None:
    """`expe train --nproc N` (N > 1) outside torchrun: replace this process by the DDP launch of the
    same command, so that signals (Slurm's SIGTERM) reach torchrun, which forwards them."""
    import os
    import shutil

    os.environ["OMP_NUM_THREADS"] = str(max(1, threads // nproc))
    cmd = launch_command(argv, nproc, dict(os.environ))
    print("expe: launching " + " ".join(cmd), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(shutil.which(cmd[0]) or cmd[0], cmd)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # stderr and <checkpoints>/train.log


def _keep_log(ckpt: str) -> None:
    """Append this process's log to <checkpoints>/train.log as well. Snakemake deletes a failed job's
    `log:` file before it retries the job, so the log of a preempted or crashed attempt (SIGTERM,
    NaN, out of memory) would be lost; the checkpoint folder is outside its outputs and keeps every
    attempt's lines, one after the other. Only rank 0 of a DDP run writes it."""
    import logging
    import os

    if os.environ.get("RANK", "0") != "0":
        return
    os.makedirs(ckpt, exist_ok=True)
    handler = logging.FileHandler(Path(ckpt) / "train.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("expe")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:  # the step and checkpoint lines are INFO
        logger.setLevel(logging.INFO)


def cmd_train(args):
    import os

    from expe.training.loop import train

    slurm_nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or 1)
    if (args.nproc > 1 or slurm_nodes > 1) and "WORLD_SIZE" not in os.environ:
        _relaunch_under_torchrun(args.argv, args.nproc, args.threads)
    spec = _spec(args)
    ckpt = args.checkpoints or str(Path(args.out) / "checkpoints")
    _keep_log(ckpt)
    r = train(spec, args.data, args.out, ckpt, threads=args.threads, device=args.device,
              stop_after=args.stop_after, progress=_progress(args))
    if "rank" in r:  # a non-zero DDP rank: rank 0 reports
        return
    if "stopped_at" in r:
        print(f"stopped after step {r['stopped_at']} (checkpoint in {ckpt})")
    else:
        print(f"{spec['name']}: final train loss {r['final_train_loss']:.4f}, {r['train_seconds']:.1f} s, "
              f"{r['param_counts']['total']:,} parameters -> {args.out}")


def _overrides(pairs: list[str]) -> dict:
    import math

    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep:
            raise ConfigError(f"--pe: expected KEY=VALUE, got {p!r}")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"--pe {key}: value must be a number, got {value!r}") from None
        if not math.isfinite(out[key]) or out[key] <= 0:
            raise ConfigError(f"--pe {key}: must be a positive number, got {value!r}")
    return out


def cmd_evaluate(args):
    from expe.evaluation.extrapolation import evaluate
    from expe.io import write_json

    if args.precisions:  # one model load, several precisions: --out holds "{precision}"
        if "{precision}" not in args.out:
            raise ConfigError("--precisions: --out must contain {precision}, e.g. out/precision_{precision}.json")
        for p in args.precisions.split(","):
            if p not in ("fp32", "bf16", "fp16"):
                raise ConfigError(f"--precisions: {p!r} is not allowed (allowed: fp32, bf16, fp16)")
        results = {}
        for p in args.precisions.split(","):
            results[p] = evaluate(args.model_dir, args.data, args.multiples, split=args.split,
                                  pe_overrides=_overrides(args.pe), max_tokens=args.max_tokens,
                                  batch_size=args.batch_size, device=args.device, threads=args.threads,
                                  progress=_progress(args), precision=p)
        for p, r in results.items():  # written only once every precision ran
            r["variant"] = args.variant
            write_json(args.out.replace("{precision}", p), r)
            print(f"{p}: " + ", ".join(f"ev={x['ev']} {x['loss']:.4f}" for x in r["results"]))
        return

    sliding = {"multiples": args.sliding, "stride": args.stride, "max_tokens": args.sliding_max_tokens} \
        if args.sliding else None
    r = evaluate(args.model_dir, args.data, args.multiples, split=args.split, pe_overrides=_overrides(args.pe),
                 max_tokens=args.max_tokens, batch_size=args.batch_size, device=args.device,
                 threads=args.threads, progress=_progress(args), precision=args.precision, sliding=sliding)
    r["variant"] = args.variant
    write_json(args.out, r)
    for row in r["results"]:
        print(f"ev={row['ev']:>2} length {row['length']:>6}: loss {row['loss']:.4f} "
              f"({row['windows']} windows, {row['tokens']} tokens)")


def float_list(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive numbers, got {text!r}") from None
    if any(not x > 0 for x in out):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive numbers, got {text!r}")
    return out


def cmd_probe(args):
    from pathlib import Path as _P

    from expe.io import write_json
    from expe.evaluation.probes import run_probes

    kinds = args.kind.split(",")
    for k in kinds:
        if k not in ("retrieval", "passkey"):
            raise ConfigError(f"probe: {k!r} is not a probe (allowed: retrieval, passkey)")
    if "passkey" in kinds and not args.tokenizer:
        raise ConfigError("probe passkey: give --tokenizer FILE")
    kw = {"retrieval": dict(distances=args.distances, segment=args.segment, segments=args.segments),
          "passkey": dict(multiples=args.multiples, trials=args.trials, candidates=args.candidates, digits=args.digits,
                          filler=args.filler)}
    out = run_probes({k: kw[k] for k in kinds}, args.model_dir, args.data, split=args.split, device=args.device,
                     precision=args.precision, tokenizer=args.tokenizer, threads=args.threads)
    for kind, r in out.items():  # --out: the file (one probe) or the folder (several: <kind>.json)
        write_json(_P(args.out) / f"{kind}.json" if len(kinds) > 1 else args.out, r)
        for row in r["results"]:
            if kind == "retrieval":
                print(f"retrieval D={row['distance']:>5}: gain vs control {row['gain_vs_control']:+.3f} nats, "
                      f"vs first copy {row['gain_vs_first']:+.3f}")
            elif row.get("status", "ok") != "ok":
                print(f"passkey ev={row['ev']:>2}: {row['status']}")
            else:
                print(f"passkey ev={row['ev']:>2}: accuracy {row['accuracy']:.2f} (chance {row['chance']:.2f}), "
                      f"greedy exact {row['greedy_exact']:.2f}")


def cmd_speed(args):
    from expe.io import write_json
    from expe.training.speed import measure_models

    cfg = _config(args)
    r = measure_models(cfg, args.models.split(","), args.data, device=args.device, threads=cfg["speed"]["threads"],
                       log=lambda m: print(m, flush=True))
    write_json(args.out, r)
    for m, v in r["models"].items():
        print(f"{m}: median {v['median_ms']:.1f} ms/step (range {v['min_ms']:.1f}-{v['max_ms']:.1f}), "
              f"{v['tokens_per_s']:,.0f} tokens/s")


def cmd_beyond_tables(args):
    from expe.report.beyond import build_beyond

    build_beyond(_config(args), args.index, args.out)


README_SECTIONS = {"results": "paper_tables/summary.md", "beyond": "paper_tables/beyond/summary.md",
                   "cpu_study": "paper_tables/cpu_study/summary.md"}


def cmd_readme(args):
    """Replace the README's generated sections with the committed tables' summaries."""
    import re

    from expe.io import write_text

    path = Path(args.readme)
    text = path.read_text()
    for name, summary in README_SECTIONS.items():
        src = path.parent / summary
        if not src.exists():
            print(f"{name}: {src} not found, section left as it is")
            continue
        body = src.read_text()
        text, n = re.subn(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)",
                          lambda m: m.group(1) + body + m.group(2), text, flags=re.S)
        if not n:
            raise ConfigError(f"{path}: no <!-- {name}:begin --> ... <!-- {name}:end --> section")
        print(f"{name}: {src}")
    write_text(path, text)


def cmd_config_doc(args):
    from expe import config as C

    text = C.schema_markdown()
    if args.out:
        from expe.io import write_text

        write_text(args.out, text)
    else:
        print(text, end="")


def cmd_params(args):
    from expe.nn.model import PAPER_PARAMS, PRESETS, Transformer, preset

    names = [args.preset] if args.preset else list(PRESETS)
    for n in names:
        m = Transformer(preset(n, pe={"name": "nope"}))
        c = m.param_counts()
        paper = PAPER_PARAMS.get(n)
        ref = f"  (paper: {paper[0] / 1e6:.0f}M" + (f", {paper[1] / 1e6:.0f}M non-embedding)" if paper[1] else ")") if paper else ""
        print(f"{n:12s} total {c['total'] / 1e6:8.2f}M  without input embedding {c['non_embedding'] / 1e6:8.2f}M{ref}")


def cmd_benchmark(args):
    from expe.evaluation.benchmarks import run_benchmarks
    from expe.io import read_json

    avail = read_json(args.availability)["tasks"] if args.availability else None
    r = run_benchmarks(args.model_dir, args.tokenizer, args.tasks.split(","), args.out, num_fewshot=args.num_fewshot,
                       limit=args.limit, batch_size=args.batch_size, pe_overrides=_overrides(args.pe),
                       include_path=args.include_path, device=args.device, threads=args.threads, availability=avail)
    for task, t in r["tasks"].items():
        print(f"{task}: " + (f"acc {t['acc']:.4f}" if t["status"] == "ok" else t["reason"]))


def cmd_benchmark_data(args):
    from expe.evaluation.benchmarks import fetch_benchmark_data

    r = fetch_benchmark_data(args.tasks.split(","), args.out, include_path=args.include_path)
    for task, status in r["tasks"].items():
        print(f"{task}: {status}")


def cmd_tables(args):
    from expe.report.tables import build_all

    build_all(_config(args), args.config, args.index, args.out)


def cmd_plots(args):
    from expe.report.plots import build_plots

    build_plots(_config(args), args.index, args.out)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="expe", description="ExPE reproduction: data, training, evaluation, tables.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    def common(sp, config=True, threads=True, data_step=False):
        if config:
            sp.add_argument("--config", required=not data_step, help="workflow config YAML (config/config.yaml)")
        if data_step:
            sp.add_argument("--config-json", help="the seed, data and tokenizer keys as JSON (instead of --config)")
        if threads:
            sp.add_argument("--threads", type=positive_int, default=1, help="CPU threads")
        sp.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")

    sp = add("validate", cmd_validate, "validate a config file and print its model entries")
    sp.add_argument("config")

    sp = add("dump-config", cmd_dump_config, "validate a config given as JSON and write it with defaults filled")
    sp.add_argument("--json", required=True)
    sp.add_argument("--out", required=True)

    sp = add("dump-spec", cmd_dump_spec, "write one model's resolved spec (the input of `expe train`)")
    sp.add_argument("--json", required=True)
    sp.add_argument("--out", required=True)

    sp = add("tokenizer", cmd_tokenizer, "train a sentencepiece BPE tokenizer on the source's training documents, "
                                         "or copy a given one (tokenizer.type: load)")
    common(sp, data_step=True)
    sp.add_argument("--out", required=True, help="path of the tokenizer.model to write")

    sp = add("prepare", cmd_prepare, "one pass over the source: tokenise once, keep documents >= min_tokens up to "
                                     "token_budget, split by document hash, write token shards (resumable)")
    common(sp, threads=False, data_step=True)
    sp.add_argument("--tokenizer", required=True)
    sp.add_argument("--out", required=True, help="shards folder (<split>.bin/.idx.npy/.json, manifest.json)")
    sp.add_argument("--work", help="folder for resumable chunk parts (default: <out>/../prepare_work)")

    sp = add("train", cmd_train, "train one model entry (resumes from its latest checkpoint)")
    sp.add_argument("--config", help="config YAML (with --model)")
    sp.add_argument("--model", help="model entry name in the config")
    sp.add_argument("--spec", help="resolved model spec as JSON")
    sp.add_argument("--spec-file", help="resolved model spec as a JSON file (what the workflow passes)")
    sp.add_argument("--data", required=True, help="shards folder")
    sp.add_argument("--out", required=True, help="folder for model.safetensors, config.json, metrics.jsonl")
    sp.add_argument("--checkpoints", help="checkpoint folder (default: <out>/checkpoints)")
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda")
    sp.add_argument("--stop-after", type=positive_int, help="stop (with a checkpoint) after this many steps")
    sp.add_argument("--nproc", type=positive_int, default=1,
                    help="processes (one GPU each; gloo on CPU): > 1 relaunches this command under torchrun (DDP)")
    common(sp, config=False)

    sp = add("evaluate", cmd_evaluate, "loss at ev = k x training length over non-overlapping windows")
    sp.add_argument("--model-dir", required=True)
    sp.add_argument("--data", required=True, help="shards folder")
    sp.add_argument("--out", required=True, help="result JSON")
    sp.add_argument("--multiples", type=int_list, default=[1, 2, 4, 8, 16], help="comma-separated ev multiples")
    sp.add_argument("--split", default="test", choices=["dev", "test"])
    sp.add_argument("--pe", action="append", metavar="KEY=VALUE",
                    help="inference-time encoding option, e.g. scale=0.5 (ExPE) or interpolation=2 (RoPE)")
    sp.add_argument("--variant", default="base", help="label stored in the result")
    sp.add_argument("--max-tokens", type=positive_int,
                    help="score about this many tokens per length (evenly spaced windows); default: every window")
    sp.add_argument("--batch-size", type=positive_int, default=8)
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    sp.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"],
                    help="autocast dtype of the forward pass (fp32: none)")
    sp.add_argument("--precisions", help="several, e.g. fp32,bf16,fp16 (one file each: --out with {precision})")
    sp.add_argument("--sliding", type=int_list, help="ev multiples of the sliding-window evaluation (e.g. 1,2,4)")
    sp.add_argument("--stride", type=positive_int, help="sliding-window stride in tokens (default L/2)")
    sp.add_argument("--sliding-max-tokens", type=positive_int, help="scored tokens per sliding length (default: all)")
    common(sp, config=False)

    sp = add("readme", cmd_readme, "write the committed tables' summaries into README.md's generated sections")
    sp.add_argument("readme", nargs="?", default="README.md")

    sp = add("config-doc", cmd_config_doc, "write config/README.md: every config key, its default and meaning")
    sp.add_argument("--out", help="file to write (default: standard output)")

    sp = add("params", cmd_params, "print the parameter counts of the architecture presets")
    sp.add_argument("--preset", help="one preset (default: all)")

    sp = add("benchmark", cmd_benchmark, "run lm-evaluation-harness tasks on a trained model")
    sp.add_argument("--model-dir", required=True)
    sp.add_argument("--tokenizer", required=True)
    sp.add_argument("--tasks", default="hellaswag,mmlu,arc_challenge,arc_easy")
    sp.add_argument("--out", required=True, help="result JSON")
    sp.add_argument("--num-fewshot", type=int, default=0)
    sp.add_argument("--limit", type=positive_int)
    sp.add_argument("--batch-size", type=positive_int, default=8)
    sp.add_argument("--pe", action="append", metavar="KEY=VALUE")
    sp.add_argument("--include-path", help="folder of extra task YAMLs")
    sp.add_argument("--availability", help="the benchmark-data step's result (tasks it could not load are not run)")
    sp.add_argument("--device", default="auto")
    common(sp, config=False)

    sp = add("benchmark-data", cmd_benchmark_data, "load the benchmark datasets into the Hugging Face cache "
                                                   "(where the internet is) and record which are available")
    sp.add_argument("--tasks", default="hellaswag,mmlu,arc_challenge,arc_easy")
    sp.add_argument("--include-path", help="folder of extra task YAMLs")
    sp.add_argument("--out", required=True)

    sp = add("tables", cmd_tables, "regenerate the paper's tables (Markdown, LaTeX, CSV) and their tidy data")
    common(sp, threads=False)
    sp.add_argument("--index", required=True, help="results index JSON (results/<run>/index/<hash>.json)")
    sp.add_argument("--out", required=True, help="tables folder")

    sp = add("plots", cmd_plots, "draw the paper's plots (PNG and PDF) from results")
    common(sp, threads=False)
    sp.add_argument("--index", required=True, help="results index JSON")
    sp.add_argument("--out", required=True)

    sp = add("beyond-tables", cmd_beyond_tables, "tables and plots of the probes and the precision study")
    common(sp, threads=False)
    sp.add_argument("--index", required=True, help="results index JSON")
    sp.add_argument("--out", required=True)

    sp = add("probe", cmd_probe, "long-context probes: repeat retrieval, passkey retrieval")
    sp.add_argument("kind", help="retrieval, passkey, or both: retrieval,passkey (then --out is a folder)")
    sp.add_argument("--model-dir", required=True)
    sp.add_argument("--data", required=True, help="shards folder")
    sp.add_argument("--out", required=True, help="result JSON (one probe) or folder (several)")
    sp.add_argument("--split", default="test", choices=["dev", "test"])
    sp.add_argument("--tokenizer", help="tokenizer.model (passkey)")
    sp.add_argument("--distances", type=float_list, default=[0.5, 1, 2, 4, 8, 16], help="retrieval: D in multiples of L")
    sp.add_argument("--segment", type=positive_int, default=32, help="retrieval: tokens of the repeated span")
    sp.add_argument("--segments", type=positive_int, default=16, help="retrieval: spans per distance")
    sp.add_argument("--multiples", type=int_list, default=[1, 2, 4, 8, 16], help="passkey: window lengths in L")
    sp.add_argument("--trials", type=positive_int, default=10)
    sp.add_argument("--candidates", type=positive_int, default=10)
    sp.add_argument("--digits", type=positive_int, default=4)
    sp.add_argument("--filler", choices=["corpus", "sentences"], default="corpus")
    sp.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    sp.add_argument("--device", default="auto")
    common(sp, config=False)

    sp = add("speed", cmd_speed, "training step time of model entries, side by side in one process")
    common(sp, threads=False)
    sp.add_argument("--models", required=True, help="comma-separated model entries")
    sp.add_argument("--data", required=True, help="shards folder (batches from its train split)")
    sp.add_argument("--out", required=True)
    sp.add_argument("--device", default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad argument (one line already printed) or --help
        return e.code if isinstance(e.code, int) else 2
    args.argv = list(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=LOG_FORMAT, stream=sys.stderr)
    try:
        args.fn(args)
    except ExpeError as e:
        print(f"expe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("expe: interrupted", file=sys.stderr)
        _quiet_exit(130)
    return 0


def _quiet_exit(code: int) -> None:
    """Exit now, skipping interpreter teardown: torch's atexit hooks print "FakeTensor cache stats"
    lines after Ctrl-C otherwise."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
