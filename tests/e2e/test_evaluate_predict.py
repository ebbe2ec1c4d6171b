"""`cnnlab evaluate`, `predict` and `activations` on a real trained run, as a user runs them."""

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import metrics, one_error_line, run_cli
from omegaconf import OmegaConf
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.sources import load_digits


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A 4-epoch digits run (test accuracy ≈ 0.96) and the digits written as 8×8 PNG files.

    held_out/ holds the test split as <index>_<label>.png; folder/ is the same data as an imagefolder.
    """
    root = tmp_path_factory.mktemp("evaluate")
    result = run_cli("train", "trainer.epochs=12", f"hydra.run.dir={root / 'run'}", cwd=root)
    assert result.returncode == 0, result.stderr
    data = load_digits(0.2, 0)
    for part, split in (("train", data.train), ("val", data.test)):
        for i, (image, label) in enumerate(zip(split.images, split.labels.tolist(), strict=True)):
            png = Image.fromarray(image[0].numpy())
            folder = root / "folder" / part / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            png.save(folder / f"{i:03d}.png")
            if part == "val":
                (root / "held_out").mkdir(exist_ok=True)
                png.save(root / "held_out" / f"{i:03d}_{label}.png")
    return root


def cnnlab(capsys, *args: str) -> tuple[int, str, str]:
    """Run `cnnlab ARGS` in this process; (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exit:  # a failure inside the Hydra job
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def evaluation(stdout: str) -> tuple[float, int, int]:
    """(loss, correct, total) from evaluate's result line."""
    found = re.search(r"(?:test|val|train) loss ([\d.]+)  accuracy [\d.]+ \(([\d,]+)/([\d,]+)\)", stdout)
    assert found, stdout
    return float(found[1]), int(found[2].replace(",", "")), int(found[3].replace(",", ""))


def test_evaluate_last_reproduces_the_runs_final_accuracy_exactly(workspace):
    run_dir = workspace / "run"
    result = run_cli(
        "evaluate", f"run={run_dir}", "evaluate.checkpoint=last", "evaluate.split=val", cwd=workspace
    )
    assert result.returncode == 0, result.stderr
    loss, correct, total = evaluation(result.stdout)
    final = metrics(run_dir)["final"]
    assert total == 142  # 10% of each class of the 1,437 training digits
    assert correct / total == final["val/acc"]
    assert loss == round(final["val/loss"], 4)
    assert "(epoch 12)" in result.stdout
    rows = [
        line.split() for line in result.stdout.splitlines() if re.match(r"^\s*\d\s+\d+\s+\d+\s+[\d.]+", line)
    ]
    assert [row[0] for row in rows] == [str(d) for d in range(10)]  # the per-class table
    assert sum(int(row[1]) for row in rows) == 142 and sum(int(row[2]) for row in rows) == correct
    with Image.open(run_dir / "confusion-digits-val-last.png") as png:
        assert png.width > 300 and png.height > 300
    assert not (workspace / "outputs").exists()  # nothing written beside the run
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    assert "trainer.epochs=12" in (run_dir / ".hydra" / "overrides.yaml").read_text()  # training's, untouched


def test_evaluate_best_and_the_train_split(workspace, capsys):
    run_dir = workspace / "run"
    found = metrics(run_dir)
    code, out, _ = cnnlab(capsys, "evaluate", f"run={run_dir}")  # best.pt on test: the run's test figure
    assert code == 0
    _, correct, total = evaluation(out)
    assert total == 360 and correct / total == found["test"]["test/acc"]
    assert f"(epoch {found['best']['epoch']})" in out
    code, out, _ = cnnlab(capsys, "evaluate", f"run={run_dir}", "evaluate.split=val")
    assert code == 0
    _, correct, total = evaluation(out)
    assert correct / total == found["best"]["val/acc"]
    code, out, _ = cnnlab(capsys, "evaluate", f"run={run_dir}", "evaluate.split=train")
    assert code == 0
    _, correct, total = evaluation(out)
    assert total == 1295 and correct / total > 0.95
    assert (run_dir / "confusion-digits-train-best.png").is_file()


def test_evaluate_on_another_dataset_of_the_same_shape(workspace, capsys):
    """The test digits as an imagefolder's val/ (dataset= override): the same images, the same accuracy."""
    run_dir = workspace / "run"
    code, out, err = cnnlab(
        capsys,
        "evaluate",
        f"run={run_dir}",
        "evaluate.split=val",
        "dataset=imagefolder",
        f"dataset.loader.root={workspace / 'folder'}",
        "dataset.num_classes=10",
        "dataset.in_channels=1",
        "dataset.loader.image_size=[8,8]",
    )
    assert code == 0, err
    _, correct, total = evaluation(out)
    assert total == 360 and correct / total == metrics(run_dir)["test"]["test/acc"]
    assert (run_dir / "confusion-imagefolder-val-best.png").is_file()
    folder = [
        f"dataset.loader.root={workspace / 'folder'}",
        "dataset.num_classes=10",
        "dataset.in_channels=1",
    ]
    code, _, err = cnnlab(capsys, "evaluate", f"run={run_dir}", "dataset=imagefolder", *folder)
    assert code == 2 and "has no test split (no test/ folder); use evaluate.split=val" in one_error_line(err)


def test_evaluate_reads_a_run_saved_before_imagefolder_could_stream(workspace, capsys):
    """A config.yaml written by an older cnnlab lacks loader.stream/workers and the split settings:
    today's loader defaults fill in, and the run validated on test as val_fraction=0 does."""
    run_dir = workspace / "folder_run"
    folder = [
        "dataset=imagefolder",
        f"dataset.loader.root={workspace / 'folder'}",
        "dataset.num_classes=10",
        "dataset.in_channels=1",
        "dataset.loader.image_size=[8,8]",
        "resize=28",
    ]
    train = run_cli("train", *folder, "trainer.epochs=2", f"hydra.run.dir={run_dir}", cwd=workspace)
    assert train.returncode == 0, train.stderr
    saved = OmegaConf.load(run_dir / "config.yaml")
    del saved.dataset.loader["stream"], saved.dataset.loader["workers"]
    del saved.dataset["val_fraction"], saved.dataset["split_seed"]
    OmegaConf.save(saved, run_dir / "config.yaml")
    code, out, err = cnnlab(
        capsys, "evaluate", f"run={run_dir}", "evaluate.checkpoint=last", "evaluate.split=val"
    )
    assert code == 0, err
    _, correct, total = evaluation(out)
    assert total == 360 and correct / total == metrics(run_dir)["final"]["val/acc"]


def test_evaluate_refuses_a_dataset_of_another_shape(workspace, capsys):
    code, _, err = cnnlab(capsys, "evaluate", f"run={workspace / 'run'}", "dataset=cifar10")
    assert code == 2
    assert "dataset cifar10 has 3 input channels but the run's model has 1" in one_error_line(err)


def test_predict_is_right_on_held_out_digit_files(workspace, capsys):
    code, out, err = cnnlab(
        capsys,
        "predict",
        f"run={workspace / 'run'}",
        f"input={workspace / 'held_out'}",
        "predict.format=json",
    )
    assert code == 0, err
    results = json.loads(out)  # stdout is one JSON document
    assert len(results) == 360
    right = sum(Path(r["image"]).stem.split("_")[1] == r["top_k"][0]["class"] for r in results)
    assert right / len(results) >= 0.95
    assert (
        right / len(results) == metrics(workspace / "run")["test"]["test/acc"]
    )  # decoded exactly as in training
    for result in results:
        probabilities = [p["probability"] for p in result["top_k"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1 + 1e-6


def test_predict_takes_any_size_and_colour_mode(workspace, capsys, tmp_path):
    """80×80 RGB JPEGs of the same digits are converted back like training data: same answers."""
    originals = sorted((workspace / "held_out").glob("*.png"))[:20]
    for path in originals:
        with Image.open(path) as png:
            png.resize((80, 80), Image.NEAREST).convert("RGB").save(tmp_path / f"{path.stem}.jpg", quality=95)
    answers = {}
    for folder in (workspace / "held_out", tmp_path):
        code, out, _ = cnnlab(
            capsys,
            "predict",
            f"run={workspace / 'run'}",
            f"input={folder}",
            "predict.format=json",
            "predict.top_k=1",
        )
        assert code == 0
        answers[folder] = {Path(r["image"]).stem: r["top_k"][0]["class"] for r in json.loads(out)}
    same = sum(answers[tmp_path][name] == answers[workspace / "held_out"][name] for name in answers[tmp_path])
    assert same >= 18


def test_predict_prints_a_table_of_the_top_k(workspace, capsys):
    image = sorted((workspace / "held_out").glob("*.png"))[0]
    code, out, _ = cnnlab(capsys, "predict", f"run={workspace / 'run'}", f"input={image}", "predict.top_k=2")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["image", "top", "1", "top", "2"]
    assert row.split()[0] == str(image)
    assert len(re.findall(r"\d \d+\.\d%", row)) == 2
    assert row.split()[1] == image.stem.split("_")[1]  # class 7 … at 99.x%


def test_predict_keeps_every_file_name_whole_in_80_columns(workspace, capsys, monkeypatch):
    from cnnlab.console import console

    monkeypatch.setattr(console, "width", 80)
    folder = workspace / "held_out"
    run = f"run={workspace / 'run'}"
    code, out, _ = cnnlab(capsys, "predict", run, f"input={folder}", "predict.top_k=10")
    assert code == 0
    lines = out.strip().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[1].split() == ["image", "rank", "class", "probability"]  # one row per image and rank
    names = [line.split()[0] for line in lines[2:] if not line.startswith(" " * 3)]
    assert names == [path.name for path in sorted(folder.glob("*.png"))]
    assert len(lines) == 2 + 10 * len(names)


def test_activations_draw_every_stage_for_an_image_and_for_noise(workspace, capsys):
    run_dir = workspace / "run"
    image = sorted((workspace / "held_out").glob("*.png"))[0]
    code, digit_out, err = cnnlab(capsys, "activations", f"run={run_dir}", f"input={image}")
    assert code == 0, err
    assert "stage 1: 32 maps of 28x28" in digit_out and "stage 2: 64 maps of 10x10" in digit_out
    with Image.open(run_dir / f"activations-{image.stem}.png") as png:
        assert png.width > 16 * 56 and png.height > 3 * 56  # input, then 6 maps, then 16 maps
    code, noise_out, _ = cnnlab(
        capsys,
        "activations",
        f"run={run_dir}",
        "input=noise",
        f"activations.output={workspace / 'noise.png'}",
    )
    assert code == 0
    assert (workspace / "noise.png").is_file()
    assert digit_out.splitlines()[0] != noise_out.splitlines()[0]  # different inputs, different activity


BAD = [
    (["evaluate", "run=/no/such/run"], "run=/no/such/run does not exist"),
    (["evaluate"], "run is required: set run=…"),
    (["evaluate", "run={root}/held_out"], "is not a cnnlab run directory (no config.yaml)"),
    (
        ["evaluate", "run={root}/run", "evaluate.checkpoint=final"],
        "evaluate.checkpoint='final' is not one of: best, last",
    ),
    (
        ["evaluate", "run={root}/run", "evaluate.split=dev"],
        "evaluate.split='dev' is not one of: test, val, train",
    ),
    (["evaluate", "run={root}/no_best"], "has no best.pt"),
    (
        [
            "evaluate",
            "run={root}/run",
            "dataset=imagefolder",
            "dataset.loader.root={root}/folder",
            "dataset.num_classes=10",
            "dataset.in_channels=1",
            "dataset.loader.workers=-1",
        ],
        "dataset.loader.workers must be an integer ≥ 0, got -1",
    ),
    (["predict", "run={root}/run"], "input is required"),
    (["predict", "run={root}/run", "input={root}/missing.png"], "missing.png does not exist"),
    (["predict", "run={root}/run", "input={root}/notes.txt"], "is not an image file"),
    (["predict", "run={root}/run", "input={root}/broken.png"], "cannot read image"),
    (["predict", "run={root}/run", "input={root}/empty"], "no image files"),
    (["predict", "run={root}/run", "input={root}/held_out", "predict.format=xml"], "predict.format='xml'"),
    (["predict", "run={root}/run", "input={root}/held_out", "predict.top_k=0"], "predict.top_k must be"),
    (
        ["predict", "run={root}/run", "input={root}/held_out", "predict.top_k=50"],
        "predict.top_k=50 is more than the run's 10 classes; give 1 to 10",
    ),
    (
        ["predict", "run={root}/run", "input={root}/held_out", "predict.device=tpu"],
        "predict.device='tpu' is not a device",
    ),
    (["evaluate", "run={root}/run", "evaluate.device=tpu"], "evaluate.device='tpu' is not a device"),
    (["activations", "run={root}/run", "input={root}/held_out"], "is a directory; give one image file"),
    (["activations", "run={root}/run", "input=noise", "activations.output=x.jpg"], "must end in .png"),
]


@pytest.mark.parametrize(("args", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_code_2(workspace, capsys, args, expected):
    (workspace / "notes.txt").write_text("not an image")
    (workspace / "broken.png").write_bytes(b"\x89PNG not really")
    (workspace / "empty").mkdir(exist_ok=True)
    no_best = workspace / "no_best"
    if not no_best.exists():
        shutil.copytree(workspace / "run", no_best, ignore=shutil.ignore_patterns("best.pt"))
    code, _, err = cnnlab(capsys, *(a.format(root=workspace) for a in args))
    assert code == 2
    assert expected in one_error_line(err)
