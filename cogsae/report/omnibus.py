"""The report of an omnibus concept entry (every level of a factor with 3 or more levels),
and the names and file tags that keep it apart from the factor's target-vs-reference entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cogsae._io import safe_name
from cogsae.constants import ALPHA, CONFOUND, OMNIBUS, PAIRED_SHARE


def is_omnibus(record: dict[str, Any]) -> bool:
    """True for an omnibus concept entry of results.json."""
    return record.get("kind") == OMNIBUS


def concept_name(record: dict[str, Any]) -> str:
    """ "target vs reference", or "a / b / c (omnibus)" for an omnibus entry."""
    if is_omnibus(record):
        return " / ".join(record["levels"]) + " (omnibus)"
    return f"{record['target']} vs {record['reference']}"


def record_tag(record: dict[str, Any]) -> str:
    """The entry's file-name part: its ``tag``; in older results its factor made safe (a
    factor may be any text), "-omnibus" added for an omnibus entry."""
    return record.get("tag") or safe_name(
        record["factor"] + ("-omnibus" if is_omnibus(record) else "")
    )


def anova_table(record: dict[str, Any]) -> pd.DataFrame:
    """Per space: units with Welch-ANOVA q < 0.05 among the active ones, and the top unit."""
    rows = []
    for space, anova in record["anova"].items():
        top = anova["top"][0] if anova["top"] else None
        rows.append(
            {
                "space": space,
                "units q<0.05": f"{anova['n_q05']} / {anova['n_active']} active",
                "observations": f"{anova['n_observations']} {anova['unit_of_analysis']}s",
                "top unit": top["unit"] if top else None,
                "F": top["F"] if top else None,
                "q": top["q"] if top else None,
            }
        )
    return pd.DataFrame(rows)


def _finding(record: dict[str, Any]) -> str:
    """One sentence on the readouts: how many beat chance, the best and the confound; none
    is crowned when items look paired without groups or a readout is below chance (the
    two-level report's rules)."""
    methods = [m for m in record["methods"] if m["method"] != CONFOUND]
    if record.get("paired_items", 0) >= PAIRED_SHARE * record["n_items"]:
        return (
            f"{record['paired_items']} items look paired across levels but the set gives no "
            "groups, so held-out scores are biased: no readout is crowned and no verdict drawn."
        )
    below = [m for m in methods if m.get("below_chance")]
    if below:
        return (
            f"{len(below)} of {len(methods)} readouts scored significantly below chance "
            "(items that belong together split across folds?): no verdict is drawn."
        )
    confound = next((m for m in record["methods"] if m["method"] == CONFOUND), None)
    above = [m for m in methods if m["p_corrected"] < ALPHA and m["auroc"] > 0.5]
    best = max(above or methods, key=lambda m: m["auroc"])
    text = (
        f"{len(above)} of {len(methods)} readouts decoded the {len(record['levels'])} levels "
        f"above chance (Benjamini-Hochberg q < {ALPHA}); the highest held-out macro AUROC was "
        f"{best['space']}:{best['method']} ({best['auroc']:.3f}, 95% "
        f"[{best['auroc_ci'][0]:.2f}, {best['auroc_ci'][1]:.2f}] for the procedure)."
    )
    if confound is not None and confound["p_corrected"] < ALPHA and confound["auroc"] > 0.5:
        text += (
            f" The confound baseline decodes the levels from length and position alone "
            f"(macro AUROC {confound['auroc']:.3f}): a readout must beat it."
        )
    return text


def omnibus_section(
    record: dict[str, Any],
    methods_table: pd.DataFrame,
    render: Any,
    figures: Path,
) -> list[str]:
    """Markdown lines of an omnibus entry: finding, methods (macro AUROC), comparisons,
    confound checks and the per-unit F-test summary. ``methods_table`` is the entry's
    table of readouts and ``render`` turns a DataFrame into a markdown table."""
    tag = record_tag(record)
    table = methods_table.rename(columns={"AUROC": "macro AUROC"})
    lines = [
        f"## Omnibus: {' / '.join(record['levels'])} (factor `{record['factor']}`)",
        "",
        *[f"> **Design warning:** {w}\n" for w in record.get("warnings", [])],
        "Every level at once: readouts are one-vs-rest L1 logistic regressions on the k "
        "selected units, scored by the macro one-vs-rest AUROC (each level against all "
        "others, averaged over levels; chance 0.5), on folds stratified by level.",
        "",
        _finding(record),
        "",
        render(table),
        "",
    ]
    for fig in ("auroc", "nulls"):
        if (figures / f"{fig}_{tag}.png").exists():
            lines += [f"![{fig}](figures/{fig}_{tag}.png)", ""]
    columns = ["a", "b", "auroc_a", "auroc_b", "diff", "ci_low", "ci_high", "p", "p_corrected"]
    for title, rows in (
        ("Paired comparisons (macro AUROC)", record["comparisons"]),
        ("Against the confound baseline", record["confound"]),
    ):
        frame = pd.DataFrame(rows)
        if not frame.empty:
            lines += [f"### {title}", "", render(frame[[*columns, "stable"]]), ""]
    lines += [
        "### Welch one-way ANOVA per unit",
        "",
        "F over all levels on window means, Benjamini-Hochberg q over the active units:",
        "",
        render(anova_table(record)),
        "",
    ]
    return lines
