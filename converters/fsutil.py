"""Atomic writes and cheap image placement, so a killed conversion never leaves a half file."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f]")


class UnsafePath(ValueError):
    """A file name read from a dataset that would leave its folder, or is no file name at all."""


def inside(root: Path, name: Any) -> Path:
    """``root / name`` for a relative name read from a dataset (``\\`` taken as ``/``).

    Refused with UnsafePath: a non-string or empty name, one holding NUL or another control
    character (it would break .lst lines and messages), an absolute path (``/x``,
    ``C:/x``) and any ``..`` part. The check is on the text, on purpose: text in a dataset file
    may not decide a path outside its folder, while a symlink the user placed there is theirs.
    """
    if not isinstance(name, str) or not name.strip() or _CONTROL.search(name):
        raise UnsafePath(f"{name!r} is not a file name (empty, or a control character such as NUL)")
    rel = name.replace("\\", "/")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":") or ".." in rel.split("/"):
        raise UnsafePath(f"{name!r} leaves its folder (absolute or '..'); give a path inside it")
    return Path(root) / posixpath.normpath(rel)


def _read_umask() -> int:
    """Read once at import: os.umask can only be read by setting it, which races with threads."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """mkstemp makes its file 0600; the result gets the mode a plain open() would give (0666 & ~umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any, *, indent: int | None = None, default: Any = None) -> None:
    """Indented files (meant to be read by people) end with a newline."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=default)
    atomic_write_bytes(path, (text + "\n" if indent is not None else text).encode())


def place_file(src: Path, dst: Path) -> None:
    """Hard-link src to dst (a copy where linking is impossible), replacing dst atomically.

    Skips the work when dst is already a link to src, so a re-run after a kill is cheap.
    """
    try:
        os.link(src, dst)  # the common case, a fresh output: one system call, atomic by itself
        return
    except FileExistsError:
        if os.path.samefile(src, dst):
            return
    except FileNotFoundError:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # another file system, or links not allowed: copy below
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
