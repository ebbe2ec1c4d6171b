"""`cnnlab examples [directory]`: write the files the README's examples read (digits, photos)."""

import argparse
from pathlib import Path
from typing import NoReturn

from cnnlab.console import console, print_error
from cnnlab.data.examples import PHOTO_CLASSES, write_digit_files, write_photo_folder
from cnnlab.errors import ConfigError, file_error

USAGE = "usage: cnnlab examples [directory] (default: the current directory)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; {USAGE}")


def main(argv: list[str]) -> int:
    """Write `samples/` and `photos/` into the directory in `argv`; return the exit code."""
    parser = _Parser(
        prog="cnnlab examples",
        description="Write the files the README's examples read: samples/ (six 8×8 digits as PNG files, "
        "for predict and activations) and photos/ (a small image folder for dataset=imagefolder).",
    )
    parser.add_argument("directory", type=Path, nargs="?", default=Path("."), help="where to write them")
    try:
        root = parser.parse_args(argv).directory.expanduser()
        digits = write_digit_files(root / "samples")
        photos = write_photo_folder(root / "photos")
    except ConfigError as error:
        print_error("cnnlab examples", str(error))
        return 2
    except OSError as error:
        print_error("cnnlab examples", file_error(error))
        return 2
    console.print(f"{root / 'samples'}: {len(digits)} digits as PNG files (cnnlab predict input=samples)")
    console.print(
        f"{root / 'photos'}: {photos} photos, train/ and val/ of {len(PHOTO_CLASSES)} classes "
        f"({', '.join(PHOTO_CLASSES)}) (cnnlab train dataset=imagefolder dataset.loader.root=photos)"
    )
    return 0
