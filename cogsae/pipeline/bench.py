"""Benches: many stimulus sets, each an ordinary run, pooled into one verdict per claim.

Every set is a `RunConfig` with the bench's options and that stimulus file, so it lands in
the usual run folder ``<output>/<set>/<run id>`` and resumes like any run; the runs are
executed like a sweep's cells (`cogsae.pipeline.sweep.run_all`: one extraction pass per
set, then in order or as parallel Ray tasks). From the runs' results.json files alone,
``<output>/bench/<bench id>/bench.json`` then records, over the concepts (every
``concepts`` entry of every run: each factor of a factorial set, each omnibus analysis):

- readouts: per readout (``space:method``) its mean held-out AUROC with a bootstrap
  interval over concepts, its mean rank and its wins against every other readout;
- claims: per claim (A beats B) the per-concept corrected repeated-CV differences pooled
  by `cogsae.analysis.pooling.pool`, Holm-corrected over the claim family;
- an AxBench-style concept-detection table (DiffMean, the dense probe, the best SAE
  selection chosen leave-one-concept-out) beside AxBench's published means.

`cogsae.report.bench` renders it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cogsae._io import inside, stable_hash, write_json
from cogsae.analysis.pooling import (
    CLAIM_CORRECTION,
    POOLING,
    holm_corrected,
    leave_one_out_best,
    mean_interval,
    mean_ranks,
    paired_difference,
    pool,
    win_counts,
)
from cogsae.constants import (
    ALPHA,
    CONFOUND,
    DENSE_L2,
    DIFF_MEANS,
    MAX_ACTIVATION,
    RANDOM,
    RSA_CATEGORICAL,
    RSA_DISCRIMINATIVE,
)
from cogsae.engine import check_engine
from cogsae.errors import CogsaeError
from cogsae.pipeline.config import RunConfig
from cogsae.pipeline.stages import Run, prepare
from cogsae.pipeline.sweep import run_all
from cogsae.streams import Stream, rng

BENCH_MANIFEST = "bench.json"
"""File of a bench folder: its runs and everything pooled over them (`cogsae.report.bench`)."""
OMNIBUS = "omnibus"
"""``kind`` of a concept entry that analyses all levels of a factor at once."""
BASELINES = (RANDOM, DIFF_MEANS, DENSE_L2, CONFOUND)
"""Readouts that select no units (or random ones): not the subject of a selection claim."""
DENSE_REFERENCE = f"raw:{DENSE_L2}"
"""The readout every ``<readout>_vs_dense_l2`` claim compares with."""
AXBENCH = {
    "source": "AxBench (Wu et al. 2025), concept detection on Concept500: mean AUROC over "
    "its Gemma-2-2B and Gemma-2-9B tasks (another model and another concept set)",
    "rows": {"DiffMean": 0.942, "linear probe": 0.940, "SAE": 0.917},
}
"""AxBench's published means, shown beside the bench's own concept-detection table."""


def bench_sets(paths: Iterable[str]) -> list[str]:
    """The stimulus files of ``paths``: a file stands for itself, a folder for every
    ``*.yaml`` in it (sorted); repeats are dropped, order is kept."""
    found: list[str] = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            members = sorted(str(p) for p in path.glob("*.yaml"))
            if not members:
                raise CogsaeError("holds no *.yaml stimulus set", path=path, field="SETS")
            found += members
        elif path.is_file():
            found.append(str(path))
        else:
            raise CogsaeError("no such stimulus file or folder", path=path, field="SETS")
    if not found:
        raise CogsaeError("a bench needs at least one stimulus set", field="SETS")
    return list(dict.fromkeys(found))


def bench_configs(base: RunConfig, sets: Iterable[str]) -> list[RunConfig]:
    """One config per set: ``base`` with that stimulus file. A run scores its corpus on
    the local engine (under Ray it is itself a task, as a sweep's cells are)."""
    return [replace(base, stimuli=s, engine="local", workers=None) for s in sets]


def bench(
    configs: list[RunConfig],
    *,
    engine: str = "local",
    progress: bool = True,
    finish: Callable[[Path], Any] | None = None,
) -> Path:
    """Run every set's config (from `bench_configs`) and pool them; returns the bench folder.

    Every run is validated first (a bad set or option fails before any work), the manifest
    is written, the runs execute (`run_all`; finished runs are reused by their run key),
    ``finish`` (e.g. the report writer) is called on each run folder, and bench.json is
    rewritten with the pooled tables.
    """
    checked = check_engine(engine)
    if not configs:
        raise CogsaeError("a bench needs at least one stimulus set", field="SETS")
    runs = [prepare(config, progress=False) for config in configs]
    names = [run.stimuli.name for run in runs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CogsaeError(f"two sets are named {twice}: a concept must have one name", field="SETS")
    output = Path(configs[0].output)
    bench_id = "bench-" + stable_hash([run.key for run in runs], length=10)
    folder = inside(output, Path("bench") / bench_id, field="--output")
    manifest = _manifest(bench_id, runs, output, checked)
    write_json(folder / BENCH_MANIFEST, manifest)
    results = []
    for entry, directory in zip(
        manifest["runs"], run_all(runs, engine=checked, progress=progress), strict=True
    ):
        if finish is not None:
            finish(directory)
        results.append(json.loads((directory / "results.json").read_text()))
        model = results[-1]["model"]
        entry.update(done=True, model=model["model"], layer=model["layer"])
    manifest.update(summarize(results, seed=configs[0].seed, n_boot=configs[0].n_bootstrap))
    write_json(folder / BENCH_MANIFEST, manifest)
    return folder


def _manifest(bench_id: str, runs: list[Run], output: Path, engine: str) -> dict[str, Any]:
    """The bench's record before pooling: its options and, per set, run key and folder
    (relative to the output root ``output``)."""
    return {
        "bench": bench_id,
        "engine": engine,
        "sets": [run.config.stimuli for run in runs],
        "config": {k: v for k, v in asdict(runs[0].config).items() if k != "stimuli"},
        "runs": [
            {
                "stimuli": run.config.stimuli,
                "set": run.stimuli.name,
                "run_key": run.key,
                "run": str(run.directory.relative_to(output.resolve())),
                "done": False,
            }
            for run in runs
        ],
    }


def concept_records(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per concept entry of the runs' results.json dicts: its label, set,
    factor, kind, levels, size, the CV's test fraction and, per readout label, its AUROC
    and per-fold AUROCs [repeats][folds]."""
    records = []
    for result in results:
        name = result["stimuli"]["name"]
        for concept in result["concepts"]:
            kind = concept.get("kind", "contrast")
            label = f"{name}/{concept['factor']}" + (f" ({OMNIBUS})" if kind == OMNIBUS else "")
            records.append(
                {
                    "concept": label,
                    "set": name,
                    "factor": concept["factor"],
                    "kind": kind,
                    "target": concept.get("target"),
                    "reference": concept.get("reference"),
                    "n_items": concept["n_items"],
                    "n_target": concept.get("n_target", concept["n_items"] / 2),
                    "test_fraction": concept["cv"]["test_fraction"],
                    "methods": {
                        f"{m['space']}:{m['method']}": {
                            "auroc": m["auroc"],
                            "fold_aurocs": m["fold_aurocs"],
                        }
                        for m in concept["methods"]
                    },
                }
            )
    return records


def claim_pairs(labels: Iterable[str]) -> list[tuple[str, str, str]]:
    """The claim family (name, A, B) over the readout ``labels`` present: ``sae_vs_raw:M``
    per selection method M in both spaces; ``R_vs_max_activation:S`` per RSA method R and
    space S; ``discriminative_vs_categorical:S``; ``L_vs_dense_l2`` per selection readout
    L and the difference of means. A claim whose readouts no concept has is left out."""
    present = list(dict.fromkeys(labels))
    have = set(present)
    methods = list(dict.fromkeys(label.split(":", 1)[1] for label in present))
    selection = [m for m in methods if m not in BASELINES]
    pairs = [(f"sae_vs_raw:{m}", f"sae:{m}", f"raw:{m}") for m in selection]
    for space in ("raw", "sae"):
        pairs += [
            (f"{m}_vs_{MAX_ACTIVATION}:{space}", f"{space}:{m}", f"{space}:{MAX_ACTIVATION}")
            for m in selection
            if m.startswith("rsa_")
        ]
    pairs += [
        (
            f"discriminative_vs_categorical:{space}",
            f"{space}:{RSA_DISCRIMINATIVE}",
            f"{space}:{RSA_CATEGORICAL}",
        )
        for space in ("raw", "sae")
    ]
    versus_dense = [f"{s}:{m}" for s in ("raw", "sae") for m in selection] + [f"raw:{DIFF_MEANS}"]
    pairs += [(f"{label}_vs_{DENSE_L2}", label, DENSE_REFERENCE) for label in versus_dense]
    return [(name, a, b) for name, a, b in pairs if a in have and b in have]


def claim_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim of `claim_pairs`: the pooled fields of `pool`, the Holm p over
    the family (p_corrected) and the per-concept differences (``concepts``)."""
    labels = [label for r in records for label in r["methods"]]
    rows = []
    for name, a, b in claim_pairs(labels):
        both = [r for r in records if a in r["methods"] and b in r["methods"]]
        diffs = [
            paired_difference(
                np.asarray(r["methods"][a]["fold_aurocs"]),
                np.asarray(r["methods"][b]["fold_aurocs"]),
                r["test_fraction"],
                step=auroc_step(r),
            )
            for r in both
        ]
        pooled = pool(diffs).to_dict()
        per_concept = [
            {"concept": r["concept"], "kind": r["kind"], **asdict(x)}
            for r, x in zip(both, diffs, strict=True)
        ]
        rows.append({"claim": name, "a": a, "b": b, **pooled, "concepts": per_concept})
    for row, q in zip(rows, holm_corrected([row["p"] for row in rows]), strict=True):
        row["p_corrected"] = q
    return rows


def auroc_step(record: dict[str, Any]) -> float:
    """The smallest change of one test fold's AUROC of a concept, 1 / (n_pos n_neg) with
    the fold's expected counts (target and reference items times the test fraction; an
    entry without ``n_target`` counts half its items as targets)."""
    share = record["test_fraction"]
    n_pos = record["n_target"] * share
    n_neg = (record["n_items"] - record["n_target"]) * share
    return 1 / max(n_pos * n_neg, 1.0)


def auroc_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """[concepts, readouts] held-out AUROCs; an omnibus entry's readouts are their own
    columns (``label (omnibus)``), so they are ranked and counted only among themselves."""
    return pd.DataFrame(
        {
            r["concept"]: {
                (label + (f" ({OMNIBUS})" if r["kind"] == OMNIBUS else "")): m["auroc"]
                for label, m in r["methods"].items()
            }
            for r in records
        }
    ).T


def readout_rows(
    table: pd.DataFrame, seed: int, n_boot: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per readout of ``table`` [concepts, readouts]: concepts, mean AUROC with its
    bootstrap interval over concepts, mean rank; and the wins matrix (concepts where the
    row readout's AUROC exceeds the column's)."""
    ranks = mean_ranks(table)
    rows = []
    for i, readout in enumerate(table.columns):
        values = table[readout].dropna().to_numpy()
        mean, low, high = mean_interval(values, rng(seed, Stream.BENCH_BOOTSTRAP, i), n_boot)
        rows.append(
            {
                "readout": readout,
                "n_concepts": int(values.size),
                "mean_auroc": mean,
                "ci_low": low,
                "ci_high": high,
                "mean_rank": float(ranks[readout]),
            }
        )
    wins = win_counts(table)
    return rows, {"readouts": list(wins.index), "matrix": wins.to_numpy().tolist()}


def axbench_rows(table: pd.DataFrame, seed: int, n_boot: int) -> list[dict[str, Any]]:
    """The concept-detection table of the two-level concepts (AxBench's setting): mean
    AUROC of the difference of means, the dense probe and the best SAE selection method
    (for each concept, the SAE method with the best mean AUROC over the other concepts),
    each with its bootstrap interval over concepts and AxBench's published mean."""
    binary = table[[c for c in table.columns if not c.endswith(f"({OMNIBUS})")]]
    sae = [c for c in binary.columns if c.startswith("sae:") and c.split(":")[1] not in BASELINES]
    columns = {
        "DiffMean": (f"raw:{DIFF_MEANS}", binary.get(f"raw:{DIFF_MEANS}")),
        "linear probe": (DENSE_REFERENCE, binary.get(DENSE_REFERENCE)),
        "SAE": (
            "best SAE selection, chosen leave-one-concept-out",
            leave_one_out_best(binary[sae]) if sae else None,
        ),
    }
    rows = []
    for i, (method, (readout, values)) in enumerate(columns.items()):
        if values is None:
            continue
        kept = values.dropna().to_numpy(dtype=np.float64)
        generator = rng(seed, Stream.BENCH_BOOTSTRAP, len(table.columns) + i)
        mean, low, high = mean_interval(kept, generator, n_boot)
        rows.append(
            {
                "method": method,
                "readout": readout,
                "n_concepts": int(kept.size),
                "mean_auroc": mean,
                "ci_low": low,
                "ci_high": high,
                "axbench": AXBENCH["rows"][method],
            }
        )
    return rows


def summarize(results: list[dict[str, Any]], *, seed: int, n_boot: int) -> dict[str, Any]:
    """Everything bench.json pools from the runs' results.json dicts (module docstring)."""
    records = concept_records(results)
    table = auroc_table(records)
    readouts, wins = readout_rows(table, seed, n_boot)
    return _nulls(
        {
            "alpha": ALPHA,
            "pooling": POOLING,
            "correction": CLAIM_CORRECTION,
            "n_bootstrap": n_boot,
            "concepts": [{k: v for k, v in r.items() if k != "methods"} for r in records],
            "aurocs": {c: table.loc[c].dropna().to_dict() for c in table.index},
            "readouts": readouts,
            "wins": wins,
            "claims": claim_rows(records),
            "axbench": {"source": AXBENCH["source"], "rows": axbench_rows(table, seed, n_boot)},
        }
    )


def _nulls(obj: Any) -> Any:
    """``obj`` with every NaN float replaced by None (JSON has no NaN): a quantity that is
    undefined, e.g. the interval of a mean over fewer than five concepts."""
    if isinstance(obj, dict):
        return {k: _nulls(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nulls(v) for v in obj]
    if isinstance(obj, float | np.floating) and np.isnan(obj):
        return None
    return obj
