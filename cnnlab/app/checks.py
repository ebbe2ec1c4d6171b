"""Config validation shared by the commands: each rule raises one ConfigError line naming the key."""

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnlab.errors import ConfigError


def value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key`; a missing mandatory value or a broken interpolation is one line."""
    try:
        found = OmegaConf.select(cfg, key, throw_on_missing=True)
        if isinstance(found, DictConfig | ListConfig):
            found = OmegaConf.to_container(found, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        message = str(error)
        if "Missing mandatory value" in message:  # directly, or through an interpolation
            # A missing value itself names its full key; one reached through an interpolation
            # names the interpolated key in its message.
            missing = message.rsplit("Missing mandatory value: ", 1)[-1].splitlines()[0].strip()
            if "interpolation" not in message:
                missing = getattr(error, "full_key", None) or key
            raise ConfigError(f"{missing} is required: set {missing}=…") from None
        raise ConfigError(f"{key}: {message.splitlines()[0]}") from None
    return found


def integer(cfg: DictConfig, key: str, minimum: int, *, example: int) -> int:
    """An int ≥ minimum (`example`: a valid value for the message)."""
    got = value(cfg, key)
    if isinstance(got, bool) or not isinstance(got, int) or got < minimum:
        raise ConfigError(f"{key} must be an integer ≥ {minimum}, got {got!r}; e.g. {key}={example}")
    return got


def number(
    cfg: DictConfig,
    key: str,
    minimum: float = 0.0,
    maximum: float | None = None,
    allow_minimum: bool = True,
    *,
    example: float,
) -> float:
    """A real number in [minimum, maximum] (or (minimum, maximum] when not allow_minimum); `example`: a
    valid value for the message."""
    got = value(cfg, key)
    ok = isinstance(got, int | float) and not isinstance(got, bool)
    if ok:
        ok = (got >= minimum if allow_minimum else got > minimum) and (maximum is None or got <= maximum)
    if not ok:
        low = f"≥ {minimum:g}" if allow_minimum else f"> {minimum:g}"
        high = f" and ≤ {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{key} must be a number {low}{high}, got {got!r}; e.g. {key}={example:g}")
    return float(got)


def choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (compared as text, so precision=32 and precision='32' agree)."""
    got = str(value(cfg, key))
    if got not in choices:
        raise ConfigError(f"{key}={got!r} is not one of: {', '.join(choices)}")
    return got


def boolean(cfg: DictConfig, key: str) -> bool:
    """true or false: a YAML boolean (the quoted text 'false' would act as true)."""
    got = value(cfg, key)
    if not isinstance(got, bool):
        raise ConfigError(f"{key} must be true or false, got {got!r}; e.g. {key}=false")
    return got


def dataset_loader(cfg: DictConfig) -> None:
    """The dataset's loader options: all set (imagefolder's root is required) and in range."""
    loader = value(cfg, "dataset.loader")
    if "test_fraction" in loader:
        number(cfg, "dataset.loader.test_fraction", maximum=0.9, allow_minimum=False, example=0.2)
    if "stream" in loader and loader["stream"] != "auto":
        try:
            boolean(cfg, "dataset.loader.stream")
        except ConfigError:
            got = loader["stream"]
            raise ConfigError(
                f"dataset.loader.stream must be auto, true or false, got {got!r}; "
                "e.g. dataset.loader.stream=auto"
            ) from None
    if "memory_budget" in loader:
        number(cfg, "dataset.loader.memory_budget", maximum=1.0, allow_minimum=False, example=0.25)
    if "skip_unreadable" in loader:
        boolean(cfg, "dataset.loader.skip_unreadable")
    if loader.get("workers") is not None:  # null: one per available core
        integer(cfg, "dataset.loader.workers", 0, example=2)


def image_size(cfg: DictConfig, key: str) -> tuple[int, int] | None:
    """An image size: null, a positive int (square) or [height, width] of positive ints."""
    got = value(cfg, key)
    if got is None:
        return None
    if isinstance(got, int) and not isinstance(got, bool) and got > 0:
        return (got, got)
    if (
        isinstance(got, list)
        and len(got) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in got)
    ):
        return (got[0], got[1])
    raise ConfigError(f"{key} must be a positive int, [height, width] or null, got {got!r}; e.g. {key}=28")


def model_spec(cfg: DictConfig) -> tuple[str, int, int, dict[str, Any]]:
    """(name, in_channels, num_classes, options) of the configured model."""
    options = value(cfg, "model")
    name = options.pop("name")
    in_channels = integer(cfg, "model.in_channels", 1, example=3)
    num_classes = integer(cfg, "model.num_classes", 2, example=10)
    options.pop("in_channels"), options.pop("num_classes")
    return name, in_channels, num_classes, options


def input_size(cfg: DictConfig) -> tuple[int, int]:
    """The size fed to the model: `resize`, or the dataset's native size when resize is null."""
    return image_size(cfg, "resize") or image_size(cfg, "dataset.image_size")


def class_count(cfg: DictConfig) -> None:
    """An image folder's dataset.num_classes left null becomes the number of its class folders."""
    if value(cfg, "dataset.name") == "imagefolder" and value(cfg, "dataset.num_classes") is None:
        from cnnlab.data.sources import folder_classes

        root = str(value(cfg, "dataset.loader.root"))
        classes = folder_classes(root)
        if len(classes) < 2:  # found: {root}/train/{classes}
            found = f"only {classes[0]}/" if classes else "no class folders"
            raise ConfigError(
                f"dataset.loader.root={root} has {found} under train/: a classifier needs at least two; "
                f"give train/ one folder of images per class, e.g. train/cats/ and train/dogs/"
            )
        cfg.dataset.num_classes = len(classes)


def check_model(cfg: DictConfig) -> tuple[int, int]:
    """Build the model on the meta device at the input size; a size it cannot take is one line."""
    from cnnlab.models import create_model, list_models
    from cnnlab.models.sizing import build_error, smallest_input_size

    class_count(cfg)
    name, in_channels, num_classes, options = model_spec(cfg)
    size = input_size(cfg)
    if name not in list_models():
        create_model(name, in_channels, num_classes, size)  # raises the unknown-model line
    try:
        error = build_error(name, in_channels, num_classes, size, **options)
    except TypeError as wrong_option:  # an option the builder does not take
        raise ConfigError(f"model {name}: {wrong_option}") from None
    if error is None:
        return size
    smallest = smallest_input_size(name, in_channels, num_classes, **options)
    if smallest is None or smallest <= min(size):  # no size helps: the options themselves are wrong
        raise ConfigError(f"model {name}: {error}")
    raise ConfigError(
        f"model {name} cannot take {size[0]}×{size[1]} inputs: the smallest size it accepts is "
        f"{smallest}×{smallest}; set resize={smallest} or larger"
    )


def check_augment(cfg: DictConfig) -> dict[str, Any]:
    """The augment options, each in range for the model's input size; returns them without `name`."""
    from cnnlab.data.augment import CROPS, Augment

    options = value(cfg, "augment")
    known = [f for f in Augment.__dataclass_fields__ if f not in ("size", "num_classes")]
    if not isinstance(options, dict):
        raise ConfigError(f"augment must be a config group: augment=none|crop_flip|standard, got {options!r}")
    unknown = sorted(set(options) - {"name", *known})
    if unknown:
        raise ConfigError(f"augment.{unknown[0]} is not an augment option; they are: {', '.join(known)}")
    missing = [key for key in known if key not in options]
    if missing:
        raise ConfigError(
            f"augment.{missing[0]} is required: set augment.{missing[0]}=… or choose augment=none"
        )
    options.pop("name", None)
    choice(cfg, "augment.crop", CROPS)
    padding = integer(cfg, "augment.padding", 0, example=4)
    size = input_size(cfg)
    if options["crop"] == "padded" and padding >= min(size):
        raise ConfigError(
            f"augment.padding={padding} must be smaller than the {size[0]}×{size[1]} input; "
            "e.g. augment.padding=4"
        )
    for key, upper in (("scale", 1.0), ("ratio", None)):
        got = options[key]
        ok = isinstance(got, list) and len(got) == 2 and all(isinstance(v, int | float) for v in got)
        if not ok or not 0 < got[0] <= got[1] or (upper is not None and got[1] > upper):
            example = "[0.08,1.0]" if key == "scale" else "[0.75,1.3333]"
            limit = " ≤ 1" if upper else ""
            raise ConfigError(
                f"augment.{key} must be [low, high] with 0 < low ≤ high{limit}, got {got!r}; "
                f"e.g. 'augment.{key}={example}'"
            )
    boolean(cfg, "augment.flip")
    for key in ("random_erasing", "mix_prob"):
        number(cfg, f"augment.{key}", maximum=1.0, example=0.25)
    for key in ("mixup_alpha", "cutmix_alpha"):
        number(cfg, f"augment.{key}", example=0.2)
    return options
