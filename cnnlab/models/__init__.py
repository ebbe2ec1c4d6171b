"""The model zoo: importing this package registers every model family."""

from cnnlab.models import lenet, resnet, vgg  # noqa: F401  (registers their models)
from cnnlab.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
