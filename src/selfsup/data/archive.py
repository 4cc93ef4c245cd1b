"""Extract an image archive once into a cache folder (for benchmarks, tests and users' tarballs)."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path


def default_cache() -> Path:
    return Path(os.environ.get("SELFSUP_CACHE", Path.home() / ".cache" / "selfsup"))


def ensure_extracted(archive: str | Path, cache: str | Path | None = None) -> Path:
    """Extract the ``.tar(.gz)`` ``archive`` under ``cache/<archive name>/`` unless already done.

    Extraction goes to a temporary folder renamed into place at the end, so an interrupted
    extraction is never mistaken for a complete one. Returns the extraction folder.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    name = archive.name.split(".tar")[0]
    dest = Path(cache or default_cache()) / name
    stamp = dest / ".complete"
    if stamp.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{name}."))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / ".complete").write_text(str(archive))
        if dest.exists() and not stamp.exists():
            shutil.rmtree(dest)  # a leftover from an older, interrupted layout
        try:
            os.replace(tmp, dest)
        except OSError:
            if not stamp.exists():  # another process finished first: fine; anything else: raise
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
