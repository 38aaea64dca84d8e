"""Resume state in formats that cannot run code when read: safetensors for tensors, JSON for the rest.

A run folder may come from elsewhere (a shared disk, a downloaded checkpoint). ``torch.load`` of
a pickle executes whatever the pickle names, so nothing here ever unpickles: optimiser state is
split into its tensors (``optimizer.safetensors``) and its plain values (``optimizer.json``), and
the random generators' states go to ``rng-RANK.json`` (Python's and NumPy's Mersenne Twister as
integer lists) and ``rng-RANK.safetensors`` (torch's CPU and CUDA generator bytes).

A checkpoint folder that only has the pickle files of older versions (``optimizer.pt``,
``rng-RANK.pt``) is refused with :class:`UnsafeCheckpointError` instead of being unpickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .config import ConfigError

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
LEGACY_PICKLES = ("optimizer.pt", "rng-*.pt")


class UnsafeCheckpointError(ConfigError):
    """A checkpoint file is missing, is not in the safe format, or would need unpickling."""


def _tensor_file_error(path: Path, exc: Exception) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(f"{path} is not a valid safetensors file ({type(exc).__name__}: {exc}); "
                                 "checkpoints are never unpickled, so it cannot be loaded")


def load_tensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        legacy = sorted(p.name for pattern in LEGACY_PICKLES for p in path.parent.glob(pattern))
        if legacy:
            raise UnsafeCheckpointError(
                f"checkpoint {path.parent} has only pickle files ({', '.join(legacy)}) from an older version; "
                "refusing to unpickle them (they could run arbitrary code). Start a fresh run or resume from "
                "a checkpoint written by this version")
        raise UnsafeCheckpointError(f"checkpoint file {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _tensor_file_error(path, exc) from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnsafeCheckpointError(f"checkpoint file {path} is missing") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnsafeCheckpointError(f"{path} is not valid JSON ({exc}); checkpoints are never unpickled") from None


# -- plain values <-> JSON (tuples survive the round trip) --------------------------------------
def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"cannot store a dict with non-string keys in JSON: {list(value)[:3]}")
        return {k: _to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint's JSON")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


# -- optimiser ----------------------------------------------------------------------------------
def save_optimizer_state(optimizer: Any, folder: Path) -> None:
    """Write ``optimizer.state_dict()`` as ``optimizer.safetensors`` + ``optimizer.json``."""
    import torch
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        out: dict[str, Any] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                key = f"{pid}/{name}"
                tensors[key] = value.detach().cpu().contiguous()
                out[name] = {"__tensor__": key}
            else:
                out[name] = _to_json(value)
        state_json[str(pid)] = out
    save_file(tensors, str(folder / OPTIMIZER_TENSORS))
    atomic_write_json(folder / OPTIMIZER_JSON, {"state": state_json, "param_groups": _to_json(sd["param_groups"])})


def load_optimizer_state(optimizer: Any, folder: Path) -> None:
    """Restore what :func:`save_optimizer_state` wrote (no unpickling)."""
    tensors = load_tensors(folder / OPTIMIZER_TENSORS)
    meta = _load_json(folder / OPTIMIZER_JSON)
    try:
        state: dict[int, dict[str, Any]] = {}
        for pid, entries in meta["state"].items():
            state[int(pid)] = {
                name: tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else _from_json(v)
                for name, v in entries.items()
            }
        param_groups = _from_json(meta["param_groups"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnsafeCheckpointError(f"{folder / OPTIMIZER_JSON} does not describe an optimiser state "
                                    f"({type(exc).__name__}: {exc})") from None
    # Optimizer.load_state_dict moves the state onto each parameter's device.
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


# -- random generators --------------------------------------------------------------------------
def save_rng_state(folder: Path, rank: int) -> None:
    """Write this process's Python, NumPy, torch (and CUDA) generator states."""
    import torch
    from safetensors.torch import save_file

    version, mt, gauss = random.getstate()
    meta: dict[str, Any] = {"python": {"version": version, "state": list(mt), "gauss_next": gauss}}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        meta["numpy"] = {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                         "cached_gaussian": float(cached)}
    except ImportError:  # pragma: no cover - numpy comes with torch
        pass
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = s
    meta["cuda_devices"] = sum(1 for k in tensors if k.startswith("cuda/"))
    save_file(tensors, str(folder / f"rng-{rank}.safetensors"))
    atomic_write_json(folder / f"rng-{rank}.json", meta)


def has_rng_state(folder: Path, rank: int) -> bool:
    return (folder / f"rng-{rank}.json").is_file() or (folder / f"rng-{rank}.pt").is_file()


def load_rng_state(folder: Path, rank: int) -> None:
    """Restore what :func:`save_rng_state` wrote for ``rank`` (no unpickling)."""
    import torch

    meta = _load_json(folder / f"rng-{rank}.json") if (folder / f"rng-{rank}.json").is_file() else None
    if meta is None:
        raise UnsafeCheckpointError(
            f"checkpoint {folder} has only rng-{rank}.pt, a pickle from an older version; refusing to unpickle it "
            "(it could run arbitrary code). Start a fresh run or resume from a checkpoint written by this version")
    tensors = load_tensors(folder / f"rng-{rank}.safetensors")
    try:
        py = meta["python"]
        py_state = (int(py["version"]), tuple(int(x) for x in py["state"]),
                    None if py["gauss_next"] is None else float(py["gauss_next"]))
        torch_state = tensors["torch"]
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsafeCheckpointError(f"{folder / f'rng-{rank}.json'} is not a generator state ({exc})") from None
    random.setstate(py_state)
    torch.set_rng_state(torch_state)
    if "numpy" in meta:
        import numpy as np

        n = meta["numpy"]
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    cuda = [tensors[f"cuda/{i}"] for i in range(int(meta.get("cuda_devices", 0)))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
