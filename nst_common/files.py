"""Files written so that readers never see half of one: atomic writes (temp file, fsync, rename, folder fsync) with
the umask's mode, and plain array / JSON / safetensors readers and writers. Shared by every stage (training
checkpoints, evaluation caches and results, reports); nothing here is ever unpickled. torch, NumPy and safetensors
are imported by the functions that need them, so `atomic_write` and `write_json` stay light.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nst_common.errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np
    import torch

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then rename over `path`, so readers see the old file or the new, never half.

    The temporary file `.<name>.<random>.tmp` sits beside `path` (`remove_temp_files` deletes those a kill left
    behind); once written it gets the mode a plain `open()` would give (0666 less the umask: not mkstemp's 0600,
    nor the 0600 of writers that create the file anew, like safetensors' `save_file`), is fsynced before the
    rename, and the folder is fsynced after it, so the rename itself survives a power cut.
    Raises OSError (read-only folder, full disk) with nothing left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.close(fd)
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete the temporary files that killed writers left in `directory` (not below it); returns them.

    Only names `atomic_write` makes are taken: `.<name>.<8 random characters>.tmp`, so a user's own files (even
    `.something.tmp`) and other folders are never touched.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _TEMP_NAME.fullmatch(p.name) and p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """fsync a folder so a rename in it is durable (skipped where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_array(path: Path, array: "np.ndarray") -> None:
    """Atomically write one array as .npy (no pickled objects; read back with np.load(allow_pickle=False))."""
    import numpy as np

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a handle, so np.save adds no ".npy" to the temp name
            np.save(handle, array, allow_pickle=False)

    atomic_write(path, write)


def write_arrays(path: Path, arrays: "dict[str, np.ndarray]") -> None:
    """Atomically write named arrays as one .npz (no pickled objects)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **cast("dict[str, Any]", arrays))  # names, not np.savez's allow_pickle flag

    atomic_write(path, write)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_tensors(path: Path, tensors: "dict[str, torch.Tensor]", metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (tensors made contiguous and unshared); OSError on a refused write."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_tensors_file(plain, tmp, metadata))


def save_tensors_file(tensors: "dict[str, torch.Tensor]", tmp: Path, metadata: dict[str, str] | None) -> None:
    """safetensors' save_file (not atomic: the writer inside `atomic_write`), its I/O failures (full disk, quota)
    raised as OSError with errno and file name."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(tmp)) from exc


def read_tensors(path: Path) -> "dict[str, torch.Tensor]":
    """Read a safetensors file. Raises CheckpointError naming the file when it is missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); delete it to recompute") from exc


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
