"""Statistics over seeds and documents, shared by tables, plots and the README summary.

- `t_interval`: mean over seeds with a 95% Student-t interval (n - 1 degrees of freedom).
- `paired_bootstrap`: the difference of two models' token-weighted mean loss, with a 95% percentile
  interval from resampling test documents and seeds jointly for both models (paired: the same
  documents, and seed i of one model with seed i of the other, which saw the same training batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}


def t975(df: int) -> float:
    """Two-sided 95% critical value of Student's t with df degrees of freedom."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:  # scipy is optional: the table, interpolated between its rows
        keys = sorted(_T975)
        if df >= keys[-1]:
            return 1.96 + (_T975[keys[-1]] - 1.96) * keys[-1] / df
        lo = max(k for k in keys if k <= df)
        hi = min(k for k in keys if k >= df)
        return _T975[lo] if lo == hi else _T975[lo] + (_T975[hi] - _T975[lo]) * (df - lo) / (hi - lo)


@dataclass
class Interval:
    mean: float
    half: float | None  # None with a single seed: no interval
    n: int

    @property
    def lo(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def hi(self) -> float | None:
        return None if self.half is None else self.mean + self.half


def t_interval(values) -> Interval:
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    if len(x) == 0:
        return Interval(float("nan"), None, 0)
    if len(x) == 1:
        return Interval(float(x[0]), None, 1)
    return Interval(float(x.mean()), t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x)), len(x))


def half_width(values) -> float:
    """pandas aggregation helper: the 95% t half-width (NaN with fewer than two values)."""
    h = t_interval(values).half
    return float("nan") if h is None else h


@dataclass
class Difference:
    mean: float
    lo: float
    hi: float
    n_seeds: int
    n_docs: int

    @property
    def significant(self) -> bool:
        return not (self.lo <= 0 <= self.hi)


def _per_seed_mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """sums, counts: (seeds, docs) -> token-weighted mean loss per seed."""
    return sums.sum(1) / counts.sum(1)


def paired_bootstrap(a_sums: np.ndarray, a_counts: np.ndarray, b_sums: np.ndarray, b_counts: np.ndarray,
                     n_boot: int = 2000, seed: int = 0) -> Difference:
    """mean(A) - mean(B) over seeds of token-weighted document losses, with a 95% percentile interval.

    Each argument is (seeds, docs). A replicate draws seed indices and document indices with
    replacement, the same for A and B; seeds beyond the shorter model's count are not paired."""
    n_seeds = min(len(a_sums), len(b_sums))
    a_sums, a_counts, b_sums, b_counts = a_sums[:n_seeds], a_counts[:n_seeds], b_sums[:n_seeds], b_counts[:n_seeds]
    n_docs = a_sums.shape[1]
    point = float(_per_seed_mean(a_sums, a_counts).mean() - _per_seed_mean(b_sums, b_counts).mean())
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n_seeds, (n_boot, n_seeds))[:, :, None]
    d = rng.integers(0, n_docs, (n_boot, n_docs))[:, None, :]
    ma = a_sums[s, d].sum(2) / np.maximum(a_counts[s, d].sum(2), 1)  # (n_boot, n_seeds)
    mb = b_sums[s, d].sum(2) / np.maximum(b_counts[s, d].sum(2), 1)
    reps = ma.mean(1) - mb.mean(1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Difference(point, float(lo), float(hi), n_seeds, n_docs)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """A proportion with its 95% Wilson score interval: (p, lo, hi)."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def fmt_interval(iv: Interval, digits: int = 3) -> str:
    if iv.n == 0:
        return "—"
    if iv.half is None:
        return f"{iv.mean:.{digits}f} (1 seed)"
    return f"{iv.mean:.{digits}f} ± {iv.half:.{digits}f}"


def fmt_difference(d: Difference, digits: int = 3) -> str:
    mark = "" if d.significant else " (n.s.)"
    return f"{d.mean:+.{digits}f} [{d.lo:+.{digits}f}, {d.hi:+.{digits}f}]{mark}"
