"""One module per command; each composes its Hydra config, validates it and wires the layers below."""
