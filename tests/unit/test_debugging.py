"""The debugging kit's library half: the anomaly hooks name the module that first goes non-finite, in
the forward or the backward, and `fit` says at which step; trainer.limit_batches' counting."""

import pytest
import torch
from helpers import loop_settings
from torch import nn

from cnnlab.data.batches import Preprocess
from cnnlab.data.sources import Dataset, Split
from cnnlab.training.anomaly import Anomaly, watch_for_anomalies
from cnnlab.training.loop import BatchLoss, Diverged, LoopSettings, RunState, Training, evaluate, fit, limited


class NaNGradient(torch.autograd.Function):
    """The identity forward, a NaN backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, gradient):
        return gradient * float("nan")


class Poison(nn.Module):
    """The identity until call number `at` (1-based) in training mode; from then on NaN in `phase`."""

    def __init__(self, phase: str, at: int = 1) -> None:
        super().__init__()
        self.phase, self.at, self.calls = phase, at, 0

    def forward(self, x):
        self.calls += self.training
        if self.calls < self.at:
            return x
        return x * float("nan") if self.phase == "forward" else NaNGradient.apply(x)


def stack(poison_at: int, phase: str, layers: int = 5) -> nn.Sequential:
    """Linear/Tanh layers with a Poison module at index `poison_at`."""
    modules: list[nn.Module] = [nn.Linear(4, 4) if i % 2 == 0 else nn.Tanh() for i in range(layers)]
    modules.insert(poison_at, Poison(phase))
    return nn.Sequential(nn.Flatten(), *modules, nn.Linear(4, 2))


def step(model: nn.Module) -> None:
    model(torch.randn(8, 1, 2, 2)).logsumexp(1).mean().backward()


@pytest.mark.parametrize("phase", ["forward", "backward"])
@pytest.mark.parametrize("position", [1, 3, 5])
def test_the_anomaly_hooks_name_the_chosen_layer_and_its_phase(position, phase):
    model = stack(position, phase)
    with watch_for_anomalies(model), pytest.raises(Anomaly) as found:
        step(model)
    index = str(position + 1)  # after the Flatten
    assert (found.value.module, found.value.phase) == (f"{index} (Poison)", phase)
    what = "a value" if phase == "forward" else "a gradient"
    assert str(found.value).startswith(f"{what} became non-finite in the {phase} of {index} (Poison)")
    assert all(not module._forward_hooks for module in model.modules())  # removed on the way out


def test_a_non_finite_value_made_between_submodules_names_the_enclosing_module():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.second(torch.log(self.first(x) - 100.0))  # log of negatives: NaN, in no submodule

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), Block(), nn.Linear(4, 2))
    with watch_for_anomalies(model), pytest.raises(Anomaly, match=r"in the forward of 2 \(Block\)"):
        step(model)


def test_finite_steps_and_forwards_only_pass_and_evaluation_is_not_watched():
    model = stack(3, "backward")
    with watch_for_anomalies(model, backward=False):  # float16 training: forwards only
        step(model)
    model = stack(3, "forward")
    with watch_for_anomalies(model), torch.inference_mode():
        assert model(torch.randn(8, 1, 2, 2)).isnan().all()  # evaluation reports its loss instead


class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def training_of(model: nn.Module, loop: LoopSettings) -> Training:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    forward = BatchLoss(model, Preprocess(None), "32", label_smoothing=0.0)
    schedule = torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return Training(model, forward, Preprocess(None), optimizer, schedule, scaler, loop, (2, 2), False, None)


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_fit_with_detect_anomaly_stops_at_the_step_and_names_the_module(phase):
    split = Split(torch.randint(0, 256, (16, 1, 2, 2), dtype=torch.uint8), torch.arange(16) % 2)
    model = stack(3, phase)
    model[4].at = 7  # the 7th training step: epoch 2 (4 steps an epoch), its 3rd step
    with pytest.raises(Diverged) as diverged:
        fit(
            training_of(model, loop_settings(detect_anomaly=True)),
            Dataset(split, split, None, ["a", "b"]),
            RunState(),
            Quiet(),
            Quiet(),
        )
    what = "a value" if phase == "forward" else "a gradient"
    assert str(diverged.value).startswith(
        f"{what} became non-finite at epoch 2, step 7 (lr 0.1) in the {phase} of 4 (Poison), from finite "
    )
    assert "last.pt and best.pt keep the last good state" in str(diverged.value)


def test_limit_batches_counts_batches_or_a_share_of_them_and_evaluation_takes_the_first():
    assert [limited(21, limit) for limit in (None, 3, 30, 0.5, 1.0, 0.001)] == [21, 3, 21, 11, 21, 1]
    split = Split(torch.randint(0, 256, (10, 1, 2, 2), dtype=torch.uint8), torch.arange(10) % 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    first = evaluate(model, split.subset(torch.arange(8)), Preprocess(None), 4, "32")
    assert evaluate(model, split, Preprocess(None), 4, "32", limit_batches=2) == first
    assert evaluate(model, split, Preprocess(None), 4, "32", limit_batches=0.5) == first  # 2 of 3
    everything = evaluate(model, split, Preprocess(None), 4, "32")
    assert evaluate(model, split, Preprocess(None), 4, "32", limit_batches=9) == everything != first


def test_the_suggestion_is_a_tenth_of_the_lowest_smoothed_loss_and_a_flat_curve_has_none():
    from cnnlab.training.lr_find import LrCurve, NoSuggestion, suggest

    lrs = [10.0**e for e in range(-6, 1)]
    curve = LrCurve(lrs, [2.3] * 7, [2.3, 2.2, 1.5, 0.9, 0.7, 1.4, 3.1], "exploded", exploded=True)
    lr, rule = suggest(curve)
    assert (
        lr == pytest.approx(1e-3)
        and rule == "0.1 × the lr where the smoothed loss is lowest (0.700 at lr 0.01)"
    )
    rising = LrCurve(lrs, [2.3] * 7, [2.3, 2.0, 1.8, 1.5, 1.2, 1.0, 0.9], "reached", exploded=False)
    assert suggest(rising)[1].endswith(
        "still falling at the ramp's end: a higher lr_find.max_lr may find more"
    )
    with pytest.raises(NoSuggestion, match="never fell more than 5% below its start"):
        suggest(LrCurve(lrs, [2.3] * 7, [2.3, 2.29, 2.28, 2.3, 2.31, 2.3, 2.4], "reached", exploded=False))
