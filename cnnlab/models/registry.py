"""The model registry: `register_model` adds a builder, `create_model` builds one by name."""

from collections.abc import Callable

from torch import nn

from cnnlab.errors import ConfigError, unknown

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder `fn(in_channels, num_classes, input_size, **options) -> nn.Module`."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_BUILDERS)


def create_model(
    name: str, in_channels: int, num_classes: int, input_size: tuple[int, int], **options
) -> nn.Module:
    """Build the registered model `name`, fully constructed (no lazy modules)."""
    if name not in _BUILDERS:
        known = list_models()
        raise ConfigError(unknown("model", name, known))
    return _BUILDERS[name](in_channels, num_classes, input_size, **options)
