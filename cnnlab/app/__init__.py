"""The Hydra glue: running a command as a Hydra app, validating its config, the sweep callback."""
