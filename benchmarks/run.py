"""Per-stage times of `cogsae run` on the default model and SAE, cold and warm.

Cold: a fresh activation cache and run folder (the converted model is reused: converting
the GGUF is a once-per-machine cost, timed separately by `cogsae extract` on a new
machine). Warm: the same command again with other analysis settings (a new seed), so the
cached activations are reused and only the analysis re-runs. Prints each stage's seconds
and the totals against the budgets (5 min cold, 2 min warm).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from cogsae._io import cache_dir
from cogsae.pipeline import RunConfig, execute

REPO = Path(__file__).resolve().parents[1]
BUDGET_COLD_S = 300
BUDGET_WARM_S = 120


def timed_run(config: RunConfig) -> tuple[float, dict[str, float]]:
    """Wall seconds of one run and its per-stage seconds."""
    start = time.perf_counter()
    directory = execute(config, progress=False)
    wall = time.perf_counter() - start
    results = json.loads((directory / "results.json").read_text())
    return wall, results["provenance"]["timings_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stimuli", default=str(REPO / "stimuli" / "success.yaml"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    models = cache_dir() / "models"
    scratch = Path(tempfile.mkdtemp(prefix="cogsae-bench-"))
    (scratch / "cache").mkdir()
    if models.exists():
        (scratch / "cache" / "models").symlink_to(models)
    os.environ["COGSAE_CACHE"] = str(scratch / "cache")
    try:
        base = {"stimuli": args.stimuli, "device": args.device, "output": str(scratch / "results")}
        cold, cold_stages = timed_run(RunConfig(**base))
        warm, warm_stages = timed_run(RunConfig(**base, seed=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, wall, stages, budget in (
        ("cold", cold, cold_stages, BUDGET_COLD_S),
        ("warm", warm, warm_stages, BUDGET_WARM_S),
    ):
        print(f"{name}: {wall:6.1f} s total = {wall / budget:.2f} x the {budget} s budget")
        for stage, seconds in stages.items():
            print(f"    {stage:<22} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
