"""The causal section of a run's report: causal tests against random unit sets, paired
comparisons of causal effects, the dose-response figure and the steering examples, read
from a concept's results.json record (``causal``, ``causal_comparisons``,
``steering_examples``, ``causal_settings``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cogsae._io import atomic_path, safe_name
from cogsae.constants import ABLATE, ALPHA, STEER

COMPARISON_COLUMNS = ["a", "b", "intervention", "strength", "diff", "ci_low", "ci_high", "p"]
COMPARISON_COLUMNS += ["p_corrected"]


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def causal_table(concept: dict[str, Any]) -> pd.DataFrame:
    """One row per readout: steering effect (strongest alpha) and ablation effect, each with
    its interval, p against random units and BH q over readouts."""
    rows = concept.get("causal", [])
    alphas = [r["strength"] for r in rows if r["intervention"] == STEER]
    strongest = max(alphas, key=abs) if alphas else None
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["intervention"] == STEER and r["strength"] != strongest:
            continue
        name = "steer" if r["intervention"] == STEER else "ablate"
        entry = table.setdefault(r["readout"], {"readout": r["readout"]})
        entry[f"{name} effect"] = r["effect"]
        entry[f"{name} 95% CI"] = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        entry[f"{name} p"] = _p(r["p_random"])
        entry[f"{name} q"] = _p(r["p_corrected"]) + (" *" if r["p_corrected"] < ALPHA else "")
    return pd.DataFrame(list(table.values()))


def causal_finding(concept: dict[str, Any]) -> str:
    """Which readouts steer and ablate the concept beyond random unit sets (BH q < 0.05)."""
    rows = concept.get("causal", [])
    parts = []
    for intervention, verb in ((STEER, "steering along"), (ABLATE, "ablating")):
        hits = sorted(
            {
                r["readout"]
                for r in rows
                if r["intervention"] == intervention and r["p_corrected"] < ALPHA
            }
        )
        n = len({r["readout"] for r in rows if r["intervention"] == intervention})
        parts.append(
            f"{verb} {len(hits)} of {n} readouts changed target- vs reference-item "
            "log-probabilities more than random unit sets of the same size (BH q < 0.05)"
            + (": " + ", ".join(hits) if hits else "")
        )
    return "; ".join(parts) + "."


def causal_section(concept: dict[str, Any], figures: Path) -> list[str]:
    """Markdown lines of the causal section of one concept (empty if the stage did not run)."""
    if not concept.get("causal"):
        return []
    settings = concept.get("causal_settings", {})
    tag = safe_name(concept["factor"])
    lines = [
        "### Causal tests",
        "",
        f"Effect = change of (mean log-prob of target items - mean log-prob of reference items), "
        f"nats/token, {settings.get('method', '')}; steering by alpha x the mean residual norm "
        f"at layer L ({settings.get('mean_norm', float('nan')):.2f}), ablation = SAE features "
        "clamped to 0 (error term kept) or the raw direction projected out. p: rank of the "
        f"studentized effect among {settings.get('n_null', '?')} random unit sets of the same "
        "size and space (random directions for the dense baselines), BH over readouts per "
        "intervention and strength. " + causal_finding(concept),
        "",
        _markdown(causal_table(concept)),
        "",
    ]
    if (figures / f"causal_{tag}.png").exists():
        lines += [f"![causal](figures/causal_{tag}.png)", ""]
    comparisons = pd.DataFrame(concept.get("causal_comparisons", []))
    if not comparisons.empty:
        lines += [
            "Paired comparisons of causal effects (bootstrap over items of the difference, "
            "normal p from its SE, Holm within each intervention):",
            "",
            _markdown(comparisons[COMPARISON_COLUMNS]),
            "",
        ]
    examples = pd.DataFrame(concept.get("steering_examples", []))
    if not examples.empty:
        columns = [c for c in ("concept_score", "similarity", "perplexity") if c in examples]
        summary = examples.groupby(["readout", "alpha"])[columns].mean().reset_index()
        lines += [
            "Steering examples (greedy, exact edits): mean judged concept score (0-3) and "
            "perplexity under the unedited model per readout and alpha:",
            "",
            _markdown(summary),
            "",
        ]
        for _, row in examples.iterrows():
            score = f", score {row['concept_score']}" if "concept_score" in row else ""
            lines.append(
                f"- {row['readout']} alpha {row['alpha']:+.1f}: “{row['prompt']}” → "
                f"“{str(row['text']).strip()[:120]}” (ppl {row['perplexity']:.1f}{score})"
            )
        lines.append("")
    return lines


def _markdown(frame: pd.DataFrame) -> str:
    blanks = frame.astype(object).where(frame.notna(), None)
    return blanks.to_markdown(index=False, floatfmt=".4f", missingval="")


def plot_dose_response(concept: dict[str, Any]) -> Figure:
    """Steering effect against alpha per readout, with the 95% band of its random null."""
    frame = pd.DataFrame([r for r in concept["causal"] if r["intervention"] == STEER])
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.axhline(0, color="grey", lw=0.8)
    for readout, group in frame.groupby("readout"):
        group = group.sort_values("strength")
        x = np.concatenate([[0.0], group["strength"]])
        order = np.argsort(x)
        line = ax.plot(
            x[order], np.concatenate([[0.0], group["effect"]])[order], "o-", label=readout
        )
        low = np.concatenate([[0.0], group["null_low"]])[order]
        high = np.concatenate([[0.0], group["null_high"]])[order]
        ax.fill_between(x[order], low, high, color=line[0].get_color(), alpha=0.08)
    ax.set_xlabel("alpha (mean residual norms at layer L)")
    ax.set_ylabel("effect: target - reference change (nats/token)")
    ax.set_title(f"steering: {concept['target']} vs {concept['reference']} (bands: random null)")
    ax.legend(fontsize=6, ncol=2)
    return fig


def write_causal_figures(folder: Path, results: dict[str, Any]) -> None:
    """causal_<factor>.png of every concept whose causal stage ran."""
    for concept in results["concepts"]:
        if not any(r["intervention"] == STEER for r in concept.get("causal", [])):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"causal_{safe_name(concept['factor'])}.png") as tmp:
            plot_dose_response(concept).savefig(tmp, dpi=110, bbox_inches="tight", format="png")
