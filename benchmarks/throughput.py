"""Training throughput of cnnlab against a d2l-style reference pipeline, measured in one run (issue #6).

Run it by hand from the repository root (it is not part of CI):

    python benchmarks/throughput.py                    # CPU: lenet@28, resnet18@96, vgg_small@224 + epoch
    python benchmarks/throughput.py --device cuda      # the same on a GPU, plus ResNet-18@96 at batch 256
    python benchmarks/throughput.py --models lenet --steps 2 --warmup 1 --images 2048 --skip-epoch  # try

Both pipelines read the same synthetic Fashion-MNIST: random 28×28 uint8 images written as the four
IDX files torchvision expects, in a temporary directory. Each model is trained as its d2l preset
(experiment=d2l_lenet, d2l_resnet18, d2l_vgg) configures it, so the input size, initialization, SGD
settings and batch size are the configs' own:

- cnnlab: the images held as one uint8 tensor on the device, batches gathered by index and
  preprocessed on the device, `cnnlab.training.loop.train_step` in the device's default configuration
  (precision, channels_last and compile 'auto'), and again in float32 so the gain of bf16 shows apart.
- reference (d2l 7.6 / 8.x): torchvision.datasets.FashionMNIST with per-sample `Resize` + `ToTensor`,
  a DataLoader with 4 workers, the same model and SGD, a plain float32 loop that reads the loss and
  accuracy of every batch as d2l's `train_ch6` does.

stdout gets JSON lines (progress notes go to stderr), in this order:
  environment   device, torch/torchvision versions, thread count and the settings
  matmul_peak   GFLOP/s of a large matmul in the dtype of cnnlab's default step (the peak below)
  throughput    one per model: cnnlab and reference images/s and their ratio, the float32 cnnlab figure,
                training GFLOP/s (3 × forward FLOPs per image, from FlopCounterMode) and its fraction
                of the matmul peak, and "data handling": gathering + preprocessing the batches alone,
                as a fraction of the cnnlab step time
  batch256      (cuda only) ResNet-18@96 at batch 256: images/s and fraction of the bf16 matmul peak
  epoch         LeNet@28: a full training epoch plus a test pass, cnnlab vs reference, in seconds
                (each timed --epoch-repeats times, alternating; the medians and every run)
  goal          one line per goal of issue #6 for the device with its value, target and pass/fail
                (skipped when not measured; "reported" for a figure the issue asks for without a target)
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from cnnlab.commands import checks
from cnnlab.commands.train import Training, build_training, load_data
from cnnlab.data.batches import batches, epoch_order
from cnnlab.data.sources import Dataset
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.training.device import autocast, resolve_channels_last, resolve_device, resolve_precision
from cnnlab.training.distributed import SINGLE_PROCESS
from cnnlab.training.loop import evaluate, train_step
from cnnlab.training.optim import build_optimizer

# The book's runs, each a cnnlab preset: the benchmark measures exactly what these configure.
PRESETS = {"lenet": "d2l_lenet", "resnet18": "d2l_resnet18", "vgg_small": "d2l_vgg"}
FASHION_MNIST_TRAIN, FASHION_MNIST_TEST = 60_000, 10_000
PEAK_BATCH = 256  # the GPU goal: fraction of the bf16 peak reached by ResNet-18@96 at this batch size
PREFETCH_FACTOR = 2  # batches each reference worker prepares ahead: torch's default, which d2l keeps
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
MATMUL_DTYPE = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Training images/s of cnnlab vs a d2l-style pipeline; prints JSON lines."
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--models", nargs="+", choices=tuple(PRESETS), default=list(PRESETS))
    parser.add_argument(
        "--batch-size", type=int, help="training batch size (default: the d2l preset's, 128 as the book)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    parser.add_argument(
        "--images",
        type=int,
        default=FASHION_MNIST_TRAIN,
        help="synthetic training images (the test split gets a sixth, as Fashion-MNIST's 60000/10000)",
    )
    parser.add_argument("--skip-epoch", action="store_true", help="skip the LeNet@28 full-epoch timing")
    parser.add_argument(
        "--epoch-repeats",
        type=int,
        default=3,
        help="LeNet epochs timed per side, alternating cnnlab and reference (the medians are compared)",
    )
    parser.add_argument("--workers", type=int, default=4, help="reference DataLoader workers (d2l: 4)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="cnnlab config overrides for cnnlab's side, e.g. trainer.compile=reduce-overhead",
    )
    return parser


def check_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, batch_sizes: dict[str, int]
) -> None:
    """Refuse settings that cannot be measured (one line, exit code 2), as argparse does."""
    if min(args.steps, args.images, args.epoch_repeats) < 1 or min(args.warmup, args.workers) < 0:
        parser.error("--steps, --images and --epoch-repeats must be ≥ 1, --warmup and --workers ≥ 0")
    if min(batch_sizes.values()) < 1:
        parser.error("--batch-size must be ≥ 1")
    largest = max(batch_sizes[name] for name in args.models)
    if args.device.type == "cuda" and "resnet18" in args.models:
        largest = max(largest, PEAK_BATCH)
    # Every timed measurement draws its batches from one epoch of the synthetic set; the reference's
    # also skips what its workers prefetched (see measure_reference).
    needed = (args.warmup + args.steps + args.workers * PREFETCH_FACTOR) * largest
    if args.images < needed:
        parser.error(
            f"--images {args.images} is too few for --warmup {args.warmup} + --steps {args.steps} + "
            f"{args.workers * PREFETCH_FACTOR} prefetched batches of {largest}; use --images {needed} or more"
        )


def note(message: str) -> None:
    """A progress note on stderr (stdout carries only the JSON lines)."""
    print(message, file=sys.stderr, flush=True)


def emit(kind: str, **fields: Any) -> dict[str, Any]:
    """Print one JSON line and return it."""
    line = {"kind": kind, **fields}
    print(json.dumps(line, ensure_ascii=False), flush=True)
    return line


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_preset(model: str, data_dir: Path, device: torch.device, extra: list[str]) -> DictConfig:
    """The `cnnlab train` config of the model's d2l preset, reading the synthetic data in `data_dir`,
    with the user's `--set` overrides (e.g. trainer.compile=reduce-overhead)."""
    return compose(
        "train",
        overrides=[
            f"experiment={PRESETS[model]}",
            f"data_dir={data_dir}",
            "dataset.loader.download=false",
            "dataset.val_fraction=0",  # the reference trains on the whole training split, as the book does
            f"trainer.device={device}",
            *extra,
        ],
    )


def write_fashion_mnist(root: Path, train_images: int, test_images: int) -> None:
    """Random 28×28 images and labels as the four IDX files of root/FashionMNIST/raw/."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for prefix, count in (("train", train_images), ("t10k", test_images)):
        images = generator.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = generator.integers(0, 10, size=count, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            # IDX header: two zero bytes, 0x08 (unsigned byte), the number of dimensions, the sizes.
            header = struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + array.tobytes())


@dataclass
class CnnlabPipeline:
    """cnnlab's training step as `cnnlab train` wires it, over device-resident uint8 data."""

    training: Training
    data: Dataset
    channels_last: bool
    seed: int

    @property
    def precision(self) -> str:
        """The precision the step runs in ('auto' resolved for the device)."""
        return self.training.settings.precision

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One `train_step`; returns its summed loss and correct count, on the device."""
        t = self.training
        loss, hits, _ = train_step(
            t.forward, images, labels, t.optimizer, t.scheduler, t.scaler, t.settings.clip_grad_norm
        )
        return loss, hits

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled uint8 batches of the first epoch, as `fit` draws them."""
        return batches(self.data.train, batch_size, epoch_order(len(self.data.train), self.seed, 0))


def build_model(cfg: DictConfig, device: torch.device) -> nn.Module:
    """The preset's model on `device`, initialized from the preset's seed (both pipelines start equal)."""
    name, in_channels, num_classes, options = checks.model_spec(cfg)
    torch.manual_seed(cfg.trainer.seed)
    return create_model(name, in_channels, num_classes, checks.input_size(cfg), **options).to(device)


def build_optimizer_of(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The preset's optimizer (SGD for the d2l presets) over the model's parameters."""
    return build_optimizer(model.parameters(), **OmegaConf.to_container(cfg.optimizer, resolve=True))


def build_cnnlab(cfg: DictConfig, data: Dataset, batch_size: int, **trainer: Any) -> CnnlabPipeline:
    """cnnlab's pipeline exactly as `cnnlab train` builds it (`build_training`), with `trainer.*`
    overrides (e.g. precision="32"); without them precision and channels_last are the configs' 'auto'."""
    cfg = OmegaConf.merge(cfg, {"trainer": {"batch_size": batch_size, **trainer}})
    torch.manual_seed(cfg.trainer.seed)
    training = build_training(cfg, data, SINGLE_PROCESS)
    return CnnlabPipeline(
        training=training,
        data=data,
        channels_last=resolve_channels_last(cfg.trainer.channels_last, data.train.device),
        seed=cfg.trainer.seed,
    )


def reference_loader(
    cfg: DictConfig, data_dir: Path, train: bool, batch_size: int, workers: int
) -> DataLoader:
    """d2l's `load_data_fashion_mnist`: per-sample Resize + ToTensor, shuffled train, `workers` workers."""
    size = checks.value(cfg, "resize")
    steps = [transforms.ToTensor()]
    if size is not None:
        steps.insert(0, transforms.Resize(size))
    dataset = torchvision.datasets.FashionMNIST(
        data_dir / "fashion_mnist", train=train, transform=transforms.Compose(steps), download=False
    )
    return DataLoader(
        dataset,
        batch_size,
        shuffle=train,
        num_workers=workers,
        prefetch_factor=PREFETCH_FACTOR if workers else None,
    )


def reference_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
) -> tuple[float, float]:
    """d2l `train_ch6`'s loop body: move the batch, fp32 step, read loss and accuracy at once."""
    optimizer.zero_grad()
    images, labels = images.to(device), labels.to(device)
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        return float(loss) * len(labels), float((logits.argmax(dim=1) == labels).sum())


def reference_test_accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """d2l's `evaluate_accuracy_gpu`: accuracy over the loader, read batch by batch."""
    model.eval()
    correct = seen = 0.0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            correct += float((model(images).argmax(dim=1) == labels).sum())
            seen += len(labels)
    return correct / seen


def images_per_second(
    run_step: Callable[[Any], object],
    stream: Iterable,
    warmup: int,
    steps: int,
    batch_size: int,
    device: torch.device,
) -> float:
    """Run `run_step(batch)` on `warmup` batches untimed, then time the next `steps` batches."""
    stream = iter(stream)
    for batch in itertools.islice(stream, warmup):
        run_step(batch)
    synchronize(device)
    tic = time.perf_counter()
    for batch in itertools.islice(stream, steps):
        run_step(batch)
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - tic)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """GFLOP/s of a large square matmul in `dtype`: the peak the models' GFLOP/s are compared with."""
    n = MATMUL_SIZE[device.type]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    repeats = 20 if device.type == "cuda" else 4
    for _ in range(2):
        a @ b
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def training_gflop_per_image(cfg: DictConfig) -> float:
    """Training FLOPs per image: 3 × the forward pass (backward ≈ 2 × forward), counted by torch."""
    name, in_channels, num_classes, options = checks.model_spec(cfg)
    size = checks.input_size(cfg)
    model = create_model(name, in_channels, num_classes, size, **options).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, in_channels, *size))
    return 3 * counter.get_total_flops() / 1e9


def measure_cnnlab(pipeline: CnnlabPipeline, batch_size: int, warmup: int, steps: int) -> float:
    """Images/s of cnnlab's train_step over shuffled device-resident batches."""
    pipeline.training.model.train()
    return images_per_second(
        lambda batch: pipeline.step(*batch),
        pipeline.train_batches(batch_size),
        warmup,
        steps,
        batch_size,
        pipeline.data.train.device,
    )


def measure_data_handling(pipeline: CnnlabPipeline, batch_size: int, warmup: int, steps: int) -> float:
    """Images/s of the step's data work alone: the epoch's one gather (its share per batch) plus
    preprocessing the batches, run eagerly (a compiled step fuses preprocessing into the model's graph,
    so this is an upper bound there)."""
    device = pipeline.data.train.device
    synchronize(device)
    tic = time.perf_counter()
    stream = pipeline.train_batches(batch_size)
    first = next(stream)  # the gather of the whole epoch, then its first slice
    synchronize(device)
    gather_per_batch = (time.perf_counter() - tic) / -(-len(pipeline.data.train) // batch_size)

    def prepare(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        with autocast(device, pipeline.precision):  # as inside the step
            pipeline.training.preprocess(batch[0])

    preprocess_speed = images_per_second(
        prepare, itertools.chain([first], stream), warmup, steps, batch_size, device
    )
    return batch_size / (gather_per_batch + batch_size / preprocess_speed)


def measure_reference(cfg: DictConfig, args: argparse.Namespace, data_dir: Path, batch_size: int) -> float:
    """Images/s of the d2l-style pipeline: DataLoader workers feeding a plain fp32 loop."""
    model = build_model(cfg, args.device).train()
    optimizer = build_optimizer_of(cfg, model)
    loader = reference_loader(cfg, data_dir, True, batch_size, args.workers)
    batches_in = iter(loader)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        reference_step(model, optimizer, *batch, args.device)

    for batch in itertools.islice(batches_in, args.warmup):
        step(batch)
    # The workers fill their queue while the first (slow) steps run; timing those stored batches would
    # overstate a loader-bound pipeline by up to 35% (seen on an H100). Discarding them starts the clock
    # with an empty queue, as in the steady state; where the model is the bottleneck it costs ≤ 1 batch.
    for _ in itertools.islice(batches_in, args.workers * PREFETCH_FACTOR):
        pass
    return images_per_second(step, batches_in, 0, args.steps, batch_size, args.device)


def measure_model(
    model_name: str,
    cfg: DictConfig,
    data: Dataset,
    args: argparse.Namespace,
    data_dir: Path,
    peak_gflops: float,
    batch_size: int,
) -> dict[str, Any]:
    """The `throughput` line of one model: cnnlab (default and fp32) vs the reference."""
    pipeline = build_cnnlab(cfg, data, batch_size)
    precision, channels_last, compile_setting = (
        pipeline.precision,
        pipeline.channels_last,
        pipeline.training.compile,
    )
    note(f"{model_name}: cnnlab step ({precision}, channels_last={channels_last}, compile={compile_setting})")
    cnnlab = measure_cnnlab(pipeline, batch_size, args.warmup, args.steps)
    data_handling = measure_data_handling(pipeline, batch_size, args.warmup, args.steps)
    if precision == "32":
        fp32 = cnnlab  # float32 is already the default step on this device
    else:
        note(f"{model_name}: cnnlab step (32, channels_last={channels_last})")
        fp32_pipeline = build_cnnlab(cfg, data, batch_size, precision="32")
        fp32 = measure_cnnlab(fp32_pipeline, batch_size, args.warmup, args.steps)
    note(f"{model_name}: reference pipeline ({args.workers} DataLoader workers)")
    reference = measure_reference(cfg, args, data_dir, batch_size)
    gflop = training_gflop_per_image(cfg)
    return emit(
        "throughput",
        model=model_name,
        input_size=list(checks.input_size(cfg)),
        batch_size=batch_size,
        cnnlab_images_per_s=round(cnnlab, 1),
        cnnlab_precision=precision,
        cnnlab_channels_last=channels_last,
        cnnlab_compile=compile_setting,
        cnnlab_fp32_images_per_s=round(fp32, 1),
        reference_images_per_s=round(reference, 1),
        ratio=round(cnnlab / reference, 2),
        fp32_ratio=round(fp32 / reference, 2),
        train_gflop_per_image=round(gflop, 4),
        cnnlab_gflops=round(gflop * cnnlab, 1),
        peak_fraction=round(gflop * cnnlab / peak_gflops, 4),
        data_handling_fraction=round(cnnlab / data_handling, 4),
    )


def measure_peak_batch(
    cfg: DictConfig, data: Dataset, args: argparse.Namespace, peak_gflops: float
) -> dict[str, Any]:
    """The `batch256` line: ResNet-18@96 in cnnlab's default GPU step at batch 256."""
    pipeline = build_cnnlab(cfg, data, PEAK_BATCH)
    note(f"resnet18: cnnlab step at batch {PEAK_BATCH} ({pipeline.precision})")
    speed = measure_cnnlab(pipeline, PEAK_BATCH, args.warmup, args.steps)
    gflop = training_gflop_per_image(cfg)
    return emit(
        "batch256",
        model="resnet18",
        batch_size=PEAK_BATCH,
        precision=pipeline.precision,
        images_per_s=round(speed, 1),
        cnnlab_gflops=round(gflop * speed, 1),
        peak_fraction=round(gflop * speed / peak_gflops, 4),
    )


def time_cnnlab_epoch(
    cfg: DictConfig, data: Dataset, args: argparse.Namespace, batch_size: int
) -> tuple[float, float]:
    """Seconds and test accuracy of one epoch the cnnlab way: train_step over all batches + evaluate."""
    device = args.device
    pipeline = build_cnnlab(cfg, data, batch_size)
    pipeline.training.model.train()
    for batch in itertools.islice(pipeline.train_batches(batch_size), args.warmup):
        pipeline.step(*batch)
    synchronize(device)
    tic = time.perf_counter()
    # As in fit: per-step sums stay on the device until the epoch's end.
    loss_sum = torch.zeros((), device=device)
    for images, labels in pipeline.train_batches(batch_size):
        loss, _ = pipeline.step(images, labels)
        loss_sum += loss
    loss_sum.item()
    _, accuracy = evaluate(
        pipeline.training.model,
        data.test,
        pipeline.training.preprocess,
        cfg.trainer.eval_batch_size,
        pipeline.precision,
    )
    return time.perf_counter() - tic, accuracy


def time_reference_epoch(
    cfg: DictConfig, args: argparse.Namespace, data_dir: Path, batch_size: int
) -> tuple[float, float]:
    """Seconds and test accuracy of one d2l `train_ch6` epoch: DataLoader epoch + test pass."""
    device = args.device
    model = build_model(cfg, device)
    optimizer = build_optimizer_of(cfg, model)
    train = reference_loader(cfg, data_dir, True, batch_size, args.workers)
    test = reference_loader(cfg, data_dir, False, batch_size, args.workers)
    model.train()
    for images, labels in itertools.islice(train, args.warmup):
        reference_step(model, optimizer, images, labels, device)
    synchronize(device)
    tic = time.perf_counter()
    for images, labels in train:  # a new epoch: d2l's loader starts its workers again
        reference_step(model, optimizer, images, labels, device)
    accuracy = reference_test_accuracy(model, test, device)
    return time.perf_counter() - tic, accuracy


def measure_epoch(
    cfg: DictConfig, data: Dataset, args: argparse.Namespace, data_dir: Path, batch_size: int
) -> dict[str, Any]:
    """The `epoch` line: LeNet@28 full epoch + test pass, cnnlab vs the reference, alternated
    `--epoch-repeats` times; the speedup compares the medians (a shared machine's speed drifts)."""
    runs: dict[str, list[float]] = {"cnnlab": [], "reference": []}
    accuracy = {}
    for repeat in range(1, args.epoch_repeats + 1):
        note(
            f"lenet: full epoch ({len(data.train)} images) + test pass ({len(data.test)}), {repeat}/"
            f"{args.epoch_repeats}: cnnlab, then reference"
        )
        seconds, accuracy["cnnlab"] = time_cnnlab_epoch(cfg, data, args, batch_size)
        runs["cnnlab"].append(round(seconds, 3))
        seconds, accuracy["reference"] = time_reference_epoch(cfg, args, data_dir, batch_size)
        runs["reference"].append(round(seconds, 3))
    cnnlab_s, reference_s = (statistics.median(runs[side]) for side in ("cnnlab", "reference"))
    return emit(
        "epoch",
        model="lenet",
        train_images=len(data.train),
        test_images=len(data.test),
        batch_size=batch_size,
        cnnlab_seconds=cnnlab_s,
        reference_seconds=reference_s,
        speedup=round(reference_s / cnnlab_s, 2),
        cnnlab_runs=runs["cnnlab"],
        reference_runs=runs["reference"],
        cnnlab_test_acc=round(accuracy["cnnlab"], 4),
        reference_test_acc=round(accuracy["reference"], 4),
    )


def goal(description: str, value: float | None, target: float, higher_is_better: bool = True) -> dict:
    """One `goal` line: pass/fail against `target`, or skipped when it was not measured."""
    if value is None:
        status = "skipped"
    else:
        status = "pass" if (value >= target if higher_is_better else value < target) else "fail"
    return emit("goal", goal=description, value=value, target=target, status=status)


def report_goals(device: torch.device, rows: dict[str, dict], epoch: dict | None, peak: dict | None) -> None:
    """The issue's goals for `device`, each against the reference measured in this run."""

    def ratio(model: str) -> float | None:
        return rows[model]["ratio"] if model in rows else None

    data_handling = max((row["data_handling_fraction"] for row in rows.values()), default=None)
    if device.type == "cpu":
        goal("cpu: lenet@28 full epoch + test pass ≥ 3× faster", epoch and epoch["speedup"], 3.0)
        goal("cpu: resnet18@96 images/s ≥ 2× the reference", ratio("resnet18"), 2.0)
        goal("cpu: vgg_small@224 images/s ≥ 2× the reference", ratio("vgg_small"), 2.0)
        goal("cpu: data handling < 3% of the cnnlab step time (worst model)", data_handling, 0.03, False)
    else:
        goal("cuda: resnet18@96 images/s ≥ 5× the reference on the same GPU", ratio("resnet18"), 5.0)
        emit(
            "goal",
            goal=f"cuda: report resnet18@96 images/s and fraction of the bf16 peak at batch {PEAK_BATCH}",
            value=peak and {"images_per_s": peak["images_per_s"], "peak_fraction": peak["peak_fraction"]},
            target=None,
            status="reported" if peak else "skipped",
        )
        # A goal on CPU only; a compiled GPU step fuses the preprocessing this times eagerly.
        emit(
            "goal",
            goal="cuda: report data handling as a fraction of the cnnlab step time (worst model)",
            value=data_handling,
            target=None,
            status="reported" if data_handling is not None else "skipped",
        )


def cpu_name() -> str:
    """The processor's model name (Linux), or what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    """Measure everything the module docstring lists, printing a JSON line per result."""
    parser = build_parser()
    args = parser.parse_args()
    # d2l's 4 workers exceed small machines' cores; the reference keeps them, without the warning.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    try:
        device = resolve_device(args.device)
    except CnnlabError as error:
        parser.error(str(error))
    args.device = device
    initialize_config_module(config_module="cnnlab.configs", version_base="1.3")
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        data_dir = Path(tmp)
        configs = {name: compose_preset(name, data_dir, device, args.set) for name in PRESETS}
        batch_sizes = {name: args.batch_size or cfg.trainer.batch_size for name, cfg in configs.items()}
        check_args(parser, args, batch_sizes)
        write_fashion_mnist(data_dir / "fashion_mnist", args.images, max(1, args.images // 6))
        data = load_data(configs["lenet"], device)  # the same synthetic set for every model
        precision = resolve_precision(str(configs["lenet"].trainer.precision), device)  # every preset's
        emit(
            "environment",
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            device_type=device.type,
            torch=torch.__version__,
            torchvision=torchvision.__version__,
            threads=torch.get_num_threads(),
            cpu_count=os.cpu_count(),
            python=platform.python_version(),
            overrides=args.set,
            train_images=len(data.train),
            test_images=len(data.test),
            steps=args.steps,
            warmup=args.warmup,
            workers=args.workers,
        )
        dtype = MATMUL_DTYPE[precision]
        note(f"matmul peak ({dtype})")
        peak = measure_matmul_peak(device, dtype)
        emit("matmul_peak", dtype=str(dtype), size=MATMUL_SIZE[device.type], gflops=round(peak, 1))
        rows = {
            name: measure_model(name, configs[name], data, args, data_dir, peak, batch_sizes[name])
            for name in args.models
        }
        peak_row = None
        if device.type == "cuda" and "resnet18" in args.models:
            peak_row = measure_peak_batch(configs["resnet18"], data, args, peak)
        epoch = None
        if not args.skip_epoch:
            epoch = measure_epoch(configs["lenet"], data, args, data_dir, batch_sizes["lenet"])
        report_goals(device, rows, epoch, peak_row)


if __name__ == "__main__":
    main()
