"""The core: what a training run is made of, and nothing that measures one.

The config and its presets, the GPT model (with its optional attention biases), the data (corpora,
tokenizers, the embedded key-retrieval probe, the task table), the optimizers and schedules, the
training loop, the run directory (atomic writes, checkpoints, metrics, status, resume state) and
multi-GPU training. Modules here import only each other (in one direction: no cycle) and third-party
libraries; never :mod:`training.geometry` or :mod:`training.studies`.
"""
