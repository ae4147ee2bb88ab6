"""The geometry library: one implementation of each measurement of a training trajectory.

Checkpoint streaming and the float64 Gram matrix (uncentred PCA, backbone, residuals, update
alignment), the nulls and surrogates beside every statistic, gradient sampling, the replay of the optimizer
from a checkpoint (updates against the gradients they integrate), the Fisher Rayleigh quotient, switching directions, basin
relaxation, commutators, execution subspaces, linear probes, sparse autoencoders, attention probes,
the large-model sketch and the symmetry diagnostics (Noether charge, balancedness, bQ alignment).
Modules here may import :mod:`training.core`; never :mod:`training.studies`.
"""
