"""The command line in-process: help, unknown commands, and one-line errors for bad input."""

import pytest
from helpers import one_error_line

from cnnlab.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name}" in out


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "usage: cnnlab <command>" in capsys.readouterr().out


def test_unknown_command_lists_commands(capsys):
    assert main(["trian"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "unknown command 'trian' (did you mean train?)" in line
    assert "train" in line.split("choose one of:")[1]


# Each bad input is refused before any work: exit 2, one line that names the problem.
BAD_INPUTS = [
    (["model=nope"], "unknown model 'nope'"),
    (["dataset=imagenet"], "unknown dataset 'imagenet'"),
    (["optimizer=sgdd"], "did you mean sgd?"),
    (["scheduler=warmup"], "unknown scheduler 'warmup'"),
    (["trainer.batch_size=0"], "trainer.batch_size must be an integer ≥ 1, got 0"),
    (["trainer.epochs=two"], "trainer.epochs must be an integer ≥ 1, got 'two'"),
    (["trainer.epochs=1.5"], "trainer.epochs must be an integer ≥ 1, got 1.5"),
    (["optimizer.lr=abc"], "optimizer.lr must be a number > 0, got 'abc'"),
    (["optimizer.lr=-0.1"], "optimizer.lr must be a number > 0"),
    (["optimizer.momentum=1.5"], "optimizer.momentum must be a number ≥ 0 and ≤ 1"),
    (["resize=-3"], "resize must be a positive int, [height, width] or null, got -3"),
    (["resize=[28]"], "resize must be a positive int, [height, width] or null"),
    (["resize=4"], "cannot take 4×4 inputs: the smallest size it accepts is 12×12; set resize=12"),
    (["model=lenet", "resize=[28,8]"], "the smallest size it accepts is 12×12"),
    (["trainer.device=cuda"], "trainer.device=cuda but this machine has no usable CUDA GPU"),
    (["trainer.device=tpu"], "trainer.device='tpu' is not a device"),
    (["scheduler=step", "scheduler.step_epochs=0"], "scheduler.step_epochs must be a number > 0, got 0"),
    (
        ["scheduler=onecycle", "scheduler.warmup_epochs=0", "scheduler.pct_start=2"],
        "scheduler.pct_start must be a number > 0 and ≤ 1, got 2",
    ),
    (["hydra.run.dir=/dev/null/run"], "hydra.run.dir=/dev/null/run cannot be created (Not a directory)"),
    (
        ["-m", "hydra.sweep.dir=/dev/null/s", "trainer.seed=0,1"],
        "hydra.sweep.dir=/dev/null/s cannot be created",
    ),
    (["trainer.precision=8"], "trainer.precision='8' is not one of: auto, 32, bf16, 16"),
    (["trainer.precision=16"], "trainer.precision=16 needs a CUDA GPU"),
    (["trainer.compile=cudagraphs"], "trainer.compile=cudagraphs records CUDA graphs and needs a CUDA GPU"),
    (["trainer.compile=fast"], "trainer.compile='fast' is not one of: False, True, auto, cudagraphs"),
    (["trainer.batchsize=3"], "unknown config key 'trainer.batchsize' (did you mean trainer.batch_size?)"),
    (["precision=bf16"], "did you mean trainer.precision?"),
    (["lr"], "Error parsing override 'lr'"),
    (["dataset=imagefolder"], "dataset.loader.root is required"),
    (["dataset=imagefolder", "dataset.loader.root=/x"], "imagefolder expects /x/train/<class>/<image>"),
    (["dataset.loader.test_fraction=1.5"], "dataset.loader.test_fraction must be a number > 0 and ≤ 0.9"),
    (
        [
            "dataset=imagefolder",
            "dataset.loader.root=/x",
            "dataset.num_classes=3",
            "dataset.loader.stream='False'",
        ],
        "dataset.loader.stream must be auto, true or false, got 'False'",
    ),
    (["trainer.resume=/no/such/run"], "no last.pt in /no/such/run"),
    (["trainer.resume=latest"], "trainer.resume=latest: no run under outputs/"),
    (["-m", "optimizer.lr=0.1,abc"], "optimizer.lr must be a number > 0, got 'abc'"),
    (
        ["optimizer.lr=0.1,0.01"],
        "a comma-separated list is a sweep; add -m (cnnlab train -m optimizer.lr=0.1,0.01)",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(overrides, expected, capsys, monkeypatch, tmp_path):
    if any(word in " ".join(overrides) for word in ("cuda", "precision=16", "cudagraphs")):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    assert main(["train", *overrides]) == 2
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert expected in line
    assert not (tmp_path / "outputs").exists(), "nothing may be written before the config is valid"
