"""Figures: each helper returns a Figure and writes a PNG, including degenerate inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cogsae.analysis.contrasts import univariate_contrast
from cogsae.analysis.rsa import unit_rdm
from cogsae.analysis.vis import mds_plot, position_profile, rdm_heatmap, volcano_plot

PNG_MAGIC = b"\x89PNG"


def _data():
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    mask = np.ones((24, 6), dtype=bool)
    mask[::2, 4:] = False  # reference items lack the last two positions
    values = rng.standard_normal((24, 6, 30)) * mask[:, :, None]
    values[labels == 1, :, :4] += 1.0
    means = values.sum(1) / mask.sum(1)[:, None]
    return values, mask, labels, means


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:4] == PNG_MAGIC


def test_volcano_plot_handles_infinite_effects(tmp_path: Path) -> None:
    _, _, labels, means = _data()
    means[:, 5] = labels * 2.0  # separable constant unit: g = inf, q = 0
    means[:, 6] = 0.0  # inactive unit
    fig = volcano_plot(univariate_contrast(means, labels), tmp_path / "volcano.png")
    assert isinstance(fig, Figure) and _is_png(tmp_path / "volcano.png")


def test_rdm_heatmap_and_mds_from_rsatoolbox_rdms(tmp_path: Path) -> None:
    _, _, labels, means = _data()
    rdms = unit_rdm(means, space="sae")
    assert isinstance(rdm_heatmap(rdms, labels, tmp_path / "rdm.png"), Figure)
    assert isinstance(mds_plot(rdms, labels, tmp_path / "mds.png", seed=1), Figure)
    assert _is_png(tmp_path / "rdm.png") and _is_png(tmp_path / "mds.png")


def test_mds_is_seeded() -> None:
    _, _, labels, means = _data()
    rdms = unit_rdm(means)
    first, second = (mds_plot(rdms, labels, seed=3) for _ in range(2))
    a, b = (f.axes[0].collections[0].get_offsets() for f in (first, second))
    np.testing.assert_allclose(a, b)


def test_position_profile_leaves_positions_without_both_conditions_blank(tmp_path: Path) -> None:
    values, mask, labels, _ = _data()
    for statistic in ("t", "difference"):
        fig = position_profile(
            values, mask, labels, [0, 1, 20], tmp_path / f"{statistic}.png", statistic=statistic
        )
        heights = fig.axes[0].lines[0].get_ydata()
        assert np.isfinite(heights[:4]).all() and np.isnan(heights[4:]).all()
        assert _is_png(tmp_path / f"{statistic}.png")
