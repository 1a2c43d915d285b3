"""Stimulus sets: YAML files of sentences in conditions, validated with file:line errors.

Two forms (docs/methods.md, "Stimulus sets"): the short form
``conditions: {level: [text, ...]}`` (one factor named ``condition``) and the long form
``factors:`` + ``items:`` for factorial designs and per-item ``group`` / ``target``. An
optional ``test:`` section, in the same form, holds held-out items that are never used
for selection or fitting.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cogsae.errors import CogsaeError
from cogsae.hypotheses import check_hypotheses, parse_contrasts
from cogsae.yaml_fields import check_fields as _check_fields
from cogsae.yaml_fields import integer as _int
from cogsae.yaml_fields import mapping as _mapping
from cogsae.yaml_fields import mark_line as _mark_line
from cogsae.yaml_fields import names as _names
from cogsae.yaml_fields import number as _number
from cogsae.yaml_fields import sequence as _sequence
from cogsae.yaml_fields import string as _string

MIN_ITEMS_PER_LEVEL = 4
"""A condition needs at least this many items for any cross-validated statistic."""

DEFAULT_FACTOR = "condition"
"""Factor name of short-form sets."""

_TOP_FIELDS = {
    "name",
    "description",
    "concept",
    "target",
    "reference",
    "model",
    "window",
    "conditions",
    "factors",
    "items",
    "test",
    "contrasts",
    "ordered",
    "features",
    "models",
}
_ITEM_FIELDS = {"text", "group", "target"}
_MODEL_FIELDS = {"name", "layer"}
_WINDOW_FIELDS = {"align", "size"}
WINDOW_ALIGNS = ("start", "end", "center", "target")


@dataclass(frozen=True)
class Item:
    """One stimulus sentence.

    Attributes:
        text: the sentence.
        levels: factor name -> level of this item.
        group: items sharing a group are not independent (same template); None = own group.
        target: substring of ``text`` that a ``target`` window centres on.
        line: 1-based line of the item in its YAML file (for error messages).
    """

    text: str
    levels: dict[str, str]
    group: str | None = None
    target: str | None = None
    line: int | None = None
    features: dict[str, float] = field(default_factory=dict)


@dataclass
class StimulusSet:
    """A validated stimulus set.

    Attributes:
        name: short identifier (defaults to the file stem); names result folders.
        description: what the set contrasts, in words.
        concept: what a good unit set should detect (used to judge corpus examples).
        factors: factor -> its levels, in declaration order; the first is the primary factor.
        target: level of the primary factor whose units we look for.
        reference: level of the primary factor it is contrasted with.
        items: the stimuli used for selection, fitting and cross-validation.
        test_items: held-out stimuli (``test:`` section), never used for selection or fitting.
        model: optional ``{name, layer}`` suggested by the set.
        window: optional ``{align, size}`` suggested by the set.
        path: the YAML file it came from.
        contrasts: extra pairwise contrasts (``contrasts:``) as (factor, target, reference),
            each analysed like the declared one.
        window_line: line of ``window:`` in the file (for errors about it), if given.
        ordered: factors whose levels are ordered as declared (``ordered:``; graded models).
        features: numeric per-item field -> [items] values (``features:``, long form).
        models: model RDM names chosen by ``models:`` (empty: every model the set allows).
    """

    name: str
    description: str
    concept: str
    factors: dict[str, list[str]]
    target: str
    reference: str
    items: list[Item]
    test_items: list[Item] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    contrasts: list[tuple[str, str, str]] = field(default_factory=list)
    window_line: int | None = None
    ordered: list[str] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)

    @property
    def primary_factor(self) -> str:
        return next(iter(self.factors))

    @property
    def is_factorial(self) -> bool:
        return len(self.factors) > 1

    def labels(
        self,
        factor: str | None = None,
        *,
        test: bool = False,
        levels: tuple[str, str] | None = None,
    ) -> np.ndarray:
        """[items] int: 1 for the target level, 0 for the reference level, -1 for others.

        For the primary factor target/reference are the set's; for another factor of a
        factorial design, its first declared level is the target and its second the reference;
        ``levels`` (target, reference) overrides both (an extra ``contrasts:`` entry).
        """
        factor = factor or self.primary_factor
        target, reference = levels or self.contrast_levels(factor)
        items = self.test_items if test else self.items
        level = np.array([it.levels[factor] for it in items])
        return np.where(level == target, 1, np.where(level == reference, 0, -1))

    def contrast_levels(self, factor: str) -> tuple[str, str]:
        """(target, reference) levels of ``factor``."""
        if factor == self.primary_factor:
            return self.target, self.reference
        levels = self.factors[factor]
        return levels[0], levels[1]

    def groups(self, *, test: bool = False) -> np.ndarray | None:
        """[items] group ids, or None when the set declares no groups (items independent)."""
        items = self.test_items if test else self.items
        if all(it.group is None for it in items):
            return None
        return np.array(
            [it.group if it.group is not None else f"_item{i}" for i, it in enumerate(items)]
        )

    def design(self) -> dict[str, np.ndarray]:
        """Factor -> [items] level of each item (the input of
        ``cogsae.analysis.resampling.permutation_blocks``)."""
        return {f: np.array([it.levels[f] for it in self.items]) for f in self.factors}

    def texts(self, *, test: bool = False) -> list[str]:
        return [it.text for it in (self.test_items if test else self.items)]

    def content_hash(self) -> str:
        """Hash of everything that changes activations: texts and targets, in order."""
        payload = [[it.text, it.target] for it in self.items] + [
            ["test", it.text, it.target] for it in self.test_items
        ]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- YAML parsing


def _short_form(node: yaml.Node, path: Path, where: str) -> list[Item]:
    """Items of ``{level: [text, ...]}`` under factor ``condition``."""
    items = []
    for level, texts in _mapping(node, path, where).items():
        for i, text_node in enumerate(_sequence(texts, path, f"{where}.{level}")):
            text = _string(text_node, path, f"{where}.{level}[{i}]")
            items.append(Item(text, {DEFAULT_FACTOR: level}, line=_mark_line(text_node)))
    return items


def _long_form(
    node: yaml.Node,
    path: Path,
    where: str,
    factors: dict[str, list[str]],
    features: Sequence[str] = (),
) -> list[Item]:
    """Items of ``[{text, <factor>: level, group, target, <feature>: number}, ...]``."""
    items = []
    for i, item_node in enumerate(_sequence(node, path, where)):
        what = f"{where}[{i}]"
        fields = _mapping(item_node, path, what)
        _check_fields(fields, _ITEM_FIELDS | set(factors) | set(features), item_node, path, what)
        if "text" not in fields:
            raise CogsaeError(
                "missing field 'text'", path=path, line=_mark_line(item_node), field=what
            )
        levels = {}
        for factor, declared in factors.items():
            if factor not in fields:
                raise CogsaeError(
                    f"missing level of factor {factor!r}",
                    path=path,
                    line=_mark_line(item_node),
                    field=f"{what}.{factor}",
                )
            level = _string(fields[factor], path, f"{what}.{factor}")
            if level not in declared:
                raise CogsaeError(
                    f"level {level!r} is not a declared level of {factor!r} {declared}",
                    path=path,
                    line=_mark_line(fields[factor]),
                    field=f"{what}.{factor}",
                )
            levels[factor] = level
        group = _string(fields["group"], path, f"{what}.group") if "group" in fields else None
        target = _string(fields["target"], path, f"{what}.target") if "target" in fields else None
        values = {}
        for name in features:
            if name not in fields:
                raise CogsaeError(
                    f"missing value of feature {name!r}",
                    path=path,
                    line=_mark_line(item_node),
                    field=f"{what}.{name}",
                )
            values[name] = _number(fields[name], path, f"{what}.{name}")
        items.append(
            Item(
                _string(fields["text"], path, f"{what}.text"),
                levels,
                group,
                target,
                _mark_line(item_node),
                values,
            )
        )
    return items


def _factors(node: yaml.Node, path: Path) -> dict[str, list[str]]:
    factors: dict[str, list[str]] = {}
    for name, levels_node in _mapping(node, path, "factors").items():
        levels = [
            _string(n, path, f"factors.{name}[{i}]")
            for i, n in enumerate(_sequence(levels_node, path, f"factors.{name}"))
        ]
        if len(levels) < 2 or len(set(levels)) != len(levels):
            raise CogsaeError(
                "a factor needs at least 2 distinct levels",
                path=path,
                line=_mark_line(levels_node),
                field=f"factors.{name}",
            )
        factors[name] = levels
    if not factors:
        raise CogsaeError("no factors declared", path=path, line=_mark_line(node), field="factors")
    return factors


def _parse_items(
    fields: dict[str, yaml.Node], node: yaml.Node, path: Path
) -> tuple[dict[str, list[str]], list[Item], list[Item]]:
    """Factors, items and test items from either form."""
    if ("conditions" in fields) == ("items" in fields):
        raise CogsaeError(
            "give exactly one of 'conditions' (short form) or 'factors' + 'items' (long form)",
            path=path,
            line=_mark_line(node),
            field="conditions",
        )
    if "conditions" in fields:
        if "factors" in fields:
            raise CogsaeError(
                "'factors' goes with 'items', not with 'conditions'",
                path=path,
                line=_mark_line(fields["factors"]),
                field="factors",
            )
        levels = list(_mapping(fields["conditions"], path, "conditions"))
        factors = {DEFAULT_FACTOR: levels}
        items = _short_form(fields["conditions"], path, "conditions")
        test = _short_form(fields["test"], path, "test") if "test" in fields else []
    else:
        if "factors" not in fields:
            raise CogsaeError(
                "long form needs 'factors'", path=path, line=_mark_line(node), field="factors"
            )
        factors = _factors(fields["factors"], path)
        features = _names(fields, "features", path)
        check_hypotheses(fields, path, factors, _ITEM_FIELDS)  # before items name features
        items = _long_form(fields["items"], path, "items", factors, features)
        test = (
            _long_form(fields["test"], path, "test", factors, features) if "test" in fields else []
        )
    for it in test:
        for factor, level in it.levels.items():
            if level not in factors[factor]:
                raise CogsaeError(
                    f"test level {level!r} is not a condition of the set",
                    path=path,
                    line=it.line,
                    field=f"test.{factor}",
                )
    return factors, items, test


def _check_items(stim: StimulusSet, path: Path, fields: dict[str, yaml.Node]) -> None:
    """Counts per level, duplicates, target substrings."""
    primary = stim.primary_factor
    if len(stim.factors[primary]) < 2:
        raise CogsaeError(
            "need at least 2 conditions",
            path=path,
            line=_mark_line(fields.get("conditions") or fields["factors"]),
            field="conditions",
        )
    for factor, levels in stim.factors.items():
        for level in levels:
            members = [it for it in stim.items if it.levels[factor] == level]
            if len(members) < MIN_ITEMS_PER_LEVEL:
                raise CogsaeError(
                    f"level {level!r} of {factor!r} has {len(members)} items; "
                    f"at least {MIN_ITEMS_PER_LEVEL} needed",
                    path=path,
                    line=members[0].line
                    if members
                    else _mark_line(fields.get("conditions") or fields["items"]),
                    field=f"{factor}.{level}",
                )
            groups = {it.group for it in members if it.group is not None}
            clusters = len(groups) + sum(it.group is None for it in members)
            if clusters < MIN_ITEMS_PER_LEVEL:  # cross-validation keeps a group whole
                raise CogsaeError(
                    f"level {level!r} of {factor!r} has items in {clusters} independent "
                    f"groups; at least {MIN_ITEMS_PER_LEVEL} needed (two folds of two)",
                    path=path,
                    line=members[0].line,
                    field="group",
                )
    seen: dict[str, int | None] = {}
    for it in stim.items + stim.test_items:
        key = " ".join(it.text.split()).lower()
        if key in seen:
            raise CogsaeError(
                f"duplicate text {it.text!r} (first at line {seen[key]})",
                path=path,
                line=it.line,
                field="text",
            )
        seen[key] = it.line
        if it.target is not None and it.target not in it.text:
            raise CogsaeError(
                f"target {it.target!r} is not a substring of {it.text!r}",
                path=path,
                line=it.line,
                field="target",
            )
    for role, level in (("target", stim.target), ("reference", stim.reference)):
        if level not in stim.factors[primary]:
            raise CogsaeError(
                f"{role} {level!r} is not a level of {primary!r} {stim.factors[primary]}",
                path=path,
                line=_mark_line(fields[role]) if role in fields else None,
                field=role,
            )
    if stim.target == stim.reference:
        raise CogsaeError("target and reference must differ", path=path, field="reference")


def _parse_window(node: yaml.Node, path: Path) -> dict[str, Any]:
    fields = _mapping(node, path, "window")
    _check_fields(fields, _WINDOW_FIELDS, node, path, "window")
    window: dict[str, Any] = {}
    if "align" in fields:
        align = _string(fields["align"], path, "window.align")
        if align not in WINDOW_ALIGNS:
            raise CogsaeError(
                f"unknown window align {align!r}; choose from {', '.join(WINDOW_ALIGNS)}",
                path=path,
                line=_mark_line(fields["align"]),
                field="window.align",
            )
        window["align"] = align
    if "size" in fields:
        size = _int(fields["size"], path, "window.size")
        if size < 1:
            raise CogsaeError(
                "window size must be >= 1",
                path=path,
                line=_mark_line(fields["size"]),
                field="window.size",
            )
        window["size"] = size
    return window


def _parse_model(node: yaml.Node, path: Path) -> dict[str, Any]:
    fields = _mapping(node, path, "model")
    _check_fields(fields, _MODEL_FIELDS, node, path, "model")
    model: dict[str, Any] = {}
    if "name" in fields:
        model["name"] = _string(fields["name"], path, "model.name")
    if "layer" in fields:
        model["layer"] = _int(fields["layer"], path, "model.layer")
    return model


def load_stimuli(path: str | Path) -> StimulusSet:
    """Read and validate a stimulus YAML file.

    Raises:
        CogsaeError: naming file, line and field, for every problem the file can have.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CogsaeError(f"cannot read file: {err.__class__.__name__}: {err}", path=path) from err
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CogsaeError(
            f"invalid YAML: {problem}", path=path, line=mark.line + 1 if mark else None
        ) from err
    if node is None:
        raise CogsaeError("empty file", path=path)
    fields = _mapping(node, path, "top level")
    _check_fields(fields, _TOP_FIELDS, node, path, "")
    factors, items, test_items = _parse_items(fields, node, path)
    ordered, features, models = check_hypotheses(fields, path, factors, _ITEM_FIELDS)
    primary = factors[next(iter(factors))]
    stim = StimulusSet(
        name=_string(fields["name"], path, "name") if "name" in fields else path.stem,
        description=_string(fields["description"], path, "description", empty_ok=True)
        if "description" in fields
        else "",
        concept=_string(fields["concept"], path, "concept") if "concept" in fields else path.stem,
        factors=factors,
        target=_string(fields["target"], path, "target") if "target" in fields else primary[0],
        reference=_string(fields["reference"], path, "reference")
        if "reference" in fields
        else primary[1 if len(primary) > 1 else 0],
        items=items,
        test_items=test_items,
        model=_parse_model(fields["model"], path) if "model" in fields else {},
        window=_parse_window(fields["window"], path) if "window" in fields else {},
        path=path,
        window_line=_mark_line(fields["window"]) if "window" in fields else None,
        ordered=ordered,
        features={f: np.array([it.features[f] for it in items]) for f in features},
        models=models,
    )
    _check_items(stim, path, fields)
    if "contrasts" in fields:
        declared = {f: stim.contrast_levels(f) for f in stim.factors}
        stim.contrasts = parse_contrasts(fields["contrasts"], path, stim.factors, declared)
    return stim


# --------------------------------------------------------------------------- summaries


@dataclass
class LengthCheck:
    """Token lengths per level of the primary factor and a test of whether they differ.

    Attributes:
        rows: per design cell: its levels, n items, n test items, mean and sd token length.
        test: "Welch t" (2 levels) or "Kruskal-Wallis" (3+ levels) on the primary factor.
        statistic: the test statistic.
        p_value: its p; a small p means length could confound the contrast.
    """

    rows: list[dict[str, Any]]
    test: str
    statistic: float
    p_value: float


def length_check(stimuli: StimulusSet, tokenizer: Any) -> LengthCheck:
    """Token counts per design cell, and a test of length differences between conditions."""
    from scipy import stats

    lengths = np.array([len(ids) for ids in tokenizer(stimuli.texts())["input_ids"]])
    cells: dict[tuple[str, ...], list[int]] = {}
    for i, it in enumerate(stimuli.items):
        cells.setdefault(tuple(it.levels[f] for f in stimuli.factors), []).append(i)
    rows = []
    for cell, idx in sorted(cells.items()):
        n_test = sum(
            tuple(t.levels[f] for f in stimuli.factors) == cell for t in stimuli.test_items
        )
        rows.append(
            {
                **dict(zip(stimuli.factors, cell, strict=True)),
                "n": len(idx),
                "n_test": n_test,
                "tokens_mean": float(lengths[idx].mean()),
                "tokens_sd": float(lengths[idx].std(ddof=1)),
            }
        )
    primary = np.array([it.levels[stimuli.primary_factor] for it in stimuli.items])
    samples = [lengths[primary == level] for level in stimuli.factors[stimuli.primary_factor]]
    if len(samples) == 2:
        result = stats.ttest_ind(*samples, equal_var=False)
        name = "Welch t"
    else:
        result = stats.kruskal(*samples)
        name = "Kruskal-Wallis"
    return LengthCheck(rows, name, float(result.statistic), float(result.pvalue))


def summary_text(stimuli: StimulusSet, tokenizer: Any) -> str:
    """Human-readable summary printed by `cogsae validate`."""
    check = length_check(stimuli, tokenizer)
    design = " x ".join(f"{f}({'/'.join(levels)})" for f, levels in stimuli.factors.items())
    groups = stimuli.groups()
    lines = [
        f"{stimuli.path}: OK  {stimuli.name!r} — concept: {stimuli.concept}",
        f"  design: {design}; target {stimuli.target!r} vs reference {stimuli.reference!r}; "
        f"{len(stimuli.items)} items, {len(stimuli.test_items)} held-out test items, "
        + (f"{len(set(groups))} groups" if groups is not None else "no groups"),
    ]
    for row in check.rows:
        cell = ", ".join(f"{f}={row[f]}" for f in stimuli.factors)
        lines.append(
            f"  {cell:<40} n={row['n']:>3}  test={row['n_test']:>3}  "
            f"tokens {row['tokens_mean']:5.1f} ± {row['tokens_sd']:.1f}"
        )
    verdict = "differ — a length confound is possible" if check.p_value < 0.05 else "matched"
    lines.append(
        f"  token length by {stimuli.primary_factor}: {check.test} = {check.statistic:.2f}, "
        f"p = {check.p_value:.3g} ({verdict})"
    )
    return "\n".join(lines)
