"""What a run reports: TensorBoard events, a progress bar or plain lines, metrics.json."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def decoding_bar(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar (on a terminal) while `total` image files are decoded for the first time."""
    with Progress(
        TextColumn("decoding images once (cached for later runs)"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("decode", total=total)
        yield lambda n: bar.advance(task, n)


class RunLogger:
    """One run's TensorBoard writer and console output; only this class prints during training."""

    def __init__(self, run_dir: Path, epochs: int, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.epochs = epochs
        # purge_step: on resume, TensorBoard drops events at or after it, so no step is logged twice.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
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

    def start_epoch(self, epoch: int, images: int, done: int = 0) -> None:
        """Begin the progress bar of `epoch` (1-based) over `images` training images."""
        if not self.interactive:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{self.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            _ImagesPerSecond(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=images, completed=done)

    def advance(self, images: int) -> None:
        """Count `images` more trained images on the progress bar (no device synchronization)."""
        if self._progress is not None:
            self._progress.update(self._task, advance=images)

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

    def start_epoch(self, epoch: int, images: int, done: int = 0) -> None:
        """Show nothing."""

    def advance(self, images: int) -> None:
        """Show nothing."""

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Print nothing."""

    def close(self) -> None:
        """Nothing to close."""
