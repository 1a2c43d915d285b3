"""The run plan: everything a run resolves, resolved once, before any expensive work.

`build_plan` turns a `RunConfig` into a frozen `RunPlan`: the validated stimuli, the fitted
window, the model (name, source folder, file fingerprint, layer, dtype, device), the SAE
(resolved folder and fingerprint, None for none), the units of each space and the analyses
of the run with the cross-validation folds each can fill (`cv_size`). Every stage reads the
plan; none resolves a model, an SAE or a window again, so what the run computes and what
its key says cannot drift apart. The run key (`RunPlan.key`) hashes the plan's resolved
values and the options that change numbers (`RunConfig`'s `UNKEYED` fields stay out).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cogsae import resolve
from cogsae._io import stable_hash
from cogsae.constants import CONTRAST_KIND, OMNIBUS
from cogsae.errors import CogsaeError
from cogsae.extract import Window, check_window_fillable
from cogsae.flags import ModelOptions, flag
from cogsae.model import load_tokenizer, resolve_model, source_fingerprint
from cogsae.pipeline.config import UNKEYED, RunConfig
from cogsae.sae.io import resolve_sae_folder, sae_files_fingerprint
from cogsae.stimuli import StimulusSet, load_stimuli
from cogsae.version import __version__

log = logging.getLogger(__name__)

RESOLVED = ("model", "layer", "sae", "window_align", "window_size")
"""RunConfig fields the plan resolves: the key hashes what they resolve to instead."""


@dataclass(frozen=True)
class CVSize:
    """The outer folds of one analysis.

    Attributes:
        n_splits: folds used.
        requested: folds asked for (``--folds``).
        reason: why fewer were used ("" when the requested folds fit).
    """

    n_splits: int
    requested: int
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Analysis:
    """One concept entry of a run: a factor's contrast of two levels, or the omnibus
    analysis of every level of a factor with 3 or more.

    Attributes:
        factor: the design factor.
        target, reference: the contrasted levels (an omnibus entry: the declared ones).
        cv: the outer folds it uses.
        kind: "contrast" (two levels, target vs reference) or "omnibus" (all levels).
        extra: True for an entry of the set's ``contrasts:`` field.
        all_levels: every level of the factor, for an omnibus entry (else empty).
    """

    factor: str
    target: str
    reference: str
    cv: CVSize
    kind: str = CONTRAST_KIND
    extra: bool = False
    all_levels: tuple[str, ...] = ()

    @property
    def levels(self) -> tuple[str, ...]:
        return self.all_levels or (self.target, self.reference)

    @property
    def stage(self) -> str:
        """Its stage and file-name part: the factor, plus the levels for an extra contrast
        or "-omnibus" for an omnibus entry."""
        if self.kind == OMNIBUS:
            return f"{self.factor}-omnibus"
        return f"{self.factor}-{self.target}-vs-{self.reference}" if self.extra else self.factor


@dataclass(frozen=True)
class RunPlan:
    """Everything a run resolved (see the module docstring).

    Attributes:
        config: the options (analysis settings are read from here).
        stimuli: the validated set.
        content: sha256 of the stimulus file.
        window: the window, fitted (always with a size).
        model: the model name that is loaded; ``model_source`` its folder or hub id,
            ``model_fingerprint`` the hash of its files.
        layer: decoder block read (the model's middle block when nothing chose one).
        dtype, device, device_map: where and how the model runs.
        sae: the resolved SAE folder, None for no SAE; ``sae_fingerprint`` its files' hash.
        units: space -> number of units ("raw": the model width; "sae": its latents).
        analyses: the concept entries, the primary factor's declared contrast first.
        warnings: design notes for the report (e.g. levels no analysis uses).
        tokenizer: the model's tokenizer (not part of the key).
    """

    config: RunConfig
    stimuli: StimulusSet
    content: str
    window: Window
    model: str
    model_source: str
    model_fingerprint: str
    layer: int
    dtype: str
    device: str
    device_map: str | None
    sae: str | None
    sae_fingerprint: str | None
    units: dict[str, int]
    analyses: tuple[Analysis, ...]
    warnings: tuple[str, ...] = ()
    tokenizer: Any = field(default=None, compare=False, repr=False)

    @cached_property
    def key(self) -> str:
        """Hash of what produces the numbers: the options not in `UNKEYED` or `RESOLVED`,
        the file's content and every resolved value (the tokenizer and placement aside)."""
        options = {k: v for k, v in asdict(self.config).items() if k not in (*UNKEYED, *RESOLVED)}
        resolved = {
            "content": self.content,
            "window": asdict(self.window),
            "model": [self.model, self.model_fingerprint],
            "layer": self.layer,
            "sae": self.sae_fingerprint,
            "analyses": [asdict(a) for a in self.analyses],
        }
        return stable_hash(options, resolved, __version__, length=10)

    def model_options(self) -> ModelOptions:
        """The resolved model as `ModelOptions` (what `cogsae.model.load_model` takes)."""
        return ModelOptions(self.model, self.layer, self.dtype, self.device, self.device_map)


def build_plan(config: RunConfig) -> RunPlan:
    """Resolve ``config`` once (`cogsae.resolve` order): stimuli, model, layer, SAE, window,
    units and analyses; every problem is a `CogsaeError` before any model is loaded."""
    stimuli = load_stimuli(config.stimuli)
    if stimuli.path is None:
        raise CogsaeError("a run needs a stimulus file", field="stimuli")
    asked = resolve.requested_layer(config.layer, stimuli.model)
    sae_cfg = resolve.sae_config(config.sae, asked)
    model = resolve.model_name(config.model, stimuli.model, sae_cfg)
    layer = resolve.layer(config.layer, stimuli.model, sae_cfg)  # an SAE of another layer fails
    width, n_layers = _model_shape(model)
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise CogsaeError(
            f"layer {layer} out of range: the model has {n_layers} blocks (0..{n_layers - 1})",
            field=flag(ModelOptions, "layer"),
        )
    tokenizer = load_tokenizer(model)
    window = Window.for_stimuli(stimuli, align=config.window_align, size=config.window_size)
    check_window_fillable(tokenizer, stimuli, window)
    units = {"raw": width}
    sae = None if sae_cfg is None else str(resolve_sae_folder(config.sae, asked))
    if sae_cfg is not None:
        units["sae"] = sae_cfg.d_sae
    _check_k(config, units)
    chosen = analyses(stimuli, config.n_splits)
    unused = unused_levels(stimuli, chosen)
    for factor, levels in unused.items():
        log.warning("%s: levels %s of %r are used by no analysis", stimuli.path, levels, factor)
    return RunPlan(
        config=config,
        stimuli=stimuli,
        content=hashlib.sha256(Path(stimuli.path).read_bytes()).hexdigest(),
        window=window.fit(tokenizer, stimuli),
        model=model,
        model_source=str(resolve_model(model)[1]),
        model_fingerprint=source_fingerprint(model),
        layer=layer,
        dtype=config.dtype,
        device=config.device,
        device_map=config.device_map,
        sae=sae,
        sae_fingerprint=None if sae is None else sae_files_fingerprint(sae),
        units=units,
        analyses=chosen,
        warnings=tuple(unused_warning(f, levels) for f, levels in unused.items()),
        tokenizer=tokenizer,
    )


def _model_shape(model: str) -> tuple[int, int]:
    """(hidden size, decoder blocks) of ``model``, read from its config.json."""
    from transformers import AutoConfig

    _, source = resolve_model(model)
    try:
        hf = AutoConfig.from_pretrained(source, local_files_only=True)
    except OSError as err:
        raise CogsaeError(
            f"cannot read the model config: {err}", field=flag(RunConfig, "model")
        ) from err
    return int(hf.hidden_size), int(hf.num_hidden_layers)


def _check_k(config: RunConfig, units: dict[str, int]) -> None:
    """Refuse a k above the units of a space."""
    space, smallest = min(units.items(), key=lambda kv: kv[1])
    if max(config.k) > smallest:
        raise CogsaeError(
            f"k = {max(config.k)} is more than the {smallest} units of the {space} space",
            field=flag(RunConfig, "k"),
        )


def analyses(stimuli: StimulusSet, n_splits: int) -> tuple[Analysis, ...]:
    """The concept entries of a run on ``stimuli``: each factor's declared contrast (the
    primary factor first), then the set's extra ``contrasts:``, each with its folds."""
    specs = [(f, *stimuli.contrast_levels(f), False) for f in stimuli.factors]
    specs += [(*c, True) for c in stimuli.contrasts]
    chosen = [
        Analysis(f, t, r, cv_size(stimuli, f, (t, r), n_splits), extra=extra)
        for f, t, r, extra in specs
    ]
    chosen += [
        Analysis(
            f,
            *stimuli.contrast_levels(f),
            cv_size(stimuli, f, tuple(levels), n_splits),
            kind=OMNIBUS,
            all_levels=tuple(levels),
        )
        for f, levels in stimuli.factors.items()
        if len(levels) >= 3
    ]
    return tuple(chosen)


def cv_size(stimuli: StimulusSet, factor: str, levels: tuple[str, ...], requested: int) -> CVSize:
    """The largest K <= ``requested`` that leaves at least two items (groups, when the set
    has groups) of each of ``levels`` in every test fold: K = min(requested, floor(n / 2))
    for the level with the fewest, n. Validation (`cogsae.stimuli`) gives every level at least
    `MIN_ITEMS_PER_LEVEL` (4) independent items or groups, so K >= 2."""
    folds = flag(RunConfig, "n_splits")
    if requested < 2:
        raise CogsaeError("need at least 2 folds", field=folds)
    of_item = np.array([it.levels[factor] for it in stimuli.items])
    groups = stimuli.groups()
    unit = "items" if groups is None else "groups"
    counts = {}
    for level in levels:
        members = np.flatnonzero(of_item == level)
        counts[level] = len(members) if groups is None else len(set(groups[members]))
    level, n = min(counts.items(), key=lambda kv: kv[1])
    chosen = min(requested, n // 2)
    if chosen == requested:
        return CVSize(chosen, requested)
    reason = (
        f"{factor}={level} has {n} {unit}: {requested} folds would leave fewer than 2 of them "
        f"in a test fold, so {chosen} folds"
    )
    log.warning("%s: %s", stimuli.path, reason)
    return CVSize(chosen, requested, reason)


def unused_levels(stimuli: StimulusSet, chosen: tuple[Analysis, ...]) -> dict[str, list[str]]:
    """factor -> its levels that no analysis of ``chosen`` uses (in declared order)."""
    used: dict[str, set[str]] = {}
    for analysis in chosen:
        used.setdefault(analysis.factor, set()).update(analysis.levels)
    out = {
        f: [lev for lev in levels if lev not in used.get(f, set())]
        for f, levels in stimuli.factors.items()
    }
    return {f: levels for f, levels in out.items() if levels}


def unused_warning(factor: str, levels: list[str]) -> str:
    """The warning naming levels of ``factor`` that no analysis uses."""
    names = ", ".join(repr(lev) for lev in levels)
    return (
        f"level(s) {names} of {factor!r} are used by no analysis: their items are left out; "
        "add them to contrasts: to analyse them"
    )
