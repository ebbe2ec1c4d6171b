"""Training throughput of cnnlab against a d2l-style reference pipeline, measured in one run (issue #6).

Run it by hand from the repository root (it is not part of CI):

    python benchmarks/throughput.py                    # CPU: lenet@28, resnet18@96, vgg_small@224 + epoch
    python benchmarks/throughput.py --device cuda      # the same on a GPU, plus ResNet-18@96 at batch 256
    python benchmarks/throughput.py --chapter-8 --skip-epoch --skip-augment --skip-imagefolder
                                                       # + alexnet, nin, googlenet, lenet_bn, densenet,
                                                       #   regnetx32, each at its book size
    python benchmarks/throughput.py --models lenet --steps 2 --warmup 1 --images 2048 --skip-epoch \
        --skip-augment --skip-imagefolder              # a quick try

Both pipelines read the same synthetic Fashion-MNIST: random 28×28 uint8 images written as the four
IDX files torchvision expects, in a temporary directory. Each model is trained as its d2l preset
(experiment=d2l_lenet, d2l_resnet18, d2l_vgg; with --chapter-8 also d2l_alexnet, d2l_nin,
d2l_googlenet, d2l_lenet_bn, d2l_densenet, d2l_regnetx32) configures it, so the input size,
initialization, SGD settings and batch size are the configs' own:

- cnnlab: the images held as one uint8 tensor on the device, batches gathered by index and
  preprocessed on the device, `cnnlab.training.loop.train_step` in the device's default configuration
  (precision, channels_last and compile 'auto'), and again in float32 so the gain of bf16 shows apart.
- reference (d2l 7.6 / 8.x): torchvision.datasets.FashionMNIST with per-sample `Resize` + `ToTensor`,
  a DataLoader with 4 workers, the same model and SGD, a plain float32 loop that reads the loss and
  accuracy of every batch as d2l's `train_ch6` does.

Two more measurements (--skip-augment, --skip-imagefolder leave them out, goal lines included):

- augmentation: the step of LeNet@28 and ResNet-18@96 (those of --models) with augment=none, as the
  presets train, against augment=standard (random resized crop + flip, bilinear), each step taking
  its batch's rows of the epoch's draws as `fit` does, and charged its share of that draw (made once
  per epoch); alternated --augment-repeats times.
- image folder: --photos synthetic JPEGs (~100 KB, 400–900 × 300–700 pixels, two classes; a third as
  many in val/) in a temporary folder, and epochs of ResNet-18@96 with augment=standard (at the
  d2l_resnet18 preset's batch size, or --batch-size) read from it by cnnlab's `dataset=imagefolder` in
  memory (stream=false, decoded once into a cache: the cold epoch includes that decode) and streamed
  (stream=true: DataLoader workers that persist across epochs), against torchvision's ImageFolder +
  per-sample RandomResizedCrop/flip/ToTensor/Normalize + a DataLoader of --workers workers and the same
  plain loop as above. An epoch is the training pass (`fit`'s loop: batches, draw, train_step); the
  cold figure adds the setup (reading the folder, building the model and the pipeline), the warm one
  is the median of the later epochs.

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
  augment       one per model of lenet/resnet18 in --models: cnnlab images/s with augment=none and
                augment=standard (medians and every run), the augmentation's share of the step,
                1 − standard/none images/s = (t_standard − t_none) / t_standard, the median over the
                repeats of each repeat's pair (share_runs: every pair's), and the epoch's draw
                per batch (ms, and as a fraction of the augmented step; included in the share)
  imagefolder_epoch  ResNet-18@96 on the JPEG folder: for in_memory, streamed and reference the setup,
                first-epoch, cold and warm seconds and images/s; the in-memory step alone on batches
                already gathered (step_images_per_s, timed after each warm epoch on its batches), and
                the ratios the goals compare
  goal          one line per goal of issue #6 for the device with its value, target and pass/fail
                (skipped when not measured; "reported" for a figure the issue asks for without a target);
                the goals of a part left out by --skip-augment or --skip-imagefolder are not printed
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
from dataclasses import dataclass, field
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

from cnnlab.app import checks
from cnnlab.app.plans import data_spec, training_spec
from cnnlab.data.batches import batches, epoch_order
from cnnlab.data.decode import worker_count
from cnnlab.data.sources import Dataset, FileSplit
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.training.build import build_training, load_data
from cnnlab.training.device import autocast, resolve_channels_last, resolve_device, resolve_precision
from cnnlab.training.distributed import SINGLE_PROCESS
from cnnlab.training.loop import Training, batch_draws, epoch_draws, evaluate, train_step
from cnnlab.training.optim import build_optimizer

# The book's runs, each a cnnlab preset: the benchmark measures exactly what these configure.
PRESETS = {"lenet": "d2l_lenet", "resnet18": "d2l_resnet18", "vgg_small": "d2l_vgg"}
# Chapter 8's other runs (issue #17), measured with --models or --chapter-8: each goal ≥ 2× as ResNet-18's.
CHAPTER_8 = {
    name: f"d2l_{name}" for name in ("alexnet", "nin", "googlenet", "lenet_bn", "densenet", "regnetx32")
}
ALL_PRESETS = PRESETS | CHAPTER_8
FASHION_MNIST_TRAIN, FASHION_MNIST_TEST = 60_000, 10_000
PEAK_BATCH = 256  # the GPU goal: fraction of the bf16 peak reached by ResNet-18@96 at this batch size
PREFETCH_FACTOR = 2  # batches each reference worker prepares ahead: torch's default, which d2l keeps
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
MATMUL_DTYPE = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}
# The augmentation's share of the step: these presets, with augment=none (theirs) vs this one, the
# heavier of cnnlab's (a random resized crop + flip, bilinear).
AUGMENT_MODELS = {"lenet": "lenet@28", "resnet18": "resnet18@96"}
AUGMENT = "standard"
AUGMENT_SHARE_GOAL = 0.05
# The image-folder epoch: ResNet-18 at this input size on JPEGs of scikit-learn's two sample photos.
FOLDER_SIZE = 96
FOLDER_CLASSES = ("china", "flower")  # one class per photo: load_sample_images' china.jpg, flower.jpg
PHOTO_WIDTH, PHOTO_HEIGHT = (400, 900), (300, 700)  # pixel ranges of the written JPEGs
PHOTO_NOISE = 6.0  # std of the Gaussian noise added: photo-like detail, ~100 KB at quality 90
PHOTO_QUALITY = 90
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the reference's Normalize


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Training images/s of cnnlab vs a d2l-style pipeline; prints JSON lines."
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--models", nargs="+", choices=tuple(ALL_PRESETS), default=list(PRESETS))
    parser.add_argument(
        "--chapter-8", action="store_true", help=f"also measure {', '.join(CHAPTER_8)} at their book sizes"
    )
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
        "--skip-augment", action="store_true", help="skip the augmentation's share of the step"
    )
    parser.add_argument(
        "--augment-repeats",
        type=int,
        default=9,
        help="augment=none and augment=standard measurements per model, alternating (each pair's share; "
        "their median is reported)",
    )
    parser.add_argument(
        "--skip-imagefolder", action="store_true", help="skip the ResNet-18@96 image-folder epochs"
    )
    parser.add_argument(
        "--photos", type=int, default=300, help="synthetic JPEGs in the image folder's train/ (val/: a third)"
    )
    parser.add_argument(
        "--imagefolder-epochs",
        type=int,
        default=3,
        help="image-folder epochs per pipeline: the first is cold, the median of the others is warm",
    )
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
    if args.augment_repeats < 1 or args.imagefolder_epochs < 2:
        parser.error("--augment-repeats must be ≥ 1 and --imagefolder-epochs ≥ 2 (a cold and a warm epoch)")
    if args.photos < 3 * len(FOLDER_CLASSES):
        parser.error(
            f"--photos must be ≥ {3 * len(FOLDER_CLASSES)}: val/ gets a third, each class one or more"
        )
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
            f"experiment={ALL_PRESETS[model]}",
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
    # Each epoch's augmentation draws (None: no augmentation), made at its first step as `fit` makes them.
    drawn: dict[int, dict[str, torch.Tensor] | None] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The precision the step runs in ('auto' resolved for the device)."""
        return self.training.settings.precision

    def step(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step as `fit` takes it: the batch's rows of its epoch's augmentation draws (drawn at the
        epoch's first step), then `train_step`; returns its summed loss and correct count, on the device."""
        t = self.training
        if epoch not in self.drawn:
            device = self.data.train.device
            self.drawn[epoch] = epoch_draws(t.augment, len(self.data.train), self.seed, epoch, 0, device)
        draws = batch_draws(self.drawn[epoch], batch, t.settings.batch_size, len(labels))
        loss, hits, _ = train_step(
            t.forward, images, labels, t.optimizer, t.scheduler, t.scaler, t.settings.clip_grad_norm, draws
        )
        return loss, hits

    def train_batches(self, batch_size: int, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled uint8 batches of an epoch (the first by default), as `fit` draws them."""
        order = epoch_order(len(self.data.train), self.seed, epoch)
        return batches(self.data.train, batch_size, order)


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
    training = build_training(training_spec(cfg), data, SINGLE_PROCESS)
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
    """Images/s of cnnlab's train_step over the shuffled device-resident batches of epoch 0."""
    pipeline.training.model.train()
    return images_per_second(
        lambda numbered: pipeline.step(*numbered[1], epoch=0, batch=numbered[0]),
        enumerate(pipeline.train_batches(batch_size)),
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


def training_pass(
    pipeline: CnnlabPipeline, stream: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int
) -> float:
    """Seconds of `fit`'s training loop over `stream` (read inside the clock: a generator's gathering or
    decoding counts): each batch's draw + train_step, the summed losses kept on the device until the end."""
    device = pipeline.data.train.device
    pipeline.training.model.train()
    synchronize(device)
    tic = time.perf_counter()
    # As in fit: per-step sums stay on the device until the epoch's end.
    loss_sum = torch.zeros((), device=device)
    for batch, (images, labels) in enumerate(stream):
        loss, _ = pipeline.step(images, labels, epoch, batch)
        loss_sum += loss
    loss_sum.item()
    return time.perf_counter() - tic


def time_cnnlab_epoch(
    cfg: DictConfig, data: Dataset, args: argparse.Namespace, batch_size: int
) -> tuple[float, float]:
    """Seconds and test accuracy of one epoch the cnnlab way: train_step over all batches + evaluate."""
    pipeline = build_cnnlab(cfg, data, batch_size)
    pipeline.training.model.train()
    warmup = itertools.islice(pipeline.train_batches(batch_size), args.warmup)
    for batch, (images, labels) in enumerate(warmup):  # epoch 1's: the timed epoch 0 makes its own draw
        pipeline.step(images, labels, epoch=1, batch=batch)
    seconds = training_pass(pipeline, pipeline.train_batches(batch_size), 0)
    tic = time.perf_counter()
    _, accuracy = evaluate(
        pipeline.training.model,
        data.test,
        pipeline.training.preprocess,
        cfg.trainer.eval_batch_size,
        pipeline.precision,
    )
    return seconds + time.perf_counter() - tic, accuracy


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


def measure_augment(
    model_name: str,
    cfg: DictConfig,
    augmented_cfg: DictConfig,
    data: Dataset,
    args: argparse.Namespace,
    batch_size: int,
) -> dict[str, Any]:
    """The `augment` line of one model: cnnlab's step with the preset's augment=none against
    augment=standard, alternated `--augment-repeats` times, the standard side charged its share of the
    epoch's draw (made once per epoch, as `fit` does); the share is the median of each repeat's pair."""
    pipelines = {
        "none": build_cnnlab(cfg, data, batch_size),
        AUGMENT: build_cnnlab(augmented_cfg, data, batch_size),
    }
    augment = pipelines[AUGMENT].training.augment
    draw_runs = []
    for _ in range(5):  # the epoch's draw, as `fit` makes it
        tic = time.perf_counter()
        drawn = epoch_draws(augment, len(data.train), cfg.trainer.seed, 0, 0, data.train.device)
        synchronize(data.train.device)
        draw_runs.append(time.perf_counter() - tic)
    pipelines[AUGMENT].drawn[0] = drawn  # the timed steps only take their rows of it
    draw_per_batch = statistics.median(draw_runs) / -(-len(data.train) // batch_size)
    runs: dict[str, list[float]] = {side: [] for side in pipelines}
    for repeat in range(1, args.augment_repeats + 1):
        note(
            f"{model_name}: cnnlab step with augment=none, then augment={AUGMENT}, "
            f"{repeat}/{args.augment_repeats}"
        )
        for side, pipeline in pipelines.items():
            seconds = batch_size / measure_cnnlab(pipeline, batch_size, args.warmup, args.steps)
            seconds += draw_per_batch if side == AUGMENT else 0.0
            runs[side].append(round(batch_size / seconds, 1))
    plain, augmented = (statistics.median(runs[side]) for side in pipelines)
    # Each repeat's two measurements are seconds apart: their ratio cancels the shared machine's drift,
    # which moves either median by more than the few percent being measured.
    shares = [1 - aug / none for none, aug in zip(runs["none"], runs[AUGMENT], strict=True)]
    return emit(
        "augment",
        model=model_name,
        input_size=list(checks.input_size(cfg)),
        batch_size=batch_size,
        augment=AUGMENT,
        crop=augment.crop,
        flip=augment.flip,
        precision=pipelines[AUGMENT].precision,
        none_images_per_s=plain,
        augment_images_per_s=augmented,
        # (t_aug − t_none) / t_aug with t = batch_size / images/s, the median over the repeats' pairs
        share=round(statistics.median(shares), 4),
        share_runs=[round(share, 4) for share in shares],
        none_runs=runs["none"],
        augment_runs=runs[AUGMENT],
        draw_ms_per_batch=round(draw_per_batch * 1e3, 4),
        draw_fraction=round(draw_per_batch * augmented / batch_size, 4),
    )


def write_photo_folder(root: Path, train: int, val: int, seed: int) -> float:
    """`train` and `val` JPEGs in root/train/<class>/ and root/val/<class>/, the classes alternating:
    random crops of scikit-learn's two sample photos (one class each) resized to 400–900 × 300–700
    pixels, with Gaussian noise for a camera photo's detail, at quality 90 (~100 KB each).
    Returns their mean size in KB."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg, flower.jpg: 427×640 RGB
    generator = np.random.default_rng(seed)
    sizes = []
    for part, count in (("train", train), ("val", val)):
        for name in FOLDER_CLASSES:
            (root / part / name).mkdir(parents=True)
        for i in range(count):
            label = i % len(FOLDER_CLASSES)
            photo = photos[label]
            height, width = photo.shape[:2]
            crop_h, crop_w = (
                generator.integers(height // 2, height + 1),
                generator.integers(width // 2, width + 1),
            )
            top, left = generator.integers(0, height - crop_h + 1), generator.integers(0, width - crop_w + 1)
            size = (
                int(generator.integers(PHOTO_WIDTH[0], PHOTO_WIDTH[1] + 1)),
                int(generator.integers(PHOTO_HEIGHT[0], PHOTO_HEIGHT[1] + 1)),
            )
            crop = Image.fromarray(photo[top : top + crop_h, left : left + crop_w]).resize(
                size, Image.BILINEAR
            )
            pixels = np.asarray(crop, dtype=np.float32)
            pixels = pixels + generator.normal(0, PHOTO_NOISE, size=pixels.shape)
            path = root / part / FOLDER_CLASSES[label] / f"{i:05d}.jpg"
            Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(
                path, quality=PHOTO_QUALITY
            )
            sizes.append(path.stat().st_size)
    return sum(sizes) / len(sizes) / 1024


def compose_folder(
    root: Path, tmp: Path, device: torch.device, stream: bool, args: argparse.Namespace
) -> DictConfig:
    """The `cnnlab train` config of ResNet-18@96 with augment=standard on the image folder at `root`,
    in memory (decoded once into a cache under `tmp`) or streamed, with the user's `--set` overrides."""
    return compose(
        "train",
        overrides=[
            "dataset=imagefolder",
            "model=resnet18",
            f"resize={FOLDER_SIZE}",
            f"dataset.loader.image_size=[{FOLDER_SIZE},{FOLDER_SIZE}]",
            f"dataset.loader.root={root}",
            f"dataset.num_classes={len(FOLDER_CLASSES)}",
            f"augment={AUGMENT}",
            f"dataset.loader.stream={str(stream).lower()}",
            f"dataset.loader.cache_dir={tmp / 'imagefolder-cache'}",
            f"data_dir={tmp}",
            f"trainer.device={device}",
            f"trainer.epochs={args.imagefolder_epochs}",  # the schedule spans the epochs timed
            *args.set,
        ],
    )


def epoch_figures(images: int, setup: float, seconds: list[float]) -> dict[str, Any]:
    """One pipeline's image-folder figures: cold = setup + first epoch, warm = the later epochs' median."""
    cold, warm = setup + seconds[0], statistics.median(seconds[1:])
    return {
        "setup_seconds": round(setup, 3),
        "first_epoch_seconds": round(seconds[0], 3),
        "cold_seconds": round(cold, 3),
        "warm_seconds": round(warm, 3),
        "warm_runs": [round(s, 3) for s in seconds[1:]],
        "cold_images_per_s": round(images / cold, 1),
        "warm_images_per_s": round(images / warm, 1),
    }


def time_cnnlab_folder(
    cfg: DictConfig, args: argparse.Namespace, batch_size: int, step_runs: list[float] | None = None
) -> tuple[dict[str, Any], CnnlabPipeline]:
    """Epochs of cnnlab on the image folder as `cnnlab train` runs them: setup (load_data, whose first
    decode fills the cache in memory, + build_training), then `--imagefolder-epochs` training passes.
    With `step_runs`, after each warm epoch its batches are gathered again and stepped alone (the
    images/s of each such pass are appended): the step's own speed, for the epoch to be compared with."""
    device = args.device
    synchronize(device)
    tic = time.perf_counter()
    data = load_data(data_spec(cfg), device)
    pipeline = build_cnnlab(cfg, data, batch_size)
    setup = time.perf_counter() - tic
    seconds = []
    for epoch in range(args.imagefolder_epochs):
        seconds.append(training_pass(pipeline, pipeline.train_batches(batch_size, epoch), epoch))
        if epoch and step_runs is not None:
            held = list(pipeline.train_batches(batch_size, epoch))  # gathered before the clock starts
            step_runs.append(round(len(data.train) / training_pass(pipeline, held, epoch), 1))
    return epoch_figures(len(data.train), setup, seconds), pipeline


def time_reference_folder(
    cfg: DictConfig, root: Path, args: argparse.Namespace, batch_size: int
) -> dict[str, Any]:
    """Epochs of the torchvision way: ImageFolder with per-sample RandomResizedCrop, flip, ToTensor and
    Normalize, a shuffled DataLoader of `--workers` workers (started again each epoch, as d2l's are),
    the same model and optimizer in the plain float32 loop."""
    device = args.device
    tic = time.perf_counter()
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(FOLDER_SIZE),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(root / "train", transform=transform)
    loader = DataLoader(
        dataset,
        batch_size,
        shuffle=True,
        num_workers=args.workers,
        prefetch_factor=PREFETCH_FACTOR if args.workers else None,
    )
    model = build_model(cfg, device).train()
    optimizer = build_optimizer_of(cfg, model)
    setup = time.perf_counter() - tic
    seconds = []
    for _ in range(args.imagefolder_epochs):
        synchronize(device)
        tic = time.perf_counter()
        for images, labels in loader:
            reference_step(model, optimizer, images, labels, device)
        synchronize(device)
        seconds.append(time.perf_counter() - tic)
    return epoch_figures(len(dataset), setup, seconds)


def measure_imagefolder(args: argparse.Namespace, tmp: Path, batch_size: int) -> dict[str, Any]:
    """The `imagefolder_epoch` line: ResNet-18@96 epochs on a folder of synthetic JPEGs, cnnlab in
    memory and streamed against the torchvision reference, and the in-memory step alone."""
    root = tmp / "photos"
    val = args.photos // 3
    note(f"imagefolder: writing {args.photos} + {val} JPEGs")
    mean_kb = write_photo_folder(root, args.photos, val, seed=0)
    step_runs: list[float] = []
    epochs = args.imagefolder_epochs
    note(f"imagefolder: resnet18@{FOLDER_SIZE}, cnnlab in memory (first decode, then {epochs} epochs)")
    in_memory, pipeline = time_cnnlab_folder(
        compose_folder(root, tmp, args.device, False, args), args, batch_size, step_runs
    )
    precision = pipeline.precision
    del pipeline
    note(f"imagefolder: resnet18@{FOLDER_SIZE}, cnnlab streamed ({epochs} epochs)")
    streamed_cfg = compose_folder(root, tmp, args.device, True, args)
    streamed, pipeline = time_cnnlab_folder(streamed_cfg, args, batch_size)
    for split in (pipeline.data.train, pipeline.data.val):  # its workers would idle through the reference
        if isinstance(split, FileSplit):
            split.reader.close()
    del pipeline
    note(
        f"imagefolder: resnet18@{FOLDER_SIZE}, reference ({args.workers} DataLoader workers, {epochs} epochs)"
    )
    reference = time_reference_folder(streamed_cfg, root, args, batch_size)
    step = statistics.median(step_runs)
    return emit(
        "imagefolder_epoch",
        model="resnet18",
        input_size=[FOLDER_SIZE, FOLDER_SIZE],
        batch_size=batch_size,
        augment=AUGMENT,
        precision=precision,
        train_images=args.photos,
        val_images=val,
        mean_file_kb=round(mean_kb, 1),
        epochs=epochs,
        cnnlab_workers=worker_count(streamed_cfg.dataset.loader.workers),
        reference_workers=args.workers,
        in_memory=in_memory,
        streamed=streamed,
        reference=reference,
        step_images_per_s=step,
        step_runs=step_runs,
        in_memory_vs_step=round(in_memory["warm_images_per_s"] / step, 3),
        in_memory_vs_reference=round(in_memory["warm_images_per_s"] / reference["warm_images_per_s"], 2),
        streamed_vs_reference=round(streamed["warm_images_per_s"] / reference["warm_images_per_s"], 2),
    )


def goal(description: str, value: float | None, target: float, higher_is_better: bool = True) -> dict:
    """One `goal` line: pass/fail against `target`, or skipped when it was not measured."""
    if value is None:
        status = "skipped"
    else:
        status = "pass" if (value >= target if higher_is_better else value < target) else "fail"
    return emit("goal", goal=description, value=value, target=target, status=status)


def reported(description: str, value: Any) -> dict:
    """One `goal` line for a figure asked for without a target: reported, or skipped when not measured."""
    return emit(
        "goal",
        goal=description,
        value=value,
        target=None,
        status="reported" if value is not None else "skipped",
    )


def report_goals(
    device: torch.device,
    rows: dict[str, dict],
    epoch: dict | None,
    peak: dict | None,
    augment: dict[str, dict] | None = None,
    folder: dict | None = None,
) -> None:
    """The issue's goals for `device`, each against the reference measured in this run; those of the
    augmentation (`augment`: its lines by model) and the image folder only where that part ran."""

    def ratio(model: str) -> float | None:
        return rows[model]["ratio"] if model in rows else None

    data_handling = max((row["data_handling_fraction"] for row in rows.values()), default=None)
    if device.type == "cpu":
        goal("cpu: lenet@28 full epoch + test pass ≥ 3× faster", epoch and epoch["speedup"], 3.0)
        goal("cpu: resnet18@96 images/s ≥ 2× the reference", ratio("resnet18"), 2.0)
        goal("cpu: vgg_small@224 images/s ≥ 2× the reference", ratio("vgg_small"), 2.0)
        for model in CHAPTER_8:  # the same goal as ResNet-18's, printed only where measured
            if model in rows:
                height, width = rows[model]["input_size"]
                size = height if height == width else f"{height}×{width}"
                goal(f"cpu: {model}@{size} images/s ≥ 2× the reference", ratio(model), 2.0)
        goal("cpu: data handling < 3% of the cnnlab step time (worst model)", data_handling, 0.03, False)
        for model, label in AUGMENT_MODELS.items() if augment is not None else ():
            share = augment[model]["share"] if model in augment else None
            goal(
                f"cpu: {label} augment={AUGMENT} (draw included) < 5% of the step",
                share,
                AUGMENT_SHARE_GOAL,
                False,
            )
    else:
        goal("cuda: resnet18@96 images/s ≥ 5× the reference on the same GPU", ratio("resnet18"), 5.0)
        reported(
            f"cuda: report resnet18@96 images/s and fraction of the bf16 peak at batch {PEAK_BATCH}",
            peak and {"images_per_s": peak["images_per_s"], "peak_fraction": peak["peak_fraction"]},
        )
        # A goal on CPU only; a compiled GPU step fuses the preprocessing this times eagerly.
        reported(
            "cuda: report data handling as a fraction of the cnnlab step time (worst model)", data_handling
        )
        for model, label in AUGMENT_MODELS.items() if augment is not None else ():  # a goal on CPU only
            share = augment[model]["share"] if model in augment else None
            reported(f"cuda: report {label} augment={AUGMENT}'s share of the step (draw included)", share)
    if folder is not None:
        where = f"{device.type}: imagefolder resnet18@{FOLDER_SIZE}"
        goal(f"{where} warm in-memory epoch ≥ 0.9× the step's images/s", folder["in_memory_vs_step"], 0.9)
        goal(f"{where} warm in-memory epoch ≥ 3× the reference's", folder["in_memory_vs_reference"], 3.0)
        goal(f"{where} warm streamed epoch ≥ 1.5× the reference's", folder["streamed_vs_reference"], 1.5)


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
        device = resolve_device(args.device, "--device")
    except CnnlabError as error:
        parser.error(str(error))
    args.device = device
    initialize_config_module(config_module="cnnlab.configs", version_base="1.3")
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        data_dir = Path(tmp)
        if args.chapter_8:
            args.models = list(dict.fromkeys([*args.models, *CHAPTER_8]))
        configs = {name: compose_preset(name, data_dir, device, args.set) for name in ALL_PRESETS}
        batch_sizes = {name: args.batch_size or cfg.trainer.batch_size for name, cfg in configs.items()}
        check_args(parser, args, batch_sizes)
        write_fashion_mnist(data_dir / "fashion_mnist", args.images, max(1, args.images // 6))
        data = load_data(data_spec(configs["lenet"]), device)  # the same synthetic set for every model
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
            augment_repeats=None if args.skip_augment else args.augment_repeats,
            photos=None if args.skip_imagefolder else args.photos,
            imagefolder_epochs=None if args.skip_imagefolder else args.imagefolder_epochs,
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
        augment = None
        if not args.skip_augment:
            augment = {
                name: measure_augment(
                    name,
                    configs[name],
                    compose_preset(name, data_dir, device, [f"augment={AUGMENT}", *args.set]),
                    data,
                    args,
                    batch_sizes[name],
                )
                for name in AUGMENT_MODELS
                if name in args.models
            }
        folder = None
        if not args.skip_imagefolder:
            folder = measure_imagefolder(args, data_dir, batch_sizes["resnet18"])
        report_goals(device, rows, epoch, peak_row, augment, folder)


if __name__ == "__main__":
    main()
