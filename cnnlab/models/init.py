"""Weight initialization schemes shared by the model families."""

from torch import nn

INIT_SCHEMES = ("xavier", "kaiming", "default")


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Initialize conv and linear weights (biases to zero) with `scheme`; 'default' keeps PyTorch's."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init {scheme!r}; choose one of: {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return model
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
