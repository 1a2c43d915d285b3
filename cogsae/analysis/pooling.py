"""Pooling across concepts: one verdict per claim from many concepts' paired differences.

Within one concept a claim "readout A beats readout B" is the corrected repeated-CV t-test
of the per-fold AUROC differences (`paired_difference`, the test `ensemble.compare` runs).
Across concepts each concept c gives an estimate d_c (the mean over folds of
AUROC_A - AUROC_B) and its corrected variance v_c = (1/J + n_test/n_train) s_c^2, and
`pool` combines them by a random-effects meta-analysis (DerSimonian & Laird 1986): the
concepts' true differences vary around a mean with between-concept variance tau^2,
estimated by Paule-Mandel (statsmodels ``combine_effects(method_re="iterated")``); the
interval and p of the mean use the Hartung-Knapp-Sidik-Jonkman variance with a t_{k-1}
reference, which keeps the nominal rate with a few dozen heterogeneous concepts where the
normal reference rejects too often. A sign test over the concepts' signs stands beside it.

`mean_interval`, `mean_ranks`, `win_counts` and `leave_one_out_best` summarize readouts
over concepts (a table of [concepts, readouts] held-out AUROCs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cogsae.analysis.ensemble import _corrected_se
from cogsae.constants import ALPHA

POOLING = (
    "random-effects meta-analysis (DerSimonian & Laird 1986) of the per-concept corrected "
    "repeated-CV differences: Paule-Mandel tau^2, Hartung-Knapp-Sidik-Jonkman t interval"
)
"""How `pool` combines concepts (recorded in bench.json, named in the report)."""
CLAIM_CORRECTION = "holm"
"""Correction of the pooled p-values over the claim family (`holm_corrected`)."""
MIN_CONCEPTS = 5
"""Fewest concepts for a bootstrap interval of a mean over concepts (`mean_interval`):
with fewer, a bootstrap has a handful of distinct resamples."""
SPREAD_TOLERANCE = 1e-9
"""Standard errors below this count as zero in `mean_interval` (float noise of ties)."""


@dataclass(frozen=True)
class PairedDifference:
    """A claim on one concept: the corrected repeated-CV paired t-test of AUROC_A - AUROC_B.

    Attributes:
        d: mean over the J shared held-out folds of the AUROC differences.
        v: its corrected variance (1/J + n_test/n_train) s^2 (0 when every fold agrees).
        p: two-sided p of t = d / sqrt(v) on J - 1 degrees of freedom.
        ci_low, ci_high: its t interval.
    """

    d: float
    v: float
    p: float
    ci_low: float
    ci_high: float


def paired_difference(
    fold_a: np.ndarray,
    fold_b: np.ndarray,
    test_fraction: float,
    level: float = 0.95,
    step: float = 0.0,
) -> PairedDifference:
    """The corrected repeated-CV t-test of two readouts' per-fold AUROCs [repeats, folds]
    on one concept (Nadeau & Bengio 2003).

    ``step`` is the smallest change of one fold's AUROC (1 / (n_pos n_neg) of a test
    fold). When the fold differences vary less than one fold ``step`` apart from the rest
    would (s^2 < step^2 / J; e.g. both readouts perfect on every fold), s^2 is taken as
    step^2 / J: folds that cannot show a smaller spread do not prove a zero variance. With
    ``step`` 0 and equal fold differences, `ensemble.compare`'s conventions hold (p 1 at
    zero, 0 otherwise) and the variance is 0.
    """
    diff = (np.asarray(fold_a, dtype=np.float64) - np.asarray(fold_b, dtype=np.float64)).ravel()
    d = float(diff.mean())
    df = diff.size - 1
    ratio = test_fraction / (1 - test_fraction)
    floor = float(np.sqrt((1 / diff.size + ratio) * step**2 / diff.size))
    se = max(_corrected_se(diff, test_fraction), floor)
    if se > 0:
        p = float(2 * stats.t.sf(abs(d / se), df))
        half = float(stats.t.ppf((1 + level) / 2, df) * se)
    else:
        p, half = (1.0 if d == 0 else 0.0), 0.0
    return PairedDifference(d, se**2, p, d - half, d + half)


@dataclass(frozen=True)
class Pooled:
    """A claim pooled over concepts.

    Attributes:
        n_concepts: concepts with both readouts.
        n_pooled: of those, the concepts with a positive variance (the meta-analysis's
            studies; a concept of zero variance, possible only without a fold ``step``,
            is left out of the pooling and counted by its own test).
        effect: random-effects mean of the concepts' differences.
        ci_low, ci_high: its Hartung-Knapp-Sidik-Jonkman t_{k-1} interval.
        p: two-sided p of effect = 0 on the same reference.
        tau2: between-concept variance of the true differences (Paule-Mandel).
        i2: share of the differences' spread due to heterogeneity, max(0, (Q - df) / Q).
        wins, ties, losses: concepts whose own test has p < alpha with d > 0, p >= alpha,
            p < alpha with d < 0.
        sign_p: two-sided exact binomial test of #(d > 0) among the concepts with d != 0.
    """

    n_concepts: int
    n_pooled: int
    effect: float
    ci_low: float
    ci_high: float
    p: float
    tau2: float
    i2: float
    wins: int
    ties: int
    losses: int
    sign_p: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN where a quantity is undefined, e.g. one concept)."""
        return asdict(self)


def pool(diffs: Sequence[PairedDifference], level: float = 0.95, alpha: float = ALPHA) -> Pooled:
    """Random-effects pooling of per-concept differences (module docstring): NaN effect
    statistics with fewer than two concepts of positive variance."""
    from statsmodels.stats.meta_analysis import combine_effects

    d = np.array([x.d for x in diffs], dtype=np.float64)
    v = np.array([x.v for x in diffs], dtype=np.float64)
    p = np.array([x.p for x in diffs], dtype=np.float64)
    significant = p < alpha
    wins, losses = int((significant & (d > 0)).sum()), int((significant & (d < 0)).sum())
    nonzero = int((d != 0).sum())
    sign_p = float(stats.binomtest(int((d > 0).sum()), nonzero).pvalue) if nonzero else 1.0
    usable = v > 0
    k = int(usable.sum())
    effect = low = high = p_pooled = tau2 = i2 = float("nan")
    if k >= 2:
        fit = combine_effects(d[usable], v[usable], method_re="iterated")
        effect, tau2 = float(fit.mean_effect_re), float(fit.tau2)
        se = float(np.sqrt(fit.var_hksj_re))
        if se > 0:
            p_pooled = float(2 * stats.t.sf(abs(effect / se), k - 1))
            half = float(stats.t.ppf((1 + level) / 2, k - 1) * se)
        else:
            p_pooled, half = (1.0 if effect == 0 else 0.0), 0.0
        low, high = effect - half, effect + half
        i2 = float(max(0.0, (fit.q - (k - 1)) / fit.q)) if fit.q > 0 else 0.0
    return Pooled(
        n_concepts=len(diffs),
        n_pooled=k,
        effect=effect,
        ci_low=low,
        ci_high=high,
        p=p_pooled,
        tau2=tau2,
        i2=i2,
        wins=wins,
        ties=len(diffs) - wins - losses,
        losses=losses,
        sign_p=sign_p,
    )


def holm_corrected(p_values: Sequence[float]) -> list[float]:
    """``p_values`` corrected over the family by `CLAIM_CORRECTION` (Holm); NaN entries
    (claims that could not be pooled) stay NaN and are not counted in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method=CLAIM_CORRECTION)[1]
    return out.tolist()


def mean_interval(
    values: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 2000,
    level: float = 0.95,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float, float]:
    """Mean of per-concept ``values`` [concepts] (AUROCs, within ``bounds``) and its
    studentized bootstrap interval over concepts (bootstrap-t: resample concepts,
    t* = (mean* - mean) / se*; the percentile interval under-covers with a few dozen skewed
    values), clipped to ``bounds``. Resamples without spread (se* below `SPREAD_TOLERANCE`:
    one concept's value, or tied values, drawn throughout) are dropped, since their t* is
    noise divided by zero; with fewer than `MIN_CONCEPTS` values the interval is NaN."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
    if x.size < MIN_CONCEPTS:
        return mean, float("nan"), float("nan")
    if se < SPREAD_TOLERANCE:
        return mean, mean, mean
    draws = x[rng.integers(0, x.size, (n_boot, x.size))]  # [n_boot, concepts]
    se_star = draws.std(axis=1, ddof=1) / np.sqrt(x.size)
    keep = se_star > SPREAD_TOLERANCE
    t_star = (draws.mean(axis=1)[keep] - mean) / se_star[keep]
    upper, lower = np.quantile(t_star, [(1 + level) / 2, (1 - level) / 2])
    low, high = np.clip([mean - float(upper) * se, mean - float(lower) * se], *bounds)
    return mean, float(low), float(high)


def mean_ranks(table: pd.DataFrame) -> pd.Series:
    """Mean over concepts (rows) of each readout's (column's) AUROC rank within the
    concept, 1 = best, ties averaged, among the readouts the concept has (NaN: absent)."""
    return table.rank(axis=1, ascending=False, method="average").mean(axis=0)


def win_counts(table: pd.DataFrame) -> pd.DataFrame:
    """[readouts, readouts] number of concepts where the row readout's AUROC exceeds the
    column readout's (concepts lacking either are not counted): descriptive counts."""
    values = table.to_numpy(dtype=np.float64)  # [concepts, readouts]
    wins = (values[:, :, None] > values[:, None, :]).sum(axis=0)
    return pd.DataFrame(wins, index=table.columns, columns=table.columns)


def leave_one_out_best(table: pd.DataFrame) -> pd.Series:
    """Per concept, the AUROC of the readout (column) with the best mean AUROC over the
    OTHER concepts: a "best readout" whose choice never saw the concept it is scored on."""
    picked = {}
    for concept in table.index:
        others = table.drop(index=concept).mean(axis=0).dropna()
        row = table.loc[concept, others.index].dropna()
        if not row.empty:
            picked[concept] = float(row[others[row.index].idxmax()])
    return pd.Series(picked, dtype=np.float64)
