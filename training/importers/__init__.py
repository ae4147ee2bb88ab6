"""Importers: foreign checkpoint series turned into run directories of this toolkit (README, "Foreign trajectories").

A package above the layers (like training/pilot.py, the training command): it may import ``training.core`` and
``training.geometry``, and nothing in the layers imports it. ``python -m training.importers`` (or
``scripts/import_trajectory.py``) is its command:

* :mod:`~training.importers.architectures` -- per architecture (the reference mini_gpt layout, GPT-2, GPT-NeoX,
  Llama-style), which foreign tensors make each trunk matrix and how (transpose, de-interleave, concatenate);
* :mod:`~training.importers.sources` -- reading one checkpoint tensor by tensor (safetensors by ``pread``,
  ``torch.load(mmap=True, weights_only=True)``, Hugging Face directories and hub revisions through
  ``transformers``, an optional dependency: ``pip install -e .[hf]``);
* :mod:`~training.importers.importer` -- the series, its steps, the config.json and the checkpoints.
"""
from training.importers.importer import FLATTEN_ORDER, import_trajectory

__all__ = ["FLATTEN_ORDER", "import_trajectory"]
