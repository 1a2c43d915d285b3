"""The report reads only run files: it imports no pipeline, analysis or torch, and neither it
nor the other plotting modules change matplotlib's backend at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter importing this worktree's cogsae."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_imports_no_pipeline_analysis_or_torch() -> None:
    result = run_python(
        "import sys, cogsae.report, cogsae.report.sweep\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('cogsae.pipeline', "
        "'cogsae.analysis', 'torch.'))]\n"
        "assert not bad, bad\n"
    )
    assert result.returncode == 0, result.stderr


def test_imports_keep_the_matplotlib_backend() -> None:
    result = run_python(
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import cogsae.report, cogsae.inspect, cogsae.interventions, cogsae.analysis.vis\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
    )
    assert result.returncode == 0, result.stderr
