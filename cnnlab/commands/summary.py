"""`cnnlab summary`: the configured model layer by layer — output shape, parameters, mult-adds — no data.

The model is built and run on the meta device: shapes and counts without memory or arithmetic, so
VGG-11 at 224×224 takes a moment and nothing is downloaded.
"""

import json
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.app import checks
from cnnlab.console import console
from cnnlab.models import create_model

FORMATS = ("table", "json")
MEGABYTE = 1024**2


@dataclass
class Layer:
    """One module's row: qualified name, class, nesting depth (1 = child of the model), its output."""

    name: str
    type: str
    depth: int
    output_shape: list[int] | None  # None: not called in the forward pass
    parameters: int  # including its submodules'
    mult_adds: int  # including its submodules'


@dataclass
class Summary:
    """Every module's row and the model's totals for one forward pass of `input_shape`."""

    model: str
    model_class: str
    input_shape: list[int]
    layers: list[Layer]
    total_parameters: int
    trainable_parameters: int
    total_mult_adds: int
    input_bytes: int
    forward_backward_bytes: int  # leaf outputs, kept for backward, plus their gradients (as torchinfo)
    parameter_bytes: int


def summarize(model: nn.Module, input_shape: tuple[int, ...], name: str) -> Summary:
    """Run `model` once in eval mode on an `input_shape` tensor (on its device); collect every row."""
    parameter = next(model.parameters())
    shapes: dict[str, list[int]] = {}

    def recorder(qualified: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shapes[qualified] = list(output.shape)

        return hook

    modules = [(qualified, module) for qualified, module in model.named_modules() if qualified]
    handles = [module.register_forward_hook(recorder(qualified)) for qualified, module in modules]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.empty(input_shape, dtype=parameter.dtype, device=parameter.device))
    finally:
        for handle in handles:
            handle.remove()
    # FlopCounterMode names modules <class>.<qualified name>; one multiply-add is two FLOPs.
    flops = {key: sum(counts.values()) for key, counts in counter.get_flop_counts().items()}
    root = type(model).__name__
    layers = [
        Layer(
            name=qualified,
            type=type(module).__name__,
            depth=qualified.count(".") + 1,
            output_shape=shapes.get(qualified),
            parameters=sum(p.numel() for p in module.parameters()),
            mult_adds=flops.get(f"{root}.{qualified}", 0) // 2,
        )
        for qualified, module in modules
    ]
    leaf_outputs = sum(
        _numel(shapes.get(qualified)) for qualified, module in modules if not any(module.children())
    )
    element = parameter.element_size()
    return Summary(
        model=name,
        model_class=root,
        input_shape=list(input_shape),
        layers=layers,
        total_parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_mult_adds=counter.get_total_flops() // 2,
        input_bytes=_numel(list(input_shape)) * element,
        forward_backward_bytes=2 * leaf_outputs * element,
        parameter_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
    )


def _numel(shape: list[int] | None) -> int:
    total = 1
    for side in shape or [0]:
        total *= side
    return total


def _short(count: int) -> str:
    """E.g. 7.55 G, 318.66 M, 416.52 K."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.2f} {suffix}"
    return str(count)


def check(cfg: DictConfig) -> DictConfig:
    """Validate the summary options and that the model takes the configured input size.

    Returns the plan: the checked config itself."""
    checks.integer(cfg, "summary.depth", 1, example=3)
    checks.choice(cfg, "summary.format", FORMATS)
    checks.check_model(cfg)
    return cfg


def run(cfg: DictConfig) -> Summary:
    """Build the configured model on the meta device, summarize one forward pass and print it."""
    name, in_channels, num_classes, options = checks.model_spec(cfg)
    size = checks.input_size(cfg)
    with torch.device("meta"):
        model = create_model(name, in_channels, num_classes, size, **options)
    summary = summarize(model, (1, in_channels, *size), name)
    depth = cfg.summary.depth
    summary.layers = [layer for layer in summary.layers if layer.depth <= depth]
    if cfg.summary.format == "json":
        console.print(json.dumps(asdict(summary), indent=2), markup=False)
    else:
        _print_table(summary)
    return summary


def _print_table(summary: Summary) -> None:
    shape = "×".join(str(side) for side in summary.input_shape)
    table = Table(title=f"{summary.model} ({summary.model_class}) on a {shape} input", title_justify="left")
    table.add_column("Layer (type)")
    table.add_column("Output shape")
    table.add_column("Param #", justify="right")
    table.add_column("Mult-adds", justify="right")
    for layer in summary.layers:
        table.add_row(
            f"{'  ' * (layer.depth - 1)}{layer.name.rpartition('.')[2]} ({layer.type})",
            "--" if layer.output_shape is None else str(layer.output_shape),
            f"{layer.parameters:,}" if layer.parameters else "--",
            f"{layer.mult_adds:,}" if layer.mult_adds else "--",
        )
    total_bytes = summary.input_bytes + summary.forward_backward_bytes + summary.parameter_bytes
    footer = [
        ("Total params", f"{summary.total_parameters:,}"),
        ("Trainable params", f"{summary.trainable_parameters:,}"),
        ("Total mult-adds", f"{summary.total_mult_adds:,} ({_short(summary.total_mult_adds)})"),
        ("Input size", f"{shape} ({summary.input_bytes / MEGABYTE:.2f} MB)"),
        ("Forward/backward pass size", f"{summary.forward_backward_bytes / MEGABYTE:.2f} MB (estimated)"),
        ("Params size", f"{summary.parameter_bytes / MEGABYTE:.2f} MB"),
        ("Estimated total size", f"{total_bytes / MEGABYTE:.2f} MB"),
    ]
    # Wide enough for the whole table even when the output is not a terminal (rich assumes 80 columns).
    width = max(console.width, console.measure(table, options=console.options.update_width(1000)).maximum)
    console.print(table, width=width, crop=False)
    for label, text in footer:
        console.print(f"{label}: {text}", markup=False)
