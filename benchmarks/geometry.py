"""Benchmark of the model-RDM inference against a plain rsatoolbox loop.

cogsae (``cogsae.analysis.geometry.evaluate_models``) evaluates every model RDM in every
space with a bootstrap over stimuli (groups whole, own-copy pairs dropped) and a
permutation test, all resamples at once by matrix operations. The reference is
rsatoolbox's ``eval_bootstrap_pattern`` (one ``bootstrap_sample_pattern`` +
``subsample_pattern`` + ``compare`` per resample, groups as the pattern descriptor) for
each space, which gives the bootstrap only (no permutation test); it is timed on
``--reference-resamples`` resamples and extrapolated to ``--resamples``.

Agreement: the fits equal rsatoolbox's; on ``--check`` resamples drawn by rsatoolbox's own
``bootstrap_sample_pattern`` the vectorized fits equal rsatoolbox's evaluations; and the
two bootstrap standard errors agree within Monte Carlo error.

Data are synthetic, shaped like a run: 128 items in 64 groups of 2, a 4-level ordered
factor, one numeric feature, token lengths, unit-norm "sentence embeddings"; raw (576
dense units, correlation RDM) and SAE (4096 sparse units, Euclidean RDM) window means,
with the level and the feature planted. Models: category, graded, feature, semantic,
length (the stage's full set for such a design).

    python benchmarks/geometry.py [--items 128] [--resamples 1000] [--reference-resamples 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rsatoolbox.inference import bootstrap_sample_pattern, eval_bootstrap_pattern
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs, compare

from cogsae.analysis.geometry import bootstrap_fits, evaluate_models
from cogsae.analysis.rsa import unit_rdm


def synthetic(
    n_items: int, seed: int
) -> tuple[dict[str, np.ndarray], list[ModelFixed], np.ndarray]:
    """Window means per space, the five model RDMs and the groups of a synthetic set."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_items // 2), 2)
    level = np.arange(n_items) % 4
    feature = level + rng.normal(0, 0.7, n_items)
    n_tokens = rng.integers(6, 16, n_items)
    embed = rng.normal(size=(n_items, 384)) + 0.5 * level[:, None] * rng.normal(size=384)
    embed /= np.linalg.norm(embed, axis=1, keepdims=True)
    raw = rng.normal(size=(n_items, 576)) + 0.6 * feature[:, None] * rng.normal(size=576)
    sae = np.maximum(rng.normal(size=(n_items, 4096)) * 2 - 3 + 0.5 * level[:, None], 0)

    def absolute(v: np.ndarray) -> np.ndarray:
        return np.abs(v[:, None] - v[None, :]).astype(np.float64)

    matrices = {
        "category": (level[:, None] != level[None, :]).astype(np.float64),
        "graded": absolute(level),
        "feature": absolute(feature),
        "semantic": np.clip(1 - embed @ embed.T, 0, 2) * (1 - np.eye(n_items)),
        "length": absolute(n_tokens),
    }
    descriptors = {"group": list(groups)}  # rsatoolbox resamples models by this too
    models = [
        ModelFixed(name, RDMs(m[None], pattern_descriptors=descriptors))
        for name, m in matrices.items()
    ]
    return {"raw": raw, "sae": sae}, models, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--reference-resamples", type=int, default=100)
    parser.add_argument("--check", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    means, models, groups = synthetic(args.items, args.seed)
    import statsmodels.stats.multitest  # noqa: F401 - imported by any run before this stage

    start = time.perf_counter()
    data = {space: unit_rdm(m, space=space) for space, m in means.items()}
    result = evaluate_models(
        data,
        models,
        groups=groups,
        n_bootstrap=args.resamples,
        n_permutations=args.resamples,
        rng=np.random.default_rng(args.seed),
    )
    result.model_rows(), result.comparison_rows()
    ours = time.perf_counter() - start

    for rdm in data.values():
        rdm.pattern_descriptors["group"] = list(groups)
    np.random.seed(args.seed)
    start = time.perf_counter()
    reference = {
        space: eval_bootstrap_pattern(
            models,
            rdm,
            method="rho-a",
            N=args.reference_resamples,
            pattern_descriptor="group",
            boot_noise_ceil=False,
        )
        for space, rdm in data.items()
    }
    theirs = (time.perf_counter() - start) * args.resamples / args.reference_resamples

    print(
        f"{args.items} items, {len(models)} models, spaces {list(data)}, "
        f"{args.resamples} bootstrap resamples (+ {args.resamples} permutations for cogsae)"
    )
    print(f"cogsae geometry (data RDMs, bootstrap, permutations, comparisons): {ours:.2f} s")
    print(
        f"rsatoolbox eval_bootstrap_pattern loop (bootstrap only, extrapolated from "
        f"{args.reference_resamples}): {theirs:.1f} s; ratio {theirs / ours:.0f}x"
    )

    worst_fit = max(
        np.abs(result.r[s] - compare(rdm, models_rdms(models), "rho-a")[0]).max()
        for s, rdm in enumerate(data.values())
    )
    # the same resamples as rsatoolbox draws them
    rdm = data["raw"]
    worst_resample = 0.0
    for _ in range(args.check):
        sample, pattern_idx = bootstrap_sample_pattern(rdm, "group")
        copies = np.bincount(np.asarray(pattern_idx).astype(int), minlength=groups.max() + 1)
        iu, ju = np.triu_indices(args.items, k=1)
        vectors = np.stack([m.predict_rdm().get_matrices()[0][iu, ju] for m in models])
        ours_b = bootstrap_fits(rdm.get_vectors(), vectors, copies[groups][None])[0, 0]
        theirs_b = [
            compare(m.predict_rdm().subsample_pattern("group", pattern_idx), sample, "rho-a")[0, 0]
            for m in models
        ]
        worst_resample = max(worst_resample, float(np.abs(ours_b - theirs_b).max()))
    print(f"max |fit difference|: {worst_fit:.1e}; on rsatoolbox's resamples: {worst_resample:.1e}")
    for s, space in enumerate(data):
        ours_se = np.nanstd(result.bootstrap[:, s], axis=0, ddof=1)
        theirs_se = np.nanstd(reference[space].evaluations, axis=0, ddof=1)
        ratio = ", ".join(
            f"{m.name} {a:.4f}/{b:.4f}" for m, a, b in zip(models, ours_se, theirs_se, strict=True)
        )
        print(f"{space} bootstrap SE cogsae/rsatoolbox: {ratio}")


def models_rdms(models: list[ModelFixed]) -> RDMs:
    """All models' predicted RDMs as one rsatoolbox ``RDMs``."""
    from rsatoolbox.rdm import concat

    return concat([m.predict_rdm() for m in models])


if __name__ == "__main__":
    main()
