"""Nothing silently wrong, nothing lost, nothing executed: run identity, data-only caches,
paths inside their roots, escaped HTML, no clobbered folders, early one-line OS and option
errors, long items, redacted secrets."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cogsae import inspect as features
from cogsae._io import (
    CacheError,
    _digest,
    dumps_data,
    files_fingerprint,
    load_data,
    loads_data,
    write_checked,
)
from cogsae.analysis.cv import make_plan
from cogsae.analysis.ensemble import LinearModel
from cogsae.cli import main
from cogsae.errors import CogsaeError
from cogsae.extract import check_context, extract_activations, length_batches
from cogsae.judges import APIJudge, chat_completions_url, post_json
from cogsae.model import LoadedModel, load_tokenizer
from cogsae.pipeline import ConceptResult, RunConfig, execute, prepare
from cogsae.pipeline.plan import build_plan
from cogsae.report import render_html, write_report
from cogsae.sae.train import TrainConfig, _restore
from cogsae.stimuli import load_stimuli
from tests.helpers import CHROMIUM, TINY_CONTEXT, run_config

XSS = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


class Planted:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def hostile_set(tiny_assets: dict, folder: Path, name: str = "hostile") -> Path:
    """The planted set with script-bearing description and concept."""
    text = Path(tiny_assets["stimuli"]).read_text()
    text = text.replace("name: planted\nconcept: winning\n", "")
    header = (
        f"name: {json.dumps(name)}\ndescription: {json.dumps(XSS)}\nconcept: {json.dumps(XSS)}\n"
    )
    path = folder / "hostile.yaml"
    path.write_text(header + text)
    return path


def small(tiny_assets: dict, output: Path, **overrides) -> RunConfig:
    """A quick run of the tiny model: few permutations, no figures."""
    options = {"n_permutations": 9, "n_bootstrap": 50, "n_splits": 3, "figures": False}
    return run_config(tiny_assets, output, **{**options, **overrides})


@pytest.fixture(scope="module")
def hostile_run(tiny_assets: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run whose description and concept carry HTML/JS."""
    folder = tmp_path_factory.mktemp("hostile")
    stimuli = hostile_set(tiny_assets, folder)
    directory = execute(small(tiny_assets, folder / "out", stimuli=str(stimuli)), progress=False)
    write_report(directory)
    return directory


# --------------------------------------------------------------------------- 1. run identity


def test_run_key_follows_stimulus_content_and_model_and_sae_files(
    tiny_assets: dict,
    tmp_path: Path,
) -> None:
    stimuli_path = tmp_path / "set.yaml"
    shutil.copy(tiny_assets["stimuli"], stimuli_path)
    model = tmp_path / "model"
    shutil.copytree(tiny_assets["model"], model)
    sae = tmp_path / "sae"
    shutil.copytree(tiny_assets["sae"], sae)
    cfg = run_config(
        tiny_assets, tmp_path, stimuli=str(stimuli_path), model=str(model), sae=str(sae)
    )
    key = build_plan(cfg).key

    stimuli_path.write_text(stimuli_path.read_text().replace("round 1.", "round one."))
    assert build_plan(cfg).key != key  # same path, other content
    stimuli_path.write_text(Path(tiny_assets["stimuli"]).read_text())
    assert build_plan(cfg).key == key

    def flip_last_byte(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))

    flip_last_byte(model / "model.safetensors")
    model_changed = build_plan(cfg).key
    assert model_changed != key
    flip_last_byte(sae / "sae_weights.safetensors")
    assert build_plan(cfg).key not in (key, model_changed)


def test_file_fingerprints_are_remembered_by_size_and_mtime(
    isolated_cache: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a" * 1000)
    first = files_fingerprint([weights])
    memo = json.loads((isolated_cache / "fingerprints.json").read_text())
    assert len(memo) == 1 and files_fingerprint([weights]) == first
    weights.write_bytes(b"b" * 1000)
    assert files_fingerprint([weights]) != first
    assert len(json.loads((isolated_cache / "fingerprints.json").read_text())) == 1  # no stale


def test_run_id_reused_with_other_settings_is_refused(
    tiny_assets: dict,
    tmp_path: Path,
) -> None:
    directory = execute(small(tiny_assets, tmp_path, run_id="fixed"), progress=False)
    assert directory == tmp_path / "planted" / "fixed"
    with pytest.raises(CogsaeError, match="other settings") as err:
        execute(small(tiny_assets, tmp_path, run_id="fixed", seed=7, k=(3,)), progress=False)
    assert "\n" not in str(err.value)


def test_activation_cache_follows_the_model_weights(
    tiny_model: LoadedModel, isolated_cache: Path, tiny_assets: dict
) -> None:
    stimuli = load_stimuli(tiny_assets["stimuli"])
    first = extract_activations(stimuli, tiny_model, progress=False)
    damaged = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        damaged.model.embed_tokens.weight.mul_(3.0)
    other = LoadedModel(damaged, tiny_model.tokenizer, tiny_model.name, tiny_model.layer)
    second = extract_activations(stimuli, other, progress=False)
    assert not np.allclose(first.values, second.values)
    assert len(list((isolated_cache / "activations").iterdir())) == 2


# --------------------------------------------------------------------------- 2. safe caches


@dataclass
class _Cached:
    """A dataclass outside cogsae: neither stored nor built by the serializer."""

    x: int


def test_serializer_round_trips_types_identity_and_skips_cached_properties() -> None:
    plan = make_plan(np.array([0, 1] * 6), n_splits=3, n_repeats=1, n_permutations=3, seed=0)
    assert plan.test_fraction > 0  # fill the cached_property cache
    model = LinearModel(np.arange(2), np.zeros(2), np.ones(2), np.ones(2), 0.25)
    value = {
        "plans": [plan, plan],
        "pair": (1, [2.0, np.float32(3.5)]),
        7: np.int64(4),
        (1, "a"): "tuple key",
        "nan": float("nan"),
        "model": model,
        "path": Path("a/b"),
    }
    back = loads_data(dumps_data(value, "k"), "k")
    assert back["plans"][0] is back["plans"][1]  # shared instances stay shared
    assert "test_fraction" not in vars(back["plans"][0])  # cached_property recomputed, not stored
    np.testing.assert_array_equal(back["plans"][0].fold_ids, plan.fold_ids)
    assert back["pair"] == (1, [2.0, np.float32(3.5)]) and isinstance(back["pair"], tuple)
    assert isinstance(back["pair"][1], list) and type(back["pair"][1][1]) is np.float32
    assert type(back[7]) is np.int64 and back[(1, "a")] == "tuple key"
    assert np.isnan(back["nan"]) and back["path"] == Path("a/b")
    assert isinstance(back["model"], LinearModel) and back["model"].intercept == 0.25
    with pytest.raises(CacheError, match="key"):
        loads_data(dumps_data(value, "k"), "other")


@pytest.mark.parametrize("cls", ["os:system", "subprocess:Popen", "test_safety:_Cached"])
def test_serializer_builds_only_cogsae_dataclasses(cls: str) -> None:
    payload = dumps_data(LinearModel(np.arange(1), np.zeros(1), np.ones(1), np.ones(1), 0.0), "k")
    arrays = npz_contents(payload)
    structure = json.loads(arrays.pop("structure").tobytes())
    del arrays["sha256"]
    structure["value"]["cls"] = cls
    forged = np.frombuffer(json.dumps(structure).encode(), np.uint8)
    digest = np.frombuffer(_digest(forged, arrays).encode(), np.uint8)  # a valid checksum
    buf = io.BytesIO()
    np.savez(buf, structure=forged, sha256=digest, **arrays)
    with pytest.raises(CacheError, match="not a cogsae"):
        loads_data(buf.getvalue(), "k")
    with pytest.raises(TypeError):
        dumps_data(_Cached(1), "k")


def npz_contents(payload: bytes) -> dict[str, np.ndarray]:
    """The arrays of a `dumps_data` payload (its JSON structure included, as bytes)."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_every_pipeline_stage_round_trips(hostile_run: Path) -> None:
    stages = sorted((hostile_run / "stages").iterdir())
    assert {p.name for p in stages} == {"activations.npz", "concept-condition.npz", "geometry.npz"}
    key = json.loads((hostile_run / "run.json").read_text())["key"]
    for path in stages:
        payload = path.read_bytes()
        value = loads_data(payload, key)
        again = dumps_data(value, key)
        before, after = npz_contents(payload), npz_contents(again)
        assert before.keys() == after.keys(), path.name
        for name in before.keys() - {"structure", "sha256"}:
            np.testing.assert_array_equal(after[name], before[name], err_msg=f"{path}:{name}")
            assert after[name].dtype == before[name].dtype
        # rsatoolbox adds an "index" pattern descriptor when it rebuilds an RDM, so the
        # structure is compared from the first reload on: a fixed point
        third = npz_contents(dumps_data(loads_data(again, key), key))
        np.testing.assert_array_equal(third["structure"], after["structure"])
    concept = load_data(hostile_run / "stages" / "concept-condition.npz", key)
    assert isinstance(concept, ConceptResult) and concept.methods
    plans = {id(m.plan) for m in concept.methods}
    assert len(plans) == 1  # compare() needs the one shared plan back


def test_broken_or_planted_stages_are_rebuilt_never_run(
    tiny_assets: dict,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = small(tiny_assets, tmp_path)
    directory = execute(cfg, progress=False)
    first = json.loads((directory / "results.json").read_text())["concepts"][0]["methods"]
    stages = directory / "stages"
    concept = stages / "concept-condition.npz"
    concept.write_bytes(concept.read_bytes()[:-100])  # truncated
    activations = stages / "activations.npz"
    data = bytearray(activations.read_bytes())
    for i in range(1000, len(data), len(data) // 50):
        data[i] ^= 0x10  # 50 bit flips
    activations.write_bytes(bytes(data))
    marker = tmp_path / "executed"
    for name in ("activations.pkl", "concept-condition.pkl", "activations.npz.pkl"):
        (stages / name).write_bytes(pickle.dumps(Planted(marker)))
    with caplog.at_level(logging.WARNING):
        execute(cfg, progress=False)
    assert not marker.exists()
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(concept) in warned and str(activations) in warned
    again = json.loads((directory / "results.json").read_text())["concepts"][0]["methods"]
    assert again == first


def test_broken_activation_cache_is_rebuilt(
    tiny_model: LoadedModel,
    isolated_cache: Path,
    tiny_assets: dict,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stimuli = load_stimuli(tiny_assets["stimuli"])
    first = extract_activations(stimuli, tiny_model, progress=False)
    (path,) = (isolated_cache / "activations").iterdir()
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING):
        second = extract_activations(stimuli, tiny_model, progress=False)
    assert str(path) in caplog.text
    np.testing.assert_array_equal(first.values, second.values)
    with np.load(path, allow_pickle=False) as npz:  # rebuilt, a plain .npz again
        np.testing.assert_array_equal(npz["values"], first.values)


def test_planted_checkpoint_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    checkpoint = tmp_path / "sae.pt"
    checkpoint.write_bytes(pickle.dumps(Planted(marker)))
    assert _restore(checkpoint, TrainConfig()) is None
    # even behind a valid checksum only weights-only data loads
    write_checked(checkpoint, pickle.dumps(Planted(marker)))
    assert _restore(checkpoint, TrainConfig()) is None
    assert not marker.exists()


# --------------------------------------------------------------------------- 3. paths


@pytest.mark.parametrize("name", ["../../../escape", "/tmp/absolute", "a/b/c", ".."])
def test_set_names_stay_inside_the_output_and_cache(
    name: str,
    tiny_model: LoadedModel,
    isolated_cache: Path,
    tiny_assets: dict,
    tmp_path: Path,
) -> None:
    stimuli = hostile_set(tiny_assets, tmp_path, name=name)
    output = tmp_path / "out"
    run = prepare(small(tiny_assets, output, stimuli=str(stimuli)), progress=False)
    assert run.directory.parent.parent == output.resolve()
    assert run.stimuli.name == name  # the display name is kept
    extract_activations(run.stimuli, tiny_model, progress=False)
    (cached,) = (isolated_cache / "activations").iterdir()
    assert cached.parent == isolated_cache / "activations"


def test_factor_names_stay_inside_the_run_folder(tiny_assets: dict, tmp_path: Path) -> None:
    factor = "../../up"
    text = Path(tiny_assets["stimuli"]).read_text()
    text = text.replace("{condition: [gain, loss]}", f'{{"{factor}": [gain, loss]}}')
    path = tmp_path / "set.yaml"
    path.write_text(text.replace("condition: ", f'"{factor}": '))
    output = tmp_path / "out"
    directory = execute(small(tiny_assets, output, stimuli=str(path)), progress=False)
    write_report(directory)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != path]
    assert written and all(directory in p.parents for p in written)
    assert (directory / "tables" / "methods_up.csv").is_file()
    results = json.loads((directory / "results.json").read_text())
    assert results["concepts"][0]["factor"] == factor  # the display name is kept


@pytest.mark.parametrize("run_id", ["../x", "a/b", "/abs", ".."])
def test_run_id_must_be_a_plain_name(tiny_assets: dict, tmp_path: Path, run_id: str) -> None:
    with pytest.raises(CogsaeError, match="run-id"):
        prepare(small(tiny_assets, tmp_path, run_id=run_id), progress=False)


# --------------------------------------------------------------------------- 4. HTML


class _Elements(HTMLParser):
    """Tags, event-handler attributes and the title text of an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[str] = []
        self.title = ""
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def assert_no_user_script(page: Path, tmp_path: Path) -> None:
    """Headless Chromium ran ``page``: no script element, no event handler, title intact."""
    for text in (page.read_text(), dump_dom(page, tmp_path)):
        found = _Elements(text)
        assert "script" not in found.tags and not found.handlers
        assert found.title.strip() != "pwned"  # what either planted script would set


def dump_dom(page: Path, tmp_path: Path) -> str:
    """The DOM of ``page`` after headless Chromium ran it (scripts included)."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=2000",
            "--dump-dom",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make install adds it)")
def test_report_runs_no_user_script(hostile_run: Path, tmp_path: Path) -> None:
    page = hostile_run / "report.html"
    assert "&lt;script&gt;document.title" in page.read_text()  # shown as text
    assert_no_user_script(page, tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make install adds it)")
def test_inspection_page_runs_no_user_script(tmp_path: Path) -> None:
    example = features.Example([XSS, " token"], [1.0, None], 0, 1.0)
    inspection = features.Inspection(
        label=XSS,
        context={"corpus": XSS},
        n_tokens=10,
        density=0.1,
        max=1.0,
        quantiles={"0.5": 0.5},
        top=[example],
        by_quantile=[(XSS, [example])],
        lens=features.LogitLens([(XSS, 1.0)], [(XSS, -1.0)]),
    )
    page = tmp_path / "index.html"
    page.write_text(features.render_html(inspection, b""))
    assert_no_user_script(page, tmp_path)


def test_markdown_links_cannot_carry_javascript(tmp_path: Path) -> None:
    body = render_html(
        "[a](javascript:alert(1)) [b](java\tscript:x) [c](https://example.org)", tmp_path, "t"
    )
    assert "javascript" not in body.replace("javascript:alert(1)", "")
    assert 'href="https://example.org"' in body and body.count("href=") == 1


# --------------------------------------------------------------------------- 5. nothing deleted


def test_train_sae_refuses_a_foreign_non_empty_out(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    monkeypatch.setattr("cogsae.resolve.load_model", _no_model)
    result = CliRunner().invoke(main, ["train-sae", "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert "Traceback" not in result.output
    assert (out / "thesis.tex").read_text() == "years of work"


def _no_model(*_args, **_kwargs):
    raise AssertionError("the model was loaded before the options were checked")


# --------------------------------------------------------------------------- 6. early errors


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--k", "100000", "units"), ("--folds", "1", "at least 2 folds"), ("--output", None, "write")],
)
def test_impossible_options_fail_before_model_work(
    tiny_assets: dict,
    tmp_path: Path,
    monkeypatch,
    option: str,
    value: str | None,
    message: str,
) -> None:
    monkeypatch.setattr("cogsae.resolve.load_model", _no_model)
    monkeypatch.setattr("cogsae.pipeline.stages.load_model", _no_model)  # the run's own load
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    output = tmp_path / "results"
    args = ["run", str(tiny_assets["stimuli"]), "--model", tiny_assets["model"], "--layer", "1"]
    args += ["--sae", tiny_assets["sae"], "--output", str(output)]
    args += [option, value if value is not None else str(blocker / "sub")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if not line.startswith("dtype:")]
    assert len(errors) == 1, result.output
    assert not output.exists() or not any(output.iterdir())  # no run folder left behind


def test_os_errors_are_one_line_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "results.json").mkdir()  # unreadable as a file: IsADirectoryError
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {tmp_path / 'results.json'}: Is a directory"


# --------------------------------------------------------------------------- 7. long items


def test_long_items_do_not_pad_short_ones() -> None:
    lengths = [12] * 20 + [6000, 6500]
    batches = length_batches(lengths, batch_size=32, max_tokens=8192)
    assert [sorted(b.tolist()) for b in batches] == [list(range(20)), [20], [21]]
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded == 20 * 12 + 6000 + 6500


def test_items_beyond_the_context_are_refused(
    tiny_assets: dict,
    tmp_path: Path,
    monkeypatch,
) -> None:
    tokenizer = load_tokenizer(tiny_assets["model"])
    lines = ["name: long", "conditions:", "  a:"]
    lines += [f"    - short sentence number {i}." for i in range(4)]
    lines += ["  b:"] + [f"    - another sentence {i}." for i in range(3)]
    lines += ["    - " + "word " * 300]
    path = tmp_path / "long.yaml"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(tokenizer, "model_max_length", 128)
    with pytest.raises(CogsaeError) as err:
        check_context(tokenizer, load_stimuli(path))
    assert err.value.line == 12 and err.value.field == "text"
    assert "context of 128" in str(err.value)
    monkeypatch.setattr(tokenizer, "model_max_length", int(1e30))  # no limit recorded:
    with pytest.raises(CogsaeError, match=f"context of {TINY_CONTEXT}"):  # the config beside it
        check_context(tokenizer, load_stimuli(path))


# --------------------------------------------------------------------------- 8. secrets


def test_judge_errors_hide_query_strings_and_path_is_joined() -> None:
    url = "http://user:pw@127.0.0.1:9/v1?api_key=SECRET#frag"
    with pytest.raises(CogsaeError) as err:
        post_json(url, {"Authorization": "Bearer HEADERSECRET"}, {})
    text = str(err.value)
    assert "127.0.0.1:9/v1" in text
    assert "SECRET" not in text and "pw" not in text and "\n" not in text
    assert chat_completions_url("https://h/v1/?key=x") == "https://h/v1/chat/completions?key=x"
    assert APIJudge("https://h/v1/chat/completions?k=1", "m").url == (
        "https://h/v1/chat/completions?k=1"
    )
