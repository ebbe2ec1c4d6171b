"""Executable documentation: every `$ cnnlab …` block of README.md and docs/*.md runs as written, in
a fresh directory holding the files `cnnlab examples` writes, and shows what the block shows.

A block's commands run in order (one directory per page, so `evaluate` finds the run `train` made):
a run directory typed in a command (outputs/<command>/<date>/<time>) stands for the newest run.
The exit code must be 0, or non-zero where the block shows an error line (`echo $?` shows it).
Each shown line must appear, in order, in the output, compared after normalizing what differs
between machines and days: run directories' dates and times, absolute path prefixes, cache files'
hashes, the precision `auto` chose, and the widths of tables (runs of spaces and of rule
characters). A block marked, just before its fence, with `<!-- docs-test: numbers vary -->` has
every number masked (training figures, timings); one marked `<!-- docs-test: skip: <why> -->` is
not run (a SLURM cluster, a download), and says why. A shown line starting with "…" stands for
lines left out; a "…" within a line for the text left out there."""

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import REPO, write_mnist

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- docs-test: (numbers vary|skip: .+?) -->")
RUN_DIR = re.compile(r"outputs/([\w-]+)/\d{4}-\d\d-\d\d/[\d-]+")
ERROR_LINE = re.compile(r"^cnnlab [\w-]+: error: ")


@dataclass
class Example:
    """One `$ command` of a block and the lines the block shows for it."""

    command: str
    shown: list[str] = field(default_factory=list)


@dataclass
class Block:
    page: Path
    line: int
    mark: str  # "", "numbers vary" or "skip: why"
    examples: list[Example]

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page` that hold `$ cnnlab` commands."""
    found, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if any(line.startswith("$ cnnlab") for line in body):
            mark = MARKER.search(lines[start - 1]) if start else None
            found.append(Block(page, start + 1, mark.group(1) if mark else "", _examples(body)))
    return found


def _examples(body: list[str]) -> list[Example]:
    examples: list[Example] = []
    continued = False
    for line in body:
        if line.startswith("$ ") or continued:
            text = line[2:] if line.startswith("$ ") and not continued else line
            if continued:
                examples[-1].command += "\n" + text
            else:
                examples.append(Example(text))
            continued = line.endswith("\\")
        elif examples:
            examples[-1].shown.append(line)
    return examples


def normalize(line: str, numbers: bool) -> str:
    """`line` without what differs between machines and days (numbers too when `numbers`)."""
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    line = RUN_DIR.sub(r"outputs/\1/RUN", line)
    line = re.sub(r"[^\s'\"=(]*/(outputs|\.cache)/", r"\1/", line)  # absolute prefixes, ~/
    line = re.sub(r"precision (bf16|32)", "precision P", line)
    line = re.sub(r"\b[0-9a-f]{12,}\b", "HASH", line)  # cache file names
    if numbers:
        line = re.sub(r"\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", "0", line)
        line = line.replace("0 (0)", "—")  # a class's commonest confusion, or none
    line = re.sub(r"[─━═]+", "─", line)
    return re.sub(r"\s+", " ", line).strip()


def _newest_run(cwd: Path, kind: str) -> str:
    runs = sorted(cwd.glob(f"outputs/{kind}/*/*"), key=lambda path: path.stat().st_mtime)
    return str(runs[-1].relative_to(cwd)) if runs else f"outputs/{kind}/none-yet"


def _sandbox(tmp_path: Path) -> dict[str, str]:
    """Write the examples' files into tmp_path; the environment the commands run in."""
    examples = [sys.executable, "-m", "cnnlab", "examples", str(tmp_path)]
    subprocess.run(examples, check=True, capture_output=True)
    write_mnist(tmp_path / "mnist5k", images=200)  # configuration.md's worked example (not real MNIST)
    shims = tmp_path / ".bin"
    shims.mkdir()
    for name, target in (("cnnlab", f'"{sys.executable}" -m cnnlab'), ("python", f'"{sys.executable}"')):
        (shims / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (shims / name).chmod(0o755)
    # HOME is the directory: data and caches go where a user's would, under ~/.cache/cnnlab.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path), "COLUMNS": "120"}
    env.update(PATH=f"{shims}{os.pathsep}{os.environ['PATH']}")
    for variable in ("HYDRA_FULL_ERROR", "CNNLAB_DATA_DIR", "XDG_CACHE_HOME"):
        env.pop(variable, None)
    return env


def check(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Run the block's commands in `cwd`; assert each exit code and shown line."""
    returncode = 0
    for example in block.examples:
        if example.command == "echo $?":  # the exit code of the command before
            output, where = f"{returncode}\n", f"{block.id}: $ echo $?"
        else:
            command = RUN_DIR.sub(lambda match: _newest_run(cwd, match.group(1)), example.command)
            result = subprocess.run(
                ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
            )
            output, returncode = result.stdout + result.stderr, result.returncode
            where = f"{block.id}: $ {example.command}\n--- output ---\n{output}"
            assert "Traceback" not in output, where
            errs = any(ERROR_LINE.match(line) for line in example.shown)
            assert (returncode != 0) if errs else (returncode == 0), where
        numbers = block.mark == "numbers vary"
        actual = [normalize(line, numbers) for line in output.splitlines()]
        position = 0
        for shown in example.shown:
            expected = normalize(shown, numbers)
            if not expected or expected.startswith("…"):  # an elision: "…", "… (each job's output)"
                continue
            found = [i for i in range(position, len(actual)) if _shows(actual[i], expected)]
            if not found:
                pytest.fail(f"{where}\n--- not shown (normalized) ---\n{expected}")
            position = found[0] + 1


def _shows(actual: str, expected: str) -> bool:
    """`actual` is the `expected` line, where a "…" in it stands for any text the docs left out."""
    if "…" not in expected:
        return actual == expected
    first, *pieces = [piece.strip() for piece in expected.split("…")]
    if not actual.startswith(first):
        return False
    position = len(first)
    for piece in pieces:
        position = actual.find(piece, position)
        if position < 0:
            return False
        position += len(piece)
    return not pieces[-1] or actual.endswith(pieces[-1])


@pytest.mark.parametrize("page", [page for page in PAGES if blocks(page)], ids=lambda page: page.name)
def test_every_example_of_the_page_runs_as_shown(page, tmp_path):
    page_blocks = blocks(page)
    env = _sandbox(tmp_path)
    for block in page_blocks:
        if not block.mark.startswith("skip"):
            check(block, tmp_path, env)


def test_the_blocks_are_found_and_every_skip_says_why():
    every = [block for page in PAGES for block in blocks(page)]
    assert len(every) >= 30 and sum(len(block.examples) for block in every) >= 40
    assert all(len(block.mark) > len("skip: ") for block in every if block.mark.startswith("skip"))
