"""Selection overlap: fold-wise Jaccard of two methods' units and the coincide flag."""

from __future__ import annotations

import numpy as np

from cogsae.activations import Activations
from cogsae.analysis.cv import make_plan
from cogsae.analysis.ensemble import SelectedL1, evaluate
from cogsae.analysis.overlap import mark_coinciding, selection_overlap


def test_overlap_flags_methods_that_select_the_same_units() -> None:
    """Five strong independent units: the contrast and both RSA selectors take exactly
    them in every fold (Jaccard 1, coincide); k random units share almost none."""
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 30)
    values = rng.standard_normal((60, 1, 50))
    values[:, :, :5] += 3.0 * labels[:, None, None]
    acts = Activations(values.astype(np.float32), np.ones((60, 1), bool), "raw")
    plan = make_plan(labels, n_repeats=1, n_permutations=0, seed=0)
    methods = ["contrast", "rsa_discriminative", "random"]
    results = evaluate([SelectedL1(m, k=5) for m in methods], acts, plan, progress=False)
    rows = {(r["a"], r["b"]): r for r in selection_overlap(results)}
    assert set(rows) == {
        ("contrast", "rsa_discriminative"),
        ("contrast", "random"),
        ("rsa_discriminative", "random"),
    }
    same = rows[("contrast", "rsa_discriminative")]
    assert same["jaccard"] == 1.0 and same["coincide"] and same["space"] == "raw"
    assert rows[("contrast", "random")]["jaccard"] < 0.3
    assert not rows[("contrast", "random")]["coincide"]
    marked = mark_coinciding(
        [
            {"a": "raw:contrast", "b": "raw:rsa_discriminative"},
            {"a": "raw:contrast", "b": "raw:random"},
        ],
        list(rows.values()),
    )
    assert [row["coincide"] for row in marked] == [True, False]
