"""Writes that are all or nothing: a crash or a full disk never leaves a file or folder that looks finished.

A file is written under a temporary name beside its target and renamed over it
(``os.replace`` is atomic within a filesystem). A folder (the export) is assembled under
a hidden temporary name and renamed into place only when every file in it is written.

No torch import: the Hub side uses these too.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def staging_name(target: Path) -> Path:
    """Where a folder is assembled before it takes its name (hidden, beside it, so the rename stays atomic)."""
    return target.with_name(f'.{target.name}.partial')


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty folder to fill; it replaces ``target`` only if the block finishes without an exception.

    A leftover staging folder (from a run killed while writing) is removed first; on any
    error the staging folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    staging = staging_name(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_folder(staging, target)


def replace_folder(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first and removed after.

    Between the two renames there is no ``target`` at all, never a mixed one.
    """
    old = None
    if target.exists():
        old = target.with_name(f'.{target.name}.old')
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
