"""Checkpoints: atomic writes, `weights_only` reads, and the RNG state needed for exact resume."""

import os
import pickle
import random
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CheckpointError

FORMAT = "cnnlab-checkpoint"
VERSION = 1


def atomic_write(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the user's other tools
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` over `target` atomically (the target is never half-written)."""
    with source.open("rb") as src:
        atomic_write(target, lambda file: shutil.copyfileobj(src, file))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a cnnlab checkpoint atomically: a crash leaves the previous file intact."""
    stamped = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda file: torch.save(stamped, file))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a cnnlab checkpoint with `weights_only=True`: nothing in the file is executed."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not a cnnlab checkpoint: it holds objects other than tensors and plain data, "
            "which cnnlab never unpickles (they could run code); use a checkpoint cnnlab wrote"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable cnnlab checkpoint (truncated, corrupt or unsafe: {reason[:160]}); "
            "use another checkpoint or start a new run"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is a version {payload.get('version')} checkpoint; this cnnlab reads version {VERSION}"
        )
    return payload


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
