"""A checked config → the plain specs the layers below are built from (cnnlab.training.build)."""

from omegaconf import DictConfig

from cnnlab.app import checks
from cnnlab.training.build import DataSpec, TrainingSpec


def data_spec(cfg: DictConfig) -> DataSpec:
    """The dataset section of a (checked) config."""
    dataset = cfg.dataset
    return DataSpec(
        name=dataset.name,
        loader=checks.value(cfg, "dataset.loader"),
        val_fraction=dataset.val_fraction,
        split_seed=dataset.split_seed,
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        normalize=dataset.normalize,
    )


def training_spec(cfg: DictConfig) -> TrainingSpec:
    """What a (checked) config trains: model, input size, optimizer, schedule, augmentation, loop."""
    name, in_channels, num_classes, options = checks.model_spec(cfg)
    augment = checks.check_augment(cfg)
    augment.update(scale=tuple(augment["scale"]), ratio=tuple(augment["ratio"]))
    trainer = cfg.trainer
    return TrainingSpec(
        model=name,
        model_options=options,
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=checks.input_size(cfg),
        optimizer=checks.value(cfg, "optimizer"),
        scheduler=checks.value(cfg, "scheduler"),
        augment=augment,
        label_smoothing=cfg.loss.label_smoothing,
        normalize=cfg.dataset.normalize,
        epochs=trainer.epochs,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size,
        seed=trainer.seed,
        precision=trainer.precision,
        channels_last=trainer.channels_last,
        compile=trainer.compile,
        checkpoint_every_steps=trainer.checkpoint_every_steps,
        clip_grad_norm=trainer.clip_grad_norm,
        early_stopping_patience=trainer.early_stopping.patience,
        early_stopping_min_delta=trainer.early_stopping.min_delta,
        early_stopping_target=trainer.early_stopping.target,
        health_check=trainer.health_check,
        stop_if_stuck=trainer.stop_if_stuck,
        detect_anomaly=trainer.detect_anomaly,
        limit_batches=trainer.limit_batches,
    )
