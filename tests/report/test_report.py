"""The report's verdicts: an honest main finding from a concept's records."""

from __future__ import annotations

from typing import Any

from cogsae.report import main_finding


def method(space: str, name: str, auroc: float, q: float, *, below: bool = False) -> dict:
    return {
        "space": space,
        "method": name,
        "k": 8,
        "auroc": auroc,
        "auroc_ci": [auroc - 0.05, auroc + 0.05],
        "p_corrected": q,
        "below_chance": below,
    }


def comparison(a: str, b: str, diff: float, p: float, stable: bool = True) -> dict:
    return {"a": a, "b": b, "diff": diff, "p_corrected": p, "stable": stable}


def concept(methods: list[dict], comparisons: list[dict] | None = None, **extra: Any) -> dict:
    return {
        "target": "success",
        "reference": "failure",
        "n_items": 128,
        "methods": methods,
        "comparisons": comparisons or [],
        **extra,
    }


def test_below_chance_readouts_name_the_cause_and_crown_nothing() -> None:
    record = concept(
        [
            method("raw", "dense_l2", 0.24, 1.0, below=True),
            method("sae", "rsa_discriminative", 0.46, 0.8),
        ]
    )
    text = main_finding({}, record)
    assert "BELOW chance" in text and "group" in text
    assert "No readout is crowned best" in text and "The highest held-out AUROC" not in text


def test_no_significant_readout_gives_no_verdict() -> None:
    record = concept(
        [method("raw", "contrast", 0.58, 0.2), method("sae", "contrast", 0.55, 0.3)],
        [comparison("sae:contrast", "raw:contrast", -0.03, 0.01)],
    )
    text = main_finding({}, record)
    assert "No readout beat chance" in text and "SAE features beat" not in text


def test_best_is_best_of_n_with_its_q_and_unstable_verdicts_are_marked() -> None:
    record = concept(
        [
            method("raw", "rsa_discriminative", 0.80, 0.01),
            method("raw", "max_activation", 0.70, 0.01),
            method("sae", "rsa_discriminative", 0.90, 0.002),
            method("sae", "max_activation", 0.62, 0.04),
            method("raw", "random", 0.51, 0.6),
        ],
        [
            comparison("sae:rsa_discriminative", "raw:rsa_discriminative", 0.1, 0.01),
            comparison("sae:max_activation", "raw:max_activation", -0.08, 0.03, stable=False),
            comparison("sae:rsa_discriminative", "sae:max_activation", 0.28, 0.001),
            comparison("raw:rsa_discriminative", "raw:max_activation", 0.1, 0.2),
        ],
    )
    text = main_finding({}, record)
    assert "of the 5 readouts" in text and "sae:rsa_discriminative" in text
    assert "q 0.002" in text and "4 of 5 readouts beat chance" in text
    assert "beat raw units significantly for 1 of 2" in text and "lost for 1" in text
    assert "1 of these verdicts are unstable" in text
    assert "In sae space discriminative RSA beat max-activation (ΔAUROC +0.280" in text
    assert "In raw space discriminative RSA did not differ significantly from max-act" in text


def test_readouts_that_do_not_beat_the_confound_baseline_are_named() -> None:
    record = concept(
        [method("raw", "contrast", 0.81, 0.01), method("nuisance", "confound", 0.78, 0.01)],
        confound=[
            {"a": "raw:contrast", "b": "nuisance:confound", "diff": 0.03, "p_corrected": 0.6}
        ],
    )
    text = main_finding({}, record)
    assert "did not significantly beat the confound baseline" in text and "raw:contrast" in text
    assert "The confound baseline decodes the condition" in text


def test_paired_items_without_groups_name_the_cause_instead_of_a_best_readout() -> None:
    record = concept([method("raw", "dense_l2", 0.71, 0.01)], paired_items=80)
    text = main_finding({}, record)
    assert "80 items look paired" in text and "--write-groups" in text
    assert "The highest held-out AUROC" not in text


def test_a_few_paired_items_are_named_without_stopping_the_verdicts() -> None:
    record = concept([method("raw", "dense_l2", 0.81, 0.01)], paired_items=6)
    text = main_finding({}, record)
    assert "6 items look paired" in text and "The highest held-out AUROC" in text


def test_shuffled_runs_say_so_even_without_a_significant_readout() -> None:
    text = main_finding({"shuffled_labels": True}, concept([method("raw", "contrast", 0.5, 0.9)]))
    assert "Labels were shuffled" in text and "0 of 1 readouts" in text


def test_relevance_enrichment_in_the_table_and_base_rate_in_the_figure() -> None:
    from cogsae.report.figures import plot_concept_scores
    from cogsae.report.markdown import methods_table

    row = method("sae", "rsa_categorical", 0.8, 0.01)
    row |= {"balanced_accuracy": 0.7, "p_value": 0.01, "stability": 0.5}
    row |= {"relevance_enrichment": 0.9, "relevance_p": 0.004}
    corpus = {
        "judge": "embedding",
        "base": {"mean_relevance": 0.4, "ci": [0.1, 0.7], "examples": [{"text": "x"}] * 10},
        "methods": {"sae:rsa_categorical": {"mean_relevance": 1.3, "ci": [0.9, 1.7]}},
    }
    table = methods_table(concept([row], corpus=corpus))
    assert table.loc[0, "relevance"] == 1.3 and table.loc[0, "enrichment"] == 0.9
    assert table.loc[0, "p (enrich.)"] == "0.004"
    ax = plot_concept_scores(corpus, "t").axes[0]
    assert [line.get_xdata()[0] for line in ax.get_lines()[:1]] == [0.4]
    assert "base rate" in ax.get_legend().get_texts()[0].get_text()


def test_coinciding_selections_get_no_verdict() -> None:
    """A comparison whose two methods select nearly the same units is said to coincide."""
    coincide = {
        **comparison("sae:rsa_discriminative", "sae:contrast", 0.01, 0.001),
        "coincide": True,
    }
    record = concept(
        [
            method("sae", "rsa_discriminative", 0.90, 0.002),
            method("sae", "rsa_categorical", 0.80, 0.002),
            method("sae", "contrast", 0.89, 0.002),
        ],
        [coincide, comparison("sae:rsa_categorical", "sae:contrast", -0.09, 0.01)],
    )
    text = main_finding({}, record)
    assert "discriminative RSA and Welch-t contrast select nearly the same units" in text
    assert "discriminative RSA beat Welch-t contrast" not in text
    assert "In sae space categorical RSA lost to Welch-t contrast (ΔAUROC -0.090" in text
