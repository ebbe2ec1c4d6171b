"""Device selection, mixed precision, and a training process's device, threads and seeds."""

import contextlib
import random

import numpy as np
import torch

from cnnlab.errors import ConfigError
from cnnlab.training.distributed import Distributed

PRECISIONS = ("auto", "32", "bf16", "16")


# trainer.compile's choices besides true/false: `auto`, torch.compile's modes, and `cudagraphs` (its
# backend that records CUDA graphs without generating code).
COMPILE_CHOICES = (
    "auto",
    "cudagraphs",
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)


def resolve_device(name: str, key: str) -> torch.device:
    """'auto' → cuda, then mps, then cpu; otherwise the named device, which must exist (`key`: the
    config key it came from, which its errors name)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}={name} but this machine has no usable CUDA GPU "
                f"(torch {torch.__version__}); use {key}=cpu or {key}=auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}={name} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                f"use {key}=cuda:0 .. cuda:N-1"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}=mps but MPS is not available; use {key}=cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{key}={name!r} is not supported; use auto, cpu, cuda[:N] or mps")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse precisions the device cannot run."""
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "16" and device.type != "cuda":
        raise ConfigError(
            "trainer.precision=16 needs a CUDA GPU; on this device use trainer.precision=bf16 or 32"
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' → bf16 on CUDA GPUs and on CPUs with native bf16 arithmetic (AVX512-BF16, not AMX), else
    float32.

    Measured (benchmarks/throughput.py, d2l presets, batch 128): on a 2-core AVX512-BF16 EPYC, bf16
    with channels-last trains ResNet-18@96 2.4× and VGG-small@224 3× faster than float32, LeNet 1.1×;
    digits accuracy stays within a point. CPUs without native bf16 would emulate it, slowly.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "32"
    if device.type == "cpu" and _cpu_bf16_is_native_and_sound():
        return "bf16"
    return "32"


def _cpu_bf16_is_native_and_sound() -> bool:
    # AVX512-BF16 without AMX: oneDNN's AMX bf16 kernels can leak NaN or garbage into outputs when a
    # reduction is not a multiple of 32 (oneDNN issue 5717), as ResNeXt's 2-channel groups are, so an
    # AMX CPU trains in float32 unless asked for bf16. torch.cpu's probes are private: absent, float32.
    def probe(name: str) -> bool:
        return bool(getattr(torch.cpu, name, lambda: False)())

    return probe("_is_avx512_bf16_supported") and not probe("_is_amx_tile_supported")


def resolve_channels_last(setting: str | bool, device: torch.device) -> bool:
    """'auto' → channels-last on CUDA and CPUs: NHWC is what cuDNN's and oneDNN's fast kernels want
    (measured on the CPU above: 1.2× for LeNet, 1.2× ResNet-18, 1.6× VGG-small in float32)."""
    return device.type in ("cuda", "cpu") if setting == "auto" else bool(setting)


def resolve_compile(setting: bool | str, device: torch.device, distributed: bool) -> bool | str:
    """'auto' → CUDA graphs without code generation (torch.compile's cudagraphs backend) on a single
    CUDA GPU, else off.

    Measured on an H100 (3-epoch `cnnlab train` runs of the d2l presets, cold compile cache): the
    cudagraphs backend costs ~6 s in the first epoch and then halves ResNet-18@96's epoch (LeNet's
    too), so it is ahead of eager from the third epoch; inductor's reduce-overhead steps ResNet-18
    another 2× faster but compiles for ~40 s, won back only after ~25 Fashion-MNIST epochs, so it
    stays a choice. Under torchrun DDP hooks stay eager.
    """
    if setting != "auto":
        return setting
    return "cudagraphs" if device.type == "cuda" and not distributed else False


def check_compile(setting: bool | str, device: torch.device) -> None:
    """Refuse CUDA-graph settings on devices without CUDA."""
    if setting in ("cudagraphs", "reduce-overhead") and device.type != "cuda":
        raise ConfigError(
            f"trainer.compile={setting} records CUDA graphs and needs a CUDA GPU; on {device.type} "
            "use trainer.compile=true (or false)"
        )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` ('32' is plain float32)."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def set_up_process(device: torch.device, ranks: Distributed, threads: int | None, seed: int) -> torch.device:
    """This process's device (one GPU per torchrun rank), CPU threads (None: torch's default, one per
    core) and seeds; returns the device."""
    if ranks.enabled and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return device
