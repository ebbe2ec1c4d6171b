"""cnnlab's Hydra plugins: Hydra finds a sweeper only in the hydra_plugins namespace package."""
