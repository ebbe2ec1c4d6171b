"""What `auto` picks for precision on each kind of CPU (the probes are injected: no such CPU needed)."""

import pytest
import torch

from cnnlab.training.device import resolve_precision


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "bf16"), (True, True, "32"), (False, True, "32"), (False, False, "32")],
)
def test_auto_cpu_precision_is_bf16_with_avx512_bf16_without_amx(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("bf16", cpu) == "bf16"  # asked for, it is used
