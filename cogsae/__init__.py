"""cogsae: cognitive-neuroscience methods for locating concepts in language models and SAEs.

The data flow, one package each (definitions: docs/methods.md):
stimuli -> model -> extract (windowed layer-L activations) -> sae (features) ->
analysis (contrasts, RSA, selection, cross-validated readouts, transfer) -> pipeline (the
run: config, stages, results.json) -> report (reads results.json) -> cli.
Corpora (corpus), judges, inspect and interventions serve the same stages.

The public API below is imported on first use (PEP 562), so ``import cogsae.report`` or
``import cogsae.stimuli`` does not load torch and the whole pipeline.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cogsae.version import __version__

if TYPE_CHECKING:
    from cogsae.activations import Activations
    from cogsae.analysis.contrasts import univariate_contrast
    from cogsae.analysis.rsa import categorical_rsa, discriminative_rsa
    from cogsae.extract import extract_activations
    from cogsae.model import load_model
    from cogsae.pipeline.config import RunConfig
    from cogsae.sae.base import SAE
    from cogsae.sae.io import load_sae
    from cogsae.stimuli import load_stimuli

_PUBLIC = {
    "load_stimuli": "cogsae.stimuli",
    "load_model": "cogsae.model",
    "extract_activations": "cogsae.extract",
    "Activations": "cogsae.activations",
    "load_sae": "cogsae.sae.io",
    "SAE": "cogsae.sae.base",
    "RunConfig": "cogsae.pipeline.config",
    "univariate_contrast": "cogsae.analysis.contrasts",
    "categorical_rsa": "cogsae.analysis.rsa",
    "discriminative_rsa": "cogsae.analysis.rsa",
}

__all__ = [
    "SAE",
    "Activations",
    "RunConfig",
    "__version__",
    "categorical_rsa",
    "discriminative_rsa",
    "extract_activations",
    "load_model",
    "load_sae",
    "load_stimuli",
    "run",
    "univariate_contrast",
]


def run(config: RunConfig, *, progress: bool = True) -> Path:
    """Run the concept hunt of ``config`` and write its report; returns the run folder.

    The same as ``cogsae run``: `cogsae.pipeline.execute` writes results.json (resumable,
    stage by stage), then `cogsae.report.write_report` renders report.md / report.html.
    """
    from cogsae.pipeline import execute
    from cogsae.report import write_report

    directory = execute(config, progress=progress)
    write_report(directory)
    return directory


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'cogsae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
