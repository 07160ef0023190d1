"""The paper's tables, regenerated from our results, with the paper's numbers beside ours.

Every table is written as Markdown, LaTeX (booktabs) and CSV. A cell we could not compute
says why ("not run: ..."), never a number; the paper's numbers sit only in columns headed
"paper". Each row names the result file it came from (CSV column `source`)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import paper_reference as P
from .config import parse_ref
from .io import ensure_dir, write_text, write_json

Cell = float | str | None  # number, or the reason it is missing
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "—": "--", "^": r"\^{}"}


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digits: int = 3

    def add(self, cells: list[Cell], source: str = "") -> None:
        self.rows.append(cells)
        self.sources.append(source)

    def fmt(self, c: Cell, col: str) -> str:
        if c is None:
            return "—"
        if isinstance(c, str):
            return c
        if "paper" in col:
            return f"{c:g}"
        return f"{c:.{self.digits}f}"

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        for row in self.rows:
            out.append("| " + " | ".join(self.fmt(c, col) for c, col in zip(row, self.columns)) + " |")
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            return "".join(_TEX.get(ch, ch) for ch in s)

        spec = "l" + "r" * (len(self.columns) - 1)
        lines = [
            f"% {self.title}",
            r"\begin{table}[t]", r"\centering", r"\small",
            rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
            " & ".join(esc(c) for c in self.columns) + r" \\", r"\midrule",
        ]
        for row in self.rows:
            lines.append(" & ".join(esc(self.fmt(c, col)) for c, col in zip(row, self.columns)) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(self.title)}}}",
                  rf"\label{{tab:{self.name}}}", r"\end{table}"]
        lines += [f"% {esc(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns + ["source"])
        for row, src in zip(self.rows, self.sources):
            w.writerow([("" if c is None else c) for c in row] + [src])
        return buf.getvalue()

    def write(self, out_dir: Path) -> None:
        write_text(out_dir / f"{self.name}.md", self.markdown())
        write_text(out_dir / f"{self.name}.tex", self.latex())
        write_text(out_dir / f"{self.name}.csv", self.csv())


class Results:
    """Reads result files under results/<run_name>/, remembering why something is missing."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _json(self, rel: str) -> dict | None:
        p = self.root / rel
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None

    def eval_path(self, model: str, variant: str) -> str:
        return f"eval/{model}/{variant}.json"

    def loss(self, model: str, variant: str, ev: int) -> Cell:
        r = self._json(self.eval_path(model, variant))
        if r is None:
            return "not run (no evaluation result)"
        for row in r["results"]:
            if row["ev"] == ev:
                return row["loss"]
        return f"not run (ev={ev} not in eval.multiples)"

    def model_dir(self, model: str) -> Path | None:
        """The trained model's folder, as recorded in its evaluation result (cell -> result -> model)."""
        r = self._json(self.eval_path(model, "base"))
        if not r or "model_dir" not in r:
            return None
        d = Path(r["model_dir"])
        for cand in (d, self.root.parent.parent / d):  # as recorded, or relative to the workflow's folder
            if (cand / "config.json").exists():
                return cand
        return None

    def model_config(self, model: str) -> dict | None:
        d = self.model_dir(model)
        return json.loads((d / "config.json").read_text()) if d else None

    def train_seconds(self, model: str) -> float | None:
        c = self.model_config(model)
        return c.get("train_seconds") if c else None

    def benchmark(self, model: str, variant: str, task: str, metric: str = "acc") -> Cell:
        """`metric` of one task, with its stderr when lm-eval gave one ('0.291 ± 0.005')."""
        r = self._json(f"benchmarks/{model}/{variant}.json")
        if r is None:
            return "not run (no benchmark result)"
        t = r["tasks"].get(task)
        if t is None:
            return "not run (task not in benchmarks.tasks)"
        if t["status"] != "ok":
            return t["reason"]
        if t.get(metric) is None:
            return f"not reported ({task} has no {metric})"
        err = t.get(f"{metric}_stderr")
        return f"{t[metric]:.3f} ± {err:.3f}" if err is not None else t[metric]


def _ratio(a: float | None, b: float | None, why: str) -> Cell:
    if a is None or b is None or not b:
        return f"not run ({why})"
    return a / b


def loss_table(name: str, title: str, rows: dict[str, str], multiples: list[int], paper: dict, res: Results,
               time_ref: dict[str, str] | None = None, time_label: str = "time", paper_time: bool = True) -> Table:
    """Rows of losses at each ev (ours, then the paper's), optionally a relative time column."""
    cols = ["Model"]
    for k in multiples:
        cols += [f"Loss ev={k}", f"ev={k} (paper)"]
    if time_ref is not None:
        cols += [time_label, f"{time_label} (paper)"]
    t = Table(name, title, cols)
    for label, ref in rows.items():
        model, variant = parse_ref(ref)
        ref_row = paper.get(label)
        cells: list[Cell] = [label]
        for k in multiples:
            cells.append(res.loss(model, variant, k))
            cells.append(ref_row.get(k) if ref_row and k in ref_row else ("not in paper" if ref_row is None else None))
        if time_ref is not None:
            base = time_ref.get(label)
            cells.append(_ratio(res.train_seconds(model), res.train_seconds(base) if base else None,
                                "no timing" if base else "no reference row"))
            cells.append((ref_row or {}).get("time") if ref_row else "not in paper")
        t.add(cells, res.eval_path(model, variant))
    return t


def _arch_key(res: Results, model: str) -> str | None:
    c = res.model_config(model)
    if not c:
        return None
    m = c["model"]
    return json.dumps({k: m[k] for k in ("arch", "d_model", "n_layer", "n_head", "tie_embeddings")}, sort_keys=True)


def large_time_refs(rows: dict[str, str], res: Results) -> dict[str, str]:
    """Training time of each row relative to the RoPE ("Llama") model of the same architecture."""
    refs, by_arch = {}, {}
    for label, ref in rows.items():
        model, _ = parse_ref(ref)
        c = res.model_config(model)
        if c and c["model"]["pe"]["name"] == "rope":
            by_arch.setdefault(_arch_key(res, model), model)
    for label, ref in rows.items():
        model, _ = parse_ref(ref)
        key = _arch_key(res, model)
        if key in by_arch:
            refs[label] = by_arch[key]
    return refs


def benchmark_table(rows: dict[str, str], tasks: list[str], res: Results) -> Table:
    names = {"hellaswag": "HellaSwag", "mmlu": "MMLU", "arc_challenge": "ARC", "arc_easy": "ARC-Easy"}
    cols = ["Model"]
    for task in tasks:
        name = names.get(task, task)
        cols += [f"{name} acc", f"{name} acc_norm", f"{name} (paper)"]
    t = Table("benchmarks", "Benchmarks (accuracy ± stderr, lm-evaluation-harness)", cols, digits=3)
    for label, ref in rows.items():
        model, variant = parse_ref(ref)
        paper = P.BENCHMARKS.get(label)
        cells: list[Cell] = [label]
        for task in tasks:
            cells.append(res.benchmark(model, variant, task, "acc"))
            cells.append(res.benchmark(model, variant, task, "acc_norm"))
            cells.append(paper.get(task) if paper and task in paper else ("not in paper" if paper is None else None))
        t.add(cells, f"benchmarks/{model}/{variant}.json")
    t.notes.append("ARC is ARC-Challenge; the paper reports one accuracy per task, to two decimals; "
                   "MMLU has no acc_norm in lm-eval.")
    return t


HYPER_ROWS = [
    # (label, where, key) — the paper's Tables 5/9 (training) and 6/8 (model)
    ("sequence length (L)", "train", "seq_len"),
    ("batch size (windows)", "train", "batch_size"),
    ("gradient accumulation steps", "train", "grad_accum"),
    ("effective batch size (tokens)", "derived", "tokens_per_step"),
    ("optimizer steps", "train", "steps"),
    ("training tokens", "summary", "tokens"),
    ("peak learning rate", "train", "lr"),
    ("end learning rate", "train", "end_lr"),
    ("lr schedule", "train", "schedule"),
    ("warm-up ratio", "train", "warmup_ratio"),
    ("optimizer", "const", "AdamW"),
    ("optimizer betas", "train", "betas"),
    ("weight decay", "train", "weight_decay"),
    ("gradient clipping", "train", "grad_clip"),
    ("precision", "train", "precision"),
    ("vocab_size", "model", "vocab_size"),
    ("d_model", "model", "d_model"),
    ("n_heads", "model", "n_head"),
    ("head_size", "derived", "head_size"),
    ("n_layers", "model", "n_layer"),
    ("architecture", "model", "arch"),
    ("dropout", "model", "dropout"),
    ("tied input embedding", "model", "tie_embeddings"),
    ("total parameters", "params", "total"),
    ("parameters without input embedding", "params", "non_embedding"),
]


def hyper_table(config: dict, res: Results) -> Table:
    """The configuration that actually ran, read from each trained model's config.json; models
    with identical settings share a column."""
    groups: dict[str, list[str]] = {}
    values: dict[str, dict[str, Any]] = {}
    for model in config["models"]:
        c = res.model_config(model)
        if c is None:
            continue
        vals = {}
        for label, where, key in HYPER_ROWS:
            if where == "const":
                v = key
            elif where == "derived":
                v = (c["train"]["batch_size"] * c["train"]["grad_accum"] * c["train"]["seq_len"]
                     if key == "tokens_per_step" else c["model"]["d_model"] // c["model"]["n_head"])
            elif where == "summary":
                v = c[key]
            elif where == "params":
                v = c["param_counts"][key]
            else:
                v = c[where][key]
            vals[label] = ", ".join(map(str, v)) if isinstance(v, list) else v
        sig = json.dumps(vals, sort_keys=True, default=str)
        groups.setdefault(sig, []).append(model)
        values[sig] = vals
    t = Table("hyperparameters", "Hyper-parameters that ran (paper Tables 5, 6, 8, 9)", ["Parameter"])
    sigs = list(groups)
    t.columns += [", ".join(groups[s]) for s in sigs]
    for label, _, _ in HYPER_ROWS:
        t.add([label] + [str(values[s][label]) for s in sigs], "models/<model>/<spec>/config.json")
    for m in config["models"]:
        c = res.model_config(m)
        if c:
            pe = {k: v for k, v in c.get("pe_resolved", {}).items() if k != "slopes"}
            desc = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in pe.items())
            t.notes.append(f"{m}: {c['model']['pe']['name']}" + (f" ({desc})" if desc else ""))
    if not sigs:
        t.notes.append("not run: no trained model found")
    return t


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
        dirty = None if not commit else bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=10, cwd=src).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", None
    import torch

    return {
        "config_file": str(config_path),
        "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "run_name": config["run_name"],
        "git_commit": commit or "unknown (not a git checkout)",
        "git_dirty": dirty,
        "packages": {p: version(p) for p in ("expe-repro", "torch", "numpy", "sentencepiece", "lm_eval", "snakemake",
                                              "pandas", "seaborn", "datasets")},
        "python": platform.python_version(),
        "hardware": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "device_config": config["device"],
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def build_all(config: dict, config_path: str, results_dir: str | Path, out_dir: str | Path) -> list[Table]:
    res = Results(results_dir)
    out = ensure_dir(out_dir)
    tab = config["tables"]
    ms = config["eval"]["multiples"]
    tables = [
        loss_table("section41", "Section 4.1: loss at ev x the training length (paper: 35M models, L = 512)",
                   tab["section41"], [k for k in (1, 2, 4) if k in ms] or ms, P.SECTION41, res),
        loss_table("ablations", "Table 7: ExPE ablations (epoch time relative to ExPE)", tab["ablations"],
                   [k for k in (1, 2, 4) if k in ms] or ms, P.ABLATIONS, res,
                   time_ref={label: parse_ref(tab["ablations"]["ExPE"])[0] for label in tab["ablations"]}
                   if "ExPE" in tab["ablations"] else {}, time_label="epoch time"),
        loss_table("large", "Section 4.2: Llama-architecture models (training time relative to Llama)", tab["large"],
                   [k for k in (1, 2, 4) if k in ms] or ms, P.LARGE, res,
                   time_ref=large_time_refs(tab["large"], res), time_label="training time"),
        loss_table("scaling", "Section 4.3: scaling the encoding at inference (no extra training)", tab["scaling"],
                   ms, P.SCALING, res),
        benchmark_table(tab["benchmarks"], config["benchmarks"]["tasks"], res),
        hyper_table(config, res),
    ]
    prov = provenance(config, config_path)
    note = (f"Generated {prov['date']} from run `{prov['run_name']}`, config sha256 {prov['config_sha256'][:12]}, "
            f"git {prov['git_commit'][:12] if prov['git_dirty'] is not None else 'unknown'}"
            f"{' (dirty)' if prov['git_dirty'] else ''}; see provenance.json.")
    for t in tables:
        if t.name not in ("hyperparameters", "benchmarks"):
            t.notes.append("Ours: mean next-token loss (nats) on held-out documents; '(paper)' columns are the "
                           "paper's published numbers, not ours.")
        t.notes.append(note)
        t.write(out)
    write_json(out / "provenance.json", prov)
    write_text(out / "README.md", index_page(config, tables, prov, results_dir))
    return tables


def index_page(config: dict, tables: list[Table], prov: dict, results_dir) -> str:
    manifests = sorted(Path(results_dir).glob("data/*/shards/manifest.json"), key=lambda p: p.stat().st_mtime)
    shards = manifests[-1] if manifests else Path("/nonexistent")  # the newest data of this run
    corpus = shards.parent.parent / "corpus" / "manifest.json"
    lines = [
        f"# Regenerated tables — run `{config['run_name']}`",
        "",
        "Produced by `snakemake paper_tables`; every number comes from the result files named in each",
        "CSV's `source` column (under `results/<run_name>/`). Columns headed *(paper)* hold the paper's",
        "published numbers for comparison only.",
        "",
    ]
    if corpus.exists() and shards.exists():
        c, s = json.loads(corpus.read_text()), json.loads(shards.read_text())
        sp = s["splits"]
        lines += [
            f"Data: source `{c['source']}`, {c['documents_kept']} documents; tokens train/dev/test "
            f"{sp['train']['n_tokens']:,} / {sp['dev']['n_tokens']:,} / {sp['test']['n_tokens']:,} "
            f"(vocab {s['vocab_size']}).",
            "",
        ]
    for t in tables:
        lines += [t.markdown(), f"Files: [{t.name}.md]({t.name}.md), [{t.name}.tex]({t.name}.tex), "
                  f"[{t.name}.csv]({t.name}.csv)", ""]
    lines += ["## Plots", ""]
    for p, cap in (("loss_vs_length", "Loss against evaluation length (log2 x axis)"),
                   ("per_position", "Per-position loss at the longest evaluated length"),
                   ("training_curves", "Training loss"),
                   ("position_values", "ExPE / ExQPE position values in fp32 and bf16")):
        lines += [f"### {cap}", "", f"![{cap}](plots/{p}.png)", "", f"[PDF](plots/{p}.pdf)", ""]
    lines += ["## Provenance", "", "```json", json.dumps(prov, indent=2), "```", ""]
    return "\n".join(lines)

