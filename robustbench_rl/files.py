"""Files on disk: atomic writes (a temp file renamed into place) and content hashes.

Every file rbrl writes (checkpoints, results, reports, manifests, run state) goes through
:func:`atomic_writer`, so a crash or an error never leaves a half-written file where a complete one
is expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    """The process umask: read from /proc where it can be (os.umask can only be read by setting it,
    which would briefly change it for every other thread), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace `path` only if the block completes.

    Writes go to a temp file in the same folder, which is fsynced and renamed over `path` on success
    and deleted on any error: a crash or an exception never leaves a half-written `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0o600; give it what open() would (0o666 minus the umask), since the
        # rename keeps the temp file's mode.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and a rename: never a half file."""
    with atomic_writer(path) as fh:
        fh.write(data)


def file_sha256(path: str | os.PathLike) -> str:
    """Content hash of a file (ties fitted critics and results to the exact policy bytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_writable(path: str | os.PathLike, *, folder: bool, what: str = "--out") -> Path:
    """`path` as a Path if rbrl can write it, else ValueError naming the problem and the fix; creates nothing.

    With `folder`, `path` is a folder to create or fill, else a file to create or replace (atomically,
    so only its folder's permissions matter). The nearest existing ancestor must be a folder that
    accepts a new file, probed with an anonymous temp file: os.access answers yes to root even on a
    read-only mount. Commands call this before any work, so that an unwritable output fails at once
    instead of after a long run.
    """
    path = Path(os.path.expanduser(str(path)))
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder; choose a folder path")
    if not folder and path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    base = path if folder else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{what} {path}: {base} is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise ValueError(f"{what} {path}: cannot write in {base} ({err.strerror or err}); "
                         "choose a writable location") from None
    return path
