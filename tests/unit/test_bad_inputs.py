"""A table of bad inputs across every command, run in process as the CLI runs them: each is exit
2 and exactly one line on stderr that names what was wrong and says what to type instead (the other
table: tests/e2e/test_evaluate_predict.py for finished runs)."""

import re

import pytest
from helpers import one_error_line

from cnnlab.cli import main

ONE_CLASS = "one_class"  # a folder with train/a/ only, made by the test in its directory
BAD = [
    (["train", "trainer.eval_batch_size=0"], "trainer.eval_batch_size must be an integer ≥ 1, got 0"),
    (["train", "trainer.seed=-1"], "trainer.seed must be an integer ≥ 0, got -1"),
    (
        ["train", "trainer.checkpoint_every_steps=-5"],
        "trainer.checkpoint_every_steps must be an integer ≥ 0, got -5",
    ),
    (["train", "trainer.visual_every=x"], "trainer.visual_every must be an integer ≥ 0, got 'x'"),
    (["train", "trainer.threads=0"], "trainer.threads must be an integer ≥ 1, got 0"),
    (
        ["train", "trainer.channels_last=maybe"],
        "trainer.channels_last='maybe' is not one of: auto, True, False",
    ),
    (["train", "optimizer.weight_decay=-1"], "optimizer.weight_decay must be a number ≥ 0, got -1"),
    (["train", "scheduler=step", "scheduler.gamma=0"], "scheduler.gamma must be a number > 0, got 0"),
    (["train", "scheduler=cosine", "scheduler.min_lr=-1"], "scheduler.min_lr must be a number ≥ 0, got -1"),
    (["train", "scheduler=onecycle", "scheduler.max_lr=0"], "scheduler.max_lr must be a number > 0, got 0"),
    (["train", "scheduler.warmup_epochs=-1"], "scheduler.warmup_epochs must be a number ≥ 0, got -1"),
    (["train", "loss.label_smoothing=2"], "loss.label_smoothing must be a number ≥ 0 and ≤ 1, got 2"),
    (["train", "trainer.clip_grad_norm=0"], "trainer.clip_grad_norm must be a number > 0, got 0"),
    (["train", "book=0.9"], "book must be null or {test_acc: <a figure or null>, section: <d2l.ai section>}"),
    (
        ["train", "experiment=d2l_lenet", "book.test_acc=78"],
        "book.test_acc must be a number ≥ 0 and ≤ 1, got 78",
    ),
    (
        ["train", "trainer.early_stopping.patience=-1"],
        "trainer.early_stopping.patience must be an integer ≥ 0, got -1",
    ),
    (
        ["train", "trainer.early_stopping.min_delta=-0.1"],
        "trainer.early_stopping.min_delta must be a number ≥ 0, got -0.1",
    ),
    (["train", "trainer.health_check=2"], "trainer.health_check must be a number ≥ 0 and ≤ 1, got 2"),
    (["train", "trainer.stop_if_stuck=maybe"], "trainer.stop_if_stuck must be true or false, got 'maybe'"),
    (["train", "dataset.val_fraction=0.95"], "dataset.val_fraction must be a number ≥ 0 and ≤ 0.9, got 0.95"),
    (["train", "dataset.split_seed=-2"], "dataset.split_seed must be an integer ≥ 0, got -2"),
    (["train", "dataset=nope"], "unknown dataset 'nope'"),
    (["train", "scheduler=nope"], "unknown scheduler 'nope' (did you mean none?)"),
    (["train", "loss=nope"], "unknown loss 'nope'"),
    (["train", "augment=nope"], "unknown augment 'nope' (did you mean none?)"),
    (["train", "experiment=nope"], "unknown experiment 'nope'"),
    (["train", "debug=nope"], "unknown debug 'nope'"),
    (["lr-find", "lr_find.max_lr=1e-8"], "lr_find.max_lr must be a number > 1e-07, got 1e-08"),
    (["lr-find", "lr_find.steps=1"], "lr_find.steps must be an integer ≥ 2, got 1"),
    (["train", "trainer.profile=maybe"], "trainer.profile must be true or false, got 'maybe'"),
    (["train", "trainer.detect_anomaly=1"], "trainer.detect_anomaly must be true or false, got 1"),
    (["lr-find", "lr_find.explode=1"], "lr_find.explode must be a number > 1, got 1"),
    (["lr-find", "trainer.batch_size=0"], "trainer.batch_size must be an integer ≥ 1, got 0"),
    (["train", "trainer.limit_batches=0"], "trainer.limit_batches must be null (all batches), a count of"),
    (["train", "trainer.limit_batches=1.5"], "trainer.limit_batches must be a number > 0 and ≤ 1, got 1.5"),
    (["train", "trainer.limit_batches=x"], "trainer.limit_batches must be null (all batches), a count of"),
    (["train", "trainer.overfit_batches=-1"], "trainer.overfit_batches must be an integer ≥ 0, got -1"),
    (
        ["train", "trainer.early_stopping.target=0"],
        "trainer.early_stopping.target must be a number > 0 and ≤ 1, got 0",
    ),
    (["train", "augment.mixup_alpha=-1"], "augment.mixup_alpha must be a number ≥ 0, got -1"),
    (["train", "augment.cutmix_alpha=-1"], "augment.cutmix_alpha must be a number ≥ 0, got -1"),
    (["train", "augment.random_erasing=2"], "augment.random_erasing must be a number ≥ 0 and ≤ 1, got 2"),
    (["train", "augment.mix_prob=2"], "augment.mix_prob must be a number ≥ 0 and ≤ 1, got 2"),
    (["train", "augment.crop=weird"], "augment.crop='weird' is not one of: none, padded, resized"),
    (["train", "augment.padding=-1"], "augment.padding must be an integer ≥ 0, got -1"),
    (["train", "augment.flip=maybe"], "augment.flip must be true or false, got 'maybe'"),
    (
        ["train", "augment=standard", "augment.scale=[0.5]"],
        "augment.scale must be [low, high] with 0 < low ≤ high ≤ 1, got [0.5]",
    ),
    (
        ["train", "augment=standard", "augment.ratio=[2,1]"],
        "augment.ratio must be [low, high] with 0 < low ≤ high, got [2, 1]",
    ),
    (["train", "model.init=weird"], "model lenet_modern: unknown init 'weird'"),
    (["train", "trainer.device=cuda:7"], "trainer.device=cuda:7 but this machine has no usable CUDA GPU"),
    (["train", "trainer.epochs=0"], "trainer.epochs must be an integer ≥ 1, got 0"),
    (["train", "trainer.epochs=abc"], "trainer.epochs must be an integer ≥ 1, got 'abc'"),
    (["train", "hydra/launcher=nope"], "unknown hydra/launcher 'nope'"),
    (
        ["train", "dataset.loader.memory_budget=2"],
        "unknown config key 'dataset.loader.memory_budget' (did you mean",
    ),
    (["train", "optimizer.lr=-0.1"], "optimizer.lr must be a number > 0, got -0.1"),
    (["train", "optimizer=adam", "optimizer.lr=0"], "optimizer.lr must be a number > 0, got 0"),
    (["train", "trainer.precision=64"], "trainer.precision='64' is not one of: auto, 32, bf16, 16"),
    (["summary", "model=nope"], "unknown model 'nope'"),
    (["summary", "summary.depth=0"], "summary.depth must be an integer ≥ 1, got 0"),
    (["summary", "summary.format=xml"], "summary.format='xml' is not one of: table, json"),
    (
        ["summary", "resize=2"],
        "model lenet_modern cannot take 2×2 inputs: the smallest size it accepts is 12×12",
    ),
    (
        ["summary", "model=vgg_small", "resize=16"],
        "model vgg cannot take 16×16 inputs: the smallest size it accepts is 32×32",
    ),
    (["kernel-learn", "lr=-1"], "lr must be a number > 0, got -1"),
    (["kernel-learn", "epochs=0"], "epochs must be an integer ≥ 1, got 0"),
    (["kernel-learn", "target=nope"], "unknown target 'nope'"),
    (["kernel-learn", "impl=nope"], "impl='nope' is not one of: scratch, torch"),
    (["kernel-learn", "image=nope"], "unknown image 'nope' (did you mean noise?)"),
    (["evaluate"], "run is required: set run=…"),
    (["evaluate", "run=/nope"], "run=/nope does not exist"),
    (
        ["evaluate", "run=/tmp", "evaluate.checkpoint=middle"],
        "evaluate.checkpoint='middle' is not one of: best, last",
    ),
    (["predict", "run=/nope", "input=x.png"], "run=/nope does not exist"),
    (["activations", "run=/nope", "input=noise"], "run=/nope does not exist"),
    (["report", "/nope"], "/nope does not exist"),
    (["report"], "the following arguments are required: directory"),
    # train's composition: groups, keys, values, paths, resume
    (["train", "model=nope"], "unknown model 'nope'"),
    (["train", "dataset=imagenet"], "unknown dataset 'imagenet'"),
    (["train", "optimizer=sgdd"], "did you mean sgd?"),
    (["train", "scheduler=warmup"], "unknown scheduler 'warmup'"),
    (["train", "trainer.batch_size=0"], "trainer.batch_size must be an integer ≥ 1, got 0"),
    (["train", "trainer.epochs=two"], "trainer.epochs must be an integer ≥ 1, got 'two'"),
    (["train", "trainer.epochs=1.5"], "trainer.epochs must be an integer ≥ 1, got 1.5"),
    (["train", "optimizer.lr=abc"], "optimizer.lr must be a number > 0, got 'abc'"),
    (["train", "optimizer.lr=-0.1"], "optimizer.lr must be a number > 0"),
    (["train", "optimizer.momentum=1.5"], "optimizer.momentum must be a number ≥ 0 and ≤ 1"),
    (["train", "resize=-3"], "resize must be a positive int, [height, width] or null, got -3"),
    (["train", "resize=[28]"], "resize must be a positive int, [height, width] or null"),
    (["train", "resize=4"], "cannot take 4×4 inputs: the smallest size it accepts is 12×12; set resize=12"),
    (["train", "model=lenet", "resize=[28,8]"], "the smallest size it accepts is 12×12"),
    (["train", "trainer.device=cuda"], "trainer.device=cuda but this machine has no usable CUDA GPU"),
    (["train", "trainer.device=tpu"], "trainer.device='tpu' is not a device"),
    (
        ["train", "scheduler=step", "scheduler.step_epochs=0"],
        "scheduler.step_epochs must be a number > 0, got 0",
    ),
    (
        ["train", "scheduler=onecycle", "scheduler.warmup_epochs=0", "scheduler.pct_start=2"],
        "scheduler.pct_start must be a number > 0 and ≤ 1, got 2",
    ),
    (
        ["train", "hydra.run.dir=/dev/null/run"],
        "hydra.run.dir=/dev/null/run cannot be created (Not a directory)",
    ),
    (
        ["train", "-m", "hydra.sweep.dir=/dev/null/s", "trainer.seed=0,1"],
        "hydra.sweep.dir=/dev/null/s cannot be created",
    ),
    (["train", "trainer.precision=8"], "trainer.precision='8' is not one of: auto, 32, bf16, 16"),
    (["train", "trainer.precision=16"], "trainer.precision=16 needs a CUDA GPU"),
    (
        ["train", "trainer.compile=cudagraphs"],
        "trainer.compile=cudagraphs records CUDA graphs and needs a CUDA GPU",
    ),
    (
        ["train", "trainer.compile=fast"],
        "trainer.compile='fast' is not one of: False, True, auto, cudagraphs",
    ),
    (
        ["train", "trainer.batchsize=3"],
        "unknown config key 'trainer.batchsize' (did you mean trainer.batch_size?)",
    ),
    (["train", "precision=bf16"], "did you mean trainer.precision?"),
    (["train", "lr"], "Error parsing override 'lr'"),
    (["train", "dataset=imagefolder"], "dataset.loader.root is required"),
    (
        ["train", "dataset=imagefolder", "dataset.loader.root=/x"],
        "imagefolder expects /x/train/<class>/<image>",
    ),
    (
        ["train", "dataset.loader.test_fraction=1.5"],
        "dataset.loader.test_fraction must be a number > 0 and ≤ 0.9",
    ),
    (
        [
            "train",
            "dataset=imagefolder",
            "dataset.loader.root=/x",
            "dataset.num_classes=3",
            "dataset.loader.stream='False'",
        ],
        "dataset.loader.stream must be auto, true or false, got 'False'",
    ),
    (["train", "trainer.resume=/no/such/run"], "no last.pt in /no/such/run"),
    (["train", "trainer.resume=latest"], "trainer.resume=latest: no run under outputs/"),
    (["train", "sweep.retries=-1"], "sweep.retries must be an integer ≥ 0, got -1"),
    (["train", "sweep.retry_diverged=2"], "sweep.retry_diverged must be true or false, got 2"),
    (["train", "sweep.jobs_per_gpu=0"], "sweep.jobs_per_gpu must be an integer ≥ 1, got 0"),
    (["train", "sweep.resume=latest"], "sweep.resume=latest resumes a sweep: add -m and the sweep's own"),
    (["train", "-m", "sweep.resume=latest"], "sweep.resume=latest: no sweep under outputs/train-sweeps"),
    (["train", "-m", "sweep.resume=nowhere", "trainer.seed=0,1"], "nowhere holds no sweep (no .jobs/"),
    (["train", "-m", "optimizer.lr=0.1,abc"], "optimizer.lr must be a number > 0, got 'abc'"),
    (
        ["train", "optimizer.lr=0.1,0.01"],
        "a comma-separated list is a sweep; add -m (cnnlab train -m optimizer.lr=0.1,0.01)",
    ),
    (["train", "augment.random_erasing=2"], "augment.random_erasing must be a number ≥ 0 and ≤ 1, got 2"),
    (["train", "augment.flip=sometimes"], "augment.flip must be true or false, got 'sometimes'"),
    (["train", "augment.cutmix_alpha=x"], "augment.cutmix_alpha must be a number ≥ 0, got 'x'"),
    (["train", "trainer.health_check=2"], "trainer.health_check must be a number ≥ 0 and ≤ 1, got 2"),
    (["train", "trainer.stop_if_stuck=maybe"], "trainer.stop_if_stuck must be true or false, got 'maybe'"),
    (
        ["train", "dataset=imagefolder", "dataset.loader.root=/x", "dataset.loader.memory_budget=2"],
        "dataset.loader.memory_budget must be a number > 0 and ≤ 1, got 2",
    ),
    (
        ["train", "dataset=imagefolder", "dataset.loader.root=/x", "dataset.loader.workers=-1"],
        "dataset.loader.workers must be an integer ≥ 0, got -1",
    ),
    (["summary", "summary.format=csv"], "summary.format='csv' is not one of: table, json"),
    (
        ["train", "dataset=imagefolder", f"dataset.loader.root={ONE_CLASS}"],
        "has only a/ under train/: a classifier needs at least two",
    ),
    (["examples", "a", "b"], "unrecognized arguments: b; usage: cnnlab examples [directory]"),
    (["examples", "/dev/null/x"], "/dev/null/x"),
]

# What counts as saying what to do instead: an example, the valid choices, or an instruction.
FIX = re.compile(r"e\.g\.|choose |is not one of|set |give |use |usage: |pass |add |check that ")


@pytest.mark.parametrize(("args", "expected"), BAD, ids=[" ".join(args) for args, _ in BAD])
def test_a_bad_input_is_one_line_naming_it_with_a_fix_and_exit_2(
    args, expected, capsys, monkeypatch, tmp_path
):
    if any(word in " ".join(args) for word in ("cuda", "precision=16", "cudagraphs")):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ONE_CLASS / "train" / "a").mkdir(parents=True)
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"cnnlab {args[0]}: error: ")
    assert expected in line
    assert FIX.search(line), line
    assert not (tmp_path / "outputs").exists(), "nothing may be written before the input is valid"
