"""The studies: multi-run protocols built on the core and the geometry library.

Each study plans its runs from a base config (scaled to the preset), trains them side by side
(:mod:`training.studies.parallel`), runs its measurements and writes one JSON summary with its
tables: the SGD controls, the AdamW beta2 sweep, reheating, modular addition and symmetry breaking.
:mod:`training.studies.common` holds what every study shares. Modules here may import
:mod:`training.core` and :mod:`training.geometry`; nothing below imports them.
"""
