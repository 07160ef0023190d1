"""`expe evaluate`, `expe probe`, `expe recall-eval`, `expe benchmark`, `expe benchmark-data`, `expe heldout-task`:
measuring trained models.

The workflow passes each job its settings as a file written from the validated config (`--spec-file`);
by hand, the same settings are flags whose defaults are the config schema's."""

from __future__ import annotations

from pathlib import Path

from expe.cli.args import choices, common, default, float_list, int_list, job_spec, nonnegative_int, positive_int, progress
from expe.errors import ConfigError

KEPT = "the model and earlier results are kept; free space and rerun"  # what a failed result write leaves


def pe_overrides(pairs: list[str] | None) -> dict[str, str]:
    """--pe KEY=VALUE pairs; typed and checked against the model's encoding where it is loaded."""
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep:
            raise ConfigError(f"--pe: expected KEY=VALUE, got {p!r}")
        out[key] = value
    return out


def _eval_settings(args) -> dict:
    if args.spec_file:
        return job_spec(args.spec_file)
    sliding = {"multiples": args.sliding, "stride": args.stride, "max_tokens": args.sliding_max_tokens}
    return {"variant": args.variant, "pe": pe_overrides(args.pe), "multiples": args.multiples,
            "max_tokens": args.max_tokens, "batch_size": args.batch_size, "split": args.split,
            "precision": args.precision, "precisions": args.precisions.split(",") if args.precisions else None,
            "sliding": sliding if args.sliding else None}


def cmd_evaluate(args):
    from expe.evaluation.extrapolation import evaluate
    from expe.io import write_json

    s = _eval_settings(args)
    run = dict(multiples=s["multiples"], split=s["split"], pe_overrides=s.get("pe") or {}, max_tokens=s["max_tokens"],
               batch_size=s["batch_size"], device=args.device, threads=args.threads, progress=progress(args))
    if s.get("precisions"):  # one model load, several precisions: --out holds "{precision}"
        if "{precision}" not in args.out:
            raise ConfigError("--precisions: --out must contain {precision}, e.g. out/precision_{precision}.json")
        results = {p: evaluate(args.model_dir, args.data, precision=p, **run) for p in s["precisions"]}
        for p, r in results.items():  # written only once every precision ran
            r["variant"] = s.get("variant", "base")
            write_json(args.out.replace("{precision}", p), r, what=f"{p} evaluation result", kept=KEPT)
            print(f"{p}: " + ", ".join(f"ev={x['ev']} {x['loss']:.4f}" for x in r["results"]))
        return
    r = evaluate(args.model_dir, args.data, precision=s["precision"], sliding=s.get("sliding"), **run)
    r["variant"] = s.get("variant", "base")
    write_json(args.out, r, what="evaluation result", kept=KEPT)
    for row in r["results"]:
        print(f"ev={row['ev']:>2} length {row['length']:>6}: loss {row['loss']:.4f} "
              f"({row['windows']} windows, {row['tokens']} tokens)")
    track_evaluation(args, r)


def track_evaluation(args, r: dict) -> None:
    """The evaluation's losses into the live trackers of the model's run (train.trackers), beside its
    training curves: `eval/<variant>/loss_ev<k>` as summary values."""
    from expe.runtime import read_model_config

    cfg = read_model_config(args.model_dir)
    names = cfg["train"].get("trackers") or []
    if not names or not args.track_dir:
        return
    from expe.training.trackers import open_trackers

    run = f"{cfg['name']}/s{cfg['seed']}"
    with open_trackers(names, args.track_dir, run, args.track_group or cfg["name"], {},
                       run_id=f"{cfg['name']}-s{cfg['seed']}-{Path(args.model_dir).name}") as tr:
        tr.summary({f"eval/{r['variant']}/loss_ev{x['ev']}": x["loss"] for x in r["results"]}
                   | {f"eval/{r['variant']}/sliding_loss_ev{x['ev']}": x["loss"] for x in r.get("sliding", [])})


def cmd_probe(args):
    from expe.evaluation.probes import run_probes
    from expe.io import write_json

    if args.spec_file:
        s = job_spec(args.spec_file)
        kinds = {k: s[k] for k in ("retrieval", "passkey") if k in s}
        split, precision = s["split"], s.get("precision", "fp32")
    else:
        kinds = {}
        for k in args.kind.split(","):
            if k not in ("retrieval", "passkey"):
                raise ConfigError(f"probe: {k!r} is not a probe (allowed: retrieval, passkey)")
            kinds[k] = (dict(distances=args.distances, segment=args.segment, prefix=args.prefix, segments=args.segments)
                        if k == "retrieval" else
                        dict(multiples=args.multiples, trials=args.trials, candidates=args.candidates, keys=args.keys,
                             pool=args.pool, digits=args.digits, filler=args.filler))
        split, precision = args.split, args.precision
    if "passkey" in kinds and not args.tokenizer:
        raise ConfigError("probe passkey: give --tokenizer FILE")
    out = run_probes(kinds, args.model_dir, args.data, split=split, device=args.device, precision=precision,
                     tokenizer=args.tokenizer, threads=args.threads)
    for kind, r in out.items():  # --out: the file (one probe) or the folder (several: <kind>.json)
        write_json(Path(args.out) / f"{kind}.json" if len(kinds) > 1 else args.out, r, what=f"{kind} probe result",
                   kept=KEPT)
        for row in r["results"]:
            if kind == "retrieval":
                print(f"retrieval D={row['distance']:>5}{' (inside L)' if row['inside_L'] else ''}: gain vs control "
                      f"{row['gain_vs_control']:+.3f} nats, vs first copy {row['gain_vs_first']:+.3f}")
            elif row.get("status", "ok") != "ok":
                print(f"passkey ev={row['ev']:>2}: {row['status']}")
            else:
                print(f"passkey ev={row['ev']:>2}: accuracy {row['accuracy']:.2f} (chance {row['chance']:.2f}), "
                      f"greedy exact {row['greedy_exact']:.2f}")


def _include(s: dict) -> list[str]:
    """lm-eval's include path of a benchmark job: the user's benchmarks.include_path (one folder, or
    several given by hand) and the folder of our heldout_continuation task, built by the workflow."""
    given = s.get("include_path") or []
    return [*([given] if isinstance(given, str) else given), *([s["heldout_task"]] if s.get("heldout_task") else [])]


def cmd_recall_eval(args):
    from expe.evaluation.recall import evaluate_recall
    from expe.io import write_json

    s = job_spec(args.spec_file) if args.spec_file else {
        "multiples": args.multiples, "trials": args.trials, "in_distribution_trials": args.in_distribution_trials,
        "batch_size": args.batch_size}
    r = evaluate_recall(args.model_dir, s["multiples"], s["trials"], s["in_distribution_trials"], s["batch_size"],
                        device=args.device, threads=args.threads)
    write_json(args.out, r, what="recall evaluation result")
    print(f"in distribution: accuracy {r['in_distribution']['accuracy']:.3f} (chance {r['chance']:.3f})")
    for c in r["cells"]:
        print(f"{c['kind']:>12} window {c['window']:>5} distance {c['distance']:>5} start {c['first_start']:>5}: "
              f"accuracy {c['accuracy']:.3f}")


def cmd_benchmark(args):
    from expe.evaluation.benchmarks import run_benchmarks
    from expe.io import read_json

    if args.spec_file:
        s = job_spec(args.spec_file)
    else:
        s = {"tasks": args.tasks.split(","), "num_fewshot": args.num_fewshot, "limit": args.limit,
             "batch_size": args.batch_size, "include_path": args.include_path,
             "pe": pe_overrides(args.pe)}
    avail = read_json(args.availability)["tasks"] if args.availability else None
    r = run_benchmarks(args.model_dir, args.tokenizer, s["tasks"], args.out, num_fewshot=s["num_fewshot"],
                       limit=s["limit"], batch_size=s["batch_size"], pe_overrides=s.get("pe") or {},
                       include_path=_include(s), device=args.device, threads=args.threads, availability=avail)
    for task, t in r["tasks"].items():
        print(f"{task}: " + (f"acc {t['acc']:.4f}" if t["status"] == "ok" else t["reason"]))


def cmd_benchmark_data(args):
    from expe.evaluation.benchmarks import fetch_benchmark_data

    s = job_spec(args.spec_file) if args.spec_file else {"tasks": args.tasks.split(","), "include_path": args.include_path}
    r = fetch_benchmark_data(s["tasks"], args.out, include_path=_include(s))
    for task, status in r["tasks"].items():
        print(f"{task}: {status}")


def cmd_heldout_task(args):
    from expe.evaluation.benchmarks import build_heldout_task

    if args.spec_file:
        s = job_spec(args.spec_file)
    else:
        s = {k: getattr(args, k) for k in ("items", "context_tokens", "continuation_tokens", "choices", "seed")}
    path = build_heldout_task(args.data, args.tokenizer, args.out, s)
    print(f"{path} (load with lm-eval's --include_path {path.parent})")


def add_commands(sub) -> None:
    h = "loss at ev = k x training length over non-overlapping (and sliding) windows"
    sp = sub.add_parser("evaluate", help=h, description=h)
    sp.add_argument("--model-dir", required=True)
    sp.add_argument("--data", required=True, help="shards folder")
    sp.add_argument("--out", required=True, help="result JSON")
    sp.add_argument("--spec-file", help="the job's settings (written by the workflow); replaces the flags below")
    sp.add_argument("--multiples", type=int_list, default=default("eval.multiples"), help="comma-separated ev multiples")
    sp.add_argument("--split", default=default("eval.split"), choices=choices("eval.split"))
    sp.add_argument("--pe", action="append", metavar="KEY=VALUE",
                    help="inference-time encoding option, e.g. scale=0.5 (ExPE) or interpolation=2 (RoPE)")
    sp.add_argument("--variant", default="base", help="label stored in the result")
    sp.add_argument("--max-tokens", type=positive_int, default=default("eval.max_tokens"),
                    help="score about this many tokens per length (evenly spaced windows); default: every window")
    sp.add_argument("--batch-size", type=positive_int, default=default("eval.batch_size"))
    sp.add_argument("--precision", default=default("eval.precision"), choices=choices("eval.precision"),
                    help="autocast dtype of the forward pass (fp32: none)")
    sp.add_argument("--precisions", help="several, e.g. fp32,bf16,fp16 (one file each: --out with {precision})")
    sp.add_argument("--sliding", type=int_list, help="ev multiples of the sliding-window evaluation (e.g. 1,2,4)")
    sp.add_argument("--stride", type=positive_int, help="sliding-window stride in tokens (default L/2)")
    sp.add_argument("--sliding-max-tokens", type=positive_int, default=default("eval.sliding.max_tokens"),
                    help="scored tokens per sliding length")
    sp.add_argument("--track-dir", help="folder of the live trackers the model was trained with (train.trackers)")
    sp.add_argument("--track-group", help="experiment name of the trackers (default: the model entry)")
    common(sp, device=True)
    sp.set_defaults(fn=cmd_evaluate)

    h = "long-context probes: repeat retrieval, passkey retrieval"
    sp = sub.add_parser("probe", help=h, description=h)
    sp.add_argument("kind", nargs="?", default="retrieval,passkey",
                    help="retrieval, passkey, or both: retrieval,passkey (then --out is a folder)")
    sp.add_argument("--model-dir", required=True)
    sp.add_argument("--data", required=True, help="shards folder")
    sp.add_argument("--out", required=True, help="result JSON (one probe) or folder (several)")
    sp.add_argument("--spec-file", help="the job's settings (written by the workflow); replaces the flags below")
    sp.add_argument("--split", default=default("eval.split"), choices=choices("eval.split"))
    sp.add_argument("--tokenizer", help="tokenizer.model (passkey)")
    sp.add_argument("--distances", type=float_list, default=default("beyond.retrieval.distances"),
                    help="retrieval: D in multiples of L")
    sp.add_argument("--segment", type=positive_int, default=default("beyond.retrieval.segment"),
                    help="retrieval: tokens of the repeated span (default: L/8)")
    sp.add_argument("--prefix", type=nonnegative_int, default=default("beyond.retrieval.prefix"),
                    help="retrieval: tokens before the first copy")
    sp.add_argument("--segments", type=positive_int, default=default("beyond.retrieval.segments"),
                    help="retrieval: spans per distance")
    sp.add_argument("--multiples", type=int_list, default=default("beyond.passkey.multiples"),
                    help="passkey: window lengths in L")
    sp.add_argument("--trials", type=positive_int, default=default("beyond.passkey.trials"))
    sp.add_argument("--candidates", type=positive_int, default=default("beyond.passkey.candidates"))
    sp.add_argument("--keys", choices=choices("beyond.passkey.keys"), default=default("beyond.passkey.keys"),
                    help="passkey: frequent words of the training split, or digit strings")
    sp.add_argument("--pool", type=positive_int, default=default("beyond.passkey.pool"),
                    help="passkey: the most frequent words the keys are drawn from")
    sp.add_argument("--digits", type=positive_int, default=default("beyond.passkey.digits"))
    sp.add_argument("--filler", choices=choices("beyond.passkey.filler"), default=default("beyond.passkey.filler"))
    sp.add_argument("--precision", default="fp32", choices=choices("eval.precision"))
    common(sp, device=True)
    sp.set_defaults(fn=cmd_probe)

    h = "a recall task model's accuracy in distribution and on the extrapolation grid (far position, far distance)"
    sp = sub.add_parser("recall-eval", help=h, description=h)
    sp.add_argument("--model-dir", required=True, help="a model trained on a synthetic task (its config.json names it)")
    sp.add_argument("--out", required=True, help="result JSON")
    sp.add_argument("--spec-file", help="the job's settings (written by the workflow); replaces the flags below")
    sp.add_argument("--multiples", type=int_list, default=default("recall.multiples"), help="windows in multiples of L")
    sp.add_argument("--trials", type=positive_int, default=default("recall.trials"), help="sequences per grid cell")
    sp.add_argument("--in-distribution-trials", type=positive_int, default=default("recall.in_distribution_trials"))
    sp.add_argument("--batch-size", type=positive_int, default=default("recall.batch_size"))
    common(sp, device=True)
    sp.set_defaults(fn=cmd_recall_eval)

    h = "run lm-evaluation-harness tasks on a trained model"
    sp = sub.add_parser("benchmark", help=h, description=h)
    sp.add_argument("--model-dir", required=True)
    sp.add_argument("--tokenizer", required=True)
    sp.add_argument("--out", required=True, help="result JSON")
    sp.add_argument("--spec-file", help="the job's settings (written by the workflow); replaces the flags below")
    sp.add_argument("--tasks", default=",".join(default("benchmarks.tasks")))
    sp.add_argument("--num-fewshot", type=int, default=default("benchmarks.num_fewshot"))
    sp.add_argument("--limit", type=positive_int, default=default("benchmarks.limit"))
    sp.add_argument("--batch-size", type=positive_int, default=default("benchmarks.batch_size"))
    sp.add_argument("--pe", action="append", metavar="KEY=VALUE")
    sp.add_argument("--include-path", action="append",
                    help="folder of extra task YAMLs (repeat for several, e.g. the folder `expe heldout-task` wrote)")
    sp.add_argument("--availability", help="the benchmark-data step's result (tasks it could not load are not run)")
    common(sp, device=True)
    sp.set_defaults(fn=cmd_benchmark)

    h = ("load the benchmark datasets into the Hugging Face cache (where the internet is) and record which "
         "are available")
    sp = sub.add_parser("benchmark-data", help=h, description=h)
    sp.add_argument("--spec-file", help="the job's settings (written by the workflow); replaces the flags below")
    sp.add_argument("--tasks", default=",".join(default("benchmarks.tasks")))
    sp.add_argument("--include-path", action="append", help="folder of extra task YAMLs (repeat for several)")
    sp.add_argument("--out", required=True)
    sp.set_defaults(fn=cmd_benchmark_data)

    h = ("build heldout_continuation, our own lm-eval multiple-choice task (not one of the paper's), from the "
         "held-out test documents: a task YAML and its items, loadable with lm-eval's --include_path")
    sp = sub.add_parser("heldout-task", help=h, description=h)
    sp.add_argument("--data", required=True, help="shards folder (its test split is used)")
    sp.add_argument("--tokenizer", required=True, help="tokenizer.model (decodes the token ids to text)")
    sp.add_argument("--out", required=True, help="folder for heldout_continuation.yaml and .jsonl")
    sp.add_argument("--spec-file", help="the job's settings (written by the workflow); replaces the flags below")
    sp.add_argument("--items", type=positive_int, default=default("benchmarks.heldout.items"))
    sp.add_argument("--context-tokens", type=positive_int, default=default("benchmarks.heldout.context_tokens"))
    sp.add_argument("--continuation-tokens", type=positive_int,
                    default=default("benchmarks.heldout.continuation_tokens"))
    sp.add_argument("--choices", type=positive_int, default=default("benchmarks.heldout.choices"))
    sp.add_argument("--seed", type=int, default=default("benchmarks.heldout.seed"))
    sp.set_defaults(fn=cmd_heldout_task)
