"""Statistics for every figure the harness reports: intervals, paired and unpaired tests, Holm.

One module so that every criterion, the report and the baseline comparison compute uncertainty the
same way. Thin over numpy/scipy; inputs are validated here so that a caller's mistake (k > n, two
unpaired lists of different length) is a one-line ShiptwoError, never a silent NaN.

Direction convention for every test: alternative="greater" means the first sample (A) is better
(larger) than the second (B); for McNemar that is b > c, "B lost problems A solved".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from shiptwo.errors import ShiptwoError

ALTERNATIVES = ("two-sided", "greater", "less")
STATS = ("mean", "median")


def _alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ShiptwoError(f"alternative: {alternative!r} is not one of {', '.join(ALTERNATIVES)}")
    return alternative


def _conf(conf: float) -> float:
    if not 0.0 < conf < 1.0:
        raise ShiptwoError(f"conf: {conf!r} must lie strictly between 0 and 1")
    return float(conf)


def _values(values, name: str, min_n: int = 1) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size < min_n:
        raise ShiptwoError(f"{name}: needs at least {min_n} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ShiptwoError(f"{name}: contains a non-finite value")
    return arr


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _values(a, "a"), _values(b, "b")
    if a.size != b.size:
        raise ShiptwoError(f"paired samples differ in length: {a.size} vs {b.size}")
    return a, b


def wilson_interval(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (0..1); well-behaved at k = 0 and k = n."""
    conf = _conf(conf)
    if int(n) != n or int(k) != k or n <= 0 or not 0 <= k <= n:
        raise ShiptwoError(f"wilson_interval: need integers 0 <= k <= n and n > 0, got k={k}, n={n}")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + conf / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ci(values: Sequence[float], stat: str = "mean", conf: float = 0.95,
                 n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean or median; needs >= 2 values (one has no spread)."""
    arr = _values(values, "values", min_n=2)
    if stat not in STATS:
        raise ShiptwoError(f"stat: {stat!r} is not one of {', '.join(STATS)}")
    conf = _conf(conf)
    if np.all(arr == arr[0]):  # no spread: every resample gives the same figure
        return (float(arr[0]), float(arr[0]))
    from scipy.stats import bootstrap

    func = np.mean if stat == "mean" else np.median
    res = bootstrap((arr,), func, n_resamples=int(n_boot), confidence_level=conf,
                    method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def cluster_ratio_ci(sums: Sequence[float], counts: Sequence[float], conf: float = 0.95,
                     n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(sums) / sum(counts), resampling whole clusters (a text's
    positions, say): items within a cluster are correlated, so resampling items would be too narrow."""
    s, c = _pair(sums, counts)
    if s.size < 2 or np.any(c <= 0):
        raise ShiptwoError(f"cluster_ratio_ci: need >= 2 clusters with positive counts, got {c.tolist()}")
    conf = _conf(conf)
    idx = np.random.default_rng(seed).integers(0, s.size, size=(int(n_boot), s.size))
    ratios = s[idx].sum(axis=1) / c[idx].sum(axis=1)
    lo, hi = np.quantile(ratios, [(1 - conf) / 2, (1 + conf) / 2])
    return (float(lo), float(hi))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], stat: str = "mean",
                        conf: float = 0.95, n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of stat(a - b) over pairs (a[i], b[i]); resampling pairs keeps their link."""
    a, b = _pair(a, b)
    return bootstrap_ci(a - b, stat=stat, conf=conf, n_boot=n_boot, seed=seed)


def mcnemar_exact(b: int, c: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value on the discordant pairs: b = pass in A & fail in B, c = fail in A & pass in B.

    Under H0 b ~ Binomial(b + c, 1/2); "greater" tests b > c (B lost problems A solved).
    No discordant pair is no evidence of change: p = 1.
    """
    alternative = _alternative(alternative)
    if int(b) != b or int(c) != c or b < 0 or c < 0:
        raise ShiptwoError(f"mcnemar_exact: counts must be non-negative integers, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(b), int(b + c), 0.5, alternative=alternative).pvalue)


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p-value of the paired differences a - b (zero differences dropped).

    All differences zero is no evidence of change: p = 1.
    """
    alternative = _alternative(alternative)
    a, b = _pair(a, b)
    if np.all(a == b):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(a, b, zero_method="wilcox", alternative=alternative).pvalue)


def mann_whitney_u(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> float:
    """Mann-Whitney U p-value for two independent samples (e.g. repeated timings of two runs)."""
    alternative = _alternative(alternative)
    a, b = _values(a, "a"), _values(b, "b")
    from scipy.stats import mannwhitneyu

    p = float(mannwhitneyu(a, b, alternative=alternative, method="auto").pvalue)
    return 1.0 if math.isnan(p) else p  # scipy gives NaN when every value is tied: no evidence


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (family-wise error control)."""
    p = _values(pvalues, "pvalues", min_n=0)
    if np.any((p < 0) | (p > 1)):
        raise ShiptwoError("holm: p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def extreme(values: Sequence[float], worst: str = "max") -> float:
    """The max (or `worst="min"`) of `values`, NaN when any value is NaN: Python's max/min keep
    whichever argument came first against a NaN, so a runtime's NaN logits, maximized over prompts,
    would read as perfect agreement. ShiptwoError when there is no value (nothing was compared)."""
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ShiptwoError(f"extreme: no value to take the {worst} of")
    return float(np.max(arr) if worst == "max" else np.min(arr))


def equivalent(a: Sequence[float], b: Sequence[float], margin: float,
               conf: float = 0.90) -> tuple[bool, tuple[float, float]]:
    """TOST-style equivalence: the paired bootstrap CI of mean(a - b) lies inside [-margin, +margin].

    conf = 0.90 gives two one-sided tests at 5 % each.
    """
    if not margin > 0:
        raise ShiptwoError(f"equivalent: margin must be positive, got {margin!r}")
    lo, hi = paired_bootstrap_ci(a, b, stat="mean", conf=conf)
    return (bool(-margin <= lo and hi <= margin), (lo, hi))


def proportion_stderr(p: float, n: int) -> float:
    """Standard error sqrt(p(1-p)/n) of a proportion measured on n samples (0..1 units)."""
    if n <= 0 or not 0.0 <= p <= 1.0:
        raise ShiptwoError(f"proportion_stderr: need 0 <= p <= 1 and n > 0, got p={p}, n={n}")
    return math.sqrt(p * (1 - p) / n)


@dataclass
class Stat:
    """A repeated measurement: median, range and every run (for intervals and unpaired tests)."""

    median: float
    min: float
    max: float
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        return cls(statistics.median(values), min(values), max(values), [float(v) for v in values])

    def interval(self, conf: float = 0.95) -> tuple[float, float] | None:
        """Bootstrap interval of the median over the runs; None for a single run (no spread to resample)."""
        return bootstrap_ci(self.values, stat="median", conf=conf) if len(self.values) >= 2 else None

    def text(self, scale: float = 1.0, fmt: str = ".1f") -> str:
        return f"{self.median * scale:{fmt}} [{self.min * scale:{fmt}}-{self.max * scale:{fmt}}]"
