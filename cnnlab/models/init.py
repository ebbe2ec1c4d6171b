"""Weight initialization schemes shared by the model families."""

from torch import nn

from cnnlab.errors import unknown

INIT_SCHEMES = ("xavier", "kaiming", "default")


def init_weights(model: nn.Module, scheme: str, zero_init_head: bool) -> nn.Module:
    """Initialize conv and linear weights (biases to zero) with `scheme`; 'default' keeps PyTorch's.

    `zero_init_head` zeroes the last linear layer: every class starts equally likely, so the first
    loss is exactly ln(classes) whatever the scheme does to the activations' scale, and the first
    steps train the classifier before they move the features.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(unknown("init", scheme, list(INIT_SCHEMES)))
    linear = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if scheme != "default":
        for module in linear:
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if zero_init_head:
        head = linear[-1]
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return model
