"""trainer.profile: a PyTorch profiler trace of a few training steps after warm-up, in the format of
TensorBoard's profiler plugin, and the operators that took the most time."""

from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

# Steps skipped (the first steps' one-off work: compilation, cuDNN's algorithm search, allocations),
# then profiled without recording (warm-up), then recorded.
SKIPPED, WARMUP, RECORDED = 5, 2, 5
TOP_OPERATORS = 10


def step_profiler(trace_dir: Path, device: torch.device, report: Callable[[str], None]) -> profile:
    """A profiler to enter around training and step after each training step: it records steps
    SKIPPED + WARMUP + 1 to SKIPPED + WARMUP + RECORDED, writes their trace into `trace_dir` (one
    `*.pt.trace.json`, which TensorBoard's profiler plugin reads) and passes `report` the table of the
    TOP_OPERATORS operators by self time."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    write_trace = tensorboard_trace_handler(str(trace_dir))
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"

    def ready(profiler: profile) -> None:
        write_trace(profiler)
        table = profiler.key_averages().table(sort_by=sort, row_limit=TOP_OPERATORS)
        report(
            f"trainer.profile: steps {SKIPPED + WARMUP + 1}–{SKIPPED + WARMUP + RECORDED}, the top "
            f"{TOP_OPERATORS} operators by self time (trace in {trace_dir}):\n{table}"
        )

    return profile(
        activities=activities,
        schedule=schedule(wait=SKIPPED, warmup=WARMUP, active=RECORDED, repeat=1),
        on_trace_ready=ready,
    )


def steps_needed() -> int:
    """Training steps a run must take for its profile to be recorded."""
    return SKIPPED + WARMUP + RECORDED
