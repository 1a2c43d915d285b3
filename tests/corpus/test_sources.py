"""Corpus reading rules, their bad-input errors, the held-out split and token chunking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cogsae.corpus import (
    batch_chunks,
    default_corpus,
    iter_documents,
    iter_token_chunks,
    select_documents,
)
from cogsae.corpus import sources as corpus
from cogsae.errors import CogsaeError


def test_plain_text_paragraphs_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first line\nsame paragraph\n\n\nsecond\n  \nthird\n", encoding="utf-8")
    assert list(iter_documents([path])) == ["first line\nsame paragraph", "second", "third"]
    assert list(iter_documents([path], split="line")) == [
        "first line",
        "same paragraph",
        "second",
        "third",
    ]


def test_jsonl_and_file_order(tmp_path: Path) -> None:
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n', encoding="utf-8")
    txt = tmp_path / "c.txt"
    txt.write_text("three\n", encoding="utf-8")
    assert list(iter_documents([jsonl, txt])) == ["one", "two", "three"]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"text": "ok"', None),
        ('{"body": "x"}', "text"),
        ('["text"]', "text"),
        ('{"text": 3}', "text"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, field: str | None) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CogsaeError) as err:
        list(iter_documents([path]))
    assert err.value.path == str(path)
    assert err.value.line == 2
    assert err.value.field == field


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(CogsaeError, match="not found"):
        list(iter_documents([tmp_path / "nope.txt"]))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(CogsaeError, match="UTF-8") as err:
        list(iter_documents([binary]))
    assert err.value.path == str(binary)


def test_heldout_split_is_disjoint_and_complete() -> None:
    docs = [f"doc {i}" for i in range(100)]
    train = list(select_documents(docs, "train"))
    heldout = list(select_documents(docs, "heldout"))
    assert heldout == [f"doc {i}" for i in range(19, 100, 20)]
    assert sorted(train + heldout) == sorted(docs)
    assert list(select_documents(docs, "all")) == docs


def test_packed_chunks_are_full_and_lossless(tiny_tokenizer) -> None:
    docs = ["The cat sat on the mat.", "A dog barked all night long, and nobody slept.", "Hi."]
    chunks = list(iter_token_chunks(docs * 5, tiny_tokenizer, context_length=8, batch_docs=4))
    assert chunks and all(c.shape == (8,) and c.dtype == torch.long for c in chunks)
    stream: list[int] = []
    for doc in docs * 5:
        stream += tiny_tokenizer(doc, add_special_tokens=False)["input_ids"] + [
            tiny_tokenizer.eos_token_id
        ]
    assert torch.cat(chunks).tolist() == stream[: 8 * len(chunks)]


def test_unpacked_chunks_stay_within_documents(tiny_tokenizer) -> None:
    docs = ["one two three four five six seven eight nine ten", "x"]
    chunks = list(iter_token_chunks(docs, tiny_tokenizer, context_length=4, pack=False))
    ids = tiny_tokenizer(docs[0], add_special_tokens=False)["input_ids"]
    pieces = [ids[start : start + 4] for start in range(0, len(ids), 4)]
    assert [c.tolist() for c in chunks] == [p for p in pieces if len(p) >= 2]  # "x": 1 token
    with pytest.raises(CogsaeError, match="at least 2"):
        list(iter_token_chunks(docs, tiny_tokenizer, context_length=1))


def test_batch_chunks_pads_right_with_mask() -> None:
    chunks = [torch.tensor([5, 6, 7]), torch.tensor([8, 9]), torch.tensor([1, 2, 3, 4])]
    batches = list(batch_chunks(chunks, batch_size=2, pad_id=0))
    assert len(batches) == 2
    ids, mask = batches[0]
    assert ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batches[1][0].tolist() == [[1, 2, 3, 4]]


def test_default_corpus_names_missing_debian_package(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(corpus, "WORDNET_DIR", tmp_path / "no-wordnet")
    with pytest.raises(CogsaeError, match="wordnet-base"):
        default_corpus()
    assert not (isolated_cache / "corpus" / "default.jsonl").exists()


def test_default_corpus_sources(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The three parsers on small files in the Debian layouts (Austen: the real package)."""
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    header = "  1 This software and database is being provided\n"
    entry = '00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which exists; "it is"  \n'
    for pos in ("noun", "verb", "adj", "adv"):
        (wordnet / f"data.{pos}").write_text(header + entry, encoding="utf-8")
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "wisdom").write_text("Be kind.\n%\nTwo\nlines.\n%\n", encoding="utf-8")
    (fortunes / "wisdom.dat").write_bytes(b"\x00")
    monkeypatch.setattr(corpus, "WORDNET_DIR", wordnet)
    monkeypatch.setattr(corpus, "FORTUNES_DIR", fortunes)
    monkeypatch.setattr(corpus, "_austen_paragraphs", lambda: ["It is a truth."])
    path = default_corpus()
    docs = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    assert sorted(docs) == sorted(
        ['that which exists; "it is"'] * 4 + ["Be kind.", "Two\nlines.", "It is a truth."]
    )
    assert default_corpus() == path  # built once


@pytest.mark.skipif(not corpus.AUSTEN_DIR.is_dir(), reason="r-cran-janeaustenr not installed")
def test_austen_paragraphs_from_rdata() -> None:
    paragraphs = corpus._austen_paragraphs()
    assert len(paragraphs) > 10_000
    assert any(p.startswith("It is a truth universally acknowledged") for p in paragraphs)
    assert all("\n" not in p for p in paragraphs[:1000])


def test_reuters_articles_parse_bodies(tmp_path: Path) -> None:
    from cogsae.corpus.everyday import reuters_articles

    xml = tmp_path / "r.xml"
    xml.write_text(
        "<REUTERS><TEXT><TITLE>X</TITLE><BODY>Shares rose\n   5 pct &lt;AB&gt;.\n Reuter\n&#3;"
        "</BODY></TEXT></REUTERS><REUTERS><BODY>Oil fell.\n Reuter\n</BODY></REUTERS>",
        encoding="utf-8",
    )
    assert reuters_articles([xml]) == ["Shares rose 5 pct <AB>.", "Oil fell."]


@pytest.mark.skipif(
    not (corpus.AUSTEN_DIR.is_dir() and Path("/usr/lib/R/site-library/tm").is_dir()),
    reason="r-cran-janeaustenr or r-cran-tm not installed",
)
def test_default_corpus_ends_with_everyday_text(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default corpus is default.jsonl then the everyday text (the real packages), whose
    manifest records every source by package and hash."""
    from cogsae.corpus.everyday import everyday_manifest

    for source in ("_wordnet_glosses", "_austen_paragraphs", "_fortunes"):
        monkeypatch.setattr(corpus, source, lambda: ["A document."])
    paths = corpus.corpus_files(())
    assert [p.name for p in paths] == ["default.jsonl", "everyday.jsonl"]
    manifest = everyday_manifest()
    assert manifest["hash"] == corpus.files_hash([paths[1]])
    assert {s["package"]: s["documents"] for s in manifest["sources"]} == {
        "r-cran-tm": 80,
        "r-cran-stringr": 720,
    }
    docs = list(corpus.iter_documents([paths[1]]))
    assert "The birch canoe slid on the smooth planks." in docs
