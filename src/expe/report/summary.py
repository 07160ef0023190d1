"""The generated prose of the report: the README's results summary (every number one of the tables'),
and the index page of the tables folder."""

from __future__ import annotations

import json
from typing import Any

from expe.report.catalog import panels
from expe.report.render import Cell, Diff, Est, Table
from expe.report.results import Results


def _fmt_est(c: Cell, digits: int = 2) -> str:
    if isinstance(c, Est) and c.n:
        return f"{c.mean:.{digits}f}" + (f" ± {c.half:.{digits}f}" if c.half is not None else "")
    return str(c)


def summary_markdown(config: dict, res: Results, tables: list[Table]) -> str:
    """The README's results section, generated from the tables (so every number in it is one of theirs)."""
    by = {t.name: t for t in tables}
    lines = []
    s41 = by["section41"]
    ks = [c.split("=")[1] for c in s41.columns if c.startswith("Loss ev=")]
    lines.append(f"Loss at ev = {' / '.join(ks)} (mean ± 95% interval over seeds; Section 4.1 table):")
    lines.append("")
    for row in s41.rows:
        vals = [_fmt_est(c) for c, col in zip(row, s41.columns) if col.startswith("Loss ev=")]
        lines.append(f"- {row[0]}: {' / '.join(vals)}")
    lines.append("")
    prim = by.get("primary")
    if prim is not None and prim.rows:
        a = config["stats"]["alpha"]
        lines.append(f"The primary family (`primary.md`: the paper's claims, declared in the config, Holm's correction "
                     f"over the family at α = {a:g}; A − B of the loss, negative: A lower, 95% t-interval over seeds):")
        lines.append("")
        for row in prim.rows:
            name, ev, mean, iv, n, _, p_holm, _, verdict = row
            if verdict == "not run":
                lines.append(f"- {name}, ev={ev}: {mean}")
                continue
            lines.append(f"- {name}, ev={ev}: {mean} {iv}, {n} seeds, p (Holm) {p_holm}: **{verdict}**")
        lines.append("")
    diff = by["differences"]
    cells = [c for row in diff.rows for c in row[2:] if isinstance(c, Diff)]
    explo = [c for c in cells if not c.primary]
    if explo:
        n_dir = sum(c.verdict in ("A lower", "A higher") for c in explo)
        n_eq = sum(c.verdict.startswith("equivalent") for c in explo)
        lines.append(f"Every other cell of `differences.md` ({len(explo)} cells) is exploratory, judged alone without "
                     f"correction: {n_dir} show a direction at p < {config['stats']['alpha']:g}, {n_eq} are equivalent "
                     f"within ±{config['stats']['margin']:g} nats, {len(explo) - n_dir - n_eq} are inconclusive; none "
                     "is a finding of this reproduction.")
        lines.append("")
    lines += context_use_sentence(config, by["context_use"])
    sl = by["sliding"]
    expe_rows = [r for r in sl.rows if r[0] in config["tables"].get("section41", {})]  # the Section 4.1 rows
    if expe_rows:
        kss = [c.split("=")[1] for c in sl.columns[1:]]
        lines.append(f"Sliding-window loss at ev = {' / '.join(kss)} (the same tokens at every ev; `sliding.md`):")
        lines.append("")
        for row in expe_rows:
            lines.append(f"- {row[0]}: {' / '.join(_fmt_est(c) for c in row[1:])}")
        lines.append("")
    lines += _heldout_lines(by.get("benchmarks"))
    return "\n".join(lines) + "\n"


def _heldout_lines(t: Table | None) -> list[str]:
    """Our own lm-eval task's accuracy per model (never one of the paper's benchmarks), from `benchmarks.md`."""
    from expe.report.tables import HELDOUT_COLUMN

    if t is None or f"{HELDOUT_COLUMN} acc" not in t.columns:
        return []
    j = t.columns.index(f"{HELDOUT_COLUMN} acc")
    chance = t.rows[0][t.columns.index(f"{HELDOUT_COLUMN} chance")] if t.rows else None
    lines = [f"{HELDOUT_COLUMN[0].upper()}{HELDOUT_COLUMN[1:]}, lm-eval acc (our own task, not a paper benchmark; "
             f"chance {chance:.2f}; `benchmarks.md`):" if isinstance(chance, float) else
             f"{HELDOUT_COLUMN}, lm-eval acc (`benchmarks.md`):", ""]
    lines += [f"- {row[0]}: {_fmt_est(row[j])}" for row in t.rows]
    return lines + [""]


def context_use_sentence(config: dict, t: Table) -> list[str]:
    """How much of its window a default model uses, from the context_use table's cells: the context gain
    and the share of it already reached with 8-15 tokens of context (the models of Sections 4.1 and 4.2,
    not the inference-time variants)."""
    labels = {lb for tab in ("section41", "large") for lb, ref in config["tables"].get(tab, {}).items() if "@" not in ref}
    rows = [r for r in t.rows if r[0] in labels and isinstance(r[-1], Est) and r[-1].n]
    if not rows:
        return []
    last = t.columns[-2]  # the last bin, c=L/2..L
    gains = [r[-1].mean for r in rows]
    text = (f"Context use at ev = 1 (`context_use.md`): the loss of the {len(rows)} models of Sections 4.1 and 4.2 "
            f"falls by {min(gains):.2f}–{max(gains):.2f} nats from 1–4 tokens of context to {last.split('=')[1]} "
            f"(the context gain, mean over seeds)")
    mid = "c=8–15"
    if mid in t.columns and mid != last:
        j = t.columns.index(mid)
        share = [(r[-1].mean + r[-2].mean - r[j].mean) / r[-1].mean for r in rows if r[-1].mean > 0 and isinstance(r[j], Est)]
        further = [r[-2].mean - r[j].mean for r in rows if isinstance(r[j], Est)]
        if share:
            text += (f"; with 8–15 tokens of context they already have {min(share):.0%}–{max(share):.0%} of that gain, "
                     f"and the rest of the window (up to {last.split('–')[-1]} tokens) changes the loss by a further "
                     f"{min(further):+.2f} to {max(further):+.2f} nats")
    return [text + ".", ""]


def index_page(config: dict, tables: list[Table], prov: dict, res: Results, summary: str) -> str:
    lines = [
        f"# Regenerated tables — run `{config['run_name']}`",
        "",
        "Produced by `snakemake paper_tables`. Every number comes from the result files named in each CSV's",
        "`source` column (under `results/<run_name>/`, with their sha256 in `data/results.csv`, the tidy data",
        "every table and plot is a view of). Columns headed *(paper)* hold the paper's published numbers for",
        "comparison only.",
        "",
    ]
    manifest_path = res.path(res.index["data"]) if res.index.get("data") else None
    if manifest_path and manifest_path.exists():
        s = json.loads(manifest_path.read_text())
        c, sp = s.get("corpus", {}), s["splits"]
        lines += [
            f"Data: source `{c.get('source', '?')}`, {c.get('documents_kept', '?')} documents; tokens train/dev/test "
            f"{sp['train']['n_tokens']:,} / {sp['dev']['n_tokens']:,} / {sp['test']['n_tokens']:,} "
            f"(documents {sp['train']['n_docs']} / {sp['dev']['n_docs']} / {sp['test']['n_docs']}; vocab "
            f"{s['vocab_size']}).",
            "",
        ]
    lines += ["## Summary", "", summary]
    for t in tables:
        lines += [t.markdown(), f"Files: [{t.name}.md]({t.name}.md), [{t.name}.tex]({t.name}.tex), "
                  f"[{t.name}.csv]({t.name}.csv)", ""]
    lines += ["## Plots", ""]
    for p, cap in (("loss_vs_length", "Loss against evaluation length (log2 x axis), 95% seed bands"),
                   ("per_position", "Per-position loss at 16x the training length"),
                   ("context", "Loss beyond the training length and sliding-window loss"),
                   ("training_curves", "Training loss"),
                   ("position_values", "ExPE / ExQPE position values in fp32 and bf16")):
        lines += [f"### {cap}", "", f"![{cap}](plots/{p}.png)", "", f"[PDF](plots/{p}.pdf)", ""]
    for key, title, *_ in panels(config):
        cap = f"Context use, {title}: loss at ev = 1 by tokens of context, 95% seed bands"
        lines += [f"### {cap}", "", f"![{cap}](plots/context_use_{key}.png)", "", f"[PDF](plots/context_use_{key}.pdf)", ""]
    lines += ["## Provenance", "", "```json", json.dumps(prov, indent=2), "```", ""]
    return "\n".join(lines)
