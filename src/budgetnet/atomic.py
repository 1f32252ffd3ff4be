"""Every file budgetnet writes is whole or absent: written under a fresh temporary name beside it, then renamed onto
it, or appended in one piece; never through a symbolic link, and a full disk is one error naming the file.

    with atomic.replacing(out / "model.onnx") as tmp:   # any writer that takes a path
        program.save(str(tmp))
    atomic.write_text(out / "report.md", text)           # or write_bytes
    atomic.append(run / "metrics.jsonl", row + "\\n")     # one line, whole or not at all
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Iterator

from .errors import RunFailed

TMP_SUFFIX = ".tmp"  # a temporary file is <name>.<random>.tmp beside the file it will replace
FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota


class DiskFullError(RunFailed):
    """The disk filled while writing a file; the partial file was removed, the previous one is intact."""


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A fresh, empty temporary file beside `path` for the block to write by name; when the block ends it is flushed
    to the disk and renamed onto `path` (replacing `path` itself, never the target of a link there), and when the
    block fails it is removed. A full disk raises DiskFullError naming `path`."""
    path, tmp = Path(path), None
    try:
        tmp = _create_temporary(path)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if disk_full(e):
            raise DiskFullError(f"no space left on device while writing {path}") from None
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` (see `replacing`)."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text`, UTF-8 (see `replacing`)."""
    write_bytes(path, text.encode())


def append(path: str | Path, text: str) -> None:
    """Add `text` at the end of `path` (created when missing; a link there is refused with OSError ELOOP): whole
    or not at all, a full disk cutting the file back to where it was and raising DiskFullError naming `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    size = os.fstat(fd).st_size
    try:
        with open(fd, "ab", closefd=False) as f:
            f.write(text.encode())
    except BaseException as e:
        os.ftruncate(fd, size)
        if disk_full(e):
            raise DiskFullError(f"no space left on device while writing {path}") from None
        raise
    finally:
        os.close(fd)


def disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from or while handling, is a full disk or quota (a library
    may wrap the OSError in its own exception)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def _create_temporary(path: Path) -> Path:
    """Create <path>.<random>.tmp beside `path`, new (O_EXCL: never an existing file or link) and with the mode
    a new file takes under the umask (as `path` itself would get), and return it."""
    for _ in range(100):
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")
