"""Fixtures shared by both tiers; the plain helpers they use live in helpers.py."""

import pytest
from helpers import run_cli


@pytest.fixture
def cli(tmp_path):
    """`cli(*args)` runs cnnlab in a fresh directory (tmp_path)."""

    def call(*args: str, **kwargs):
        return run_cli(*args, cwd=tmp_path, **kwargs)

    call.cwd = tmp_path
    return call
