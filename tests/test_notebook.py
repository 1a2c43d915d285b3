"""analyses/rsa_hypotheses.ipynb runs from start to end (here on the tiny model)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import REPO, write


def test_rsa_hypotheses_notebook_runs(
    tiny_assets: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ["factors: {praise: [weak, moderate, strong]}", "ordered: [praise]"]
    lines += ["features: [intensity]", "window: {align: start, size: 4}", "items:"]
    for g in range(6):
        for rank, level in enumerate(("weak", "moderate", "strong")):
            lines.append(
                f'  - {{text: "The {level} meal number {g} was rated {rank}.", praise: {level}, '
                f"group: g{g}, intensity: {rank + g / 10}}}"
            )
    stimuli = write(tmp_path, "\n".join(lines) + "\n", "graded.yaml")
    monkeypatch.setenv("COGSAE_NB_REPO", str(REPO))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout
    monkeypatch.setenv("COGSAE_NB_MODEL", tiny_assets["model"])
    monkeypatch.setenv("COGSAE_NB_STIMULI", str(stimuli))
    monkeypatch.setenv("COGSAE_NB_LAYERS", "0,1,2")
    monkeypatch.setenv("COGSAE_NB_BOOTSTRAP", "50")
    notebook = nbformat.read(REPO / "analyses" / "rsa_hypotheses.ipynb", as_version=4)
    NotebookClient(notebook, timeout=180, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    table = next(o for o in outputs if "layer" in o.get("data", {}).get("text/plain", ""))
    assert "graded:praise" in str(table)
