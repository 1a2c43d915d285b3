"""The causal stage of `cogsae run`: does steering along, or ablating, each readout of the
primary concept change target- versus reference-item log-probabilities more than random
unit sets of the same size do? And what does steering along the best readout write?

Every readout is cross-fitted: item i is edited with the readout fitted in the outer fold
(first repeat of the run's CV plan) that held item i out, so no readout is tested on the
items it was selected and fitted on. Effects are first-order estimates from one gradient
pass (`cogsae.analysis.causal`); the null of R random unit sets (random directions for the
dense baselines) is priced on the same gradients. The generations beside it are exact
(`cogsae.interventions.generate`, the final readouts' directions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from statsmodels.stats.multitest import multipletests

from cogsae import streams
from cogsae.activations import Activations
from cogsae.analysis.causal import (
    Resamples,
    Sensitivity,
    paired_difference,
    random_null_test,
    random_unit_sets,
    sensitivity,
    unit_rows,
)
from cogsae.analysis.cv import FoldSets
from cogsae.analysis.ensemble import LinearModel, MethodResult, ReadoutProcedure, SpaceData
from cogsae.constants import (
    ABLATE,
    CONFOUND,
    DENSE_L2,
    DIFF_MEANS,
    MAX_ACTIVATION,
    RANDOM,
    RSA_CATEGORICAL,
    RSA_DISCRIMINATIVE,
    STEER,
)
from cogsae.inspect import Ensemble
from cogsae.interventions import SteerRows, generate_rows, mean_logprobs
from cogsae.model import LoadedModel
from cogsae.pipeline.results import ConceptResult, corrected
from cogsae.streams import Stream

GENERATION_PROMPTS = ("The news today is that", "I want to tell you about", "Yesterday, my friend")
"""Neutral prompts continued under steering (`steering_examples`)."""
GENERATION_ALPHAS = (-1.0, -0.5, 0.0, 0.5, 1.0)
"""Steering strengths of the generations, in units of the mean residual norm."""
GENERATION_TOKENS = 20
"""New tokens per generation (greedy)."""
DENSE = (DIFF_MEANS, DENSE_L2)
"""Readouts on all units: their null is random directions, not random unit sets."""


def cross_fitted(
    procedure: ReadoutProcedure, acts: Activations, result: MethodResult
) -> tuple[list[LinearModel], np.ndarray]:
    """The readout refitted in each fold of the plan's first repeat, and [items] the fold
    holding each item out (so item i is only ever edited by a readout that never saw it)."""
    plan = result.plan
    models = procedure.fit(SpaceData(acts), FoldSets.of(plan, [0]))
    return [models.model(f) for f in range(plan.n_splits)], plan.fold_ids[0, 0]


def direction(model: LinearModel, space: str, d_model: int, sae: Any) -> np.ndarray:
    """[d_model] unit model-space direction of a readout (`Ensemble.direction`)."""
    vector = Ensemble("", space, model).direction(d_model, sae).numpy().astype(np.float64)
    return unit_rows(vector[None])[0]


class Interventions:
    """Per-item first-order changes [items] of one readout's edits and of its null [items, R].

    Attributes:
        steer: change per unit alpha (alpha in mean residual norms) of steering.
        ablate: change when the readout's units are clamped to 0 (SAE) or its direction
            is projected out (raw).
        null_steer, null_ablate: the same for the R random unit sets / directions.
    """

    def __init__(
        self,
        sens: Sensitivity,
        attribution: np.ndarray | None,
        result: MethodResult,
        folds: list[LinearModel],
        fold_of: np.ndarray,
        data: SpaceData,
        sae: Any,
        n_null: int,
        rng: np.random.Generator,
    ) -> None:
        d_model = sens.residual.shape[2]
        space, scale = result.space, sens.mean_norm
        units = [direction(m, space, d_model, sae) for m in folds]
        each = np.stack(units)[fold_of]  # [items, d]
        self.steer = scale * sens.steer_each(each)
        if result.method in DENSE:
            null = unit_rows(rng.standard_normal((n_null, d_model)))
        else:
            final = result.model
            used = np.flatnonzero(final.coef)
            own = np.unique(np.concatenate([final.units, *(m.units for m in folds)]))
            self.null_units = random_unit_sets(data.active, own, max(used.size, 1), n_null, rng)
            sd = data.means.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            coef = final.coef[used] if used.size else np.ones(1)
            sets = self.null_units
            weights = np.stack([rng.permutation(coef) for _ in sets]) / sd[sets]  # [R, k]
            if space == "sae":
                decoder = sae.decoder_directions.detach().float().cpu().numpy()
                vectors = np.einsum("rk,rkd->rd", weights, decoder[sets])
            else:
                vectors = np.zeros((n_null, d_model))
                np.put_along_axis(vectors, sets, weights, axis=1)
            null = unit_rows(vectors)
        self.null_steer = scale * sens.steer(null)
        if space == "sae":
            assert attribution is not None
            clamped = [m.units[m.coef != 0] for m in folds]
            self.ablate = -np.array(
                [attribution[i, clamped[f]].sum() for i, f in enumerate(fold_of)]
            )
            self.null_ablate = -attribution[:, self.null_units].sum(axis=2)
        else:
            self.ablate = sens.project_out_each(each)
            self.null_ablate = sens.project_out(null)

    def settings(self, alphas: Sequence[float]) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
        """(intervention, strength, readout change [items], null changes [items, R])."""
        out = [(STEER, float(a), a * self.steer, a * self.null_steer) for a in alphas]
        return [*out, (ABLATE, 0.0, self.ablate, self.null_ablate)]


def causal_pairs(labels: Sequence[str], methods: Sequence[str]) -> list[tuple[str, str]]:
    """Paired comparisons of causal effects: SAE vs raw per method; RSA vs max-activation
    in each space (those whose readouts both ran)."""
    have = set(labels)
    pairs = [(f"sae:{m}", f"raw:{m}") for m in methods]
    for space in ("sae", "raw"):
        for rsa in (RSA_DISCRIMINATIVE, RSA_CATEGORICAL):
            pairs.append((f"{space}:{rsa}", f"{space}:{MAX_ACTIVATION}"))
    return [(a, b) for a, b in pairs if a in have and b in have]


def causal_tests(
    concept: ConceptResult,
    spaces: dict[str, Activations],
    texts: Sequence[str],
    groups: np.ndarray | None,
    loaded: LoadedModel,
    sae: Any,
    procedures: Callable[[str], list[ReadoutProcedure]],
    *,
    methods: Sequence[str],
    alphas: Sequence[float],
    n_null: int,
    n_boot: int,
    seed: int,
    progress: bool = True,
    sens: Sensitivity | None = None,
) -> dict[str, Any]:
    """Causal rows and paired comparisons of every readout of ``concept`` in ``spaces``.

    Args:
        concept: the concept's analysis (its readouts, items and labels).
        spaces: space -> activations of all the set's items.
        texts: [items] the contrast items' texts (``concept.items`` order).
        groups: [items] their groups, or None.
        procedures: space -> the readout procedures evaluated there (to refit per fold).
        methods: the run's selection methods (for the comparison pairs).
        alphas: steering strengths in units of the mean residual norm at layer L.
        n_null: R, random unit sets (or directions) per readout.
        n_boot: bootstrap resamples of the items.
        sens: precomputed gradients of ``texts`` (computed when None).
    """
    labels = concept.labels
    sens = sens or sensitivity(loaded, texts, progress=progress)
    attribution = sens.feature_attribution(sae) if sae is not None and "sae" in spaces else None
    resamples = Resamples.draw(
        labels, groups, streams.rng(seed, Stream.INTERVENTION_BOOTSTRAP), n_boot
    )
    by_space = {space: {p.name: p for p in procedures(space)} for space in spaces}
    edits: dict[str, Interventions] = {}
    for i, result in enumerate(concept.methods):
        if result.space not in spaces:
            continue  # the confound baseline reads nuisance variables, not the model
        acts = spaces[result.space].subset(concept.items)
        folds, fold_of = cross_fitted(by_space[result.space][result.method], acts, result)
        rng = streams.rng(seed, Stream.CAUSAL_NULL, i)
        edits[result.label] = Interventions(
            sens, attribution, result, folds, fold_of, SpaceData(acts), sae, n_null, rng
        )
    rows: list[dict[str, Any]] = []
    for label, edit in edits.items():
        for intervention, strength, delta, null in edit.settings(alphas):
            test = random_null_test(delta, null, resamples)
            space, method = label.split(":", 1)
            rows.append(
                {
                    "readout": label,
                    "space": space,
                    "method": method,
                    "intervention": intervention,
                    "strength": strength,
                    **vars(test),
                    "n_null": n_null,
                }
            )
    for family in {(r["intervention"], r["strength"]) for r in rows}:
        members = [r for r in rows if (r["intervention"], r["strength"]) == family]
        for row, q in zip(members, corrected([r["p_random"] for r in members]), strict=True):
            row["p_corrected"] = q
    comparisons = []
    pairs = causal_pairs(list(edits), methods)
    strongest = max(alphas, key=abs) if alphas else None
    for intervention, strength in [(STEER, strongest), (ABLATE, 0.0)]:
        if strength is None or not pairs:
            continue
        family = []
        for a, b in pairs:
            pick = {s[:2]: s[2] for s in edits[a].settings([strength])}
            other = {s[:2]: s[2] for s in edits[b].settings([strength])}
            key = (intervention, float(strength))
            family.append(
                {
                    "a": a,
                    "b": b,
                    "intervention": intervention,
                    "strength": float(strength),
                    **paired_difference(pick[key], other[key], resamples),
                }
            )
        holm = multipletests([c["p"] for c in family], method="holm")[1]
        for row, q in zip(family, holm, strict=True):
            row["p_corrected"] = float(q)
            row["correction"] = "holm"
        comparisons += family
    return {
        "rows": rows,
        "comparisons": comparisons,
        "mean_norm": sens.mean_norm,
        "alphas": [float(a) for a in alphas],
        "n_null": n_null,
        "n_boot": n_boot,
        "method": "first-order (gradient) estimate, cross-fitted readouts",
    }


def steering_examples(
    concept: ConceptResult,
    loaded: LoadedModel,
    sae: Any,
    concept_text: str,
    mean_norm: float,
    *,
    judge: Any,
    prompts: Sequence[str] = GENERATION_PROMPTS,
    alphas: Sequence[float] = GENERATION_ALPHAS,
    max_new_tokens: int = GENERATION_TOKENS,
) -> list[dict[str, Any]]:
    """Greedy continuations of ``prompts`` steered along the best k-unit readout (highest
    held-out AUROC) and DiffMean at each alpha, with the judge's concept score of each
    continuation and its perplexity under the unedited model. Each prompt's continuations
    are one batch (row 0 unedited, shown for every readout at alpha 0)."""
    selections = [m for m in concept.methods if m.method not in (*DENSE, RANDOM, CONFOUND)]
    chosen = [max(selections, key=lambda m: m.auroc)] if selections else []
    chosen += [m for m in concept.methods if m.method == DIFF_MEANS]
    settings = [(None, 0.0)] + [(r, float(a)) for r in chosen for a in alphas if a]
    vectors = torch.stack(
        [
            torch.zeros(loaded.d_model)
            if result is None
            else torch.from_numpy(
                alpha
                * mean_norm
                * direction(result.model, result.space, loaded.d_model, sae).astype(np.float32)
            )
            for result, alpha in settings
        ]
    )
    rows = []
    for prompt in prompts:
        texts = generate_rows(
            loaded, prompt, [SteerRows(vectors)], len(settings), max_new_tokens=max_new_tokens
        )
        for (result, alpha), text in zip(settings, texts, strict=True):
            labels = [m.label for m in chosen] if result is None else [result.label]
            rows += [
                {"readout": label, "alpha": alpha, "prompt": prompt, "text": text}
                for label in labels
            ]
    texts = [r["text"] for r in rows]
    for row, ppl in zip(rows, continuation_perplexity(loaded, rows), strict=True):
        row["perplexity"] = ppl
    if judge is not None and texts:
        for row, value, score in zip(
            rows, judge.values(concept_text, texts), judge.score(concept_text, texts), strict=True
        ):
            row["similarity"], row["concept_score"] = float(value), int(score)
    return rows


def continuation_perplexity(loaded: LoadedModel, rows: list[dict[str, Any]]) -> list[float]:
    """Perplexity of each row's continuation given its prompt under the unedited model:
    exp(-mean log-prob of the continuation's tokens), from the summed log-probs of
    prompt + continuation and of the prompt alone (NaN for an empty continuation)."""
    full = [r["prompt"] + r["text"] for r in rows]
    prompts = [r["prompt"] for r in rows]
    n_full = np.array([len(x) for x in loaded.tokenizer(full)["input_ids"]])
    n_prompt = np.array([len(x) for x in loaded.tokenizer(prompts)["input_ids"]])
    total = mean_logprobs(loaded, full) * (n_full - 1)
    head = mean_logprobs(loaded, prompts) * (n_prompt - 1)
    n_new = n_full - n_prompt
    with np.errstate(divide="ignore", invalid="ignore"):
        ppl = np.where(n_new > 0, np.exp(-(total - head) / np.maximum(n_new, 1)), np.nan)
    return [float(v) for v in ppl]


def run_causal(
    config: Any,
    stimuli: Any,
    concept: ConceptResult,
    spaces: dict[str, Activations],
    loaded: LoadedModel,
    sae: Any,
    procedures: Callable[[str], list[ReadoutProcedure]],
    progress: bool = True,
) -> dict[str, Any]:
    """The causal stage of a run (`RunConfig` ``config``, `StimulusSet` ``stimuli``) on its
    primary ``concept``: causal rows, paired comparisons and, unless labels are shuffled,
    steering examples judged for the set's concept (embedding judge; none with --judge none)."""
    from cogsae.judges import make_judge

    texts = [stimuli.texts()[i] for i in concept.items]
    groups = stimuli.groups()
    record = causal_tests(
        concept,
        {s: a for s, a in spaces.items() if s in ("raw", "sae")},
        texts,
        None if groups is None else groups[concept.items],
        loaded,
        sae,
        procedures,
        methods=config.methods,
        alphas=config.causal_alphas,
        n_null=config.causal_null,
        n_boot=max(config.n_bootstrap, 2),
        seed=config.seed,
        progress=progress,
    )
    record["steering_examples"] = []
    if config.shuffle_labels is None:
        judge = None if config.judge == "none" else make_judge("embedding")
        record["steering_examples"] = steering_examples(
            concept, loaded, sae, stimuli.concept, record["mean_norm"], judge=judge
        )
    return record
