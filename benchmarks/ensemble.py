"""Time a realistic `cogsae run` ensemble stage against its ~2-minute budget.

130 items x 16 positions; an SAE space of 8,192 sparse float16 features and a raw space
of 576 dims (SmolLM2-135M); 10 readouts: the five selectors on SAE features, three on
raw dims plus the difference-of-means and dense L2 baselines; 5 folds x 2 repeats and
the default permutations and early stopping. A concept is planted in both spaces so
that most readouts are significant and run every permutation (the slow case).

    python benchmarks/ensemble.py [--permutations N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cogsae.activations import Activations
from cogsae.ensemble import DenseL2, DiffMeans, SelectedL1, compare, evaluate, make_plan
from cogsae.selection import SELECTORS

BUDGET_S = 120.0
DEFAULT_PERMUTATIONS = 200
N_ITEMS, N_POSITIONS, N_SAE, N_RAW, N_SIGNAL = 130, 16, 8192, 576, 16


def synthetic(rng: np.random.Generator) -> tuple[Activations, Activations, np.ndarray]:
    """SAE and raw activations with a planted concept, ragged windows, shuffled items."""
    labels = rng.permutation(np.arange(N_ITEMS) % 2)
    lengths = rng.integers(8, N_POSITIONS + 1, N_ITEMS)
    mask = np.arange(N_POSITIONS)[None, :] < lengths[:, None]
    raw = rng.normal(size=(N_ITEMS, N_POSITIONS, N_RAW)).astype(np.float32)
    raw[labels == 1, :, :N_SIGNAL] += 0.4
    sae = np.maximum(rng.normal(-1.5, 1.0, size=(N_ITEMS, N_POSITIONS, N_SAE)), 0)
    sae[labels == 1, :, :N_SIGNAL] += rng.random((int(labels.sum()), N_POSITIONS, N_SIGNAL))
    raw[~mask], sae[~mask] = 0.0, 0.0
    return (
        Activations(sae.astype(np.float16), mask, "sae"),
        Activations(raw, mask, "raw"),
        labels,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=DEFAULT_PERMUTATIONS)
    args = parser.parse_args()
    sae, raw, labels = synthetic(np.random.default_rng(0))
    spaces = {
        "sae": (sae, [SelectedL1(name) for name in SELECTORS]),
        "raw": (
            raw,
            [
                SelectedL1(name)
                for name in ("rsa_discriminative", "rsa_categorical", "max_activation")
            ]
            + [DiffMeans(), DenseL2()],
        ),
    }
    train = np.arange(N_ITEMS * 4 // 5)
    values, mask = sae.values[train].astype(np.float32), sae.mask[train]
    for name, select in SELECTORS.items():
        began = time.perf_counter()
        select(values, mask, labels[train], 8, rng=np.random.default_rng(0))
        print(f"selector {name}: {time.perf_counter() - began:.3f} s per SAE training fold")
    start = time.perf_counter()
    plan = make_plan(labels, n_permutations=args.permutations, seed=0)
    print(f"plan ({args.permutations} permutations): {time.perf_counter() - start:.1f} s")
    results = []
    projected = 0.0
    for space, (acts, readouts) in spaces.items():
        began = time.perf_counter()
        results += evaluate(readouts, acts, plan, progress=False)
        seconds = time.perf_counter() - began
        per_round = seconds / (2 + args.permutations)  # observed, permutations, final fit
        projected += per_round * (2 + DEFAULT_PERMUTATIONS)
        print(f"{space}: {len(readouts)} readouts in {seconds:.1f} s ({per_round:.2f} s per round)")
    began = time.perf_counter()
    pairs = [(f"sae:{m}", f"raw:{m}") for m in ("rsa_discriminative", "max_activation")]
    compare(results, pairs)
    print(f"compare: {len(pairs)} pairs in {time.perf_counter() - began:.1f} s")
    for result in results:
        print(
            f"  {result.label:24s} auroc {result.auroc:.3f} p {result.p_value:.4f} "
            f"permutations run {result.null_aurocs.size}"
        )
    total = time.perf_counter() - start
    print(f"total {total:.1f} s; ratio to the {BUDGET_S:.0f} s budget: {total / BUDGET_S:.2f}")
    print(
        f"projected at {DEFAULT_PERMUTATIONS} permutations, all readouts significant: "
        f"{projected:.0f} s; ratio to the budget: {projected / BUDGET_S:.1f}"
    )


if __name__ == "__main__":
    main()
