"""cnnlab: train, inspect and sweep the convolutional networks of Dive into Deep Learning."""

__version__ = "0.1.0"
