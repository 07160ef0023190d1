"""Table rendering: cells (an estimate over seeds, a paper number, a paired difference, a reason it is
missing) and one `Table` written as Markdown, LaTeX and CSV (numbers as numbers: an estimate is three
CSV columns, mean / ci95 / seeds)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expe.io import write_text
from expe.report import stats

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "—": "--", "^": r"\^{}", "±": r"$\pm$", "−": "-",
        "≥": r"$\geq$", "<": r"$<$", ">": r"$>$", "✓": r"\checkmark{}"}


@dataclass
class Est:
    """An estimate over seeds: mean, 95% t half-width (None for one seed), number of seeds."""

    mean: float
    half: float | None
    n: int


@dataclass
class Paper:
    value: float


@dataclass
class Diff:
    """A paired difference A - B over seeds (stats.SeedDifference) with its verdict; `primary` cells belong
    to the declared family and carry Holm's adjusted p."""

    d: stats.SeedDifference
    verdict: str
    primary: bool = False
    p_holm: float | None = None
    tost_p: float | None = None

    SHORT = {"A lower": "lower", "A higher": "higher", "inconclusive": "inconclusive"}

    @property
    def mark(self) -> str:
        v = self.SHORT.get(self.verdict, "≈" if self.verdict.startswith("equivalent") else self.verdict)
        return v + ("†" if self.primary else "")


Cell = Est | Paper | Diff | float | int | str | None


def _esc(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


@dataclass
class Table:
    name: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    keys: list[dict[str, str]] = field(default_factory=list)  # per row: model entry, variant, sources
    notes: list[str] = field(default_factory=list)
    digits: int = 3

    def add(self, cells: list[Cell], **key: str) -> None:
        self.rows.append(cells)
        self.keys.append(key)

    def text(self, c: Cell, tex: bool = False) -> str:
        if c is None:
            return "—"
        if isinstance(c, str):
            return _esc(c) if tex else c
        if isinstance(c, Paper):
            return f"{c.value:.2f}"
        if isinstance(c, Est):
            if c.n == 0 or c.mean is None or (isinstance(c.mean, float) and math.isnan(c.mean)):
                return "—"
            if c.half is None:
                return f"{c.mean:.{self.digits}f} (1 seed)" if not tex else rf"{c.mean:.{self.digits}f}{{\scriptsize (1 seed)}}"
            if tex:
                return rf"{c.mean:.{self.digits}f}{{\scriptsize $\pm${c.half:.{self.digits}f}}}"
            return f"{c.mean:.{self.digits}f} ± {c.half:.{self.digits}f}"
        if isinstance(c, Diff):
            d = c.d
            s = f"{d.mean:+.{self.digits}f}" + (f" [{d.lo:+.{self.digits}f}, {d.hi:+.{self.digits}f}]" if d.lo is not None
                                                else " (1 seed)")
            s += f" {c.mark}"
            return _esc(s) if tex else s
        if isinstance(c, float):
            return f"{c:.{self.digits}f}"
        return str(c)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", f"*{self.caption}*", "", "| " + " | ".join(self.columns) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        for row in self.rows:
            out.append("| " + " | ".join(self.text(c) for c in row) + " |")
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def latex(self) -> str:
        spec = "l" + "r" * (len(self.columns) - 1)
        lines = [f"% {self.title}", r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{3pt}",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_esc(c) for c in self.columns) + r" \\",
                 r"\midrule"]
        for row in self.rows:
            lines.append(" & ".join(self.text(c, tex=True) for c in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_esc(self.title)}. {_esc(self.caption)}}}",
                  rf"\label{{tab:{self.name}}}", r"\end{table}"]
        lines += [f"% {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Numbers as numbers: an estimate is three columns (mean, ci95 half-width, seeds)."""
        header: list[str] = []
        kinds = []
        for j, col in enumerate(self.columns):
            cells = [r[j] for r in self.rows]
            if any(isinstance(c, Est) for c in cells):
                header += [col, f"{col} ci95", f"{col} seeds"]
                kinds.append("est")
            elif any(isinstance(c, Diff) for c in cells):
                header += [col, f"{col} lo", f"{col} hi", f"{col} seeds", f"{col} p", f"{col} p_holm", f"{col} verdict"]
                kinds.append("diff")
            else:
                header.append(col)
                kinds.append("plain")
        header += ["model_entry", "variant", "source"]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        for row, key in zip(self.rows, self.keys):
            out: list[Any] = []
            for c, kind in zip(row, kinds):
                if kind == "est":
                    out += ([c.mean, "" if c.half is None else c.half, c.n] if isinstance(c, Est) else
                            [self._plain(c), "", ""])
                elif kind == "diff":
                    out += ([c.d.mean, c.d.lo, c.d.hi, c.d.n_seeds, c.d.p, c.p_holm, c.verdict + (" (primary)" if c.primary
                                                                                         else " (exploratory)")]
                            if isinstance(c, Diff) else [self._plain(c), "", "", "", "", "", ""])
                else:
                    out.append(self._plain(c))
            w.writerow(out + [key.get("model", ""), key.get("variant", ""), key.get("source", "")])
        return buf.getvalue()

    @staticmethod
    def _plain(c: Cell) -> Any:
        if c is None:
            return ""
        if isinstance(c, Paper):
            return f"{c.value:.2f}"
        return c

    def write(self, out_dir: Path) -> None:
        for ext, text in (("md", self.markdown()), ("tex", self.latex()), ("csv", self.csv())):
            write_text(out_dir / f"{self.name}.{ext}", text, what=f"table {self.name}.{ext}",
                       kept="results are kept; free space and rerun")


# --------------------------------------------------------------------------- cells from the tidy data
