"""The training bar on a terminal: running loss and accuracy, the whole run's remaining time, the
evaluation pass."""

import time

from cnnlab.training.logging import RunLogger


def test_the_bar_shows_running_figures_the_runs_eta_and_the_evaluation(tmp_path):
    logger = RunLogger(tmp_path, epochs=3)
    logger.interactive = True
    asked = []

    def running():
        asked.append(1)
        return 0.51234, 0.75

    logger.start_epoch(2, images=100, running=running)
    logger.advance(10)
    task = logger._progress.tasks[0]
    assert task.fields["running"].startswith("loss 0.512 acc 0.750")
    logger.advance(10)  # within half a second: the device is not asked again
    assert len(asked) == 1
    time.sleep(0.6)
    logger.advance(10)
    assert len(asked) == 2
    assert task.completed == 30
    # ~33 img/s with 70 images left this epoch and 100 in the last: a few seconds, both counted
    assert task.speed and "run ETA 0:00:" in task.fields["running"]
    logger.evaluating("validating")
    assert task.description == "epoch 2/3 · validating…"
    logger.close()
