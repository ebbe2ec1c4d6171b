"""What a new user trips over: resuming a run to more epochs or one that is done, keys no code reads,
a batch larger than the data, and the thread count every CPU figure depends on."""

from helpers import metrics, one_error_line, run_dirs

SHORT = ("trainer.epochs=2", "scheduler=step", "scheduler.warmup_epochs=0", "trainer.visual_every=0")


def test_resume_latest_extends_the_newest_run_and_a_finished_run_is_one_line(cli):
    assert cli("train", *SHORT).returncode == 0
    run_dir = run_dirs(cli.cwd)[0]
    done = cli("train", "trainer.resume=latest", *SHORT)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "has finished all 2 of its epochs, so there is nothing to resume" in line
    assert "extend it with trainer.epochs=12" in line
    longer = cli("train", "trainer.resume=latest", *SHORT, "trainer.epochs=3")  # later wins
    assert longer.returncode == 0, longer.stderr
    assert "resume changes: trainer.epochs 2 → 3" in longer.stdout
    assert run_dirs(cli.cwd) == [run_dir]  # the same run, extended
    record = metrics(run_dir)
    assert (record["status"], record["epochs"]) == ("finished", 3)
    fewer = cli("train", f"trainer.resume={run_dir}", "trainer.epochs=1")
    assert fewer.returncode == 2
    assert "trainer.epochs=1 is fewer than the 3 epochs the run has trained" in one_error_line(fewer.stderr)


def test_unread_keys_and_a_batch_larger_than_the_data_warn_and_the_run_records_its_threads(cli):
    result = cli(
        "train",
        "trainer.epochs=1",
        "trainer.visual_every=0",
        "trainer.batch_size=5000",
        "+foo=1",
        "+trainer.bacth_size=8",
        "trainer.threads=1",
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "cnnlab train: warning: +foo adds a key cnnlab does not read: it changes nothing "
        "(`cnnlab train --cfg job` lists the keys it reads)",
        "cnnlab train: warning: +trainer.bacth_size adds a key cnnlab does not read: it changes nothing "
        "(`cnnlab train --cfg job` lists the keys it reads)",
    ]
    assert (
        "warning: trainer.batch_size=5000 is more than the 1,295 training images: every epoch is one step "
        "on a batch of 1,295" in result.stdout
    )
    record = metrics(run_dirs(cli.cwd)[0])
    assert record["steps"] == 1 and record["threads"] == 1
