"""Fault tests through the CLI (issue: nothing lost, nothing silently wrong): bombs, resume changes
refused or applied, the run-directory lock, a full and a read-only disk, a damaged dataset file, early
Ctrl-C, and the records of sweeps that were stopped, killed, resumed or failed."""

import json
import os
import shutil
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from helpers import (
    SLOW_RUN,
    learning_curves,
    metrics,
    one_error_line,
    run_cli,
    start,
    wait_for_file,
    write_mnist,
)
from helpers import write_noise_folder as write_folder

from cnnlab.training.checkpoint import load_checkpoint, save_checkpoint

# --- images ---------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb(path: Path) -> None:
    """A 12 KB PNG whose header declares 20000×20000 pixels: PIL refuses it as a decompression bomb."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 12_000)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")
    )


FOLDER_RUN = [
    "dataset=imagefolder",
    "dataset.num_classes=2",
    "dataset.loader.image_size=[16,16]",
    "trainer.epochs=1",
]


@pytest.mark.parametrize("stream", ["true", "false"])
def test_a_decompression_bomb_is_one_line_naming_it_and_nothing_hangs(cli, stream):
    write_folder(cli.cwd / "images")
    write_bomb(cli.cwd / "images" / "train" / "b" / "bomb.png")
    result = cli(
        "train", *FOLDER_RUN, f"dataset.loader.root={cli.cwd / 'images'}", f"dataset.loader.stream={stream}",
        "dataset.loader.workers=2", timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "bomb.png" in line and "decompression bomb" in line.lower()


# --- resume ---------------------------------------------------------------------------------------

BASE_RUN = ["trainer.epochs=2", "scheduler=none", "optimizer.lr=0.05"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-epoch run (constant lr after warm-up), shared by the resume tests that refuse."""
    root = tmp_path_factory.mktemp("finished")
    result = run_cli("train", *BASE_RUN, "hydra.run.dir=run", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optimizer.lr=0.001", "optimizer.lr=0.001 differs from the run's optimizer.lr=0.05"),
        (
            "model=lenet",
            "model=lenet sets model.name='lenet', which differs from the run's model.name='lenet_modern'",
        ),
        ("optimizer=adam", "optimizer=adam sets optimizer.name='adam'"),
        ("trainer.batch_size=32", "trainer.batch_size=32 differs from the run's trainer.batch_size=64"),
        ("dataset.val_fraction=0.2", "dataset.val_fraction=0.2 differs"),
        ("model.channels=[8,16]", "model.channels=[8,16] differs"),
    ],
)
def test_a_resume_refuses_every_change_it_cannot_honour_in_one_line(finished_run, override, named):
    before = (finished_run / "last.pt").read_bytes()
    result = run_cli("train", f"trainer.resume={finished_run}", override, cwd=finished_run.parent)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert named in line and "a resume may change only trainer.epochs" in line
    assert (finished_run / "last.pt").read_bytes() == before


def test_a_longer_cosine_schedule_is_refused_on_resume(cli):
    assert cli("train", "trainer.epochs=1", "hydra.run.dir=run").returncode == 0
    result = cli("train", "trainer.resume=run", "trainer.epochs=2")
    assert result.returncode == 2
    assert "trainer.epochs cannot change from 1 to 2" in one_error_line(result.stderr)


def test_a_resume_reads_the_runs_own_config_and_applies_allowed_changes_exactly(cli):
    assert cli("train", *BASE_RUN, "hydra.run.dir=run").returncode == 0
    shutil.rmtree(cli.cwd / "run" / ".hydra")  # the resume must not fall back to cnnlab's defaults
    resumed = cli("train", "trainer.resume=run", "trainer.epochs=3", "trainer.visual_every=0")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch 3" in resumed.stdout
    assert "resume changes: trainer.epochs 2 → 3, trainer.visual_every 5 → 0" in resumed.stdout
    found = metrics(cli.cwd / "run")
    assert found["epochs"] == 3 and found["epochs_planned"] == 3
    assert found["resumes"] == [
        {"epoch": 2, "step": 2 * 21, "changes": {"trainer.epochs": [2, 3], "trainer.visual_every": [5, 0]}}
    ]
    assert cli("train", *BASE_RUN[1:], "trainer.epochs=3", "hydra.run.dir=fresh").returncode == 0
    assert learning_curves(cli.cwd / "run") == learning_curves(cli.cwd / "fresh")


def test_a_resume_from_best_pt_loads_best_pt(cli):
    assert cli("train", *BASE_RUN, "hydra.run.dir=run").returncode == 0
    run_dir = cli.cwd / "run"
    payload = load_checkpoint(run_dir / "last.pt")  # made into an epoch-1 best.pt, which it is not
    payload["state"]["epoch"], payload["state"]["history"] = 1, payload["state"]["history"][:1]
    save_checkpoint(
        run_dir / "best.pt", {k: v for k, v in payload.items() if k not in ("format", "version", "sha256")}
    )
    resumed = cli("train", f"trainer.resume={run_dir / 'best.pt'}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch 2" in resumed.stdout
    assert [h["epoch"] for h in metrics(run_dir)["history"]] == [1, 2]


def test_a_new_run_into_a_directory_holding_a_run_is_refused(finished_run):
    before = (finished_run / "metrics.json").read_bytes()
    result = run_cli("train", "hydra.run.dir=run", cwd=finished_run.parent)
    assert result.returncode == 2
    assert "already holds a run (its last.pt); continue it with trainer.resume=" in one_error_line(
        result.stderr
    )
    assert (finished_run / "metrics.json").read_bytes() == before


# --- the run-directory lock -----------------------------------------------------------------------


def test_a_second_writer_is_refused_and_a_killed_runs_stale_lock_is_replaced(cli):
    # Long enough to outlive the refused attempts (a constant lr, so the resume may shorten it).
    long_run = [*SLOW_RUN[1:], "trainer.epochs=100", "scheduler=none", "hydra.run.dir=run"]
    process = start(cli.cwd, *long_run)
    run_dir = cli.cwd / "run"
    wait_for_file(cli.cwd, "run/last.pt")
    for attempt in (long_run, ["trainer.resume=run"]):
        result = cli("train", *attempt)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result.stderr)
        assert f"is in use by another cnnlab train (PID {process.pid} on " in line
    assert process.poll() is None  # still training: the refusals were of a live writer
    process.send_signal(signal.SIGKILL)
    process.wait()
    listed = cli("report", ".")
    assert listed.returncode == 0, listed.stderr
    assert "interrupted" in listed.stdout
    trained = load_checkpoint(run_dir / "last.pt")["state"]["epoch"]
    resumed = cli("train", "trainer.resume=run", f"trainer.epochs={trained + 1}")
    assert resumed.returncode == 0, resumed.stderr
    assert "replaced the stale lock of " in resumed.stdout and f"(PID {process.pid} on " in resumed.stdout
    assert metrics(run_dir)["status"] == "finished" and not (run_dir / ".cnnlab.lock").exists()


# --- a full disk, a read-only disk ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 10 MiB tmpfs (root only: skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_naming_the_file_and_what_was_kept(cli, small_disk):
    # A checkpoint of the default model is ~4 MB: epoch 1 writes last.pt and best.pt; epoch 2's new
    # last.pt no longer fits beside them.
    result = cli("train", "trainer.epochs=3", f"hydra.run.dir={small_disk / 'run'}")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "No space left on device" in line and "was kept" in line, line
    assert load_checkpoint(small_disk / "run" / "last.pt")["state"]["epoch"] >= 1  # intact
    assert not list((small_disk / "run").glob(".*.tmp"))


def test_read_only_run_directories_are_one_line_in_every_command(cli, small_disk):
    assert (
        cli(
            "train", "trainer.epochs=1", "model.channels=[6,16]", f"hydra.run.dir={small_disk / 'run'}"
        ).returncode
        == 0
    )
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    run_dir = small_disk / "run"
    for args in (
        ["train", f"hydra.run.dir={small_disk / 'new'}"],  # (resuming the finished run: nothing to resume)
        ["evaluate", f"run={run_dir}"],
        ["activations", f"run={run_dir}", "input=noise"],
        ["report", str(run_dir)],
    ):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Read-only file system" in one_error_line(result.stderr), args


# --- damaged dataset files ------------------------------------------------------------------------


def test_a_truncated_mnist_file_is_not_reported_as_missing(cli):
    raw = write_mnist(cli.cwd / "mnist")
    (raw / "t10k-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes()[:20])
    result = cli(
        "train", "dataset=mnist", f"dataset.loader.root={cli.cwd / 'mnist'}", "dataset.loader.download=false"
    )
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "t10k-labels-idx1-ubyte is truncated or corrupt" in line and "not found" not in line


# --- stopping in the first seconds ----------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.8, 2.5, 4.5])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_starting_is_one_line_and_leaves_a_record(cli, delay, signum):
    # The default 20 epochs: on a fast machine the last delay falls in training, not after the run's end.
    process = start(cli.cwd, "hydra.run.dir=run")
    time.sleep(delay)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    record = cli.cwd / "run" / "metrics.json"
    if process.returncode == 0 or (record.exists() and metrics(cli.cwd / "run")["status"] == "finished"):
        # A fast machine: the run had finished, and the signal came during or after the interpreter's exit.
        pytest.skip("the run finished before the signal")
    assert process.returncode == 128 + signum, stderr
    line = one_error_line(stderr)
    assert f"interrupted by {signal.Signals(signum).name}" in line
    if (cli.cwd / "run" / "metrics.json").exists():
        assert metrics(cli.cwd / "run")["status"] == "interrupted"
    # Setting up had begun (config.yaml is written then): the run says how it ended.
    assert (cli.cwd / "run" / "metrics.json").exists() or not (cli.cwd / "run" / "config.yaml").exists()


# --- sweep records --------------------------------------------------------------------------------


def job_statuses(report_stdout: str) -> dict[str, str]:
    """{job number: status} from a printed report table."""
    rows = {}
    for line in report_stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃").split("│")]
        if len(cells) > 2 and cells[0].isdigit():
            rows[cells[0]] = cells[-1]
    return rows


def test_a_stopped_sweep_reports_its_runs_and_the_jobs_never_launched_then_a_resume_updates_the_record(cli):
    process = start(cli.cwd, "-m", *SLOW_RUN, "trainer.seed=0,1,2")
    wait_for_file(cli.cwd, "outputs/train-sweeps/*/*/0_*/last.pt")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "cnnlab report: 3 run(s)" in stdout
    assert job_statuses(stdout) == {"0": "interrupted", "1": "pending", "2": "pending"}
    (sweep_dir,) = cli.cwd.glob("outputs/train-sweeps/*/*")
    (job_dir,) = sweep_dir.glob("0_*")
    resumed = cli("train", f"trainer.resume={job_dir}")
    assert resumed.returncode == 0, resumed.stderr
    report = cli("report", str(sweep_dir))
    assert job_statuses(report.stdout) == {"0": "finished", "1": "pending", "2": "pending"}


def test_a_killed_sweep_job_is_reported_interrupted(cli):
    process = start(cli.cwd, "-m", *SLOW_RUN, "trainer.seed=0,1")
    wait_for_file(cli.cwd, "outputs/train-sweeps/*/*/0_*/last.pt")
    process.send_signal(signal.SIGKILL)
    process.wait()
    (sweep_dir,) = cli.cwd.glob("outputs/train-sweeps/*/*")
    report = cli("report", str(sweep_dir))
    assert report.returncode == 0, report.stderr
    assert job_statuses(report.stdout) == {"0": "interrupted", "1": "pending"}
    record = json.loads((sweep_dir / ".jobs" / "0.json").read_text())
    assert record["status"] == "running"  # on disk as the killed job left it; read as interrupted


def test_report_lists_unreadable_runs_and_never_aborts(finished_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / "good")
    shutil.copytree(finished_run, root / "garbage")
    (root / "garbage" / "metrics.json").write_text("{not json")
    shutil.copytree(finished_run, root / "shape")
    (root / "shape" / "metrics.json").write_text(json.dumps({"status": "finished", "best": [1]}))
    result = run_cli("report", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "finished" in rows["good"]
    assert "unreadable" in rows["garbage"] and "unreadable" in rows["shape"]
    csv_text = (root / "report.csv").read_text()
    assert "cannot read" in csv_text and "not a cnnlab metrics.json" in csv_text


def test_an_unforeseen_error_in_a_sweep_job_is_recorded_and_the_sweep_reports(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main
    from cnnlab.commands import train

    real_build = train.build_training

    def failing_for_seed_1(spec, data, ranks):
        if spec.seed == 1:
            raise RuntimeError("boom (not a cnnlab error)")
        return real_build(spec, data, ranks)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "build_training", failing_for_seed_1)
    assert main(["train", "-m", "trainer.epochs=1", "trainer.seed=0,1"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "job 1 (trainer.epochs=1,trainer.seed=1): RuntimeError: boom (not a cnnlab error)" in err
    assert job_statuses(out) == {"0": "finished", "1": "failed"}
