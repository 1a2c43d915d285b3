"""The run plan: a set written without ``window:`` runs, everything is resolved once, the
run key hashes the plan."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

from cogsae import model as model_module
from cogsae import resolve
from cogsae.extract import Window
from cogsae.pipeline import execute, stages
from cogsae.pipeline import plan as plan_module
from cogsae.pipeline.plan import build_plan
from cogsae.sae import io as sae_io
from tests.helpers import GAIN, LOSS, SUBJECTS, run_config, write


def short_set(folder: Path, n: int = 10, extra: str = "") -> Path:
    """A short-form set as a newcomer writes it: two conditions, no window, no groups."""
    lines = [extra] if extra else []
    lines.append("conditions:")
    for level, verbs in (("gain", GAIN), ("loss", LOSS)):
        lines.append(f"  {level}:")
        lines += [f'    - "{SUBJECTS[i % 6]} {verbs[i % 4]} it in round {i}."' for i in range(n)]
    return write(folder, "\n".join(lines) + "\n", "newcomer.yaml")


FAST = {"k": (2,), "n_permutations": 9, "n_bootstrap": 20, "n_repeats": 1, "figures": False}


def test_set_without_window_runs(tiny_assets: dict, tmp_path: Path) -> None:
    """The set's window has no size: extraction and the nuisance space both read the fitted
    window (the nuisance space used to get the unfitted one and crashed)."""
    path = short_set(tmp_path)
    cfg = run_config(tiny_assets, tmp_path / "out", stimuli=str(path), sae="none", **FAST)
    results = json.loads((execute(cfg, progress=False) / "results.json").read_text())
    assert results["model"]["window"]["size"] >= 5
    assert {m["space"] for m in results["concepts"][0]["methods"]} == {"raw", "nuisance"}


def test_resolvers_run_once_and_stages_never_resolve(
    tiny_assets: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan resolves model, SAE, fingerprints and window once; after it, a stage that
    resolved anything again would raise (the run used to resolve the model name 4 times,
    read the SAE config 3 times and fit the window in one place only)."""
    calls: Counter[str] = Counter()

    def counted(owner: object, name: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    for name in ("sae_config", "model_name", "layer"):
        counted(resolve, name)
    for name in ("source_fingerprint", "sae_files_fingerprint"):
        counted(plan_module, name)
    planned = []

    def build_then_forbid(config):
        plan = build_plan(config)
        planned.append(plan)

        def forbidden(*_args, **_kwargs):
            raise AssertionError("resolved again after the plan")

        for name in ("sae_config", "model_name", "layer", "requested_layer", "load"):
            monkeypatch.setattr(resolve, name, forbidden)
        for owner in (sae_io, resolve):
            monkeypatch.setattr(owner, "read_sae_config", forbidden)
        monkeypatch.setattr(model_module, "source_fingerprint", forbidden)
        monkeypatch.setattr(sae_io, "sae_files_fingerprint", forbidden)
        monkeypatch.setattr(Window, "for_stimuli", classmethod(forbidden))
        fit = Window.fit
        monkeypatch.setattr(
            Window, "fit", lambda self, *a: fit(self, *a) if self.size else forbidden()
        )
        return plan

    monkeypatch.setattr(stages, "build_plan", build_then_forbid)
    path = short_set(tmp_path)
    cfg = run_config(tiny_assets, tmp_path / "out", stimuli=str(path), **FAST)
    directory = execute(cfg, progress=False)
    assert dict(calls) == {
        "sae_config": 1,
        "model_name": 1,
        "layer": 1,
        "source_fingerprint": 1,
        "sae_files_fingerprint": 1,
    }
    (plan,) = planned
    assert plan.window.size is not None and plan.layer == 1 and plan.sae is not None
    results = json.loads((directory / "results.json").read_text())
    assert results["provenance"]["run_key"] == plan.key == directory.name.removeprefix("run-")
    with pytest.raises(FrozenInstanceError):
        plan.layer = 2  # type: ignore[misc]


def test_run_key_changes_with_keyed_fields_only(tiny_assets: dict, tmp_path: Path) -> None:
    path = short_set(tmp_path)
    base = run_config(tiny_assets, tmp_path / "out", stimuli=str(path), **FAST)
    key = build_plan(base).key
    unkeyed = {
        "output": str(tmp_path / "elsewhere"),
        "run_id": "named",
        "engine": "ray",
        "workers": 3,
        "figures": True,
        "layer": 1,  # what the SAE resolves to anyway
        "window_align": "start",  # the default
    }
    for name, value in unkeyed.items():
        assert build_plan(replace(base, **{name: value})).key == key, name
    keyed = {
        "seed": 1,
        "n_permutations": 19,
        "k": (3,),
        "sae": "none",
        "window_size": 3,
        "n_splits": 4,
        "shuffle_labels": 0,
    }
    keys = {name: build_plan(replace(base, **{name: value})).key for name, value in keyed.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keyed), keys
    copy = tmp_path / "copy" / path.name
    copy.parent.mkdir()
    copy.write_text(path.read_text().replace("round 1.", "round one."))
    assert build_plan(replace(base, stimuli=str(copy))).key != key
