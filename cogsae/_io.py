"""Atomic file writes, content hashing, the cache directory, safe paths and safe caches."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from cogsae.errors import CogsaeError

log = logging.getLogger(__name__)
T = TypeVar("T")


def cache_dir() -> Path:
    """Root of cogsae's on-disk cache: ``$COGSAE_CACHE`` or ``~/.cache/cogsae``."""
    root = (
        os.environ.get("COGSAE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cogsae"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A run killed mid-write leaves the old file (or none), never a truncated one.
    Works for files and for directories written at the yielded path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            _rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        _rmtree(tmp.parent)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of the JSON encoding of ``parts``: a cache key that survives restarts."""
    blob = json.dumps(parts, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


# --------------------------------------------------------------------------- safe caches


class CacheError(Exception):
    """A cache file that cannot be read back, fails its checksum or has another key."""


def write_checked(target: str | Path, data: bytes) -> None:
    """Write ``data`` atomically behind a sha256 line, so corruption is detected on read."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def read_checked(path: str | Path) -> bytes:
    """The payload of a `write_checked` file; CacheError if it is unreadable or altered."""
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise CacheError(f"cannot read: {err.strerror or err}") from err
    digest, _, data = blob.partition(b"\n")
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise CacheError("checksum mismatch (truncated or altered)")
    return data


def load_cache(path: Path, read: Callable[[Path], T]) -> T | None:
    """``read(path)`` of a cache file, or None if it is absent or broken.

    A broken file (checksum, format or key) is reported in one warning line naming it and
    is then rebuilt by the caller; it is never reused and never raises.
    """
    if not path.exists():
        return None
    try:
        return read(path)
    except Exception as err:  # any failure to decode means: rebuild
        log.warning("cache %s is unusable (%s); rebuilding it", path, _one_line(err))
        return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


_FINGERPRINTS = "fingerprints.json"


def files_fingerprint(paths: Iterable[str | Path]) -> str:
    """Content hash of files (names within their folder and bytes), in the given order.

    Each file's sha256 is remembered in ``<cache>/fingerprints.json`` under its resolved
    path, size and mtime, so an unchanged multi-GB weight file is hashed only once.
    """
    memo_path = cache_dir() / _FINGERPRINTS
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    digests = []
    changed = False
    for path in map(Path, paths):
        ident = _identity(path)
        if not isinstance(memo.get(ident), str):
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
            memo[ident] = digest.hexdigest()
            changed = True
        digests.append((path.name, memo[ident]))
    if changed:  # forget files gone or changed since, so the memo does not grow unbounded
        memo = {ident: d for ident, d in memo.items() if _current(ident)}
        with suppress(OSError):
            write_json(memo_path, memo)
    return stable_hash(digests)


def _identity(path: Path) -> str:
    """``resolved path|size|mtime_ns``: a file's memo key in `files_fingerprint`."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _current(ident: str) -> bool:
    """Whether the file of a memo key still exists with that size and mtime."""
    path = Path(ident.rsplit("|", 2)[0])
    try:
        return _identity(path) == ident
    except OSError:
        return False


# --------------------------------------------------------------------------- safe paths


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def safe_name(text: str) -> str:
    """A path component for ``text``: no separators, no ``..``, no leading dot, not empty.

    Unsafe characters become "-" (a name with nothing usable left becomes a hash); the
    user's text stays the display name elsewhere.
    """
    slug = _UNSAFE.sub("-", str(text)).strip("-.")[:100]
    return slug or f"x-{stable_hash(text, length=8)}"


def inside(root: str | Path, path: str | Path, *, field: str | None = None) -> Path:
    """``path`` resolved, checked to lie inside ``root`` (a CogsaeError otherwise)."""
    base = Path(root).resolve()
    resolved = Path(base, path).resolve()
    if resolved != base and base not in resolved.parents:
        raise CogsaeError(f"resolves outside {base}", path=path, field=field)
    return resolved


def check_writable(folder: str | Path, *, field: str | None = None) -> Path:
    """Create ``folder`` if needed and prove it writable now (before any expensive work)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise CogsaeError(
            f"cannot write here: {err.strerror or err}", path=folder, field=field
        ) from err
    return folder


# --------------------------------------------------------------------------- safe serializer

_FORMAT = 1


def save_data(target: str | Path, value: Any, key: str) -> None:
    """Write ``value`` atomically as a data-only .npz (`dumps_data`) under ``key``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(dumps_data(value, key))


def load_data(path: Path, key: str) -> Any | None:
    """The value `save_data` stored at ``path`` under ``key``; None (with a one-line warning
    naming the file) when it is absent, broken, altered or stored under another key."""
    return load_cache(path, lambda p: loads_data(p.read_bytes(), key))


def dumps_data(value: Any, key: str) -> bytes:
    """Serialize ``value`` as data: a plain .npz of numpy arrays plus a JSON ``structure``
    entry with type tags, and a ``sha256`` entry over both (checked on load).

    Handles None, bool, int, float, str, list, tuple, dict (any encodable keys), Path,
    numpy arrays (not object dtype) and scalars, dataclasses of cogsae modules (their
    fields only: ``cached_property`` values are skipped; shared instances stay shared)
    and the foreign types in `_CODECS` (rsatoolbox RDMs and fixed models, via their dicts).
    Arrays under top-level dict keys keep those names in the .npz (e.g. ``values``).
    ``key`` is stored and must match on load. Nothing in the result is executable.
    """
    import numpy as np

    arrays: dict[str, Any] = {}
    seen: dict[int, int] = {}
    keep: list[Any] = []  # holds encoded objects alive so their ids stay unique

    def remember(obj: Any) -> int:
        seen[id(obj)] = len(keep)
        keep.append(obj)
        return seen[id(obj)]

    def enc(obj: Any, name: str | None = None) -> Any:
        if isinstance(obj, np.generic):  # before the builtins: np.float64 is a float
            return {"t": "scalar", "dtype": obj.dtype.str, "v": obj.item()}
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if isinstance(obj, list):
            return [enc(x) for x in obj]
        if isinstance(obj, tuple):
            return {"t": "tuple", "v": [enc(x) for x in obj]}
        if isinstance(obj, dict):
            return {"t": "dict", "v": [[enc(k), enc(v)] for k, v in obj.items()]}
        if isinstance(obj, Path):
            return {"t": "path", "v": str(obj)}
        if id(obj) in seen:
            return {"t": "ref", "ref": seen[id(obj)]}
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError("object arrays cannot be stored as data")
            ref = remember(obj)
            if name is None or name in arrays or name in _RESERVED:
                name = f"a{ref}"
            arrays[name] = obj
            return {"t": "array", "ref": ref, "name": name}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            cls = type(obj)
            if not _is_cogsae(cls.__module__):
                raise TypeError(f"{cls.__module__}.{cls.__qualname__} is not a cogsae class")
            ref = remember(obj)
            fields = {f.name: enc(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            return {
                "t": "dataclass",
                "cls": f"{cls.__module__}:{cls.__qualname__}",
                "ref": ref,
                "v": fields,
            }
        codec = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if codec in _CODECS:
            return {"t": "codec", "cls": codec, "v": enc(_CODECS[codec][0](obj))}
        raise TypeError(f"cannot store {type(obj).__name__} as data")

    if isinstance(value, dict) and all(isinstance(k, str) and k.isidentifier() for k in value):
        top = {"t": "dict", "v": [[k, enc(v, k)] for k, v in value.items()]}
    else:
        top = enc(value)
    structure = np.frombuffer(
        json.dumps({"format": _FORMAT, "key": key, "value": top}).encode(), dtype=np.uint8
    )
    digest = np.frombuffer(_digest(structure, arrays).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, structure=structure, sha256=digest, **arrays)
    return buf.getvalue()


_RESERVED = ("structure", "sha256")


def _digest(structure: Any, arrays: dict[str, Any]) -> str:
    """sha256 over the structure and every array's name, dtype, shape and bytes."""
    import numpy as np

    digest = hashlib.sha256(structure.tobytes())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def loads_data(payload: bytes, key: str) -> Any:
    """The value `dumps_data` stored under ``key``; CacheError for another key or bad data."""
    import numpy as np

    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        contents = {name: npz[name] for name in npz.files}
    structure, digest = contents.pop("structure"), contents.pop("sha256")
    if _digest(structure, contents) != digest.tobytes().decode():
        raise CacheError("checksum mismatch (altered)")
    structure = json.loads(structure.tobytes())
    arrays = contents
    if structure.get("format") != _FORMAT:
        raise CacheError(f"unknown format {structure.get('format')!r}")
    if structure.get("key") != key:
        raise CacheError("computed under other settings (key mismatch)")
    built: dict[int, Any] = {}

    def dec(obj: Any) -> Any:
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if isinstance(obj, list):
            return [dec(x) for x in obj]
        tag = obj["t"]
        if tag == "tuple":
            return tuple(dec(x) for x in obj["v"])
        if tag == "dict":
            return {dec(k): dec(v) for k, v in obj["v"]}
        if tag == "path":
            return Path(obj["v"])
        if tag == "scalar":
            return np.dtype(obj["dtype"]).type(obj["v"])
        if tag == "ref":
            return built[obj["ref"]]
        if tag == "array":
            built[obj["ref"]] = arrays[obj["name"]]
            return built[obj["ref"]]
        if tag == "dataclass":
            cls = _registered(*obj["cls"].split(":", 1))
            values = {name: dec(v) for name, v in obj["v"].items()}
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if set(values) != set(fields):
                raise CacheError(f"{cls.__qualname__} fields changed")
            instance = cls(**{n: v for n, v in values.items() if fields[n].init})
            for name, v in values.items():
                if not fields[name].init:
                    object.__setattr__(instance, name, v)
            built[obj["ref"]] = instance
            return instance
        if tag == "codec" and obj["cls"] in _CODECS:
            return _CODECS[obj["cls"]][1](dec(obj["v"]))
        raise CacheError(f"unknown tag {tag!r}")

    return dec(structure["value"])


def _rdms_from_dict(data: dict[str, Any]) -> Any:
    from rsatoolbox.rdm import rdms_from_dict

    return rdms_from_dict(data)


def _model_from_dict(data: dict[str, Any]) -> Any:
    from rsatoolbox.model import model_from_dict

    return model_from_dict(data)


_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "rsatoolbox.rdm.rdms.RDMs": (lambda rdms: rdms.to_dict(), _rdms_from_dict),
    "rsatoolbox.model.model.ModelFixed": (lambda model: model.to_dict(), _model_from_dict),
}
"""Foreign (non-dataclass) types stored by their own to_dict / from_dict: class -> codec."""


def _is_cogsae(module: str) -> bool:
    return module == "cogsae" or module.startswith("cogsae.")


def _registered(module: str, qualname: str) -> type:
    """The dataclass ``module:qualname``, allowed only from cogsae's own modules."""
    if not _is_cogsae(module):
        raise CacheError(f"{module}.{qualname} is not a cogsae class")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise CacheError(f"{module}.{qualname} is not a cogsae dataclass")
    return obj


def state_fingerprint(state: dict[str, Any], *extra: Any) -> str:
    """Content hash of named tensors (a model's or SAE's weights) and ``extra`` settings."""
    import torch

    digest = hashlib.sha256(stable_hash(*extra, length=64).encode())
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        digest.update(str(data.dtype).encode() + str(tuple(data.shape)).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_replaceable(folder: str | Path, own: Iterable[str], *, overwrite: bool) -> None:
    """Refuse to replace ``folder`` when it holds files other than its own kind of output
    (names in ``own``), unless ``overwrite``; and prove its parent writable, early."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CogsaeError("exists and is not a folder", path=folder, field="--out")
    own = set(own)
    foreign = (
        sorted(p.name for p in folder.iterdir() if p.name not in own) if folder.is_dir() else []
    )
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise CogsaeError(
            f"is not empty ({shown}) and would be replaced; choose another folder or pass "
            "--overwrite",
            path=folder,
            field="--out",
        )
    check_writable(folder.resolve().parent, field="--out")
