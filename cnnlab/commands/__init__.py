"""The commands, one module each. This table names them for the CLI without importing any (their
modules import torch): a command's module is imported when it has work to do."""

from cnnlab.app.command import HydraCommand, PlainCommand

COMMANDS: dict[str, HydraCommand | PlainCommand] = {
    command.name: command
    for command in (
        HydraCommand("train", "train a model on a dataset (Hydra overrides; -m sweeps)", "train"),
        HydraCommand(
            "summary",
            "per-layer output shapes, parameters and mult-adds of a model",
            "summary",
            # train's groups that a summary does not use
            ("augment", "optimizer", "scheduler", "loss", "trainer", "hparams_search", "debug"),
        ),
        HydraCommand(
            "lr-find", "a learning rate for a run: the range test on its own training step", "lr_find"
        ),
        HydraCommand("kernel-learn", "learn a convolution kernel from data (d2l 7.2.4)", "kernel_learn"),
        HydraCommand(
            "evaluate",
            "loss, accuracy, per-class table, confusion matrix of a run",
            "evaluate",
            ("augment", "trainer"),
        ),
        HydraCommand("predict", "top-k classes of image files with a trained run", "predict"),
        HydraCommand("activations", "PNG of a trained run's feature maps for one input", "activations"),
        PlainCommand("report", "compare runs: a table of a sweep's or all runs' results"),
        PlainCommand("examples", "write the example files the README uses: digits and a photo folder"),
    )
}
