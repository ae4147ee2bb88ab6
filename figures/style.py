"""The one plotting style of the paper figures: fonts, sizes, colours, and an atomic ``save``.

Every figure of ``figures/`` is drawn with :func:`figure` and written with :func:`save`, so the
figures of the report and of the paper look the same and a killed process never leaves a half-written
image behind. matplotlib runs with the non-interactive Agg backend.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

from training.core import runio

# One column of a two-column paper is ~3.3 in; a full-width figure ~6.8 in.
PANEL_WIDTH = 3.4
PANEL_HEIGHT = 2.6
DPI = 200

RC = {
    "font.family": "serif",
    "font.serif": ["DejaVu Serif", "Times New Roman", "Times"],
    "mathtext.fontset": "dejavuserif",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "pdf.fonttype": 42,          # embedded TrueType: selectable text in the PDF
}

# Roles, not just colours: the same quantity has the same colour in every figure.
COLORS = {
    "backbone": "#c0392b",       # a(t), q(v_b), update alignment
    "residual": "#2e6fb7",       # ||r(t)||
    "p_ood": "#7f7f7f",          # probe accuracy (twin axis, background)
    "gradient": "#2e6fb7",       # |cos(g, v_b)|
    "switch": "#1f77b4",         # q(v_sw)
    "pc2": "#2ca02c",            # q(PC2)
    "random": "#8c8c8c",         # random directions
    "trunk": "#222222",
    "block0": "#c0392b",
    "floor": "#555555",          # noise floors and null models
    "event": "#999999",          # λ switch, reheating start
    "anisotropy": "#6a3d9a",
}
# Reheating learning rates (highest first), then anything else.
SERIES = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def apply() -> None:
    """Select the Agg backend and this module's rcParams (idempotent)."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams.update(RC)


def figure(nrows: int = 1, ncols: int = 1, width: float = PANEL_WIDTH, height: float = PANEL_HEIGHT):
    """A figure of ``nrows`` × ``ncols`` panels of the given panel size; returns (fig, axes[nrows][ncols])."""
    apply()
    import matplotlib.pyplot as plt
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained")


def mark_step(ax, step: float | None, label: str | None = None, color: str = COLORS["event"]) -> None:
    """A dashed vertical line at ``step`` (the λ switch, the start of reheating), labelled in the legend."""
    if step is None:
        return
    ax.axvline(step, color=color, ls="--", lw=0.9, label=label, zorder=0)


def legend_below(fig, axes, ncols: int = 3) -> None:
    """One legend for all ``axes`` under the panels (labels de-duplicated), so no curve is hidden."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=RC["legend.fontsize"])


def panel_label(ax, text: str) -> None:
    """(a), (b), ... in the panel's top-left corner."""
    ax.text(-0.02, 1.02, text, transform=ax.transAxes, ha="right", va="bottom", fontweight="bold")


def save(fig, path_without_ext: str | Path, formats: Iterable[str] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``path_without_ext.<fmt>`` for every format, each atomically; close the figure.

    Returns the written paths.
    """
    import matplotlib.pyplot as plt
    base = Path(path_without_ext)
    written = []
    try:
        for fmt in formats:
            buf = io.BytesIO()
            # PDFs carry a creation date by default; leaving it out keeps regenerated files identical.
            meta = {"CreationDate": None} if fmt == "pdf" else ({"Software": None} if fmt == "png" else None)
            fig.savefig(buf, format=fmt, dpi=DPI, metadata=meta)
            path = base.with_name(f"{base.name}.{fmt}")
            data = buf.getvalue()
            runio.atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data))
            written.append(path)
    finally:
        plt.close(fig)
    return written


def save_figure(fig, run, name: str) -> Path:
    """Write an analysis figure as RUN/analysis/<name>.png (atomically; ``run`` an opened run, or the folder
    to write in) and close it."""
    folder = Path(run.analysis_dir) if hasattr(run, "analysis_dir") else Path(run)
    return save(fig, folder / name, ("png",))[0]
