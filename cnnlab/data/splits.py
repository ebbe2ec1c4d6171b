"""Carving a validation split out of a training split: stratified, and fixed by a seed."""

import torch


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out) of `labels`: round(fraction × n) samples of each class held out, chosen
    by `seed` alone, so every run of a dataset validates on the same images. Both come sorted, in the
    split's own order."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().flatten()
        count = round(fraction * len(members))
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    held_out = torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return keep.nonzero().flatten(), held_out


def fixed_sample(num_samples: int, count: int, seed: int) -> torch.Tensor:
    """`count` of `num_samples` indices (all of them when there are fewer), chosen by `seed` alone, sorted."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_samples, generator=generator)[:count].sort().values
