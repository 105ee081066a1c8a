"""Checkpoints as safetensors + JSON, written atomically (temp file, fsync, rename); nothing is ever unpickled."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
META = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or corrupt; the message names the file."""


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then rename over `path`, so readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_array(path: Path, array: np.ndarray) -> None:
    """Atomically write one array as .npy (no pickled objects; read back with np.load(allow_pickle=False))."""
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a handle, so np.save adds no ".npy" to the temp name
            np.save(handle, array, allow_pickle=False)

    atomic_write(path, write)


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write named arrays as one .npz (no pickled objects)."""
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (tensors made contiguous and unshared)."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, with an error that names it."""
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


def save_checkpoint(directory: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Write weights, then meta.json (with the weights' sha256) last: meta.json marks a complete checkpoint."""
    directory = Path(directory)
    write_tensors(directory / WEIGHTS, state_dict)
    meta = {**meta, "sha256": sha256_file(directory / WEIGHTS)}
    write_json(directory / META, meta)
    return meta


def read_meta(directory: Path) -> dict[str, Any]:
    """The meta.json of a checkpoint directory."""
    path = Path(directory) / META
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: {directory} is not a finished checkpoint")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc


def load_weights(directory: Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and meta of a checkpoint; `verify` checks the weights against meta's sha256."""
    directory = Path(directory)
    meta = read_meta(directory)
    weights = directory / WEIGHTS
    if verify and meta.get("sha256") and sha256_file(weights) != meta["sha256"]:
        raise CheckpointError(f"{weights} does not match the sha256 in {directory / META}: the file is corrupt or was replaced")
    return read_tensors(weights), meta


def is_complete(directory: Path) -> bool:
    """True when the checkpoint's meta.json exists and its weights match their sha256."""
    directory = Path(directory)
    try:
        meta = read_meta(directory)
    except CheckpointError:
        return False
    weights = directory / WEIGHTS
    return weights.is_file() and sha256_file(weights) == meta.get("sha256")


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Save nested training state (model, optimizer, scheduler...): tensors to safetensors, the rest to JSON."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    write_tensors(Path(path).with_suffix(".safetensors"), tensors)
    write_json(Path(path).with_suffix(".json"), skeleton)  # written last: marks the state complete


def load_state(path: Path) -> dict[str, Any] | None:
    """The state saved by `save_state`, or None when there is none (or it is incomplete)."""
    path = Path(path)
    skeleton_path, tensor_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
    if not skeleton_path.is_file() or not tensor_path.is_file():
        return None
    return _unflatten(json.loads(skeleton_path.read_text()), read_tensors(tensor_path))


def clear_states(directory: Path) -> None:
    """Delete every training state (`*_state.json` / `*_state.safetensors`) in a finished checkpoint's folder."""
    for path in Path(directory).glob("*_state.*"):
        if path.suffix in (".json", ".safetensors"):
            path.unlink(missing_ok=True)


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _flatten(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    return obj


def _key(key: Any) -> Any:
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key
    raise TypeError(f"cannot save a dict key of type {type(key).__name__}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, dict) and "__list__" in obj:
        return [_unflatten(v, tensors) for v in obj["__list__"]]
    return obj
