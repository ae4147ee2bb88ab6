"""The one resolution of a device name (``--device`` of training and of every analysis) to a torch device.

``auto`` is CUDA when present, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked against
what this machine has. Anything else is a one-line UserError listing the choices, never torch's own
parse error.
"""
from __future__ import annotations

import re

import torch

from training.core.config import DEVICES
from training.core.errors import UserError


def resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text not in DEVICES and not re.fullmatch(r"cuda:\d+", text):
        raise UserError(f"unknown device '{name}' (choose from {', '.join(DEVICES)}, or cuda:N for one GPU)")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for but no CUDA device is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name} was asked for but MPS is not available; use --device cpu")
    return device
