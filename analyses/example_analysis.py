"""An analyst's session: where does the model represent "success"?

Loads a stimulus set, gets (cached) layer activations, runs the univariate contrast,
population RSA and per-unit selection, and writes a few figures.

    python analyses/example_analysis.py [stimuli/success.yaml] [--out results/example]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cogsae import (
    categorical_rsa,
    discriminative_rsa,
    extract_activations,
    load_model,
    load_stimuli,
    univariate_contrast,
)
from cogsae.analysis import vis
from cogsae.analysis.selection import SELECTORS
from cogsae.extract import Window

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("stimuli", nargs="?", default="stimuli/success.yaml")
parser.add_argument("--out", type=Path, default=Path("results/example"))
parser.add_argument("--k", type=int, default=8)
args = parser.parse_args()

stimuli = load_stimuli(args.stimuli)
model = load_model("smollm2-135m", layer=15, dtype="auto", device="cpu")
acts = extract_activations(stimuli, model, Window.for_stimuli(stimuli))

labels, groups = stimuli.labels(), stimuli.groups()
keep = labels >= 0  # target vs reference only
acts, labels = acts.subset(keep), labels[keep]
groups = None if groups is None else groups[keep]
means = acts.window_mean()

contrast = univariate_contrast(means, labels, groups=groups, n_permutations=1000)
print(f"{np.sum(contrast.q < 0.05)} of {contrast.active.sum()} units at q < 0.05")
print(contrast.to_frame().sort_values("p").head(10).round(4))

categorical = categorical_rsa(means, labels, space=acts.space, groups=groups)
print(
    f"categorical RSA: {categorical.method} r = {categorical.r:.3f}, p = {categorical.p:.4f}, "
    f"95% CI [{categorical.ci_low:.3f}, {categorical.ci_high:.3f}]"
)
discriminative = discriminative_rsa(acts.values, labels, mask=acts.mask, groups=groups)
print(
    f"crossnobis between = {discriminative.between:.4f} (p = {discriminative.p_between:.4f}), "
    f"within = {discriminative.within:.4f}, p(between > within) = "
    f"{discriminative.p_difference:.4f}, EDI = {discriminative.edi:.4f}"
)

rng = np.random.default_rng(0)
for name, select in SELECTORS.items():
    chosen = select(acts.values, acts.mask, labels, args.k, rng=rng)
    print(f"{name:20s} units {chosen.units.tolist()}")

args.out.mkdir(parents=True, exist_ok=True)
vis.volcano_plot(contrast, args.out / "volcano.png")
vis.rdm_heatmap(categorical.rdms, labels, args.out / "rdm.png")
vis.mds_plot(categorical.rdms, labels, args.out / "mds.png")
best = SELECTORS["rsa_discriminative"](acts.values, acts.mask, labels, 4, rng=rng).units
vis.position_profile(acts.values, acts.mask, labels, best, args.out / "profile.png")
print(f"figures in {args.out}/")
