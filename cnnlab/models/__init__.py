"""The model zoo: importing this package registers every model family."""

from cnnlab.models import alexnet, densenet, googlenet, lenet, regnet, resnet, vgg  # noqa: F401  (registers them)
from cnnlab.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
