"""The command line as a user runs it: Hydra's help and flags, shell completion, and `--help` without
importing torch."""

import subprocess
import sys

import pytest
from helpers import run_cli


def test_hydra_help_shows_groups_and_options(cli):
    result = cli("train", "--help")
    assert result.returncode == 0, result.stderr
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert {"lenet", "lenet_modern"} <= set(groups["model"].split(", "))
    assert "dataset: cifar10, digits, fashion_mnist, imagefolder, mnist" in result.stdout
    assert "optimizer: adam, adamw, sgd" in result.stdout
    assert "scheduler: cosine, none, onecycle, step" in result.stdout


def test_help_explains_each_option_with_its_comment_without_importing_torch(tmp_path):
    code = (
        "import sys; from cnnlab.cli import main; code = main(['train', '--help']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "augment: crop_flip, none, standard  (default: none)" in result.stdout
    assert "# augment=none (configs/augment/none.yaml)" in result.stdout
    assert "mixup_alpha: 0.0      # > 0: mixup (Zhang 2018)" in result.stdout  # the YAML's own comment
    assert "hydra:" not in result.stdout and "defaults:" not in result.stdout


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("cnnlab ", {"train", "summary", "kernel-learn", "evaluate", "predict", "activations", "report"}),
        ("cnnlab ev", {"evaluate"}),
        ("cnnlab train model=", {"model=lenet", "model=lenet_modern", "model=resnet18"}),
        ("cnnlab train optimizer.l", {"optimizer.lr="}),
        ("cnnlab summary augment=", {"augment=crop_flip", "augment=none", "augment=standard"}),
    ],
)
def test_shell_completion_completes_commands_groups_and_keys(tmp_path, line, expected):
    env = {"COMP_LINE": line, "COMP_POINT": str(len(line))}
    result = run_cli("-sc", "query=bash", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert expected <= set(result.stdout.split())


def test_the_installed_completion_script_registers_cnnlab_and_queries_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "-sc", "install=bash"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("-F hydra_bash_completion cnnlab")
    assert "$helper -sc query=bash" in result.stdout


def test_cfg_job_prints_the_composed_config_with_dataset_values_flowing_into_the_model(cli):
    result = cli("train", "--cfg", "job", "--resolve", "dataset=cifar10", "model=lenet")
    assert result.returncode == 0, result.stderr
    import yaml

    cfg = yaml.safe_load(result.stdout)
    assert cfg["model"]["in_channels"] == 3 and cfg["model"]["num_classes"] == 10
    assert cfg["model"]["name"] == "lenet"
    assert not (cli.cwd / "outputs").exists()


def test_info_runs(cli):
    result = cli("train", "--info", "config")
    assert result.returncode == 0, result.stderr
    assert "Config search path" in result.stdout


def test_experiment_preset_sets_the_books_lenet_run(cli):
    result = cli("train", "--cfg", "job", "--resolve", "experiment=d2l_lenet")
    assert result.returncode == 0, result.stderr
    import yaml

    cfg = yaml.safe_load(result.stdout)
    assert cfg["dataset"]["name"] == "fashion_mnist"
    assert cfg["model"]["name"] == "lenet" and cfg["model"]["init"] == "xavier"
    assert cfg["optimizer"] == {**cfg["optimizer"], "name": "sgd", "lr": 0.1, "momentum": 0.0}
    assert cfg["trainer"]["batch_size"] == 128 and cfg["trainer"]["epochs"] == 10


def test_help_into_a_pipe_closed_early_is_not_a_traceback(tmp_path):
    """`cnnlab train --help | head -3`: the reader stops; cnnlab exits 0 without a word."""
    result = subprocess.run(
        f"'{sys.executable}' -m cnnlab train --help | head -3", shell=True, capture_output=True, text=True,
        cwd=tmp_path, executable="/bin/bash",
    )  # fmt: skip
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 3
    assert result.stderr == "", result.stderr
