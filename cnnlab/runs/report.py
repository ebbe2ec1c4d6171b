"""The report of a directory of runs: one table comparing the runs of a sweep, or of every run under outputs/.

A run is a directory with a metrics.json (`cnnlab train` writes it when it ends, finished or not),
or a multirun job that never wrote one (cnnlab.runs.jobs keeps its record: failed early, still
running, or killed). Its settings come from Hydra's .hydra/ files (the overrides, the config
groups chosen) and the resolved config.yaml; the table's setting columns are the overridden keys
whose values differ between the runs. The rows go best validation accuracy first (the test accuracy
is shown beside it, never ranked on); report.csv (every field) and report.md (the table) are written
into the directory. Runs that differ only in trainer.seed (or, with `by`, share the values of the
keys it names) are also grouped: a second table of each group's mean ± std and n, best mean first,
report-groups.csv, and report-curves.png (each group's validation accuracy per epoch, also an image
in the directory's TensorBoard). Every multirun prints the same report at its end
(cnnlab.app.sweep_callback); `cnnlab report` prints it on demand.
"""

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from cnnlab.console import console
from cnnlab.errors import ConfigError
from cnnlab.runs.curves import add_to_tensorboard, curves_png
from cnnlab.runs.hparams import override_values, setting
from cnnlab.runs.jobs import JOBS_DIR, JobRecord, read_jobs
from cnnlab.runs.layout import CONFIG, HYDRA, METRICS, RunDir
from cnnlab.runs.lock import lock_holder

STATUS_STYLES = {
    "finished": "green",
    "failed": "red",
    "unreadable": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "pending": "dim",
}
NUMERIC_COLUMNS = {
    "best val acc", "test acc", "book", "final train loss", "epochs", "wall time", "images/s", "attempts"
}  # fmt: skip
_ABSENT = object()  # OmegaConf.select's answer for a key the config does not have
HINT = "give a sweep directory (outputs/train-sweeps/<date>/<time>) or outputs/ for every run"


@dataclass
class Run:
    """One run's settings and results, as its files on disk tell them."""

    directory: Path
    job: tuple[Path, int] | None  # a multirun job's sweep directory and number
    overrides: dict[str, str]  # key or config group → value, as the command line set them
    choices: dict[str, Any]  # config group → option chosen
    config: DictConfig | None  # the resolved config.yaml (None: the job failed before writing it)
    metrics: dict[str, Any]  # metrics.json ({}: never written)
    status: str
    error: str | None
    attempts: int | None = None  # a multirun job's launches (retries, resumed sweeps); None: no job

    def setting(self, key: str) -> str:
        """This run's value of a config key or group, as text ("" when unknown)."""
        if key not in self.choices and self.config is None:  # failed before saving its config
            return self.overrides.get(key, "")
        value = setting(key, self.config, self.choices)
        return "null" if value is None else str(value)

    def has(self, key: str) -> bool:
        """Whether this run has a setting `key` (a config group, an override or a config key)."""
        if key in self.choices or key in self.overrides:
            return True
        return self.config is not None and OmegaConf.select(self.config, key, default=_ABSENT) is not _ABSENT

    @property
    def best_val_acc(self) -> float | None:
        """The best epoch's validation accuracy (None: no epoch finished)."""
        best = self.metrics.get("best", {})
        return best["val/acc"] if best.get("epoch") else None

    @property
    def test(self) -> dict[str, float]:
        """best.pt's test loss and accuracy ({}: not measured — no test split, or the run did not finish)."""
        return self.metrics.get("test") or {}


def book_result(book: dict[str, Any]) -> str:
    """A book run's published test accuracy with its section, e.g. '0.78 (d2l.ai 7.6)', or 'not reported'."""
    figure = "not reported" if book["test_acc"] is None else f"{book['test_acc']:.2f}"
    return f"{figure} (d2l.ai {book['section']})"


def collect(root: Path) -> list[Run]:
    """Every run under the directory `root` (itself possibly a run), best validation accuracy first."""
    runs: dict[Path, Run] = {}
    for metrics_file in root.rglob(METRICS):
        runs[metrics_file.parent] = _read_run(metrics_file.parent, None)
    # A run killed with -9 (or still training) has its config.yaml but no metrics.json yet.
    for config_file in root.rglob(CONFIG):
        if config_file.parent.name != HYDRA and config_file.parent not in runs:
            runs[config_file.parent] = _read_run(config_file.parent, None)
    for jobs_dir in root.rglob(JOBS_DIR):
        sweep_dir = jobs_dir.parent
        for record in read_jobs(sweep_dir):
            directory = sweep_dir / record.directory
            # A finished job without metrics.json is no training run (e.g. a `cnnlab summary -m` job).
            if directory in runs or record.status != "finished":
                runs[directory] = _read_run(directory, (sweep_dir, record))
    return sorted(runs.values(), key=_rank)


def varied_keys(runs: list[Run]) -> list[str]:
    """The overridden keys (in command-line order) whose values differ between the runs."""
    keys = dict.fromkeys(key for run in runs for key in run.overrides)
    return [key for key in keys if len({run.setting(key) for run in runs}) > 1]


SEED = "trainer.seed"
CURVES = "report-curves.png"
# What a group's statistics are taken of: (column, CSV field, the run's value or None).
_GROUPED = (
    ("best val acc", "best_val_acc", lambda run: run.best_val_acc),
    ("test acc", "test_acc", lambda run: run.test.get("test/acc")),
    ("final train loss", "final_train_loss", lambda run: run.metrics.get("final", {}).get("train/loss")),
)


@dataclass
class Group:
    """Runs with the same values of the grouping keys: their results' mean, std and count."""

    values: tuple[str, ...]  # the grouping keys' values
    runs: list[Run]

    def stats(self, value_of) -> tuple[float, float, int] | None:
        """(mean, sample standard deviation, n) of `value_of(run)` over the runs that have it."""
        values = [v for v in map(value_of, self.runs) if v is not None]
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def group_runs(runs: list[Run], by: list[str]) -> list[Group]:
    """The runs grouped by their values of the keys `by`, best mean validation accuracy first."""
    found: dict[tuple[str, ...], Group] = {}
    for run in runs:
        values = tuple(run.setting(key) for key in by)
        found.setdefault(values, Group(values, [])).runs.append(run)
    best = _GROUPED[0][2]
    return sorted(found.values(), key=lambda group: -((group.stats(best) or (-1.0,))[0]))


def grouping_keys(runs: list[Run], keys: list[str], by: list[str] | None) -> list[str] | None:
    """The keys to group by: `by`, or every varied key (`keys`) but the seed when the seed varies
    (None: no grouping). A key of `by` that no run sets is a ConfigError listing the varied keys."""
    if by is None:
        return [key for key in keys if key != SEED] if SEED in keys else None
    unknown_keys = [key for key in by if not any(run.has(key) for run in runs)]
    if unknown_keys:
        raise ConfigError(
            f"--by {','.join(unknown_keys)}: no run has this setting; the settings that vary are: "
            f"{', '.join(keys) or 'none'} (e.g. --by {keys[0] if keys else 'optimizer.lr'})"
        )
    return by


def publish(runs: list[Run], root: Path, by: list[str] | None = None) -> None:
    """Print the runs' table and write report.csv and report.md into `root`; where runs repeat a
    config over seeds (or `by` names the grouping keys), also the groups' table of mean ± std, and
    report-groups.csv."""
    keys = varied_keys(runs)
    grouping = grouping_keys(runs, keys, by)
    books = any(run.metrics.get("book") for run in runs)  # the book's column only beside book runs
    results = ["best val acc", "test acc", *(["book"] if books else [])]
    results += ["final train loss", "epochs", "wall time", "images/s"]
    retried = any((run.attempts or 0) > 1 for run in runs)  # the attempts column only when one ran again
    results += [*(["attempts"] if retried else []), "status"]
    headers = ["run", *keys, *results]
    rows = [
        [_label(run, root), *(run.setting(key) for key in keys), *_results(run, books, retried)]
        for run in runs
    ]
    table = Table()
    for header in headers:
        table.add_column(header, justify="right" if header in NUMERIC_COLUMNS else "left")
    for run, row in zip(runs, rows, strict=True):
        table.add_row(*map(Text, row[:-1]), Text(row[-1], style=STATUS_STYLES.get(run.status, "")))
    console.print(f"cnnlab report: {len(runs)} run(s) in {root}")
    _print_whole(table)
    (root / "report.md").write_text(_markdown(headers, rows))
    (root / "report.csv").write_text(_csv(runs, keys, root))
    written = [root / "report.md", root / "report.csv"]
    if grouping is not None:
        groups = group_runs(runs, grouping)
        _print_whole(_groups_table(groups, grouping))
        (root / "report-groups.csv").write_text(_groups_csv(groups, grouping, root))
        written.append(root / "report-groups.csv")
        curves = [(_group_label(group, grouping), _val_acc_curves(group)) for group in groups]
        curves = [(label, runs) for label, runs in curves if runs]
        if curves:
            curves_png(curves, "val acc (mean line, min-max band over the group's runs)", root / CURVES)
            add_to_tensorboard(root / CURVES, root, "report/val_acc_by_group", step=len(runs))
            written.append(root / CURVES)
    console.print(f"report: {', '.join(map(str, written))}")


def _group_label(group: Group, keys: list[str]) -> str:
    settings = ", ".join(f"{key}={value}" for key, value in zip(keys, group.values, strict=True))
    return f"{settings or 'all runs'} (n={len(group.runs)})"


def _val_acc_curves(group: Group) -> list[list[float]]:
    """Each run's validation accuracy per epoch, from its metrics.json history (runs without one left out)."""
    curves = [[epoch["val/acc"] for epoch in run.metrics.get("history", [])] for run in group.runs]
    return [curve for curve in curves if curve]


def _groups_table(groups: list[Group], keys: list[str]) -> Table:
    """One row per group: its keys' values, n, and mean ± std of each result."""
    title = f"grouped by {', '.join(keys) or 'nothing'}: mean ± std over the runs (n)"
    table = Table(title=title, title_justify="left")
    for header in [*keys, "n", *(column for column, _, _ in _GROUPED)]:
        table.add_column(header, justify="left" if header in keys else "right")
    for group in groups:
        cells = []
        for _, _, value_of in _GROUPED:
            stats = group.stats(value_of)
            cells.append("" if stats is None else f"{stats[0]:.4f} ± {stats[1]:.4f}")
        counted = (group.stats(_GROUPED[0][2]) or (0, 0, 0))[2]  # runs with a best epoch
        n = str(counted) if counted == len(group.runs) else f"{counted} of {len(group.runs)}"
        table.add_row(*group.values, n, *cells)
    return table


def _groups_csv(groups: list[Group], keys: list[str], root: Path) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    stats_fields = [f"{field}_{part}" for _, field, _ in _GROUPED for part in ("mean", "std", "n")]
    writer.writerow([*keys, "runs", *stats_fields, "run_dirs"])
    for group in groups:
        values = []
        for _, _, value_of in _GROUPED:
            values += list(group.stats(value_of) or (None, None, 0))
        dirs = " ".join(str(run.directory.relative_to(root)) for run in group.runs)
        writer.writerow([*group.values, len(group.runs), *values, dirs])
    return out.getvalue()


def _print_whole(table: Table) -> None:
    """Print `table` fitted to the terminal, or whole (nothing cut) into a file or pipe."""
    if console.is_terminal:
        console.print(table)
        return
    width = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    Console(file=console.file, width=width, highlight=False).print(table)


def _read_run(directory: Path, job: tuple[Path, JobRecord] | None) -> Run:
    """The run in `directory`; `job`: the sweep directory and record of a multirun job. A run whose
    files cannot be read is listed as unreadable, with the reason: one bad run never hides the others."""
    try:
        return _parse_run(directory, job)
    except Exception as error:  # any malformed file (a YAML scalar, a list for a mapping, …)
        error = error if isinstance(error, ConfigError) else f"cannot read the run in {directory}: {error!r}"
        place = (job[0], job[1].num) if job else None
        return Run(directory, place, {}, {}, None, {}, "unreadable", str(error))


def _parse_run(directory: Path, job: tuple[Path, JobRecord] | None) -> Run:
    record = job[1] if job else None
    hydra = (_read_yaml(RunDir(directory).hydra("hydra.yaml")) or {}).get("hydra", {})
    saved_overrides = _read_yaml(RunDir(directory).hydra("overrides.yaml"))
    overrides = saved_overrides if saved_overrides is not None else (record.overrides if record else [])
    exclude = hydra.get("job", {}).get("config", {}).get("override_dirname", {}).get("exclude_keys", [])
    config = None
    if RunDir(directory).config.is_file():
        config = OmegaConf.create(_read_yaml(RunDir(directory).config))
    metrics = _read_metrics(RunDir(directory).metrics) if RunDir(directory).metrics.is_file() else {}
    status, error = metrics.get("status"), metrics.get("error")
    if not metrics and record is None:  # a run without metrics.json: still training, or killed
        holder = lock_holder(directory)
        status = "running" if holder and holder["alive"] else "interrupted"
        error = (
            None
            if status == "running"
            else "no metrics.json: the process was killed (kill -9, out of memory?)"
        )
    # The job's record has the last word when it disagrees with a "finished" metrics.json (or there is
    # none): the job failed after training, or before it, or never came back.
    if record is not None and status in (None, "finished") and record.status != "finished":
        status, error = record.status, record.error
    return Run(
        directory=directory,
        job=(job[0], job[1].num) if job else None,
        overrides=override_values(overrides, exclude),
        choices=hydra.get("runtime", {}).get("choices", {}),
        config=config,
        metrics=metrics,
        status=status or "unknown",
        error=error,
        attempts=record.attempts if record else None,
    )


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read {path}: {str(error).splitlines()[0]}") from None


# What `_results`, `_csv` and the ranking read of a metrics.json.
_METRICS_FIELDS = {"status": str, "epochs": int, "epochs_planned": int, "best": dict, "final": dict}


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    wrong = [
        key
        for key, kind in _METRICS_FIELDS.items()
        if not isinstance(metrics, dict) or not isinstance(metrics.get(key), kind)
    ]
    best = metrics.get("best") if isinstance(metrics, dict) else None
    if wrong or not isinstance(best.get("val/acc"), int | float) or not isinstance(best.get("epoch"), int):
        raise ConfigError(
            f"{path} is not a cnnlab metrics.json (missing or mistyped: {', '.join(wrong) or 'best'})"
        )
    return metrics


def _rank(run: Run) -> tuple:
    best = run.best_val_acc
    place = (str(run.job[0]), run.job[1]) if run.job else (str(run.directory), 0)
    return (best is None, -(best or 0.0), *place)


def _label(run: Run, root: Path) -> str:
    """The run's directory relative to `root`; a multirun job's is its sweep's and its number."""
    if run.job is None:
        return str(run.directory.relative_to(root))
    sweep = run.job[0].relative_to(root)
    return f"{sweep}/{run.job[1]}" if sweep.parts else str(run.job[1])


def _results(run: Run, books: bool, retried: bool) -> list[str]:
    final, metrics = run.metrics.get("final", {}), run.metrics
    best, book = run.best_val_acc, metrics.get("book")
    return [
        "" if best is None else f"{best:.4f}",
        f"{run.test['test/acc']:.4f}" if run.test else "",
        *([book_result(book) if book else ""] if books else []),
        f"{final['train/loss']:.4f}" if "train/loss" in final else "",
        f"{metrics['epochs']}/{metrics['epochs_planned']}" if metrics else "",
        f"{metrics['wall_time_s']:.1f} s" if metrics else "",
        f"{metrics['images_per_s']:,.0f}" if metrics.get("images_per_s") else "",
        *([str(run.attempts or "")] if retried else []),
        run.status,
    ]


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    align = ["---:" if header in NUMERIC_COLUMNS else "---" for header in headers]
    return "\n".join([line(headers), line(align), *(line(row) for row in rows)]) + "\n"


def _csv(runs: list[Run], keys: list[str], root: Path) -> str:
    fields = ["best_val_acc", "best_epoch", "test_acc", "test_loss", "book_test_acc", "book_section"]
    fields += ["final_val_acc", "final_train_loss", "epochs", "epochs_planned"]
    fields += ["wall_time_s", "images_per_s", "attempts", "status", "error"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["run", *keys, *fields])
    for run in runs:
        final, metrics = run.metrics.get("final", {}), run.metrics
        best, book = run.best_val_acc, metrics.get("book") or {}
        values = [
            best,
            metrics["best"]["epoch"] if best is not None else None,
            run.test.get("test/acc"),
            run.test.get("test/loss"),
            book.get("test_acc"),
            book.get("section"),
            final.get("val/acc"),
            final.get("train/loss"),
            metrics.get("epochs"),
            metrics.get("epochs_planned"),
            metrics.get("wall_time_s"),
            metrics.get("images_per_s"),
            run.attempts,
            run.status,
            run.error,
        ]
        settings = [run.setting(key) for key in keys]
        writer.writerow([run.directory.relative_to(root), *settings, *values])  # None → empty
    return out.getvalue()
