"""Sweeps that train nothing (a summary sweep, a job failing before training, Slurm off a cluster): the
jobs' records and one-line errors; and the Slurm preset."""

import csv

import pytest
from helpers import job_records, metrics, one_error_line, sweep_dir
from hydra import compose, initialize_config_module

from cnnlab.cli import main


def test_job_failing_before_training_leaves_a_failed_record(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = [
        "dataset=imagefolder",
        f"dataset.loader.root={tmp_path / 'nowhere'}",
        "dataset.num_classes=2",
    ]
    assert main(["train", "-m", *overrides]) == 1
    err = capsys.readouterr().err
    assert "1 job(s) failed" in err and "imagefolder expects" in err
    sweep = sweep_dir(tmp_path)
    (record,) = job_records(sweep)
    assert record["status"] == "failed" and record["error"].startswith("imagefolder expects")
    (written,) = sweep.rglob("metrics.json")  # the job's own record of how it ended
    found = metrics(written.parent)
    assert (found["status"], found["error"], found["epochs"]) == ("failed", record["error"], 0)
    with (sweep / "report.csv").open(newline="") as file:
        (row,) = csv.DictReader(file)
    assert (row["status"], row["error"], row["best_val_acc"]) == ("failed", record["error"], "")


def test_sweep_of_a_command_that_trains_nothing_prints_no_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "-m", "model=lenet,lenet_modern"]) == 0
    assert "cnnlab report" not in capsys.readouterr().out
    assert [record["status"] for record in job_records(sweep_dir(tmp_path))] == ["finished", "finished"]


def test_slurm_preset_sets_one_training_process_per_job():
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    with initialize_config_module(config_module="cnnlab.configs", version_base="1.3"):
        launcher = compose("train", overrides=overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.tasks_per_node, launcher.gpus_per_node) == ("gpu", 1, 1)
    assert launcher.timeout_min == 60 and launcher.cpus_per_task == 8


def test_slurm_launcher_off_a_cluster_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun on it
    with pytest.raises(SystemExit) as exit:
        main(["train", "-m", "hydra/launcher=slurm", "optimizer.lr=0.1,0.01"])
    assert exit.value.code == 2
    assert "run the sweep on the cluster's login node" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "outputs").exists()  # nothing submitted, nothing written
