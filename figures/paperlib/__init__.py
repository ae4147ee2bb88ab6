"""The code behind ``figures/make_paper_figures.py``: the paper's figures, tables and quoted numbers of one run.

Modules, each importing only those above it: ``formatting`` (``fmt``, LaTeX escaping, macro names) ->
``inputs`` (the run and study files, read once) -> ``numbers`` (every quoted number, numbers.tex) ->
``tables`` (the tables and the comparison with the paper) -> ``prose`` (the reading sentences);
``plots`` (figures 1-4) needs only ``formatting`` and ``inputs``; ``outputs`` (``generate`` and the files it
writes) uses them all. Importing the package draws nothing and does not import matplotlib.
"""
