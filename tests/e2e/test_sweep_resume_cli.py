"""A sweep launched again into its directory: finished jobs skipped, a job killed with -9 resumed from
its last.pt, the rest run; with the basic, joblib and submitit_local launchers. And sweep.retries."""

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import (
    SLOW_RUN,
    job_records,
    learning_curves,
    metrics,
    one_error_line,
    run_cli,
    scalar_steps,
    start,
    sweep_dir,
    wait_for_checkpoint_step,
)

import cnnlab.commands.train
from cnnlab.cli import main

# Four jobs of 3 epochs (~81 steps each, a checkpoint every 10): 2 learning rates × 2 seeds.
SWEEP = ["optimizer.lr=0.1,0.05", "trainer.seed=0,1", *SLOW_RUN]
TIMING = ("wall_time_s", "images_per_s", "run", "attempts")  # legitimately differ between the sweeps


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(file)]


def kill_job(process: subprocess.Popen, root: Path, runs: str, pid_of_job: int | None = None) -> None:
    """Once the job in `runs` has a last.pt in its second epoch, kill -9 its process (the sweep's own,
    or the one its record names) and wait for the sweep's process to end."""
    run_dir = wait_for_checkpoint_step(root, 100, runs=runs)
    pid = process.pid
    if pid_of_job is not None:
        pid = json.loads((run_dir.parent / ".jobs" / f"{pid_of_job}.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    try:
        process.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a launcher left waiting for its dead worker
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """(the uninterrupted sweep, the sweep killed in its third job and resumed, the resume's output)."""
    reference, victim = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("victim")
    assert run_cli("train", "-m", *SWEEP, cwd=reference).returncode == 0
    kill_job(start(victim, "-m", *SWEEP), victim, "outputs/train-sweeps/*/*/2_*")
    resumed = run_cli("train", "-m", *SWEEP, "sweep.resume=latest", cwd=victim)
    return sweep_dir(reference), sweep_dir(victim), resumed


def test_a_sweep_killed_mid_job_and_resumed_equals_the_uninterrupted_sweep(sweeps):
    reference, resumed, result = sweeps
    assert result.returncode == 0, result.stderr
    assert rows(resumed / "report.csv") == rows(reference / "report.csv")
    assert len(rows(resumed / "report.csv")) == 4
    for record in job_records(reference):
        directory = record["directory"]
        assert learning_curves(resumed / directory) == learning_curves(reference / directory)
    groups = rows(resumed / "report-groups.csv")
    assert groups == rows(reference / "report-groups.csv")
    assert [group["runs"] for group in groups] == ["2", "2"]  # the two seeds of each learning rate


def test_the_resume_skips_finished_jobs_continues_the_killed_one_and_runs_the_rest(sweeps):
    reference, resumed, result = sweeps
    assert result.stdout.count("finished when the sweep last ran: skipped") == 2
    assert result.stdout.count("resuming at epoch 2") == 1
    records = job_records(resumed)
    assert [record["attempts"] for record in records] == [1, 1, 2, 1]
    assert [record["status"] for record in records] == ["finished"] * 4
    assert sorted(p.name for p in resumed.iterdir() if p.is_dir()) == sorted(
        p.name for p in reference.iterdir() if p.is_dir()
    )  # the first launch's numbering and directories
    killed = resumed / records[2]["directory"]
    assert scalar_steps(killed, "val/acc") == [1, 2, 3]  # TensorBoard shows each epoch once
    with (resumed / "report.csv").open(newline="") as file:
        assert [row["attempts"] for row in csv.DictReader(file)].count("2") == 1
    assert "attempts" in result.stdout  # the table's column, since a job ran twice


def test_joblib_sweep_whose_worker_is_killed_resumes_into_its_directory(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.1,0.05", *SLOW_RUN]
    args.append(f"hydra.sweep.dir={sweep}")
    kill_job(start(tmp_path, *args), tmp_path, "sweep/1_*", pid_of_job=1)
    result = run_cli("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = job_records(sweep)
    assert (second["status"], second["attempts"]) == ("finished", 2)
    assert first["status"] == "finished"
    assert metrics(sweep / second["directory"])["epochs"] == 3
    assert "resuming at epoch 2" in result.stdout


def test_submitit_job_killed_resumes_into_its_directory(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", *SLOW_RUN, f"hydra.sweep.dir={sweep}"]
    kill_job(start(tmp_path, *args), tmp_path, "sweep/0_*", pid_of_job=0)
    result = run_cli("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (record,) = job_records(sweep)
    assert (record["status"], record["attempts"]) == ("finished", 2)
    found = metrics(sweep / record["directory"])
    assert (found["status"], found["epochs"]) == ("finished", 3)


def test_a_different_sweep_into_the_same_directory_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-m", "trainer.epochs=1", "hydra.sweep.dir=s"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["train", "-m", "trainer.epochs=2", "hydra.sweep.dir=s"])
    assert exit.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "hydra.sweep.dir=s holds a different sweep (its job 0 ran trainer.epochs=1)" in line


def test_retries_run_a_failing_job_again_and_the_report_counts_its_attempts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = ["dataset=imagefolder", "dataset.loader.root=nowhere", "dataset.num_classes=2"]
    assert main(["train", "-m", *overrides, "sweep.retries=2", "hydra.sweep.dir=s"]) == 1
    out = capsys.readouterr().out
    assert "retrying (retry 1 of 2)" in out and "retrying (retry 2 of 2)" in out
    (record,) = job_records(tmp_path / "s")
    assert (record["status"], record["attempts"]) == ("failed", 3)
    assert record["directory"] == "0_dataset.loader.root=nowhere,dataset.num_classes=2,dataset=imagefolder"
    with (tmp_path / "s" / "report.csv").open(newline="") as file:
        ((row),) = csv.DictReader(file)
    assert (row["attempts"], row["status"]) == ("3", "failed")


@pytest.mark.parametrize(("retry_diverged", "attempts"), [("false", 1), ("true", 3)])
def test_a_diverged_job_is_retried_only_when_asked(retry_diverged, attempts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    diverging = ["optimizer.lr=1e6", "trainer.clip_grad_norm=null", "trainer.epochs=1"]
    args = ["train", "-m", *diverging, "sweep.retries=2", f"sweep.retry_diverged={retry_diverged}"]
    assert main([*args, "hydra.sweep.dir=s"]) == 1
    (record,) = job_records(tmp_path / "s")
    assert record["attempts"] == attempts and record["error"].startswith("loss became non-finite")


def test_a_retry_continues_from_last_pt_and_does_not_train_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real_test = cnnlab.commands.train._test_best
    calls = []

    def test_failing_once(*args, **kwargs):  # the job fails after training, as a full disk would
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk hiccup")
        return real_test(*args, **kwargs)

    monkeypatch.setattr(cnnlab.commands.train, "_test_best", test_failing_once)
    assert main(["train", "-m", "trainer.epochs=2", "sweep.retries=1", "hydra.sweep.dir=s"]) == 0
    out = capsys.readouterr().out
    assert "retrying (retry 1 of 1)" in out and "resuming after its last epoch (2)" in out
    assert out.count("epoch 2/2") == 1  # trained once
    (record,) = job_records(tmp_path / "s")
    assert (record["status"], record["attempts"]) == ("finished", 2)
    found = metrics(tmp_path / "s" / record["directory"])
    assert found["status"] == "finished" and found["test"]["test/acc"] > 0.5 and found["epochs"] == 2
