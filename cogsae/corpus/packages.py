"""Reading Debian-packaged corpus sources: the error naming a missing package, R's
lazy-load databases (the form R packages store their data in) and content hashes."""

from __future__ import annotations

import hashlib
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cogsae.errors import CogsaeError


def missing_package(package: str, path: Path) -> CogsaeError:
    """The error of a default-corpus source whose Debian package is not installed."""
    return CogsaeError(
        f"the default corpus needs the Debian package {package} "
        f"(apt-get install {package}; or run `make install`)",
        path=path,
        field="corpus",
    )


def read_lazy_load(folder: Path, package: str) -> Iterator[tuple[str, Any]]:
    """(name, object converted by ``rdata``) of every object of an R lazy-load database,
    the form R packages store their data in (``package``: its Debian package).

    ``Rdata.rdx`` is an RDS index of offsets into ``Rdata.rdb``, whose records are
    zlib-compressed serialized objects, each preceded by its 4-byte big-endian length.
    """
    import rdata

    index_path, db_path = folder / "Rdata.rdx", folder / "Rdata.rdb"
    if not (index_path.is_file() and db_path.is_file()):
        raise missing_package(package, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns: "unknown file type, assumed RDS"
        index = rdata.conversion.convert(rdata.parser.parse_file(index_path))
        blob = db_path.read_bytes()
        for name, (offset, length) in index["variables"].items():
            record = blob[int(offset) : int(offset) + int(length)]
            (size,) = struct.unpack(">I", record[:4])
            data = zlib.decompress(record[4:])
            if len(data) != size:
                raise CogsaeError(f"corrupt {package} database", path=db_path)
            yield str(name), rdata.conversion.convert(rdata.parser.parse_data(data))


def files_hash(paths: Sequence[Path]) -> str:
    """Content hash of the corpus files, in order (first 16 hex digits of their sha256)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
