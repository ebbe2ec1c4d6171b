"""The hyperparameters a run varies: the keys its command-line overrides set, with the run's values.

One definition serves TensorBoard's HParams dashboard (`cnnlab train` logs its own) and `cnnlab
report` (its columns): a multirun job's overrides are the sweep's varied settings, a single run's are
what it changed from the defaults. Keys in Hydra's override_dirname.exclude_keys (trainer.resume)
name no setting and are left out.
"""

from collections.abc import Collection, Mapping

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

Value = bool | int | float | str


def override_values(overrides: list[str], exclude: Collection[str]) -> dict[str, str]:
    """Each config key or group (e.g. optimizer.lr, model) that `overrides` set → the value as typed."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: o.get_value_element_as_str() for o in parsed if o.key_or_group not in exclude}


def setting(key: str, config: DictConfig, choices: Mapping[str, str | None]) -> Value | None:
    """A run's value of `key`: a config group's chosen option, else the (resolved) config value."""
    if key in choices:
        return choices[key]
    value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value, resolve=True))
    return value


def job_hparams(cfg: DictConfig) -> dict[str, Value | None]:
    """This Hydra job's overridden settings with their values (TensorBoard's HParams)."""
    hydra = HydraConfig.get()
    keys = override_values(list(hydra.overrides.task), hydra.job.config.override_dirname.exclude_keys)
    return {key: setting(key, cfg, hydra.runtime.choices) for key in keys}


def hparam_metrics(
    best_val_acc: float, final: dict[str, float], test: dict[str, float] | None
) -> dict[str, float]:
    """The finished run's results that the HParams dashboard compares: the best validation accuracy,
    the last epoch's metrics and (if measured) best.pt's test figures."""
    metrics = {
        "hparams/best_val_acc": best_val_acc,
        "hparams/final_val_acc": final["val/acc"],
        "hparams/final_train_loss": final["train/loss"],
    }
    if test is not None:
        metrics["hparams/test_acc"] = test["test/acc"]
        metrics["hparams/test_loss"] = test["test/loss"]
    return metrics
