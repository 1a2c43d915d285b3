"""The report of a bench: one verdict per claim over many concepts, with its forest plot.

Reads the bench's ``bench.json`` (written by `cogsae.pipeline.bench`, which pooled the
runs' results.json files) and nothing else: it renders the pooled claims, the readouts'
means over concepts, the wins matrix, an AxBench-style concept-detection table and one
forest plot per claim (each concept's paired difference with its interval, the pooled
estimate with its interval).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from cogsae._io import safe_name
from cogsae.errors import CogsaeError
from cogsae.report import read_json
from cogsae.report.figures import save_png
from cogsae.report.html import write_pages
from cogsae.report.markdown import _fmt_p, markdown_table
from cogsae.report.tables import write_csv

BENCH_MANIFEST = "bench.json"
"""The bench folder's record (`cogsae.pipeline.bench.BENCH_MANIFEST`)."""


def is_bench(directory: Path) -> bool:
    """Whether ``directory`` is a bench folder (holds a bench manifest)."""
    return (Path(directory) / BENCH_MANIFEST).is_file()


def load_bench(directory: Path) -> dict[str, Any]:
    """The pooled bench.json of ``directory``, or a CogsaeError naming it."""
    bench = read_json(Path(directory), BENCH_MANIFEST, "bench folder")
    if "claims" not in bench:
        raise CogsaeError(
            "the bench's runs have not all finished: run `cogsae bench` again", path=directory
        )
    return bench


def _num(x: float | None, digits: int = 3) -> str:
    """A number for a table; blank when undefined (None)."""
    return "" if x is None else f"{x:.{digits}f}"


def _interval(low: float | None, high: float | None) -> str:
    """``[low, high]``; blank when undefined."""
    return "" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]"


def _distinct(bench: dict[str, Any], key: str) -> str:
    """The runs' distinct values of ``key`` (model, layer), in order, comma-separated."""
    return ", ".join(str(v) for v in dict.fromkeys(run.get(key) for run in bench["runs"]))


def claims_table(bench: dict[str, Any]) -> pd.DataFrame:
    """One row per claim: pooled effect, its interval, p, Holm p, heterogeneity, per-concept
    wins / ties / losses and the sign test."""
    return pd.DataFrame(
        [
            {
                "claim": c["claim"],
                "A": c["a"],
                "B": c["b"],
                "concepts": c["n_concepts"],
                "effect (ΔAUROC)": _num(c["effect"]),
                "95% CI": _interval(c["ci_low"], c["ci_high"]),
                "p": _fmt_p(c["p"]),
                "p (Holm)": _fmt_p(c["p_corrected"]),
                "tau²": _num(c["tau2"], 4),
                "I²": _num(c["i2"], 2),
                "wins/ties/losses": f"{c['wins']}/{c['ties']}/{c['losses']}",
                "sign p": _fmt_p(c["sign_p"]),
            }
            for c in bench["claims"]
        ]
    )


def readouts_table(bench: dict[str, Any]) -> pd.DataFrame:
    """One row per readout, best mean AUROC first."""
    rows = sorted(bench["readouts"], key=lambda r: -r["mean_auroc"])
    return pd.DataFrame(
        [
            {
                "readout": r["readout"],
                "concepts": r["n_concepts"],
                "mean AUROC": _num(r["mean_auroc"]),
                "95% CI": _interval(r["ci_low"], r["ci_high"]).replace("+", ""),
                "mean rank": _num(r["mean_rank"], 2),
            }
            for r in rows
        ]
    )


def axbench_table(bench: dict[str, Any]) -> pd.DataFrame:
    """The concept-detection table in AxBench's layout, AxBench's means beside it."""
    return pd.DataFrame(
        [
            {
                "method": r["method"],
                "readout here": r["readout"],
                "concepts": r["n_concepts"],
                "mean AUROC here": _num(r["mean_auroc"]),
                "95% CI": _interval(r["ci_low"], r["ci_high"]).replace("+", ""),
                "AxBench mean AUROC": f"{r['axbench']:.3f}",
            }
            for r in bench["axbench"]["rows"]
        ]
    )


def plot_forest(claim: dict[str, Any]) -> Figure:
    """Forest plot of one claim: each concept's mean fold difference AUROC_A - AUROC_B with
    its corrected t interval (filled: that concept's test has p < alpha), and the pooled
    random-effects estimate with its interval as a diamond; no difference at 0."""
    concepts = claim["concepts"]
    fig = Figure(figsize=(7, 0.28 * len(concepts) + 1.6))
    ax = fig.subplots()
    for i, c in enumerate(concepts):
        y = len(concepts) - i
        filled = c["p"] is not None and c["p"] < 0.05
        ax.plot([c["ci_low"], c["ci_high"]], [y, y], color="#555555", lw=1)
        ax.plot(c["d"], y, "s", color="#1b9e77" if filled else "white", mec="#1b9e77", ms=5)
    if claim["effect"] is not None and claim["ci_low"] is not None:
        low, mid, high = claim["ci_low"], claim["effect"], claim["ci_high"]
        ax.fill([low, mid, high, mid], [0, 0.3, 0, -0.3], color="#d95f02")
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_yticks(
        [len(concepts) - i for i in range(len(concepts))] + [0],
        [c["concept"] for c in concepts] + ["pooled (random effects)"],
        fontsize=7,
    )
    ax.set_xlabel(f"ΔAUROC = {claim['a']} − {claim['b']}")
    ax.set_title(claim["claim"], fontsize=9)
    return fig


def write_bench_report(directory: Path) -> Path:
    """claims.csv, claim_concepts.csv, readouts.csv, wins.csv, aurocs.csv, one forest plot
    per claim, report.md and report.html of the bench folder ``directory``; returns the
    path of report.html."""
    directory = Path(directory)
    bench = load_bench(directory)
    claims, readouts = claims_table(bench), readouts_table(bench)
    wins = pd.DataFrame(
        bench["wins"]["matrix"], index=bench["wins"]["readouts"], columns=bench["wins"]["readouts"]
    )
    aurocs = pd.DataFrame(bench["aurocs"]).T
    write_csv(
        pd.DataFrame([{k: v for k, v in c.items() if k != "concepts"} for c in bench["claims"]]),
        directory / "claims.csv",
    )
    write_csv(
        pd.DataFrame([{"claim": c["claim"], **x} for c in bench["claims"] for x in c["concepts"]]),
        directory / "claim_concepts.csv",
    )
    write_csv(pd.DataFrame(bench["readouts"]), directory / "readouts.csv")
    write_csv(wins.rename_axis("readout").reset_index(), directory / "wins.csv")
    write_csv(aurocs.rename_axis("concept").reset_index(), directory / "aurocs.csv")
    config = bench["config"]
    n_runs = len(bench["runs"])
    text = [
        f"# cogsae bench {bench['bench']}",
        "",
        f"{n_runs} stimulus sets, {len(bench['concepts'])} concepts (each factor of a "
        "factorial set and each omnibus analysis counts as one), each set an ordinary run "
        f"(model {_distinct(bench, 'model')}, layer {_distinct(bench, 'layer')}, "
        f"SAE {config['sae']}, {config['n_repeats']} x {config['n_splits']}-fold CV, "
        f"{config['n_permutations']} permutations, seed {config['seed']}); the runs are "
        "listed in bench.json.",
        "",
        "## Claims, pooled over concepts",
        "",
        f"Each claim is A beats B. Per concept, the difference is the mean over the shared "
        "held-out folds of AUROC_A − AUROC_B, with the corrected repeated-CV variance "
        "(1/J + n_test/n_train) s² (Nadeau & Bengio 2003). The concepts are pooled by "
        f"{bench['pooling']}; p (Holm) is corrected over the {len(bench['claims'])} claims. "
        "tau² is the between-concept variance of the true differences, I² the share of "
        "the spread it explains. Wins / ties / losses count concepts whose own corrected "
        f"t-test has p < {bench['alpha']} in A's favour / neither / B's favour; the sign "
        "test (exact binomial over the concepts' signs) is a robustness check that "
        "assumes nothing about the variances. A concept whose folds show less spread than "
        "one AUROC step of one fold (e.g. both readouts perfect everywhere) is given "
        "that step's variance.",
        "",
        markdown_table(claims),
        "",
        "## Readouts over concepts",
        "",
        f"Mean held-out AUROC over the concepts that have the readout, with a studentized "
        f"bootstrap interval over concepts ({bench['n_bootstrap']} resamples; none with "
        "fewer than five concepts); mean rank among the readouts of each concept (1 = "
        "best). Omnibus readouts are their own rows, ranked only among themselves.",
        "",
        markdown_table(readouts),
        "",
        "### Wins: concepts where the row readout's AUROC exceeds the column readout's",
        "",
        markdown_table(wins.rename_axis("readout").reset_index()),
        "",
        "## Concept detection in AxBench's layout",
        "",
        "Mean held-out AUROC over the two-level concepts of this bench: the difference of "
        "means and the dense L2 probe on all raw units, and the best SAE selection method "
        "(chosen for each concept by its mean AUROC over the other concepts, so the choice "
        f"never sees the concept it is scored on). Beside it: {bench['axbench']['source']}. "
        "Another model, another concept set and other training sizes: a point of "
        "reference, not a test.",
        "",
        markdown_table(axbench_table(bench)),
        "",
        "## Forest plots",
        "",
        "Per concept: the mean fold difference with its corrected t interval (filled: the "
        f"concept's own test has p < {bench['alpha']}); the diamond is the pooled "
        "estimate and its interval.",
        "",
    ]
    for i, claim in enumerate(bench["claims"]):
        figure = f"figures/forest_{i:02d}_{safe_name(claim['claim'])}.png"
        save_png(plot_forest(claim), directory / figure)
        text += [f"### {claim['claim']}", "", f"![{claim['claim']}]({figure})", ""]
    text += [
        "## Held-out AUROC by concept (rows) and readout (columns)",
        "",
        markdown_table(aurocs.rename_axis("concept").reset_index()),
        "",
    ]
    return write_pages(directory, "\n".join(text), f"cogsae bench {bench['bench']}")
