"""Hydra configuration groups for cnnlab (packaged as cnnlab.configs)."""
