"""The causal section of a report, from a concept record alone."""

from __future__ import annotations

from pathlib import Path

from cogsae.report.causal import causal_section, causal_table, write_causal_figures


def _row(readout: str, intervention: str, strength: float, q: float) -> dict:
    return {
        "readout": readout,
        "space": readout.split(":")[0],
        "method": readout.split(":")[1],
        "intervention": intervention,
        "strength": strength,
        "effect": 0.01 * strength if intervention == "steer" else -0.002,
        "ci_low": -0.01,
        "ci_high": 0.02,
        "p_random": q / 2,
        "p_corrected": q,
        "null_low": -0.001,
        "null_high": 0.001,
        "n_null": 99,
    }


def _concept() -> dict:
    rows = []
    for readout, q in (("sae:contrast", 0.01), ("raw:diff_means", 0.5)):
        rows += [_row(readout, "steer", a, q) for a in (-0.1, 0.1)]
        rows.append(_row(readout, "ablate", 0.0, q))
    example = {"readout": "sae:contrast", "alpha": 0.5, "prompt": "I", "text": " won"}
    return {
        "factor": "condition",
        "target": "gain",
        "reference": "loss",
        "causal": rows,
        "causal_comparisons": [],
        "steering_examples": [{**example, "perplexity": 3.0, "concept_score": 2}],
        "causal_settings": {"mean_norm": 4.0, "method": "first-order", "n_null": 99},
    }


def test_causal_section_names_the_readouts_beyond_random(tmp_path: Path) -> None:
    concept = _concept()
    table = causal_table(concept)
    assert list(table["readout"]) == ["sae:contrast", "raw:diff_means"]
    text = "\n".join(causal_section(concept, tmp_path))
    assert "steering along 1 of 2 readouts" in text and "sae:contrast" in text
    assert "ablating 1 of 2" in text and "ppl 3.0" in text
    write_causal_figures(tmp_path, {"concepts": [concept]})
    assert (tmp_path / "causal_condition.png").stat().st_size > 0
    assert causal_section({**concept, "causal": []}, tmp_path) == []
