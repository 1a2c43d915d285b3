"""report.md of a run from its results.json: main finding, tables, figures, Methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cogsae.constants import (
    ALPHA,
    COINCIDE_JACCARD,
    CONFOUND,
    DENSE_L2,
    METHOD_TITLES,
    PAIRED_SHARE,
    RANDOM,
    RSA_CATEGORICAL,
    RSA_DISCRIMINATIVE,
)
from cogsae.report.causal import causal_section
from cogsae.report.geometry import geometry_section
from cogsae.report.omnibus import is_omnibus, omnibus_section, record_tag

RSA_METHODS = (RSA_DISCRIMINATIVE, RSA_CATEGORICAL)


def _fmt_p(p: float) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _verdict(c: dict[str, Any], a: str, b: str) -> str:
    """'A beat / lost to / did not differ significantly from B (ΔAUROC, corrected p)'."""
    if c["p_corrected"] >= ALPHA:
        verb = "did not differ significantly from"
    else:
        verb = "beat" if c["diff"] > 0 else "lost to"
    stable = "" if c.get("stable", True) else "; UNSTABLE: a replication partition disagrees"
    p = _fmt_p(c["p_corrected"])
    return f"{a} {verb} {b} (ΔAUROC {c['diff']:+.3f}, corrected p {p}{stable})"


def _above_chance(m: dict[str, Any]) -> bool:
    return m["p_corrected"] < ALPHA and m["auroc"] > 0.5


def main_finding(results: dict[str, Any], concept: dict[str, Any]) -> str:
    """One honest paragraph: what won among the readouts that beat chance, by how much,
    which verdicts hold (corrected, and stable on a second partition) and what did not."""
    everything = concept["methods"]
    confound = next((m for m in everything if m["method"] == CONFOUND), None)
    methods = [m for m in everything if m is not confound]
    n = len(methods)
    text = [f"On **{concept['target']} vs {concept['reference']}** ({concept['n_items']} items)."]
    if confound is not None and _above_chance(confound):
        text.append(
            f"**The confound baseline decodes the condition from length and position alone** "
            f"(AUROC {confound['auroc']:.3f}, q {_fmt_p(confound['p_corrected'])}): any "
            "readout must beat it to count as reading the concept."
        )
    if results.get("shuffled_labels"):
        n_sig = sum(_above_chance(m) for m in methods)
        text.append(
            f"**Labels were shuffled** (null run): {n_sig} of {n} readouts were "
            "significant after Benjamini-Hochberg correction; any such result is a false positive."
        )
    paired = concept.get("paired_items", 0)
    if paired >= PAIRED_SHARE * concept["n_items"]:
        text.append(
            f"**{paired} items look paired across conditions but the set gives no groups**, "
            "so cross-validation splits pairs between training and test items and held-out "
            "scores are biased (often toward or below chance). No readout is crowned best and "
            "no verdict is drawn: add `group` fields (`cogsae validate --write-groups`) and "
            "run again."
        )
        return " ".join(text)
    if paired:
        text.append(
            f"{paired} items look paired across conditions without groups (design warning "
            "above); few enough not to stop the verdicts, but group them to be safe."
        )
    below = [m for m in methods if m.get("below_chance")]
    if below:
        text.append(
            f"**{len(below)} of {n} readouts scored significantly BELOW chance** ("
            + ", ".join(f"{m['space']}:{m['method']} {m['auroc']:.3f}" for m in below)
            + "). A held-out AUROC far below 0.5 means items that belong together (minimal "
            "pairs, shared templates) were split across folds: give them a `group` field "
            "(`cogsae validate --write-groups`). No readout is crowned best, and no verdict is "
            "drawn."
        )
        return " ".join(text)
    significant = [m for m in methods if _above_chance(m)]
    if not significant:
        best = max(methods, key=lambda m: m["auroc"])
        text.append(
            f"No readout beat chance after Benjamini-Hochberg correction over {n} readouts "
            f"(highest AUROC {best['auroc']:.3f}, {best['space']}:{best['method']}, q "
            f"{_fmt_p(best['p_corrected'])}). There is no evidence this layer carries the "
            "contrast; no verdict is drawn."
        )
        return " ".join(text)
    best = max(significant, key=lambda m: m["auroc"])
    text.append(
        f"The highest held-out AUROC of the {n} readouts was **{best['space']}:{best['method']}** "
        f"({best['auroc']:.3f}, 95% {_ci(best['auroc_ci'])} for the procedure, "
        f"BH q {_fmt_p(best['p_corrected'])}); {len(significant)} of {n} readouts beat chance. "
        "Being the best of several is not itself a test: the comparisons below are."
    )
    comparisons = [c for c in concept["comparisons"] if c["a"] != c["b"]]
    valid = {f"{m['space']}:{m['method']}" for m in significant}
    usable = [c for c in comparisons if c["a"] in valid and c["b"] in valid]
    sae_vs_raw = [c for c in usable if c["a"].startswith("sae:") and c["b"] == "raw:" + c["a"][4:]]
    if sae_vs_raw:
        wins = [c for c in sae_vs_raw if c["diff"] > 0 and c["p_corrected"] < ALPHA]
        losses = [c for c in sae_vs_raw if c["diff"] < 0 and c["p_corrected"] < ALPHA]
        unstable = [c for c in sae_vs_raw if not c.get("stable", True)]
        text.append(
            f"SAE features beat raw units significantly for {len(wins)} of {len(sae_vs_raw)} "
            f"selection methods and lost for {len(losses)} (corrected resampled t-tests, "
            "Holm-corrected)"
            + (f"; {len(unstable)} of these verdicts are unstable" if unstable else "")
            + "."
        )
    for c in usable:
        a, b = c["a"].split(":")[1], c["b"].split(":")[1]
        if c["a"].split(":")[0] != c["b"].split(":")[0] or a not in RSA_METHODS or b == RANDOM:
            continue
        space, names = c["a"].split(":")[0], (METHOD_TITLES[a], METHOD_TITLES.get(b, b))
        if c.get("coincide"):
            text.append(
                f"In {space} space {names[0]} and {names[1]} select nearly the same units "
                f"(mean fold-wise Jaccard >= {COINCIDE_JACCARD}): the two coincide, and their "
                "comparison is no evidence for either."
            )
        elif b in METHOD_TITLES:
            text.append(f"In {space} space {_verdict(c, *names)}.")
    dense = next((m for m in methods if m["method"] == DENSE_L2), None)
    if dense is not None:
        beat_dense = [
            c
            for c in comparisons
            if c["b"] == f"raw:{DENSE_L2}" and c["diff"] > 0 and c["p_corrected"] < ALPHA
        ]
        text.append(
            f"The dense L2 probe on all raw units reached AUROC {dense['auroc']:.3f}; "
            f"{len(beat_dense)} k-unit selections beat it significantly."
        )
    confounded = [
        c["a"]
        for c in concept.get("confound", [])
        if c["a"] in valid and not (c["diff"] > 0 and c["p_corrected"] < ALPHA)
    ]
    if confounded:
        text.append(
            f"{len(confounded)} readouts that beat chance did not significantly beat the "
            "confound baseline (length and position alone): " + ", ".join(confounded) + "."
        )
    return " ".join(text)


def markdown_table(frame: pd.DataFrame) -> str:
    """Markdown table; a value a row does not have (NaN) is left blank."""
    blanks = frame.astype(object).where(frame.notna(), None)
    return blanks.to_markdown(index=False, floatfmt=".3f", missingval="")


def methods_table(concept: dict[str, Any]) -> pd.DataFrame:
    """The comparison table of the report: one row per readout, best first."""
    rows = []
    for m in sorted(concept["methods"], key=lambda m: -m["auroc"]):
        transfer = concept.get("transfer", {}).get(f"{m['space']}:{m['method']}")
        corpus = concept.get("corpus", {}).get("methods", {}).get(f"{m['space']}:{m['method']}")
        rows.append(
            {
                "space": m["space"],
                "method": m["method"],
                "k": m["k"],
                "AUROC": m["auroc"],
                "95% CI": _ci(m["auroc_ci"]),
                "bal. acc.": m["balanced_accuracy"],
                "p (perm.)": _fmt_p(m["p_value"]),
                "q (BH)": _fmt_p(m["p_corrected"]),
                "below chance": "YES" if m.get("below_chance") else "",
                "stability": m["stability"],
                **({"test AUROC": transfer["auroc"]} if transfer else {}),
                **(
                    {"relevance": corpus["mean_relevance"]}
                    if corpus and corpus.get("mean_relevance") is not None
                    else {}
                ),
                **(
                    {
                        "enrichment": m["relevance_enrichment"],
                        "p (enrich.)": _fmt_p(m.get("relevance_p")),
                    }
                    if m.get("relevance_enrichment") is not None
                    else {}
                ),
            }
        )
    return pd.DataFrame(rows)


def _design_table(stimuli: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(stimuli["design"])
    return frame.rename(columns={"tokens_mean": "tokens (mean)", "tokens_sd": "tokens (sd)"})


def analyses_lines(results: dict[str, Any]) -> list[str]:
    """Which items each analysis used (its levels, item count and folds), a line per fold
    count lowered for a small set, and the run's design warnings (e.g. unused levels)."""
    rows = [
        {
            "analysis": f"{c['target']} vs {c['reference']}",
            "kind": c.get("kind", "contrast"),
            "factor": c["factor"],
            "levels used": ", ".join(c.get("levels", [c["target"], c["reference"]])),
            "items": c["n_items"],
            "folds": c["cv"]["folds"],
        }
        for c in results["concepts"]
    ]
    lines = ["Analyses and the items they use:", "", markdown_table(pd.DataFrame(rows)), ""]
    lines += [f"Folds: {c['cv']['reason']}." for c in results["concepts"] if c["cv"].get("reason")]
    lines += [f"> **Design warning:** {w}\n" for w in results.get("warnings", [])]
    return [*lines, ""] if len(lines) > 4 else lines


def render_markdown(directory: Path, results: dict[str, Any]) -> str:
    """report.md from results.json (figures referenced by relative path)."""
    stim = results["stimuli"]
    model = results["model"]
    config = results["config"]
    figures = directory / "figures"
    lines = [
        f"# cogsae report: {stim['name']}",
        "",
        f"*{stim['description']}* Concept: **{stim['concept']}**. Model `{model['model']}`, "
        f"layer {model['layer']} ({model['dtype']}), window {model['window']['align']}/"
        f"{model['window']['size']}; spaces: "
        + ", ".join(f"{s} ({n} units)" for s, n in results["spaces"].items())
        + ".",
        "",
        "## Design",
        "",
        markdown_table(_design_table(stim)),
        "",
        *analyses_lines(results),
        f"Token length by condition: {stim['length_test']['test']} = "
        f"{stim['length_test']['statistic']:.2f}, p = {_fmt_p(stim['length_test']['p'])}.",
        "",
    ]
    for concept in results["concepts"]:
        if is_omnibus(concept):
            lines += omnibus_section(concept, methods_table(concept), markdown_table, figures)
            continue
        tag = record_tag(concept)
        lines += [
            f"## Concept: {concept['target']} vs {concept['reference']} "
            f"(factor `{concept['factor']}`)",
            "",
            *[f"> **Design warning:** {w}\n" for w in concept.get("warnings", [])],
            "### Main finding",
            "",
            main_finding(results, concept),
            "",
            "### Methods compared",
            "",
            markdown_table(methods_table(concept)),
            "",
        ]
        for fig in ("auroc", "auroc_vs_k", "nulls", "concept_scores"):
            if (figures / f"{fig}_{tag}.png").exists():
                lines += [f"![{fig}](figures/{fig}_{tag}.png)", ""]
        comp = pd.DataFrame(concept["comparisons"])
        columns = ["a", "b", "auroc_a", "auroc_b", "diff", "ci_low", "ci_high", "p"]
        columns += ["p_corrected", "stable", *(["coincide"] if "coincide" in comp else [])]
        if not comp.empty:
            lines += [
                "### Paired comparisons",
                "",
                "Each row tests the two PROCEDURES (selection and fit re-run on every training "
                "set), not two fitted models: the corrected resampled t-test over the "
                f"{concept['cv']['repeats']} x {concept['cv']['folds']} shared held-out folds "
                "(Nadeau & Bengio 2003), whose variance (1/J + n_test/n_train) s² accounts for "
                "overlapping training sets; "
                f"{comp['correction'].iloc[0]}-corrected over the family below. `stable`: two "
                "other partitions of the items (seeds - 1 and + 1) give the same verdict "
                "(significant in the same direction, or not); an unstable verdict should not "
                "be reported. `coincide`: the two select nearly the same units (mean fold-wise "
                f"Jaccard >= {COINCIDE_JACCARD}), so the row is no evidence for either.",
                "",
                markdown_table(comp[columns]),
                "",
            ]
        overlap = pd.DataFrame(concept.get("selection_overlap", []))
        if not overlap.empty:
            lines += [
                "### Selection overlap",
                "",
                "Mean over the held-out folds of the Jaccard overlap of two methods' selected "
                "units (each selected on the fold's training items).",
                "",
                markdown_table(overlap),
                "",
            ]
        confound = pd.DataFrame(concept.get("confound", []))
        if not confound.empty:
            lines += [
                "### Against the confound baseline",
                "",
                "The confound baseline decodes the condition from nuisance variables alone "
                "(token count, window positions, last position, mean word length). A readout "
                "that does not beat it may read length or position rather than the concept "
                "(same test, its own Holm family).",
                "",
                markdown_table(confound[[c for c in columns if c in confound]]),
                "",
            ]
        lines += causal_section(concept, figures)
        lines += ["### Population RSA and univariate contrasts", ""]
        rows = []
        for space, rsa in concept["population_rsa"].items():
            cat, disc = rsa["categorical"], rsa["discriminative"]
            con = concept["contrasts"][space]
            rows.append(
                {
                    "space": space,
                    f"categorical r ({cat['method']})": cat["r"],
                    "cat. CI": _ci(cat["ci"]),
                    "cat. p": _fmt_p(cat["p"]),
                    "crossnobis between": disc["between"],
                    "within": disc["within"],
                    "p(between>within)": _fmt_p(disc["p_difference"]),
                    "units q<0.05": f"{con['n_q05']} / {con['n_active']} active",
                }
            )
        lines += [markdown_table(pd.DataFrame(rows)), ""]
        for space in concept["contrasts"]:
            for fig in ("volcano", "rdm", "profile"):
                if (figures / f"{fig}_{tag}_{space}.png").exists():
                    lines += [f"![{fig} {space}](figures/{fig}_{tag}_{space}.png)", ""]
        if concept.get("glm"):
            lines += ["Factorial GLM, units at q < 0.05 per contrast:", ""]
            lines += [markdown_table(pd.DataFrame(concept["glm"]).T.reset_index(names="space")), ""]
        corpus = concept.get("corpus") or {}
        if corpus.get("methods") and corpus.get("judge") != "none":
            lines += ["### Top corpus examples", ""]
            for label, entry in corpus["methods"].items():
                examples = entry.get("examples", [])[:3]
                lines.append(
                    f"- **{label}** (mean relevance {entry['mean_relevance']:.2f}): "
                    + " · ".join(f"“{e['text'][:90]}” ({e['relevance']})" for e in examples)
                )
            base = corpus.get("base") or {}
            if base.get("mean_relevance") is not None:
                lines.append(
                    f"- **base rate**: {len(base['examples'])} random snippets of the same "
                    f"sample, mean relevance {base['mean_relevance']:.2f}; a readout's "
                    "`enrichment` is its mean minus this, `p (enrich.)` one-sided by permuting "
                    "which snippets count as top: "
                    + " · ".join(
                        f"“{e['text'][:90]}” ({e['relevance']})" for e in base["examples"][:3]
                    )
                )
            lines.append("")
    lines += geometry_section(results, figures, markdown_table)
    lines += [
        *methods_section(results),
        "",
        f"Provenance: cogsae {results['provenance']['cogsae']}, torch "
        f"{results['provenance']['torch']}, seed {config['seed']}, run key "
        f"{results['provenance']['run_key']}; stage times (s): "
        f"{results['provenance']['timings_s']}.",
        "",
    ]
    return "\n".join(lines)


SPACE_NAMES = {"raw": "raw residual dimensions", "sae": "SAE features"}
"""Words for the unit spaces of a run."""

CORRECTION_NAMES = {"fdr_bh": "Benjamini-Hochberg"}
"""Words for the readout corrections (statsmodels method names)."""


def methods_section(results: dict[str, Any]) -> list[str]:
    """The Methods section, its settings read from the run's config and records."""
    config, model, stim = results["config"], results["model"], results["stimuli"]
    concept = results["concepts"][0]
    layer, window = model["layer"], model["window"]
    units = [SPACE_NAMES.get(s, s) for s in results["spaces"]]
    selection = [METHOD_TITLES.get(m, m) for m in config["methods"]]
    correction = concept["readout_correction"]
    correction = CORRECTION_NAMES.get(correction, correction)
    grouped = ", grouped by item group" if stim["grouped"] else ""
    shuffled = (
        f" Labels were shuffled (seed {config['shuffle_labels']}): a null run."
        if results.get("shuffled_labels")
        else ""
    )
    return [
        "## Methods",
        "",
        f"Activations: residual stream at the output of block {layer} (hidden_states"
        f"[{layer + 1}]), window-mean over valid positions of a {window['align']}-aligned window "
        f"of {window['size']} (position 0 excluded, short items masked, never zero-padded). "
        f"Units: {' and '.join(units)}. "
        f"Selection (k = {', '.join(map(str, config['k']))}) by {', '.join(selection)} or at "
        "random, always INSIDE each outer fold on training items only; then standardization "
        "and L1 logistic regression. Baselines: difference of means and a dense L2 probe on "
        f"all raw units. Outer CV: {config['n_repeats']} x {config['n_splits']}-fold "
        f"stratified{grouped}. Selection scores each unit on window means, the representation "
        "the readout is fitted on. AUROC and balanced accuracy per held-out fold, averaged over "
        f"folds; intervals for the procedure: {concept['interval']}. Up to "
        f"{config['n_permutations']} label permutations re-run selection and fit in each (a "
        "readout stops once both tails have 10 exceedances, Besag & Clifford 1991); upper- "
        "and lower-tail p, each "
        f"{correction}-corrected over readouts. Paired comparisons: corrected resampled t-test "
        "on the shared folds, Holm-corrected, replicated on a second partition. Contrasts: "
        "Welch t, Hedges g, AUROC per unit (on group means, or paired group differences, when "
        "the set has groups), Benjamini-Hochberg q over active units. Population RSA: "
        "rsatoolbox RDMs (correlation distance raw, Euclidean SAE) vs the category model by "
        f"rho-a, label-permutation p and item bootstrap CI ({config['n_bootstrap']} resamples); "
        "crossnobis distances with diagonal noise normalization, folds over items." + shuffled,
    ]
