"""The core: what a training run is made of, and nothing that measures one.

The config and its presets, the GPT model (with its optional attention biases), the data (corpora,
tokenizers, the embedded key-retrieval probe, the task table), the optimizers and schedules, the
training loop, the run directory (atomic writes, checkpoints, metrics, status, resume state),
multi-GPU training, and the trajectory Gram cache's file format with the trainer's option to keep it current
while it writes checkpoints (gramcache; the analyses of the Gram live in the geometry). Modules here import only each other (in one direction: no cycle) and third-party
libraries; never :mod:`training.geometry` or :mod:`training.studies`.
"""
