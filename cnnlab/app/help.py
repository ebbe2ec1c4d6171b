"""`cnnlab <command> --help`: the command's config groups and every option with the comment that explains
it, read straight from the YAML files in configs/ — no Hydra composition (a second of deep copies)
and no torch import, so help is instant."""

from importlib import resources
from importlib.resources.abc import Traversable

import yaml

_TOP_LEVEL_SKIPPED = ("defaults:", "hydra:")  # composition lists and Hydra's own settings: not options


def command_help(name: str, config_name: str, unlisted: tuple[str, ...] = ()) -> str:
    """The help text of command `name`, whose primary config is configs/<config_name>.yaml, without
    the `unlisted` groups."""
    configs = resources.files("cnnlab.configs")
    shared = yaml.safe_load((configs / "hydra" / "cnnlab.yaml").read_text())["help"]
    primary = yaml.safe_load((configs / f"{config_name}.yaml").read_text()) or {}
    own = (primary.get("hydra") or {}).get("help") or {}
    header = own.get("header", shared["header"]).replace("${hydra.help.app_name}", f"cnnlab {name}")
    groups, files = _defaults(configs, config_name, unlisted)
    lines = [header.rstrip()]
    if groups:
        lines += ["", "== Config groups (group=option) =="]
    for group, chosen in groups.items():
        options = sorted(
            p.name[: -len(".yaml")] for p in (configs / group).iterdir() if p.name.endswith(".yaml")
        )
        default = f"  (default: {chosen})" if chosen else ""
        lines.append(f"{group}: {', '.join(options)}{default}")
    lines += ["", "== Config (key=value), as configs/ ships it =="]
    for title, text in files:
        lines += ["", f"# {title}", _options(text)]
    lines.append(own.get("footer", shared["footer"]).rstrip())
    return "\n".join(lines)


def _defaults(
    configs: Traversable, config_name: str, unlisted: tuple[str, ...]
) -> tuple[dict[str, str | None], list[tuple[str, str]]]:
    """The config groups a primary config composes (group → default option, None: none) and the
    files it is made of, in order: (title, YAML text); `unlisted` groups left out."""
    groups: dict[str, str | None] = {}
    files: list[tuple[str, str]] = []
    text = (configs / f"{config_name}.yaml").read_text()
    for entry in (yaml.safe_load(text) or {}).get("defaults", []):
        if entry == "_self_":
            files.append((f"configs/{config_name}.yaml", text))
        elif isinstance(entry, str):  # another primary config it extends (summary → train)
            inherited_groups, inherited_files = _defaults(configs, entry, unlisted)
            groups.update(inherited_groups)
            files += inherited_files
        else:
            ((group, option),) = entry.items()
            if group.startswith(("hydra", "override ")) or group in unlisted:
                continue
            groups[group] = option
            if option is not None:
                path = configs / group / f"{option}.yaml"
                files.append((f"{group}={option} (configs/{group}/{option}.yaml)", path.read_text()))
    return groups, files


def _options(text: str) -> str:
    """A config file's text without its `defaults:` list and `hydra:` section (comments kept)."""
    kept, skipping = [], False
    for line in text.splitlines():
        top_level = line and not line[0].isspace() and not line.startswith("#")
        if top_level:
            skipping = line.startswith(_TOP_LEVEL_SKIPPED)
        if not skipping:
            kept.append(line)
    return "\n".join(kept).strip("\n")
