"""Fault tests: kill -9 and resume, Ctrl-C, divergence, corrupt and malicious checkpoints, sweeps."""

import os
import pickle
import shlex
import signal
import subprocess
import sys

import torch
from helpers import (
    SLOW_RUN,
    learning_curves,
    metrics,
    one_error_line,
    run_dirs,
    scalar_steps,
    start,
    wait_for_checkpoint_step,
    wait_for_file,
)


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(cli, tmp_path):
    reference = cli("train", *SLOW_RUN)
    assert reference.returncode == 0, reference.stderr
    (uninterrupted,) = run_dirs(cli.cwd)

    victim_root = tmp_path / "victim"
    victim_root.mkdir()
    process = start(victim_root, *SLOW_RUN)
    run_dir = wait_for_checkpoint_step(victim_root, 120)  # in epoch 2 (90 steps an epoch)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "metrics.json").exists() or metrics(run_dir)["status"] != "finished"

    resumed = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", f"trainer.resume={run_dir}"],
        cwd=victim_root,
        capture_output=True,
        text=True,
        env={**os.environ, "CNNLAB_DATA_DIR": str(victim_root / "data")},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch 2" in resumed.stdout
    assert learning_curves(run_dir) == learning_curves(uninterrupted)
    assert metrics(run_dir)["best"] == metrics(uninterrupted)["best"]
    assert scalar_steps(run_dir, "val/acc") == [1, 2, 3]  # no duplicated or missing steps
    assert scalar_steps(run_dir, "train/loss") == [1, 2, 3]


def test_ctrl_c_saves_and_prints_a_resume_command_that_works(cli):
    process = start(cli.cwd, *SLOW_RUN)
    run_dir = wait_for_checkpoint_step(cli.cwd, 20)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    line = one_error_line(stderr)
    assert "interrupted by SIGINT" in line
    command = line.split("Resume with: ", 1)[1]
    assert command.startswith("cnnlab train trainer.resume=")
    assert metrics(run_dir)["status"] == "interrupted"

    argv = shlex.split(command)[1:]
    resumed = subprocess.run(
        [sys.executable, "-m", "cnnlab", *argv],
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "CNNLAB_DATA_DIR": str(cli.cwd / "data")},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(run_dir)["status"] == "finished"
    assert metrics(run_dir)["epochs"] == 3
    reference = cli("train", *SLOW_RUN)
    assert reference.returncode == 0
    other = next(d for d in run_dirs(cli.cwd) if d != run_dir)
    assert learning_curves(run_dir) == learning_curves(other)


def test_sigterm_exits_143(cli):
    process = start(cli.cwd, *SLOW_RUN)
    wait_for_checkpoint_step(cli.cwd, 20)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "interrupted by SIGTERM" in one_error_line(stderr)


def test_exploding_lr_stops_with_epoch_step_lr_and_keeps_best_pt(cli):
    # Epoch 1 trains normally (best.pt is written), then the schedule multiplies lr by 1e9.
    result = cli(
        "train", "trainer.epochs=3", "scheduler=step", "scheduler.step_epochs=1", "scheduler.gamma=1e9",
        "scheduler.warmup_epochs=0",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    line = one_error_line(result.stderr)
    assert "loss became non-finite at epoch 2, step" in line and "(lr 1e+08)" in line
    assert "lower optimizer.lr" in line and "last.pt and best.pt keep the last good state" in line
    (run_dir,) = run_dirs(cli.cwd)
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["state"]["epoch"] == 1 and best["state"]["step"] == 21  # 1,295 training digits / 64
    assert metrics(run_dir)["status"] == "failed"
    assert torch.load(run_dir / "last.pt", weights_only=True)["state"]["epoch"] == 1


def test_lr_1e6_stops_at_once_and_writes_no_checkpoint(cli):
    result = cli("train", "optimizer.lr=1e6", "trainer.clip_grad_norm=null", "scheduler.warmup_epochs=0")
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "loss became non-finite at epoch 1, step" in line
    assert "there is no best.pt yet to go back to" in line  # and says so
    (run_dir,) = run_dirs(cli.cwd)
    assert not (run_dir / "best.pt").exists() and not (run_dir / "last.pt").exists()


def test_best_pt_bytes_survive_a_later_divergence(cli):
    # One good epoch whose schedule then multiplies the lr by 1e9; resuming for more epochs diverges.
    exploding = [
        "scheduler=step",
        "scheduler.step_epochs=1",
        "scheduler.gamma=1e9",
        "scheduler.warmup_epochs=0",
    ]
    assert cli("train", "trainer.epochs=1", *exploding).returncode == 0
    (run_dir,) = run_dirs(cli.cwd)
    best, last = (run_dir / "best.pt").read_bytes(), (run_dir / "last.pt").read_bytes()
    result = cli("train", f"trainer.resume={run_dir}", "trainer.epochs=3")
    assert result.returncode == 3, result.stderr
    assert "loss became non-finite at epoch 2" in one_error_line(result.stderr)
    assert (run_dir / "best.pt").read_bytes() == best
    assert (run_dir / "last.pt").read_bytes() == last
    assert metrics(run_dir)["status"] == "failed"


def test_truncated_checkpoint_is_a_clear_error(cli):
    assert cli("train", "trainer.epochs=1").returncode == 0
    (run_dir,) = run_dirs(cli.cwd)
    last = run_dir / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = cli("train", f"trainer.resume={run_dir}", "trainer.epochs=2")
    assert result.returncode == 2
    assert "is not a readable cnnlab checkpoint" in one_error_line(result.stderr)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_and_never_runs(cli):
    run_dir = cli.cwd / "evil"
    run_dir.mkdir()
    marker = cli.cwd / "pwned"
    payload = _RunsCode()
    payload.marker = marker
    (run_dir / "last.pt").write_bytes(pickle.dumps({"format": "cnnlab-checkpoint", "x": payload}))
    result = cli("train", f"trainer.resume={run_dir}")
    assert result.returncode == 2
    assert "they could run code" in one_error_line(result.stderr)
    assert not marker.exists()


def test_resume_latest_finds_the_newest_run_of_the_same_config(cli):
    process = start(cli.cwd, *SLOW_RUN)
    run_dir = wait_for_checkpoint_step(cli.cwd, 20)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert cli("train", "trainer.epochs=1").returncode == 0  # a newer run, another config
    result = cli("train", "trainer.resume=latest", *SLOW_RUN)
    assert result.returncode == 0, result.stderr
    assert metrics(run_dir)["status"] == "finished"


def test_a_failing_sweep_job_is_reported_and_the_others_finish(cli):
    result = cli(
        "train", "-m", "optimizer.lr=0.05,1e6,0.01", "trainer.epochs=1", "trainer.clip_grad_norm=null"
    )
    assert result.returncode == 1
    assert "1 job(s) failed" in result.stderr
    assert (
        "job 1 (optimizer.lr=1000000.0,trainer.clip_grad_norm=null,trainer.epochs=1): loss became non-finite"
        in result.stderr
    )
    statuses = [metrics(d)["status"] for d in run_dirs(cli.cwd)]
    assert statuses == ["finished", "failed", "finished"]


def test_ctrl_c_stops_a_whole_sweep_not_just_its_current_job(cli):
    process = start(cli.cwd, "-m", "trainer.seed=0,1,2", *SLOW_RUN)
    wait_for_file(cli.cwd, "outputs/train-sweeps/*/*/0_*/last.pt")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted by SIGINT" in stderr
    assert not list(cli.cwd.glob("outputs/train-sweeps/*/*/1_*"))  # the next job never started
