"""The comparative method report of a finished run, from its results.json alone.

`write_report` turns a run directory (results.json and the analysis figures the pipeline
wrote) into CSV tables, summary figures, report.md and a self-contained report.html;
`render_report` rebuilds only report.md/.html (what `cogsae report DIR` does), and
`combine_reports` puts several runs (several concepts) side by side. Nothing here imports
the pipeline, the analysis or torch: a report needs only the run's files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cogsae.errors import CogsaeError
from cogsae.report.causal import write_causal_figures
from cogsae.report.figures import plot_combined, save_png, write_figures
from cogsae.report.geometry import write_geometry_figures
from cogsae.report.html import render_html, write_pages
from cogsae.report.markdown import main_finding, markdown_table, methods_table, render_markdown
from cogsae.report.omnibus import concept_name
from cogsae.report.tables import write_csv, write_tables

__all__ = [
    "combine_reports",
    "load_results",
    "main_finding",
    "methods_table",
    "render_html",
    "render_markdown",
    "render_report",
    "write_report",
]


def load_results(directory: Path) -> dict[str, Any]:
    """results.json of a run directory, or a CogsaeError naming it."""
    return read_json(Path(directory), "results.json", "run directory")


def read_json(directory: Path, name: str, what: str) -> dict[str, Any]:
    """File ``name`` of ``directory`` as JSON; a CogsaeError says the folder is not a
    cogsae ``what`` when it lacks the file, or where the JSON breaks."""
    path = directory / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CogsaeError(f"not a cogsae {what} (no {name})", path=directory) from err
    except json.JSONDecodeError as err:
        raise CogsaeError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from err


def write_report(directory: Path) -> Path:
    """Write tables/, the summary figures (if the run asked for figures) and the rendered
    report of the run in ``directory``; returns the path of report.html."""
    directory = Path(directory)
    results = load_results(directory)
    write_tables(directory / "tables", results)
    if results["config"]["figures"]:
        write_figures(directory / "figures", results)
        write_geometry_figures(directory / "figures", results)
        write_causal_figures(directory / "figures", results)
    return render_report(directory)


def render_report(directory: Path) -> Path:
    """Rebuild report.md and report.html of a run from its results.json and figures."""
    directory = Path(directory)
    results = load_results(directory)
    text = render_markdown(directory, results)
    return write_pages(directory, text, f"cogsae: {results['stimuli']['name']}")


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
                        "concept": concept_name(concept),
                        "readout": f"{m['space']}:{m['method']}",
                        "auroc": m["auroc"],
                        "q": m["p_corrected"],
                    }
                )
    frame = pd.DataFrame(rows)
    output.mkdir(parents=True, exist_ok=True)
    write_csv(frame, output / "combined.csv")
    pivot = frame.pivot_table(index="readout", columns="concept", values="auroc")
    (output / "figures").mkdir(exist_ok=True)
    save_png(plot_combined(pivot), output / "figures" / "combined_auroc.png")
    best = frame.loc[frame.groupby("concept")["auroc"].idxmax()]
    text = "\n".join(
        [
            "# cogsae: cross-concept comparison",
            "",
            "Runs: " + ", ".join(f"`{d}`" for d in directories),
            "",
            "## Best readout per concept",
            "",
            markdown_table(best[["set", "concept", "readout", "auroc", "q"]]),
            "",
            "## Held-out AUROC by readout (rows) and concept (columns)",
            "",
            markdown_table(pivot.reset_index()),
            "",
            "![combined](figures/combined_auroc.png)",
            "",
        ]
    )
    return write_pages(output, text, "cogsae: cross-concept comparison")
