"""The verdicts engine against a plain per-fold reference, on the same plan, in one process.

Data shaped like one concept of `cogsae run stimuli/success.yaml`: 128 items x 12
positions, an SAE space of 8,192 sparse features (~5,000 active) and a raw space of 576
dims, a planted concept so every readout stays significant (none stops early). Readouts:
the four selection methods and k random units in both spaces, plus the difference of
means and the dense L2 probe on raw units; 10 x 5-fold CV.

Reference: the procedure written the plain way, one training set at a time: the public
single-set selector on the set's items, then scikit-learn's liblinear L1 (or dual L2)
logistic regression, fold AUROC by scikit-learn. New: `cogsae.analysis.ensemble.evaluate`, which
fits every training set of a batch of permutations at once. Both run the observed
analysis plus N permutations; the script checks they give the same fold AUROCs, prints
seconds per permutation of each and the ratio, and projects the default 1,000.

    python benchmarks/verdicts.py [--permutations N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cogsae.activations import Activations
from cogsae.analysis.cv import make_plan
from cogsae.analysis.ensemble import DenseL2, DiffMeans, SelectedL1, SpaceData, evaluate
from cogsae.analysis.selection import SELECTORS

N_ITEMS, N_POSITIONS, N_SAE, N_ACTIVE, N_RAW, N_SIGNAL = 128, 12, 8192, 5000, 576, 16
METHODS = ("rsa_discriminative", "rsa_categorical", "max_activation", "contrast", "random")


def synthetic(rng: np.random.Generator) -> tuple[dict[str, Activations], np.ndarray]:
    """SAE and raw activations with a planted concept and ragged windows."""
    labels = rng.permutation(np.arange(N_ITEMS) % 2)
    lengths = rng.integers(8, N_POSITIONS + 1, N_ITEMS)
    mask = np.arange(N_POSITIONS)[None, :] < lengths[:, None]
    raw = rng.normal(size=(N_ITEMS, N_POSITIONS, N_RAW)).astype(np.float32)
    raw[labels == 1, :, :N_SIGNAL] += 0.3
    sae = np.maximum(rng.normal(-2.0, 1.0, size=(N_ITEMS, N_POSITIONS, N_SAE)), 0)
    sae[:, :, N_ACTIVE:] = 0.0
    sae[labels == 1, :, :N_SIGNAL] += 0.5 * rng.random((int(labels.sum()), N_POSITIONS, N_SIGNAL))
    raw[~mask], sae[~mask] = 0.0, 0.0
    return {
        "raw": Activations(raw, mask, "raw"),
        "sae": Activations(sae.astype(np.float32), mask, "sae"),
    }, labels


def reference_fold(
    readout: SelectedL1 | DiffMeans | DenseL2,
    data: SpaceData,
    train: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
) -> float:
    """Held-out AUROC of one training set, the plain way."""
    y = labels[train]
    weight = y.size / (2.0 * np.bincount(y, minlength=2))[y]
    if isinstance(readout, DiffMeans):
        direction = data.means[train][y == 1].mean(0) - data.means[train][y == 0].mean(0)
        return roc_auc_score(labels[test], data.means[test] @ direction)
    if isinstance(readout, DenseL2):
        z = data.all_standardized.x
        fit = LogisticRegression(C=1.0, l1_ratio=0.0, solver="liblinear", dual=True, tol=1e-8)
        fit.fit(z[train], y, sample_weight=weight)
        return roc_auc_score(labels[test], fit.decision_function(z[test]))
    values, mask = data.acts.values, data.acts.mask
    units = SELECTORS[readout.method](values[train], mask[train], y, readout.k, rng=rng).units
    x = data.means[:, units]
    mean, scale = x[train].mean(0), x[train].std(0)
    scale[scale == 0] = 1.0
    fit = LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", tol=1e-8)
    fit.fit((x[train] - mean) / scale, y, sample_weight=weight)
    return roc_auc_score(labels[test], fit.decision_function((x[test] - mean) / scale))


def timed(func: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = func()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=2)
    args = parser.parse_args()
    spaces, labels = synthetic(np.random.default_rng(0))
    plan = make_plan(labels, n_repeats=10, n_permutations=args.permutations, seed=0)
    runs = 1 + plan.n_permutations
    print(f"{N_ITEMS} items, 10 x 5-fold CV, observed + {plan.n_permutations} permutations")
    total_new = total_ref = 0.0
    for space, acts in spaces.items():
        readouts = [SelectedL1(m) for m in METHODS]
        if space == "raw":
            readouts += [DiffMeans(), DenseL2()]
        results, new_s = timed(
            lambda acts=acts, readouts=readouts: evaluate(
                readouts, acts, plan, stop_after=None, progress=False
            )
        )
        data = SpaceData(acts)

        def reference(data: SpaceData = data, readouts: list = readouts) -> np.ndarray:
            out = np.empty((len(readouts), runs, plan.n_repeats, plan.n_splits))
            for b in range(runs):
                for r, folds in enumerate(plan.splits(b)):
                    for f, (train, test) in enumerate(folds):
                        rng = np.random.default_rng([plan.seed, 2, r, f])
                        for i, readout in enumerate(readouts):
                            out[i, b, r, f] = reference_fold(
                                readout, data, train, test, plan.labels_perm[b], rng
                            )
            return out

        ref, ref_s = timed(reference)
        new_observed = np.stack([res.fold_aurocs for res in results])
        new_null = np.stack([res.null_aurocs for res in results])
        diff = max(
            np.abs(new_observed - ref[:, 0]).max(),
            np.abs(new_null - ref[:, 1:].mean(axis=(2, 3))).max(),
        )
        total_new, total_ref = total_new + new_s, total_ref + ref_s
        print(
            f"{space:>4}: {len(readouts)} readouts x {acts.n_units} units | reference "
            f"{ref_s / runs:7.2f} s/permutation | new {new_s / runs:6.3f} s/permutation | "
            f"speed-up {ref_s / new_s:5.1f}x | max |fold AUROC difference| {diff:.1e}"
        )
    print(
        f"both spaces: reference {total_ref / runs:.2f} s vs new {total_new / runs:.3f} s per "
        f"permutation: {total_ref / total_new:.1f}x; projected for 1,000 permutations: "
        f"reference {1000 * total_ref / runs / 60:.0f} min, new {1000 * total_new / runs:.0f} s"
    )


if __name__ == "__main__":
    main()
