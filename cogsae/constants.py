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
