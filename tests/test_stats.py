"""shiptwo.stats against scipy on fixed data and against hand-computed McNemar, Wilson and Holm figures."""

import math

import numpy as np
import pytest
import scipy.stats as ss

from shiptwo import stats
from shiptwo.errors import ShiptwoError

# fixed data: 20 paired per-sample values (e.g. per-text losses of two runs)
A = [2.31, 2.05, 2.88, 1.97, 2.44, 2.61, 2.12, 2.75, 2.39, 2.02,
     2.56, 2.29, 2.93, 2.18, 2.47, 2.66, 2.08, 2.35, 2.71, 2.24]
B = [2.40, 2.11, 2.86, 2.10, 2.52, 2.60, 2.25, 2.83, 2.45, 2.09,
     2.70, 2.31, 3.05, 2.20, 2.58, 2.71, 2.19, 2.36, 2.80, 2.37]


# --- Wilson --------------------------------------------------------------------------------------

def test_wilson_hand_computed():
    # 8/10: centre (0.8 + z^2/20) / (1 + z^2/10), half-width z*sqrt(0.016 + z^2/400) / (1 + z^2/10)
    lo, hi = stats.wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94331, abs=1e-4)
    # 0/164: the upper bound is z^2 / (n + z^2)
    z2 = 1.959963984540054 ** 2
    assert stats.wilson_interval(0, 164) == pytest.approx((0.0, z2 / (164 + z2)))
    assert stats.wilson_interval(164, 164) == pytest.approx((1 - z2 / (164 + z2), 1.0))


@pytest.mark.parametrize("k,n,conf", [(0, 1, 0.95), (3, 7, 0.95), (49, 164, 0.95), (82, 164, 0.9), (160, 164, 0.99)])
def test_wilson_matches_scipy(k, n, conf):
    ref = ss.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
    assert stats.wilson_interval(k, n, conf) == pytest.approx((ref.low, ref.high), abs=1e-12)


@pytest.mark.parametrize("k,n", [(5, 4), (-1, 4), (1, 0), (1.5, 4)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ShiptwoError, match="wilson_interval"):
        stats.wilson_interval(k, n)


# --- McNemar -------------------------------------------------------------------------------------

def test_mcnemar_hand_computed():
    # b=10, c=2: under H0 b ~ Bin(12, 1/2); P(X >= 10) = (66 + 12 + 1) / 4096
    assert stats.mcnemar_exact(10, 2, "greater") == pytest.approx(79 / 4096)
    assert stats.mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert stats.mcnemar_exact(10, 2, "less") == pytest.approx(1 - 13 / 4096)
    assert stats.mcnemar_exact(2, 10, "less") == pytest.approx(79 / 4096)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(3, 3) == 1.0


@pytest.mark.parametrize("b,c", [(1, 0), (7, 3), (20, 9), (40, 41)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    for alt in stats.ALTERNATIVES:
        assert stats.mcnemar_exact(b, c, alt) == pytest.approx(ss.binomtest(b, b + c, 0.5, alternative=alt).pvalue)


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ShiptwoError, match="non-negative"):
        stats.mcnemar_exact(-1, 2)
    with pytest.raises(ShiptwoError, match="alternative"):
        stats.mcnemar_exact(1, 2, "bigger")


# --- rank tests ----------------------------------------------------------------------------------

def test_wilcoxon_matches_scipy_and_hand_value():
    for alt in stats.ALTERNATIVES:
        assert stats.wilcoxon_signed_rank(A, B, alt) == pytest.approx(ss.wilcoxon(A, B, alternative=alt).pvalue)
    # six positive differences: exact one-sided p = 1 / 2^6
    assert stats.wilcoxon_signed_rank([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1], "greater") == pytest.approx(1 / 64)
    assert stats.wilcoxon_signed_rank(A, A) == 1.0
    with pytest.raises(ShiptwoError, match="differ in length"):
        stats.wilcoxon_signed_rank(A, B[:-1])


def test_mann_whitney_matches_scipy_and_hand_value():
    x, y = A[:8], B[5:17]
    for alt in stats.ALTERNATIVES:
        assert stats.mann_whitney_u(x, y, alt) == pytest.approx(ss.mannwhitneyu(x, y, alternative=alt).pvalue)
    # complete separation of 3 vs 3: exact one-sided p = 1 / C(6, 3)
    assert stats.mann_whitney_u([4, 5, 6], [1, 2, 3], "greater") == pytest.approx(1 / 20)
    assert stats.mann_whitney_u([5, 5, 5], [5, 5, 5]) == 1.0


# --- bootstrap -----------------------------------------------------------------------------------

def test_bootstrap_matches_scipy_percentile_and_is_reproducible():
    for stat, func in (("mean", np.mean), ("median", np.median)):
        ref = ss.bootstrap((np.array(A),), func, n_resamples=2000, confidence_level=0.9, method="percentile",
                           rng=np.random.default_rng(7)).confidence_interval
        got = stats.bootstrap_ci(A, stat=stat, conf=0.9, n_boot=2000, seed=7)
        assert got == pytest.approx((ref.low, ref.high))
        assert got == stats.bootstrap_ci(A, stat=stat, conf=0.9, n_boot=2000, seed=7)
        assert got[0] <= func(A) <= got[1]


def test_bootstrap_mean_agrees_with_t_interval_on_large_sample():
    x = np.random.default_rng(1).normal(10.0, 2.0, 400)
    t_lo, t_hi = ss.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=ss.sem(x))
    lo, hi = stats.bootstrap_ci(x)
    assert lo == pytest.approx(t_lo, abs=0.05) and hi == pytest.approx(t_hi, abs=0.05)


def test_bootstrap_edge_cases():
    assert stats.bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    with pytest.raises(ShiptwoError, match="at least 2"):
        stats.bootstrap_ci([1.0])
    with pytest.raises(ShiptwoError, match="non-finite"):
        stats.bootstrap_ci([1.0, math.nan])
    with pytest.raises(ShiptwoError, match="stat"):
        stats.bootstrap_ci([1.0, 2.0], stat="mode")


def test_paired_bootstrap_is_bootstrap_of_differences():
    d = np.array(A) - np.array(B)
    assert stats.paired_bootstrap_ci(A, B, n_boot=3000) == stats.bootstrap_ci(d, n_boot=3000)
    lo, hi = stats.paired_bootstrap_ci(A, B)
    assert hi < 0  # A is consistently lower than B: the paired interval excludes 0


# --- Holm, equivalence, stderr -------------------------------------------------------------------

def test_holm_hand_computed():
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> raised to 0.06 (monotone)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []
    with pytest.raises(ShiptwoError, match="holm"):
        stats.holm([1.2])


def test_equivalent():
    rng = np.random.default_rng(3)
    base = rng.normal(2.0, 0.3, 200)
    ok, (lo, hi) = stats.equivalent(base + rng.normal(0, 0.01, 200), base, margin=0.05)
    assert ok and -0.05 <= lo <= hi <= 0.05
    ok, (lo, hi) = stats.equivalent(base + 0.1, base, margin=0.05)
    assert not ok and lo == pytest.approx(0.1)


def test_proportion_stderr_issue_figure():
    # issue 13: at p = 0.5 on 164 problems the standard error is 3.9 points
    assert 100 * stats.proportion_stderr(0.5, 164) == pytest.approx(3.904, abs=1e-3)


def test_cluster_ratio_ci_resamples_whole_clusters():
    # equal cluster sizes: the ratio of sums is the mean of cluster means, so the interval is the
    # plain bootstrap's of those means (same resampling scheme, up to the generator's draws)
    sums, counts = [a * 5 for a in A], [5] * len(A)
    lo, hi = stats.cluster_ratio_ci(sums, counts, n_boot=4000)
    ref = stats.bootstrap_ci(A, n_boot=4000)
    assert lo <= np.mean(A) <= hi and abs(lo - ref[0]) < 0.03 and abs(hi - ref[1]) < 0.03
    # correlated items: 4 clusters of 50 identical items; treating the 200 items as independent
    # gives a far narrower (wrong) interval than resampling the 4 clusters
    vals = [0.0] * 50 + [1.0] * 50 + [0.0] * 50 + [1.0] * 50
    c_lo, c_hi = stats.cluster_ratio_ci([0.0, 50.0, 0.0, 50.0], [50] * 4)
    i_lo, i_hi = stats.bootstrap_ci(vals)
    assert c_hi - c_lo > 3 * (i_hi - i_lo)
    assert stats.cluster_ratio_ci([1.0, 2.0], [1, 1], seed=3) == stats.cluster_ratio_ci([1.0, 2.0], [1, 1], seed=3)
    with pytest.raises(ShiptwoError):
        stats.cluster_ratio_ci([1.0], [1])
    with pytest.raises(ShiptwoError):
        stats.cluster_ratio_ci([1.0, 2.0], [1, 0])
