"""The two containers the data layer hands out: a tokenised split and a training batch.

A leaf module (numpy and torch only) so that every task (the story corpus with its probe in
:mod:`training.core.data`, modular addition in :mod:`training.core.modadd`, FineWeb shards in
:mod:`training.core.fineweb`) builds the same objects without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenSplit:
    tokens: np.ndarray      # memory-mapped, every document followed by EOS
    offsets: np.ndarray     # document start positions, with a final entry = len(tokens)

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1


@dataclass
class Batch:
    x: torch.Tensor            # (B, T) inputs
    y: torch.Tensor            # (B, T) targets, -100 = ignored
    probe_mask: torch.Tensor   # (B, T) bool, True at scored codeword targets

    def to(self, device: torch.device) -> "Batch":
        if device.type != "cuda":
            return Batch(self.x.to(device), self.y.to(device), self.probe_mask.to(device))
        # page-locked host copies (PyTorch's caching host allocator) make the copies truly asynchronous:
        # the next micro-batch is drawn on the CPU while the GPU still computes
        return Batch(*(t.pin_memory().to(device, non_blocking=True) for t in (self.x, self.y, self.probe_mask)))
