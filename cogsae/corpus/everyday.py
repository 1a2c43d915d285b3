"""Everyday text of the default corpus, from Debian packages that install offline.

`everyday_corpus` builds, once, ``<cache>/corpus/everyday.jsonl``: the Reuters-21578
news articles that r-cran-tm ships (its ``acq`` and ``crude`` collections and its
``reuters-21578.xml`` sample; one article body a document) and the 720 Harvard
sentences of r-cran-stringr (its ``sentences`` data; one sentence a document),
shuffled together by a fixed seed. Beside it, ``everyday.manifest.json`` records every
source by package, version and content hash of the files read, with the number of
documents taken from it. The default corpus is ``default.jsonl`` (WordNet, Austen,
fortunes; unchanged, so its documents keep their order and hash) followed by this file.

The Harvard sentences are read from R's lazy-load database as the Austen novels are
(`cogsae.corpus.packages.read_lazy_load`).
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import re
import subprocess
from pathlib import Path
from typing import Any

from cogsae._io import atomic_path, cache_dir
from cogsae.corpus.packages import files_hash, missing_package, read_lazy_load
from cogsae.errors import CogsaeError

TM_TEXTS = Path("/usr/lib/R/site-library/tm/texts")
STRINGR_DATA = Path("/usr/lib/R/site-library/stringr/data")
_SEED = 0
_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.S)


def reuters_files() -> list[Path]:
    """The Reuters-21578 XML files of r-cran-tm, in a fixed order."""
    files = [
        *sorted((TM_TEXTS / "acq").glob("*.xml")),
        *sorted((TM_TEXTS / "crude").glob("*.xml")),
        TM_TEXTS / "reuters-21578.xml",
    ]
    if not all(f.is_file() for f in files) or len(files) < 3:
        raise missing_package("r-cran-tm", TM_TEXTS)
    return files


def reuters_articles(files: list[Path]) -> list[str]:
    """The body of every article (whitespace normalized, the closing "Reuter" dropped)."""
    articles = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for body in _BODY.findall(text):
            words = " ".join(html.unescape(body).replace("\x03", " ").split())
            words = re.sub(r"\s*Reuter$", "", words)
            if words:
                articles.append(words)
    return articles


def harvard_sentences() -> list[str]:
    """The 720 Harvard sentences of r-cran-stringr (its ``sentences`` data)."""
    for name, value in read_lazy_load(STRINGR_DATA, "r-cran-stringr"):
        if name == "sentences":
            return [str(s) for s in value]
    raise CogsaeError("r-cran-stringr has no `sentences` data", path=STRINGR_DATA)


def _package_version(package: str) -> str | None:
    """The installed Debian version of ``package`` (None where dpkg cannot tell)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def everyday_corpus() -> Path:
    """Path of the everyday part of the default corpus (.jsonl), built once (module doc).

    Written atomically with its manifest (``everyday.manifest.json``: per source its
    package, version, files read with their content hash, and documents taken).
    """
    target = cache_dir() / "corpus" / "everyday.jsonl"
    if target.is_file():
        return target
    reuters = reuters_files()
    stringr = [STRINGR_DATA / "Rdata.rdb", STRINGR_DATA / "Rdata.rdx"]
    sources = [
        ("r-cran-tm", "Reuters-21578 articles", reuters, reuters_articles(reuters)),
        ("r-cran-stringr", "Harvard sentences", stringr, harvard_sentences()),
    ]
    docs = [doc for *_, found in sources for doc in found]
    random.Random(_SEED).shuffle(docs)
    text = "".join(json.dumps({"text": doc}, ensure_ascii=False) + "\n" for doc in docs)
    manifest = {
        "name": target.name,
        "hash": hashlib.sha256(text.encode()).hexdigest()[:16],
        "sources": [
            {
                "package": package,
                "version": _package_version(package),
                "text": what,
                "files": len(files),
                "hash": files_hash(files),
                "documents": len(found),
            }
            for package, what, files, found in sources
        ],
    }
    # the manifest first: the corpus file exists only with its manifest
    with atomic_path(target.with_suffix(".manifest.json")) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def everyday_manifest() -> dict[str, Any]:
    """The manifest of `everyday_corpus` (built first if needed)."""
    path = everyday_corpus().with_suffix(".manifest.json")
    return json.loads(path.read_text(encoding="utf-8"))
