"""CSV tables of a run's readouts, read from its results.json records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cogsae._io import atomic_path
from cogsae.report.omnibus import record_tag

_BULKY = ("null_aurocs", "final_model", "fold_units", "fold_aurocs")
"""Method-record fields left out of the methods table (arrays; they stay in results.json)."""


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as CSV at ``path`` (atomically, 6 significant digits)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, float_format="%.6g")


def write_tables(folder: Path, results: dict[str, Any]) -> None:
    """methods_, comparisons_, confound_ and auroc_vs_k_ tables of every concept."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in results["concepts"]:
        tag = record_tag(record)  # a file-name part; the factor may be any text
        methods = [{k: v for k, v in m.items() if k not in _BULKY} for m in record["methods"]]
        write_csv(pd.DataFrame(methods), folder / f"methods_{tag}.csv")
        write_csv(pd.DataFrame(record["comparisons"]), folder / f"comparisons_{tag}.csv")
        write_csv(pd.DataFrame(record["confound"]), folder / f"confound_{tag}.csv")
        if record["k_curve"]:
            write_csv(pd.DataFrame(record["k_curve"]), folder / f"auroc_vs_k_{tag}.csv")
