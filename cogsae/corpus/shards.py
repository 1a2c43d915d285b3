"""Addressable corpus work: chunk ids, shards of chunks, a manifest, one path for both engines.

A corpus is read as a stream of token chunks (`cogsae.corpus.corpus_chunks`), numbered
0..N-1 in stream order: chunk ids are a pure function of (corpus files, tokenizer,
subset, context length, packing), so any process can name any chunk. Shard ``s`` holds
chunks ``[s * C, (s + 1) * C)`` (``C`` chunks per shard; the last may hold fewer).

`build_shards` runs one per-shard function (chunks -> model -> an atomically written
file) over the shards, in this process or on Ray actors that each load the model once
(`cogsae.engine.map_actors`), and records every finished shard in ``manifest.json``
(written atomically after each one): its chunk-id range, token count and checksum. A
rerun skips the shards of the manifest whose file still matches its checksum; a worker
killed mid-shard leaves no file (writes are atomic), its shard is retried, and the final
manifest is checked to cover chunk ids 0..N-1 exactly once each.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import threadpoolctl
import torch
from tqdm.auto import tqdm

from cogsae._io import write_json
from cogsae.corpus.sources import files_hash
from cogsae.engine import Engine, map_actors, ray_module
from cogsae.errors import CogsaeError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardTask:
    """One shard's input: chunks ``first_chunk .. first_chunk + len(chunks) - 1``.

    Attributes:
        index: shard number s.
        first_chunk: chunk id of ``chunks[0]`` (= s * chunks per shard).
        chunks: token ids [<= context_length] (int64) of each chunk, in chunk-id order.
    """

    index: int
    first_chunk: int
    chunks: list[torch.Tensor]


@dataclass(frozen=True)
class ShardRecord:
    """A finished shard, as the manifest lists it.

    Attributes:
        index: shard number s.
        first_chunk: its first chunk id.
        n_chunks: chunks it holds (ids ``first_chunk .. first_chunk + n_chunks - 1``).
        n_tokens: rows it holds (tokens at positions >= 1).
        sha256: `files_hash` of its file.
    """

    index: int
    first_chunk: int
    n_chunks: int
    n_tokens: int
    sha256: str


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard_NNNNN.npy``)."""
    return f"shard_{index:05d}.npy"


def shard_tasks(
    chunks: Iterable[torch.Tensor], chunks_per_shard: int, skip: Iterable[int] = ()
) -> Iterator[ShardTask]:
    """The chunk stream cut into shards of ``chunks_per_shard`` chunks, in shard order;
    shards in ``skip`` are read past (their chunks still count for the ids) but not yielded."""
    skipped = set(skip)
    iterator = iter(chunks)
    index = 0
    while group := [c for _, c in zip(range(chunks_per_shard), iterator, strict=False)]:
        if index not in skipped:
            yield ShardTask(index, index * chunks_per_shard, group)
        index += 1


def read_manifest(folder: Path) -> dict[int, ShardRecord]:
    """Shard index -> record of ``folder``'s manifest ({} when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    return {r["index"]: ShardRecord(**r) for r in json.loads(path.read_text())["shards"]}


def write_manifest(folder: Path, records: dict[int, ShardRecord], chunks_per_shard: int) -> None:
    """Write the manifest (records in shard order) atomically."""
    shards = [asdict(records[i]) for i in sorted(records)]
    write_json(folder / MANIFEST, {"chunks_per_shard": chunks_per_shard, "shards": shards})


def valid_records(folder: Path, records: dict[int, ShardRecord]) -> dict[int, ShardRecord]:
    """The records whose shard file exists and matches its checksum; a mismatch is reported
    in one warning line naming the file (the shard is rebuilt)."""
    valid = {}
    for index, record in records.items():
        path = folder / shard_name(index)
        if not path.is_file():
            continue
        if files_hash([path]) != record.sha256:
            log.warning("shard %s fails its checksum; rebuilding it", path)
            continue
        valid[index] = record
    return valid


def check_complete(records: dict[int, ShardRecord], n_chunks: int, chunks_per_shard: int) -> None:
    """CogsaeError unless the records are shards 0..S-1 covering chunk ids 0..n_chunks-1
    exactly once each, shard s starting at chunk s * chunks_per_shard."""
    covered = 0
    for expected, index in enumerate(sorted(records)):
        record = records[index]
        if index != expected or record.first_chunk != covered:
            raise CogsaeError(
                f"shard manifest is inconsistent at shard {index}: chunk {record.first_chunk} "
                f"where chunk {covered} was expected"
            )
        if record.first_chunk != index * chunks_per_shard:
            raise CogsaeError(f"shard {index} does not start at chunk {index * chunks_per_shard}")
        covered += record.n_chunks
    if covered != n_chunks:
        raise CogsaeError(f"shard manifest covers {covered} chunks of {n_chunks}")


def build_shards(
    folder: Path,
    chunks: Iterable[torch.Tensor],
    chunks_per_shard: int,
    setup: Callable[[], Any],
    work: Callable[[Any, ShardTask], ShardRecord],
    *,
    engine: Engine = "local",
    workers: int | None = None,
    progress: bool = True,
    desc: str = "shards",
) -> dict[int, ShardRecord]:
    """Run ``work(setup(), task)`` for every shard not yet valid in ``folder``'s manifest.

    ``work`` writes shard ``task.index`` to ``folder / shard_name(task.index)`` atomically
    and returns its record; the manifest is rewritten after each. Returns the records of
    the shards streamed this time (a manifest may list more, from a larger earlier
    budget), checked by `check_complete` against the number of chunks streamed.
    """
    records = valid_records(folder, read_manifest(folder))
    write_manifest(folder, records, chunks_per_shard)
    n_chunks = 0

    def counted(stream: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        nonlocal n_chunks
        for chunk in stream:
            n_chunks += 1
            yield chunk

    bar = tqdm(desc=desc, unit="tok", unit_scale=True, disable=not progress)
    bar.update(sum(r.n_tokens for r in records.values()))

    def finished(record: ShardRecord) -> None:
        records[record.index] = record
        write_manifest(folder, records, chunks_per_shard)
        bar.update(record.n_tokens)

    tasks = shard_tasks(counted(chunks), chunks_per_shard, skip=list(records))
    map_actors(setup, work, tasks, finished, engine=engine, workers=workers)
    bar.close()
    streamed = {i: r for i, r in records.items() if r.first_chunk < n_chunks}
    check_complete(streamed, n_chunks, chunks_per_shard)
    return streamed


# --------------------------------------------------------------------------- worker models


@dataclass(frozen=True)
class WorkerModels:
    """Builds a worker's models once (the ``setup`` of `build_shards`): the objects
    themselves (local engine), or Ray object refs fetched on the worker, each moved to
    CUDA when the worker has a GPU; ``loader`` (if given) replaces the first object by
    its result on the worker (a large model loaded from disk rather than shipped).

    A CPU worker runs torch with ``threads`` threads and numpy's BLAS with
    ``blas_threads``, the counts of the process that started the work: CPU kernels split
    their reductions by thread count, so only then are its floats bit-identical to the
    local engine's."""

    objects: tuple[Any, ...]
    remote: bool = False
    loader: Callable[[], Any] | None = None
    threads: int = 1
    blas_threads: int | None = None

    def __call__(self) -> tuple[Any, ...]:
        if not self.remote:
            return self.objects
        ray = ray_module()
        objects = [ray.get(ref) for ref in self.objects]
        if self.loader is not None:
            objects[0] = self.loader()
        if torch.cuda.is_available():
            for obj in objects:
                module = getattr(obj, "model", obj)  # a LoadedModel or an nn.Module
                module.to("cuda")
        else:
            torch.set_num_threads(self.threads)
            threadpoolctl.threadpool_limits(self.blas_threads, user_api="blas")
        return tuple(objects)


def worker_models(
    *objects: Any, engine: Engine = "local", loader: Callable[[], Any] | None = None
) -> WorkerModels:
    """The ``setup`` that gives every worker ``objects`` (shipped once to the object store
    under the Ray engine; the first is loaded by ``loader`` there instead when given)."""
    if engine == "local":
        return WorkerModels(objects)
    ray = ray_module()
    shipped = tuple(
        ray.put(None if loader is not None and i == 0 else obj) for i, obj in enumerate(objects)
    )
    info = threadpoolctl.threadpool_info()
    blas = [pool["num_threads"] for pool in info if pool["user_api"] == "blas"]
    return WorkerModels(
        shipped,
        remote=True,
        loader=loader,
        threads=torch.get_num_threads(),
        blas_threads=max(blas, default=None),
    )
