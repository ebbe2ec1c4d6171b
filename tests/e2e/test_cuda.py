"""CUDA paths (skipped without a GPU): device-resident data, auto precision, fp16 scaler, checkpoints."""

import pytest
import torch
from helpers import metrics, run_dirs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_device_trains_on_the_gpu_in_bf16_and_reaches_the_cpu_accuracy(cli):
    result = cli("train", "trainer.epochs=20")
    assert result.returncode == 0, result.stderr
    assert "on cuda" in result.stdout and "precision bf16, compile cudagraphs" in result.stdout
    found = metrics(run_dirs(cli.cwd)[0])
    assert found["final"]["val/acc"] >= 0.95


def test_cuda_graphs_train_as_the_eager_step_does(cli):
    """compile=auto (CUDA graphs) and the eager step reach the same accuracy from the same seed."""
    accuracy = {}
    for setting in ("auto", "false"):
        result = cli("train", "trainer.epochs=10", f"trainer.compile={setting}", "trainer.precision=32")
        assert result.returncode == 0, result.stderr
        accuracy[setting] = metrics(run_dirs(cli.cwd)[-1])["final"]["val/acc"]
    assert accuracy["auto"] >= 0.95
    assert abs(accuracy["auto"] - accuracy["false"]) <= 0.02


@pytest.mark.parametrize("precision", ["32", "16"])
def test_explicit_precisions_train(cli, precision):
    result = cli("train", "trainer.device=cuda:0", f"trainer.precision={precision}", "trainer.epochs=5")
    assert result.returncode == 0, result.stderr
    assert metrics(run_dirs(cli.cwd)[0])["final"]["val/acc"] > 0.85


def test_a_gpu_checkpoint_resumes_on_the_cpu(cli):
    assert cli("train", "trainer.device=cuda", "trainer.epochs=1").returncode == 0
    (run_dir,) = run_dirs(cli.cwd)
    result = cli("train", f"trainer.resume={run_dir}", "trainer.device=cpu", "trainer.epochs=2")
    assert result.returncode == 0, result.stderr
    assert metrics(run_dir)["epochs"] == 2


def test_bad_gpu_index_is_one_line(cli):
    result = cli("train", f"trainer.device=cuda:{torch.cuda.device_count()}")
    assert result.returncode == 2
    assert "CUDA device(s) exist" in result.stderr


@pytest.mark.parametrize(
    ("mode", "resize", "channels_last"),
    [("reduce-overhead", "96", "auto"), ("true", "32", "false")],
)
def test_resnet18_compiled_on_gpu(cli, mode, resize, channels_last):
    # torch 2.11's inductor mislays a grad's strides for channels-last convs on 1×1 feature maps
    # (ResNet-18 at 32×32): the second case is the documented workaround, channels_last=false.
    result = cli(
        "train",
        "model=resnet18",
        f"resize={resize}",
        "trainer.epochs=2",
        f"trainer.compile={mode}",
        f"trainer.channels_last={channels_last}",
        "trainer.batch_size=128",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = metrics(run_dirs(cli.cwd)[0])
    assert found["status"] == "finished" and found["epochs"] == 2
    if resize == "96":  # 24 steps at 32×32 leave ResNet-18 at chance; at 96×96 it learns
        # Training accuracy, not val: after 24 steps BatchNorm's running statistics still lag, so
        # val/acc swings (0.12–0.41 on an H100 with compile false, true and reduce-overhead alike).
        assert found["final"]["train/acc"] > 0.8
