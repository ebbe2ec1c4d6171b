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


@pytest.mark.parametrize(
    ("command", "groups"),
    [
        (
            "train",
            {
                "augment",
                "dataset",
                "model",
                "optimizer",
                "scheduler",
                "loss",
                "trainer",
                "experiment",
                "debug",
            },
        ),
        ("summary", {"dataset", "model", "experiment"}),
        ("evaluate", {"dataset"}),
        ("predict", set()),
    ],
)
def test_help_lists_only_the_groups_the_command_takes(capsys, command, groups):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    header = "== Config groups (group=option) ==\n"
    assert (header in text) == bool(groups)  # no empty header
    section = text.split(header)[1].split("\n\n")[0] if header in text else ""
    assert {line.split(":")[0] for line in section.splitlines()} - {"hparams_search"} == groups
