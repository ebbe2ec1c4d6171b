"""What a run is on disk: finished runs, resuming, the run lock, sweep job records, hparams, reports."""
