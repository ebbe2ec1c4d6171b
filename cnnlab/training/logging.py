"""What a run reports: TensorBoard events, a progress bar or plain lines, metrics.json."""

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cnnlab.console import console


class _ImagesPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "… img/s", style="cyan")


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar (on a terminal) over `total` items; yields the function that advances it."""
    with Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def decoding_bar(total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    """A progress bar (on a terminal) while `total` image files are decoded for the first time."""
    return progress_bar(total, "decoding images once (cached for later runs)")


# TensorBoard's Custom Scalars tab: the curves first (train and val on one chart), per-class after.
# Each tag is a regex matched from the tag's start; the charts follow loop.py, train.py and visuals.py.
TENSORBOARD_LAYOUT: dict[str, dict[str, list[Any]]] = {
    "curves": {
        "loss": ["Multiline", ["train/loss", "val/loss", "test/loss"]],
        "accuracy": ["Multiline", ["train/acc", "val/acc", "test/acc"]],
        "learning rate": ["Multiline", ["lr"]],
        "throughput": ["Multiline", ["throughput/images_per_s"]],
    },
    "per class": {"test accuracy per class": ["Multiline", [r"class_acc/.*"]]},
}


class RunLogger:
    """One run's TensorBoard writer and console output; only this class prints during training."""

    def __init__(self, run_dir: Path, epochs: int, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.epochs = epochs
        # purge_step: on resume, TensorBoard drops events at or after it, so no step is logged twice.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        if purge_step is None:  # a new run; a resumed one already has its layout
            self.writer.add_custom_scalars(TENSORBOARD_LAYOUT)
        self.interactive = console.is_terminal
        self._progress: Progress | None = None
        self._task = None

    def info(self, message: str) -> None:
        """Print one line to the user."""
        console.print(message)

    def text(self, tag: str, text: str) -> None:
        """Log text (e.g. the resolved config) to TensorBoard."""
        self.writer.add_text(tag, text, 0)

    def warn(self, message: str, step: int) -> None:
        """Print one warning line (above any progress bar) and log it to TensorBoard's `warnings`."""
        console.print(f"warning: {message}", style="yellow")
        self.writer.add_text("warnings", message, step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log scalars to TensorBoard at `step`."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def hparams(self, values: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """Log the run's hyperparameters and result `metrics` for TensorBoard's HParams dashboard."""
        from torch.utils.tensorboard.summary import hparams

        # Into this run's own event file: SummaryWriter.add_hparams would start a timestamped sub-run,
        # and the dashboard would no longer line up with the run's curves.
        for summary in hparams(values, metrics):
            self.writer.file_writer.add_summary(summary, step)
        self.scalars(metrics, step)

    def start_epoch(
        self,
        epoch: int,
        images: int,
        done: int = 0,
        running: Callable[[], tuple[float, float]] | None = None,
    ) -> None:
        """Begin the progress bar of `epoch` (1-based) over `images` training images; `running()`
        gives the (loss, accuracy) so far this epoch."""
        self._running = running
        if not self.interactive:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=10),
            MofNCompleteColumn(),
            _ImagesPerSecond(),
            TextColumn("{task.fields[running]}"),
            console=console,
            transient=True,
        )
        self._progress.start()
        self._epochs_after = (self.epochs - epoch) * images  # images of the epochs still to come
        self._shown = 0.0
        self._task = self._progress.add_task(
            f"epoch {epoch}/{self.epochs}", total=images, completed=done, running=""
        )

    def advance(self, images: int) -> None:
        """Count `images` more trained images on the progress bar; about twice a second it also shows
        the running loss and accuracy and the whole run's remaining time (reading them synchronizes
        with the device, so only a terminal's bar asks)."""
        if self._progress is None:
            return
        self._progress.update(self._task, advance=images)
        now = time.monotonic()
        if self._running is None or now - self._shown < 0.5:
            return
        self._shown = now
        loss, accuracy = self._running()
        task = self._progress.tasks[0]
        left = ""
        if task.speed:
            seconds = int((task.remaining + self._epochs_after) / task.speed)
            left = f"  run ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        self._progress.update(self._task, running=f"loss {loss:.3f} acc {accuracy:.3f}{left}")

    def evaluating(self, split: str) -> None:
        """Say on the bar that the epoch's training is done and `split` is being evaluated."""
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._progress.tasks[0].description} · {split}…")

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Close the bar and print the epoch's line: losses, accuracies, throughput."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        console.print(
            f"epoch {epoch}/{self.epochs}  train loss {metrics['train/loss']:.4f}  "
            f"train acc {metrics['train/acc']:.4f}  val loss {metrics['val/loss']:.4f}  "
            f"val acc {metrics['val/acc']:.4f}  {metrics['throughput/images_per_s']:,.0f} img/s"
        )

    def close(self) -> None:
        """Stop any progress bar and flush the event files."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.writer.close()


class QuietLogger(RunLogger):
    """The logger of ranks other than 0 under torchrun: records and prints nothing."""

    def __init__(self) -> None:
        self.writer = None

    def info(self, message: str) -> None:
        """Print nothing."""

    def text(self, tag: str, text: str) -> None:
        """Log nothing."""

    def warn(self, message: str, step: int) -> None:
        """Print nothing."""

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log nothing."""

    def hparams(self, values: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """Log nothing."""

    def start_epoch(
        self,
        epoch: int,
        images: int,
        done: int = 0,
        running: Callable[[], tuple[float, float]] | None = None,
    ) -> None:
        """Show nothing."""

    def advance(self, images: int) -> None:
        """Show nothing."""

    def evaluating(self, split: str) -> None:
        """Show nothing."""

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Print nothing."""

    def close(self) -> None:
        """Nothing to close."""
