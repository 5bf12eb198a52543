"""Atomic, durable file writes: a reader sees the old file or the complete new one, never a partial write, and
after a power loss the renamed file holds its data (the file is fsynced before the rename, its directory after)."""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp_path)`` for a temporary file next to ``path``, then renames it over ``path``.

    The file gets the permissions a plain ``open(path, 'w')`` would give it: those of the file it replaces, or
    ``0o666`` minus the umask for a new file (not the owner-only mode of ``tempfile.mkstemp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f'.{path.name}.{secrets.token_hex(6)}.tmp')
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        write(tmp)
        replace_durably(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a file's or a directory's data and metadata to the disk (``os.fsync``)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace(src, dst)`` that survives a crash: ``src`` is fsynced first, the directory of ``dst`` after
    (without it a rename can be lost, or a journal can keep the new name pointing to unwritten data)."""
    fsync_path(src)
    os.replace(src, dst)
    fsync_path(Path(dst).parent)


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """Reads a JSON file we wrote (never a pickle: a planted one is only bytes that do not parse).

    Raises:
        ValueError: ``path`` is unreadable or not JSON; the message ends with ``fix`` (what the user should do).
    """
    try:
        return json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f'{path} is not a readable JSON file ({type(error).__name__}: {error}); {fix}') from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, 'w', encoding='utf-8') as file:
            file.write(text)
    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes ``data`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + '\n')


def atomic_save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    """Saves tensors as safetensors atomically (copies to contiguous CPU tensors first)."""
    from safetensors.torch import save_file
    plain = {key: value.detach().to('cpu').contiguous().clone() for key, value in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, tmp, metadata=metadata))
