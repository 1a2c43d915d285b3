"""The comparative method report: results.json, CSV tables, PNG figures, report.md/.html.

`write_report` turns a finished run into files; `render_report` rebuilds report.md and
the self-contained report.html from results.json and the figures alone (what
`cogsae report DIR` does), and `combine_reports` puts several runs (several concepts)
side by side.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cogsae._io import atomic_path, safe_name, write_json, write_text
from cogsae.constants import ALPHA, INTERVAL, PAIRED_SHARE, READOUT_CORRECTION
from cogsae.errors import CogsaeError

if TYPE_CHECKING:
    from cogsae.activations import Activations
    from cogsae.analysis.ensemble import MethodResult
    from cogsae.pipeline.config import RunConfig
    from cogsae.pipeline.results import ConceptResult
    from cogsae.stimuli import LengthCheck, StimulusSet

SPACE_COLORS = {"sae": "#1b9e77", "raw": "#7570b3"}


# --------------------------------------------------------------------------- results.json


def _method_record(result: MethodResult, q: float, q_lower: float) -> dict[str, Any]:
    model = result.model
    return {
        "method": result.method,
        "space": result.space,
        "k": result.k,
        "auroc": result.auroc,
        "auroc_ci": list(result.auroc_ci),
        "fold_aurocs": np.round(result.fold_aurocs, 4).tolist(),
        "balanced_accuracy": result.balanced_accuracy,
        "balanced_accuracy_ci": list(result.balanced_accuracy_ci),
        "p_value": result.p_value,
        "p_corrected": q,
        "p_lower": result.p_lower,
        "q_lower": q_lower,
        "below_chance": bool(q_lower < ALPHA),
        "n_permutations_run": int(result.null_aurocs.size),
        "selected_units": model.units.tolist() if model.units.size <= 64 else None,
        "fold_units": [u.tolist() for u in result.selected_units] if result.k <= 64 else None,
        "stability": result.stability,
        "null_aurocs": np.round(result.null_aurocs, 4).tolist(),
        "final_model": {
            "units": model.units.tolist(),
            "coef": model.coef.tolist(),
            "intercept": model.intercept,
            "mean": model.mean.tolist(),
            "scale": model.scale.tolist(),
        },
    }


def _corrected(p_values: list[float]) -> list[float]:
    from statsmodels.stats.multitest import multipletests

    return multipletests(p_values, method=READOUT_CORRECTION)[1].tolist() if p_values else []


def concept_record(concept: ConceptResult) -> dict[str, Any]:
    """JSON-ready summary of one concept's results."""
    q_upper = _corrected([m.p_value for m in concept.methods])
    q_lower = _corrected([m.p_lower for m in concept.methods])
    plan = concept.methods[0].plan
    record: dict[str, Any] = {
        "factor": concept.factor,
        "target": concept.target,
        "reference": concept.reference,
        "n_items": int(concept.items.size),
        "n_target": int((concept.labels == 1).sum()),
        "warnings": concept.warnings,
        "paired_items": concept.paired_items,
        "methods": [
            _method_record(m, q, ql)
            for m, q, ql in zip(concept.methods, q_upper, q_lower, strict=True)
        ],
        "readout_correction": READOUT_CORRECTION,
        "interval": INTERVAL,
        "cv": {
            "repeats": plan.n_repeats,
            "folds": plan.n_splits,
            "test_fraction": plan.test_fraction,
        },
        "k_curve": [
            {
                "method": m.method,
                "space": m.space,
                "k": m.k,
                "auroc": m.auroc,
                "auroc_ci": list(m.auroc_ci),
            }
            for m in concept.k_curve
        ],
        "comparisons": concept.comparisons,
        "confound": concept.confound,
        "population_rsa": {},
        "contrasts": {},
        "glm": {},
        "transfer": concept.transfer,
        "corpus": concept.corpus,
    }
    for space, cat in concept.categorical.items():
        disc = concept.discriminative[space]
        record["population_rsa"][space] = {
            "categorical": {
                "r": cat.r,
                "p": cat.p,
                "ci": [cat.ci_low, cat.ci_high],
                "method": cat.method,
                "metric": cat.metric,
            },
            "discriminative": {
                "between": disc.between,
                "within": disc.within,
                "difference": disc.difference,
                "p_between": disc.p_between,
                "p_difference": disc.p_difference,
                "edi": disc.edi,
            },
        }
    for space, con in concept.contrasts.items():
        order = np.argsort(np.where(con.active, con.p, np.inf), kind="stable")[:10]
        record["contrasts"][space] = {
            "n_units": int(con.t.size),
            "n_active": int(con.active.sum()),
            "n_q05": int(np.nansum(con.q < ALPHA)),
            "top": [
                {
                    "unit": int(u),
                    "t": float(con.t[u]),
                    "q": float(con.q[u]),
                    "g": float(con.g[u]),
                    "auroc": float(con.auroc[u]),
                }
                for u in order
            ],
        }
    for space, glm in concept.glm.items():
        record["glm"][space] = {
            name: int(np.nansum(glm.q[i] < ALPHA)) for i, name in enumerate(glm.contrasts)
        }
    return record


def write_report(
    directory: Path,
    stimuli: StimulusSet,
    config: RunConfig,
    spaces: dict[str, dict[str, Activations]],
    concepts: list[ConceptResult],
    provenance: dict[str, Any],
    lengths: LengthCheck,
) -> Path:
    """Write results.json, tables/, figures/ and the rendered report into ``directory``."""
    raw = spaces["items"]["raw"]
    results = {
        "stimuli": {
            "name": stimuli.name,
            "path": str(stimuli.path),
            "description": stimuli.description,
            "concept": stimuli.concept,
            "factors": stimuli.factors,
            "target": stimuli.target,
            "reference": stimuli.reference,
            "n_items": len(stimuli.items),
            "n_test_items": len(stimuli.test_items),
            "grouped": stimuli.groups() is not None,
            "design": lengths.rows,
            "length_test": {
                "test": lengths.test,
                "statistic": lengths.statistic,
                "p": lengths.p_value,
            },
        },
        "model": {k: raw.meta[k] for k in ("model", "layer", "dtype", "window")},
        "spaces": {name: acts.n_units for name, acts in spaces["items"].items()},
        "config": asdict(config),
        "shuffled_labels": config.shuffle_labels is not None,
        "provenance": provenance,
        "concepts": [concept_record(c) for c in concepts],
    }
    directory.mkdir(parents=True, exist_ok=True)
    _write_tables(directory / "tables", concepts, results["concepts"])
    if config.figures:
        _write_figures(directory / "figures", concepts, results["concepts"], spaces["items"])
    write_json(directory / "results.json", results)
    render_report(directory)
    return directory


def _write_tables(
    folder: Path, concepts: list[ConceptResult], records: list[dict[str, Any]]
) -> None:
    """CSV tables of each concept (``records``: its `concept_record`, computed once)."""
    folder.mkdir(parents=True, exist_ok=True)
    for concept, record in zip(concepts, records, strict=True):
        tag = safe_name(concept.factor)  # a file-name part; the factor may be any text
        methods = pd.DataFrame(
            [
                {
                    k: v
                    for k, v in m.items()
                    if k not in ("null_aurocs", "final_model", "fold_units", "fold_aurocs")
                }
                for m in record["methods"]
            ]
        )
        _csv(methods, folder / f"methods_{tag}.csv")
        _csv(pd.DataFrame(concept.comparisons), folder / f"comparisons_{tag}.csv")
        _csv(pd.DataFrame(concept.confound), folder / f"confound_{tag}.csv")
        if concept.k_curve:
            _csv(pd.DataFrame(record["k_curve"]), folder / f"auroc_vs_k_{tag}.csv")
        for space, con in concept.contrasts.items():
            _csv(con.to_frame(), folder / f"contrasts_{tag}_{space}.csv")
        for space, glm in concept.glm.items():
            _csv(glm.to_frame(), folder / f"glm_{space}.csv")


def _csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, float_format="%.6g")


# --------------------------------------------------------------------------- figures


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_method_aurocs(results: list[dict[str, Any]], title: str) -> plt.Figure:
    """Held-out AUROC with bootstrap CI per readout, coloured by space; chance at 0.5."""
    frame = pd.DataFrame(results).sort_values("auroc")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(frame) + 1.2))
    for row_i, (_, row) in enumerate(frame.iterrows()):
        color = SPACE_COLORS.get(row["space"], "grey")
        ax.errorbar(
            row["auroc"],
            row_i,
            xerr=[[row["auroc"] - row["auroc_ci"][0]], [row["auroc_ci"][1] - row["auroc"]]],
            fmt="o",
            color=color,
            capsize=3,
        )
        mark = "*" if row.get("p_corrected", 1) < ALPHA else ""
        ax.text(1.005, row_i, mark, va="center", fontsize=12)
    ax.set_yticks(
        range(len(frame)),
        [f"{s}:{m}" for s, m in zip(frame["space"], frame["method"], strict=True)],
    )
    ax.axvline(0.5, color="black", lw=0.8, ls="--")
    ax.set_xlim(min(0.3, frame["auroc_ci"].map(lambda c: c[0]).min() - 0.02), 1.02)
    ax.set_xlabel("held-out AUROC (95% corrected repeated-CV t interval; * BH q < 0.05)")
    ax.set_title(title)
    return fig


def plot_auroc_vs_k(
    curve: list[dict[str, Any]], main: list[dict[str, Any]], title: str
) -> plt.Figure:
    """AUROC against ensemble size k per method and space."""
    keep = {(m["method"], m["space"]) for m in curve}
    rows = curve + [m for m in main if (m["method"], m["space"]) in keep]
    frame = pd.DataFrame(rows)
    frame["readout"] = frame["space"] + ":" + frame["method"]
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=frame.sort_values("k"), x="k", y="auroc", hue="readout", marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.set_ylabel("held-out AUROC")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_nulls(results: list[dict[str, Any]], title: str) -> plt.Figure:
    """Permutation null distribution of each readout's AUROC with the observed value."""
    n = len(results)
    cols = 4
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    for ax, res in zip(axes.flat, results, strict=False):
        null = np.asarray(res["null_aurocs"])
        if null.size:
            ax.hist(null, bins=20, color="lightgrey", edgecolor="grey")
        ax.axvline(res["auroc"], color="crimson", lw=2)
        ax.set_title(
            f"{res['space']}:{res['method']}\np={res['p_value']:.3g} (n={null.size})", fontsize=8
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_concept_scores(corpus: dict[str, Any], title: str) -> plt.Figure:
    """Mean judged relevance (0-3) of each method's top corpus examples with CIs."""
    rows = [
        {"readout": label, "mean": v["mean_relevance"], "lo": v["ci"][0], "hi": v["ci"][1]}
        for label, v in corpus["methods"].items()
    ]
    frame = pd.DataFrame(rows).sort_values("mean")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(frame) + 1.2))
    ax.errorbar(
        frame["mean"],
        range(len(frame)),
        xerr=[frame["mean"] - frame["lo"], frame["hi"] - frame["mean"]],
        fmt="o",
        capsize=3,
    )
    ax.set_yticks(range(len(frame)), frame["readout"])
    ax.set_xlim(-0.1, 3.1)
    ax.set_xlabel(f"mean relevance of top examples (0-3, judge: {corpus.get('judge', '?')})")
    ax.set_title(title)
    return fig


def _write_figures(
    folder: Path,
    concepts: list[ConceptResult],
    records: list[dict[str, Any]],
    spaces: dict[str, Activations],
) -> None:
    """PNG figures of each concept (``records``: its `concept_record`, computed once)."""
    from cogsae.analysis import vis

    folder.mkdir(parents=True, exist_ok=True)
    for concept, record in zip(concepts, records, strict=True):
        tag = safe_name(concept.factor)  # a file-name part; the factor may be any text
        name = f"{concept.target} vs {concept.reference}"
        _save(plot_method_aurocs(record["methods"], name), folder / f"auroc_{tag}.png")
        _save(
            plot_nulls(record["methods"], f"permutation nulls: {name}"), folder / f"nulls_{tag}.png"
        )
        if record["k_curve"]:
            _save(
                plot_auroc_vs_k(record["k_curve"], record["methods"], name),
                folder / f"auroc_vs_k_{tag}.png",
            )
        if concept.corpus.get("methods") and concept.corpus.get("judge") != "none":
            _save(plot_concept_scores(concept.corpus, name), folder / f"concept_scores_{tag}.png")
        for space, con in concept.contrasts.items():
            _save(
                vis.volcano_plot(con, title=f"{space}: {name}"),
                folder / f"volcano_{tag}_{space}.png",
            )
            _save(
                vis.rdm_heatmap(
                    concept.categorical[space].rdms, concept.labels, title=f"{space} RDM"
                ),
                folder / f"rdm_{tag}_{space}.png",
            )
            best = max(
                (
                    m
                    for m in concept.methods
                    if m.space == space and m.method in ("rsa_discriminative", "contrast")
                ),
                key=lambda m: m.auroc,
                default=None,
            )
            if best is not None:
                sub = spaces[space].subset(concept.items)
                _save(
                    vis.position_profile(
                        sub.values,
                        sub.mask,
                        concept.labels,
                        best.model.units,
                        title=f"{space}:{best.method} units",
                    ),
                    folder / f"profile_{tag}_{space}.png",
                )


# --------------------------------------------------------------------------- text


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
    confound = next((m for m in everything if m["method"] == "confound"), None)
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
        if c["a"].endswith(":rsa_discriminative") and c["b"].endswith(":max_activation"):
            space = c["a"].split(":")[0]
            verdict = _verdict(c, "discriminative RSA", "max-activation")
            text.append(f"In {space} space {verdict}.")
    dense = next((m for m in methods if m["method"] == "dense_l2"), None)
    if dense is not None:
        beat_dense = [
            c
            for c in comparisons
            if c["b"] == "raw:dense_l2" and c["diff"] > 0 and c["p_corrected"] < ALPHA
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


def _table(frame: pd.DataFrame) -> str:
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
            }
        )
    return pd.DataFrame(rows)


def _design_table(stimuli: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(stimuli["design"])
    return frame.rename(columns={"tokens_mean": "tokens (mean)", "tokens_sd": "tokens (sd)"})


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
        _table(_design_table(stim)),
        "",
        f"Token length by condition: {stim['length_test']['test']} = "
        f"{stim['length_test']['statistic']:.2f}, p = {_fmt_p(stim['length_test']['p'])}.",
        "",
    ]
    for concept in results["concepts"]:
        tag = safe_name(concept["factor"])
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
            _table(methods_table(concept)),
            "",
        ]
        for fig in ("auroc", "auroc_vs_k", "nulls", "concept_scores"):
            if (figures / f"{fig}_{tag}.png").exists():
                lines += [f"![{fig}](figures/{fig}_{tag}.png)", ""]
        comp = pd.DataFrame(concept["comparisons"])
        columns = ["a", "b", "auroc_a", "auroc_b", "diff", "ci_low", "ci_high", "p"]
        columns += ["p_corrected", "stable"]
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
                "be reported.",
                "",
                _table(comp[columns]),
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
                _table(confound[columns]),
                "",
            ]
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
        lines += [_table(pd.DataFrame(rows)), ""]
        for space in concept["contrasts"]:
            for fig in ("volcano", "rdm", "profile"):
                if (figures / f"{fig}_{tag}_{space}.png").exists():
                    lines += [f"![{fig} {space}](figures/{fig}_{tag}_{space}.png)", ""]
        if concept.get("glm"):
            lines += ["Factorial GLM, units at q < 0.05 per contrast:", ""]
            lines += [_table(pd.DataFrame(concept["glm"]).T.reset_index(names="space")), ""]
        corpus = concept.get("corpus") or {}
        if corpus.get("methods") and corpus.get("judge") != "none":
            lines += ["### Top corpus examples", ""]
            for label, entry in corpus["methods"].items():
                examples = entry.get("examples", [])[:3]
                lines.append(
                    f"- **{label}** (mean relevance {entry['mean_relevance']:.2f}): "
                    + " · ".join(f"“{e['text'][:90]}” ({e['relevance']})" for e in examples)
                )
            lines.append("")
    lines += [
        "## Methods",
        "",
        f"Activations: residual stream at the output of block {model['layer']} (hidden_states"
        f"[{model['layer'] + 1}]), window-mean over valid positions (position 0 excluded, "
        "short items masked, never zero-padded). Units: raw residual dimensions and SAE features. "
        f"Selection (k = {', '.join(map(str, config['k']))}) by discriminative RSA, "
        "categorical RSA, "
        "max-activation, Welch-t contrast or at random, always INSIDE each outer fold on training "
        "items only; then standardization and L1 logistic regression. Baselines: difference of "
        "means and a dense L2 probe on all raw units. Outer CV: "
        f"{config['n_repeats']} x {config['n_splits']}-fold stratified"
        + (", grouped by item group" if stim["grouped"] else "")
        + ". Selection scores each unit on window means, the representation the readout is "
        "fitted on. AUROC and balanced accuracy per held-out fold, averaged over folds; "
        "intervals are corrected repeated-CV t intervals for the procedure (Nadeau & Bengio "
        f"2003). Up to {config['n_permutations']} label permutations re-run selection and fit "
        "in each (a readout stops once both tails have 10 exceedances, Besag & Clifford 1991); "
        "upper- and lower-tail p, each Benjamini-Hochberg-corrected over readouts. Paired "
        "comparisons: corrected resampled t-test on the shared folds, Holm-corrected, "
        "replicated on a second partition. Contrasts: Welch t, Hedges g, AUROC per unit "
        "(on group means, or paired group differences, when the set has groups), "
        "Benjamini-Hochberg q over active units. Population RSA: rsatoolbox RDMs (correlation "
        "distance raw, Euclidean SAE) vs the category model by rho-a, label-permutation p and item "
        "bootstrap CI; crossnobis distances with diagonal noise normalization, folds over items.",
        "",
        f"Provenance: cogsae {results['provenance']['cogsae']}, torch "
        f"{results['provenance']['torch']}, seed {config['seed']}, run key "
        f"{results['provenance']['run_key']}; stage times (s): "
        f"{results['provenance']['timings_s']}.",
        "",
    ]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
h2{border-bottom:2px solid #1b9e77;padding-bottom:3px}
"""


def render_html(markdown_text: str, directory: Path, title: str) -> str:
    """Self-contained HTML: markdown rendered, figures inlined as base64 data URIs.

    The markdown holds user text (names, description, concept, levels, corpus examples),
    so raw HTML in it is shown as text, never interpreted, and links or images may only
    point to http(s), mailto or relative addresses (no ``javascript:`` URLs).
    """
    body = _safe_markdown().convert(markdown_text)

    def inline(match: re.Match[str]) -> str:
        path = directory / match.group(1)
        if not path.is_file() or directory.resolve() not in path.resolve().parents:
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', inline, body)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


_SAFE_SCHEMES = ("", "http", "https", "mailto")


def _safe_markdown() -> Any:
    """A Markdown converter (tables) that escapes raw HTML and drops unsafe link targets."""
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class SafeLinks(Treeprocessor):
        def run(self, root: Any) -> None:
            for element in root.iter():
                for attribute in ("href", "src"):
                    target = element.get(attribute)
                    if target is not None and _scheme(target) not in _SAFE_SCHEMES:
                        del element.attrib[attribute]

    md = markdown.Markdown(extensions=["tables"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(SafeLinks(md), "safe_links", 0)
    return md


def _scheme(url: str) -> str:
    """The scheme of ``url``, lower case, ignoring the whitespace and control characters
    that browsers ignore inside a scheme (so a tab cannot hide "javascript:")."""
    cleaned = re.sub(r"[\x00-\x20]", "", url)
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", cleaned)
    return match.group(1).lower() if match else ""


def load_results(directory: Path) -> dict[str, Any]:
    """results.json of a run directory, or a CogsaeError naming it."""
    path = Path(directory) / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CogsaeError("not a cogsae run directory (no results.json)", path=directory) from err
    except json.JSONDecodeError as err:
        raise CogsaeError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from err


def render_report(directory: Path) -> Path:
    """Rebuild report.md and report.html of a run from its results.json and figures."""
    directory = Path(directory)
    results = load_results(directory)
    text = render_markdown(directory, results)
    write_text(directory / "report.md", text)
    write_text(
        directory / "report.html",
        render_html(text, directory, f"cogsae: {results['stimuli']['name']}"),
    )
    return directory / "report.html"


def combine_reports(directories: list[Path], output: Path) -> Path:
    """One cross-concept comparison of several runs: AUROC per readout and concept."""
    rows = []
    for directory in directories:
        results = load_results(directory)
        for concept in results["concepts"]:
            for m in concept["methods"]:
                rows.append(
                    {
                        "set": results["stimuli"]["name"],
                        "concept": f"{concept['target']} vs {concept['reference']}",
                        "readout": f"{m['space']}:{m['method']}",
                        "auroc": m["auroc"],
                        "q": m["p_corrected"],
                    }
                )
    frame = pd.DataFrame(rows)
    output.mkdir(parents=True, exist_ok=True)
    _csv(frame, output / "combined.csv")
    pivot = frame.pivot_table(index="readout", columns="concept", values="auroc")
    fig, ax = plt.subplots(figsize=(1.6 * pivot.shape[1] + 3, 0.35 * pivot.shape[0] + 1.5))
    sns.heatmap(pivot, annot=True, fmt=".2f", cmap="viridis", vmin=0.5, vmax=1.0, ax=ax)
    ax.set_title("held-out AUROC by readout and concept")
    (output / "figures").mkdir(exist_ok=True)
    _save(fig, output / "figures" / "combined_auroc.png")
    best = frame.loc[frame.groupby("concept")["auroc"].idxmax()]
    text = "\n".join(
        [
            "# cogsae: cross-concept comparison",
            "",
            "Runs: " + ", ".join(f"`{d}`" for d in directories),
            "",
            "## Best readout per concept",
            "",
            _table(best[["set", "concept", "readout", "auroc", "q"]]),
            "",
            "## Held-out AUROC by readout (rows) and concept (columns)",
            "",
            _table(pivot.reset_index()),
            "",
            "![combined](figures/combined_auroc.png)",
            "",
        ]
    )
    write_text(output / "report.md", text)
    write_text(
        output / "report.html", render_html(text, output, "cogsae: cross-concept comparison")
    )
    return output / "report.html"
