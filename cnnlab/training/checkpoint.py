"""Checkpoints: atomic writes, `weights_only` reads verified by a checksum, and the RNG state needed
for exact resume."""

import hashlib
import pickle
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CheckpointError, first_line
from cnnlab.files import atomic_copy, atomic_write

FORMAT = "cnnlab-checkpoint"
VERSION = 2  # 2: a sha256 of the contents (version 1 files, without it, are still read)
_STAMPS = ("format", "version", "sha256")  # what save_checkpoint adds around the payload
CONTENTS = ("model", "optimizer", "scheduler", "scaler", "state", "rng", "config")


def copy_checkpoint(source: Path, target: Path) -> None:
    """`atomic_copy` of a checkpoint; a failure to write is one CheckpointError saying what was kept."""
    try:
        atomic_copy(source, target)
    except OSError as error:
        raise _not_written(target, error) from None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a cnnlab checkpoint atomically: a crash or a full disk leaves the previous file intact."""
    stamped = {"format": FORMAT, "version": VERSION, **payload, "sha256": contents_digest(payload)}
    try:
        atomic_write(path, lambda file: torch.save(stamped, file))
    except (OSError, RuntimeError) as error:  # torch reports a full disk as RuntimeError ("enforce fail")
        raise _not_written(path, error) from None


def _not_written(path: Path, error: Exception) -> CheckpointError:
    kept = f"the previous {path.name} was kept" if path.is_file() else f"no {path.name} was written"
    return CheckpointError(f"cannot write {path}: {_write_failure(error, path.parent)}; {kept}")


def _write_failure(error: Exception, directory: Path) -> str:
    """The reason a write failed, in words: the system's, or for torch's C++ errors ("enforce fail at
    inline_container.cc") the disk's free space when that is what ran out."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    if free is not None and free < 64 * 2**20:
        return f"No space left on device ({free / 2**20:.1f} MiB free)"
    return first_line(error, 160)


def contents_digest(payload: dict[str, Any]) -> str:
    """A sha256 of every tensor's bytes and every plain value in `payload` (keys in sorted order)."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy())  # the tensor's own bytes: no copy
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=str):
                digest.update(repr(key).encode())
                feed(value[key])
            digest.update(b"}")
        elif isinstance(value, list | tuple):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    feed(payload)
    return digest.hexdigest()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a cnnlab checkpoint with `weights_only=True` (nothing in the file is executed) and verify
    its checksum: any failure is one CheckpointError line."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" not in str(error):
            raise _unreadable(path, error) from None
        raise CheckpointError(
            f"{path} is not a cnnlab checkpoint: it holds objects other than tensors and plain data, "
            "which cnnlab never unpickles (they could run code); use a checkpoint cnnlab wrote"
        ) from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # random bytes reach the zip reader and the unpickler in many ways
        raise _unreadable(path, error) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") not in (1, VERSION):
        raise CheckpointError(
            f"{path} is a version {payload.get('version')} checkpoint; this cnnlab reads versions 1-{VERSION}"
        )
    missing = [key for key in CONTENTS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} is an incomplete cnnlab checkpoint (no {', '.join(missing)})")
    if payload["version"] >= 2:
        contents = {key: value for key, value in payload.items() if key not in _STAMPS}
        if payload.get("sha256") != contents_digest(contents):
            raise CheckpointError(
                f"{path} is corrupt: its contents no longer match the checksum written with them "
                "(a disk or copy error); use another checkpoint (best.pt / last.pt) or start a new run"
            )
    return payload


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    reason = first_line(error, 160)
    return CheckpointError(
        f"{path} is not a readable cnnlab checkpoint (truncated or corrupt: {reason}); "
        "use another checkpoint or start a new run"
    )


def rng_state() -> dict[str, Any]:
    """Every RNG state a run touches: python, numpy, torch and CUDA (as tensors, weights_only-safe)."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": version, "keys": torch.tensor(keys), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by `rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["keys"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Writes a run's last.pt (and copies it to best.pt when validation improved): the training state,
    the loop's, the RNGs' and the run's config. Under torchrun only rank 0 writes (`write`)."""

    def __init__(self, last: Path, best: Path, config: dict[str, Any], write: bool = True) -> None:
        self.last, self.best, self.config, self.write = last, best, config, write

    def save(self, training: dict[str, Any], state: dict[str, Any], best: bool) -> None:
        """Save `training` (model, optimizer, … state dicts) and the loop's `state`; best: also best.pt."""
        if not self.write:
            return
        save_checkpoint(self.last, {**training, "state": state, "rng": rng_state(), "config": self.config})
        if best:  # the same bytes: copied, not serialized a second time
            copy_checkpoint(self.last, self.best)
