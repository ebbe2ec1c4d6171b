"""trainer.detect_anomaly: hooks on every module that name the first one whose forward or backward makes a
training step's values non-finite. One check per module per step makes it slow: off by default."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from cnnlab.errors import CnnlabError


class Anomaly(CnnlabError):
    """A module's forward or backward produced the first non-finite value of a training step."""

    def __init__(self, what: str, module: str, phase: str, source: str) -> None:
        super().__init__(f"{what} became non-finite in the {phase} of {module}, from {source}")
        self.what, self.module, self.phase, self.source = what, module, phase, source


@contextmanager
def watch_for_anomalies(model: nn.Module, backward: bool = True) -> Iterator[None]:
    """Within, a training step raises Anomaly at the first module (named by its dotted name in `model`)
    whose forward turns finite inputs into a non-finite output, or whose backward turns finite gradients
    of its output into non-finite gradients of its input. `backward=False` watches forwards only (float16
    training, where the gradient scaler expects overflowing gradients and skips those steps)."""
    handles = []
    for name, module in model.named_modules():
        label = f"{name or 'the model'} ({type(module).__name__})"
        handles.append(module.register_forward_hook(partial(_check_forward, label, backward)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _floating(value: object) -> list[torch.Tensor]:
    """The floating-point tensors of a module's inputs or output (one tensor, or a tuple or list)."""
    values = value if isinstance(value, tuple | list) else (value,)
    return [v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _finite(tensors: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(tensor).all()) for tensor in tensors)


def _check_forward(label: str, backward: bool, module: nn.Module, inputs: tuple, output: object) -> None:
    """A forward hook: check this call's output, and hook its gradients for the backward."""
    if not torch.is_grad_enabled():  # evaluation: a non-finite loss there is reported as divergence
        return
    inputs, outputs = _floating(inputs), _floating(output)
    if not _finite(outputs):
        if _finite(inputs):
            raise Anomaly("a value", label, "forward", "finite inputs")
        return  # made earlier, by code of an enclosing module between its submodules: its hook follows
    if not backward:
        return
    # Per call, as a module may run several times in one forward (a shared ReLU): the backward reaches
    # this call's output gradients before its input gradients.
    call = {"output_gradients_finite": True}
    for tensor in outputs:
        if tensor.requires_grad:
            tensor.register_hook(partial(_output_gradient, call))
    for tensor in inputs:
        if tensor.requires_grad:
            tensor.register_hook(partial(_input_gradient, label, call))


def _output_gradient(call: dict, gradient: torch.Tensor) -> None:
    if not bool(torch.isfinite(gradient).all()):
        call["output_gradients_finite"] = False


def _input_gradient(label: str, call: dict, gradient: torch.Tensor) -> None:
    if call["output_gradients_finite"] and not bool(torch.isfinite(gradient).all()):
        raise Anomaly("a gradient", label, "backward", "finite gradients of its output")
