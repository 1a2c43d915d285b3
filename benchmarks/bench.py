"""Wall time of `cogsae bench` over a concept bank: the total and each set's run.

Runs the bench over SETS (default: stimuli/bank, every *.yaml in it) with the run
defaults (or the reduced settings given), once per engine, each in a fresh activation
cache that shares the converted models (a warm model cache: the model is not converted
again, but every set is extracted and analysed from scratch) and a fresh output folder.
Prints the total wall time of each engine, each set's run time (the sum of its recorded
stage times; under Ray the sets overlap, so these add up to more than the total) and the
pooled claims. The Ray cluster is started outside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from cogsae._io import cache_dir
from cogsae.engine import ray_module
from cogsae.pipeline import RunConfig
from cogsae.pipeline.bench import BENCH_MANIFEST, bench, bench_configs, bench_sets

BANK = Path("stimuli/bank")


def time_bench(sets: list[str], base: RunConfig, engine: str, output: Path) -> dict:
    """Run the bench of ``sets`` on ``engine`` in a fresh cache into ``output``; returns
    its bench.json with ``total_s`` (wall) and, per run, ``seconds`` (its stage times)."""
    models = cache_dir() / "models"
    with tempfile.TemporaryDirectory() as cache:
        os.environ["COGSAE_CACHE"] = cache
        (Path(cache) / "models").symlink_to(models)
        configs = bench_configs(replace(base, output=str(output)), sets)
        start = time.perf_counter()
        folder = bench(configs, engine=engine, progress=False)
        total = time.perf_counter() - start
    os.environ["COGSAE_CACHE"] = str(models.parent)
    record = json.loads((folder / BENCH_MANIFEST).read_text())
    record["total_s"] = total
    for run in record["runs"]:
        timings = json.loads((output / run["run"] / "run.json").read_text())["timings_s"]
        run["seconds"] = sum(timings.values())
    return record


def show(record: dict, engine: str) -> None:
    """Print the engine's total, each set's time and the pooled claims."""
    runs = record["runs"]
    total = record["total_s"]
    print(f"\n{engine}: {len(runs)} sets, {len(record['concepts'])} concepts, total {total:.1f} s")
    print(f"  {total / len(runs):.1f} s per set")
    for run in runs:
        print(f"  {run['set']:<28} {run['seconds']:7.1f} s")
    print(f"  {'claim':<44} {'n':>3} {'effect':>7}  {'95% CI':<17} {'Holm p':>7}  w/t/l")
    for c in record["claims"]:
        if c["effect"] is None:
            print(f"  {c['claim']:<44} {c['n_concepts']:>3}  (not pooled)")
            continue
        ci = f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        print(f"  {c['claim']:<44} {c['n_concepts']:>3} {c['effect']:+7.3f}  {ci:<17} "
              f"{c['p_corrected']:7.3f}  {c['wins']}/{c['ties']}/{c['losses']}")  # fmt: skip


def main() -> None:
    defaults = RunConfig(stimuli="")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help="stimulus files or folders; default stimuli/bank")
    parser.add_argument("--engine", choices=("local", "ray", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=defaults.n_repeats)
    parser.add_argument("--permutations", type=int, default=defaults.n_permutations)
    parser.add_argument("--bootstrap", type=int, default=defaults.n_bootstrap)
    parser.add_argument("--snippets", type=int, default=defaults.n_snippets)
    parser.add_argument("--output", help="keep the runs and bench here (default: a temp dir)")
    args = parser.parse_args()
    if not args.sets and not BANK.is_dir():
        parser.error(f"{BANK} does not exist: name the sets or a folder of them")
    sets = bench_sets(args.sets or [str(BANK)])
    base = replace(
        defaults,
        n_repeats=args.repeats,
        n_permutations=args.permutations,
        n_bootstrap=args.bootstrap,
        n_snippets=args.snippets,
    )
    print(f"{len(sets)} sets, {args.repeats} repeats, {args.permutations} permutations, "
          f"{args.snippets} snippets, {os.cpu_count()} CPUs")  # fmt: skip
    engines = ("local", "ray") if args.engine == "both" else (args.engine,)
    for engine in engines:
        if engine == "ray":
            ray_module()  # start the cluster outside the timings
        with tempfile.TemporaryDirectory() as scratch:
            output = Path(args.output) / engine if args.output else Path(scratch)
            show(time_bench(sets, base, engine, output), engine)


if __name__ == "__main__":
    main()
