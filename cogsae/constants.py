"""Thresholds and names the statistics, the run and the report share (one place each)."""

ALPHA = 0.05
"""Significance level of every test and q-value the run reports."""

PAIRED_SHARE = 0.25
"""Share of a set's items that may look paired across conditions (without groups) before
the main finding refuses to crown a readout or draw verdicts."""

READOUT_CORRECTION = "fdr_bh"
"""Correction of readout p-values (each tail) over all readouts of a concept:
Benjamini-Hochberg, the false discovery rate among readouts called above (or below) chance."""

INTERVAL = "corrected repeated-CV t interval (Nadeau & Bengio 2003)"
"""The procedure-level AUROC interval (docs/methods.md, "Intervals")."""

# Readout names: the keys of cogsae.analysis.selection.SELECTORS and the names readouts
# carry in results and reports (one place, so no module spells them again).
RSA_DISCRIMINATIVE = "rsa_discriminative"
RSA_CATEGORICAL = "rsa_categorical"
MAX_ACTIVATION = "max_activation"
CONTRAST = "contrast"
RANDOM = "random"
"""Name of the k-random-units baseline selector."""
RSA_DISCRIMINATIVE_PROFILE = "rsa_discriminative_profile"
RSA_CATEGORICAL_PROFILE = "rsa_categorical_profile"
DIFF_MEANS = "diff_means"
"""Name of the difference-of-means baseline readout on all units (no selection)."""
DENSE_L2 = "dense_l2"
"""Name of the dense L2 logistic baseline readout on all units (no selection)."""
ANOVA_F = "anova_f"
"""Name of the omnibus selector by per-unit Welch F over all levels of a factor."""
CONTRAST_KIND = "contrast"
"""Kind of a concept entry that contrasts two levels (target vs reference)."""
OMNIBUS = "omnibus"
"""Kind of a concept entry that analyses every level of a factor with 3 or more levels."""
OMNIBUS_PERMUTATIONS = 200
"""Most label permutations of an omnibus readout (L fits per training set cost L times more)."""

SELECTION_METHODS = (RSA_DISCRIMINATIVE, RSA_CATEGORICAL, MAX_ACTIVATION, CONTRAST)
"""The selection methods a run compares by default (each also against ``RANDOM``)."""
CONFOUND = "confound"
"""Name of the confound baseline: an L2 probe on nuisance variables (token count, window
positions, last position, word length); a method that does not beat it may read length."""
NUISANCE = "nuisance"
"""The unit space of the nuisance variables, where the confound baseline reads."""
CONFOUND_LABEL = f"{NUISANCE}:{CONFOUND}"
"""The confound baseline's label in results (labels are ``space:method``)."""

STEER = "steer"
"""Causal intervention: add alpha x the readout's unit direction at layer L."""
ABLATE = "ablate"
"""Causal intervention: clamp the readout's SAE features to 0 / project out its direction."""

METHOD_TITLES = {
    RSA_DISCRIMINATIVE: "discriminative RSA",
    RSA_CATEGORICAL: "categorical RSA",
    MAX_ACTIVATION: "max-activation",
    CONTRAST: "Welch-t contrast",
}
"""Words for the selection methods in reports."""

CONTRAST_KIND = "contrast"
"""Kind of a concept entry that contrasts two levels of a factor (target vs reference)."""
SET_SELECTION_POOL = 64
"""Units per training set that the set-level RSA selectors choose from: the best by the
method's per-unit window-mean score (cogsae.analysis.set_selection)."""
COINCIDE_JACCARD = 0.8
"""Mean fold-wise Jaccard overlap of two methods' selections at or above which the two
select nearly the same units: their paired comparison is reported as "coincide", not as
evidence for either method."""
