"""Checkpoints as safetensors + JSON, written atomically (`nst_common.files`); nothing is ever unpickled.

A checkpoint folder holds `model.safetensors` and `meta.json` (written last, with the weights' sha256); a training
state is one safetensors file with its JSON skeleton, a digest and the fingerprint of the run it belongs to.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from nst_common.errors import CheckpointError
from nst_common.files import (atomic_write, read_tensors, remove_temp_files, save_tensors_file, sha256_file, write_json,
                               write_tensors)

WEIGHTS = "model.safetensors"
META = "meta.json"
STATE_FORMAT = "nst-train-state/2"


class StateMismatch(CheckpointError):
    """A training state that must not be resumed from (corrupt, another training's, or of the old format)."""


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


def save_state(path: Path, state: dict[str, Any], fingerprint: dict[str, Any] | None = None) -> None:
    """Save nested training state (model, optimizer, scheduler...) as ONE safetensors file, `<path>.safetensors`.

    Tensors are the file's tensors; the rest (epoch, history, optimizer hyper-parameters) is JSON in its header,
    with a SHA-256 over every tensor's bytes and the caller's `fingerprint` (what the state belongs to). One file
    renamed once: a kill at any instant leaves the previous epoch's state or the new one, never a mix.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {"format": STATE_FORMAT, "skeleton": json.dumps(skeleton), "tensors_sha256": _tensors_digest(plain),
                "fingerprint": json.dumps(fingerprint or {}, sort_keys=True)}
    atomic_write(_state_file(path), lambda tmp: save_tensors_file(plain, tmp, metadata))


def load_state(path: Path, fingerprint: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The state saved by `save_state`, or None when there is none.

    A state that cannot be trusted (unreadable, tensors not matching their SHA-256, another `fingerprint`, or the
    old two-file format whose halves may come from different epochs) raises StateMismatch naming the file; it is
    never used (callers discard it and start the generation again, which gives the same result). Without
    `fingerprint` (inspection) any training's state is returned.
    """
    path = _state_file(path)
    legacy = path.with_suffix(".json")
    if legacy.is_file():
        raise StateMismatch(f"{legacy} is a training state of the old two-file format, which a kill can leave "
                            "half-updated")
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise StateMismatch(f"{path} is not a readable training state ({exc})") from exc
    if metadata.get("format") != STATE_FORMAT:
        raise StateMismatch(f"{path} is not a training state of format {STATE_FORMAT}")
    if metadata.get("tensors_sha256") != _tensors_digest(tensors):
        raise StateMismatch(f"{path}: its tensors do not match their SHA-256 (the file is corrupt)")
    stored = json.loads(metadata.get("fingerprint", "{}"))
    wanted = stored if fingerprint is None else json.loads(json.dumps(fingerprint, sort_keys=True))
    if stored != wanted:
        diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise StateMismatch(f"{path} belongs to another training ({', '.join(diff)} differ)")
    return _unflatten(json.loads(metadata["skeleton"]), tensors)


def resume_state(path: Path, fingerprint: dict[str, Any] | None = None, log: Any = None) -> dict[str, Any] | None:
    """`load_state`, but a state that cannot be trusted is deleted (with a message to `log`) and None returned."""
    try:
        return load_state(path, fingerprint)
    except StateMismatch as exc:
        (log or _stderr)(f"{exc}; it is not used: deleted, the training starts again from its first epoch")
        discard_state(path)
        return None


def discard_state(path: Path) -> None:
    """Delete a training state (this format's file and the old format's pair)."""
    path = _state_file(path)
    for stale in (path, path.with_suffix(".json")):
        stale.unlink(missing_ok=True)


def clear_states(directory: Path) -> None:
    """Delete every training state (`*_state.safetensors`, old-format `*_state.json`) in a finished checkpoint's
    folder, and the temporary files a killed writer left there."""
    for path in Path(directory).glob("*_state.*"):
        if path.suffix in (".json", ".safetensors"):
            path.unlink(missing_ok=True)
    remove_temp_files(directory)


def _state_file(path: Path) -> Path:
    return Path(path).with_suffix(".safetensors")


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # its buffer (a memoryview)
    return digest.hexdigest()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


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
