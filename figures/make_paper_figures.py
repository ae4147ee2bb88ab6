"""The paper's figures 1-4, its tables and every number its text quotes, for one run, from the analysis JSON.

Reads only files: RUN/config.json, RUN/metrics.jsonl, RUN/oscillation_manifest.json and RUN/analysis/*.json
(trajectory_pca, update_alignment, residual_decomposition, rayleigh_quotients, switching_alignment,
reheating), plus the study summaries STUDY/analysis/sgd_control_results.json (--sgd-dir) and
STUDY/analysis/beta_sweep_summary.json (--beta-dir). Nothing is recomputed from checkpoints.

Writes into OUT (default RUN/figures):
  fig1_backbone, fig2_alignment, fig3_fisher, fig4_reheating   (.png and .pdf)
  tables/<name>.md and tables/<name>.tex                        (Markdown and LaTeX booktabs)
  numbers.json    every quoted number (value, text, LaTeX macro, source), the tables' cells, the plotted series
  numbers.tex     one \\newcommand per number (macro names without digits) and \\ifhave<analysis> flags
With --paper-dir DIR the LaTeX side (numbers.tex, numbers.json, tables/*.tex, figures/*.pdf) is also
written there (paper/generated for paper/paper.tex).

A figure or table whose input is missing is skipped with one printed line (exit 0); --strict makes that
an error. A missing, incomplete or corrupt run directory is a one-line error (exit 2).

Examples:
  python figures/make_paper_figures.py --run-dir runs/quick
  python figures/make_paper_figures.py --run-dir runs/quick --sgd-dir runs/sgd_controls_quick_s42 \\
      --beta-dir runs/beta_sweep_quick_s42 --paper-dir paper/generated
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _paths  # noqa: E402,F401

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

from training.core import runio  # noqa: E402
from training.core.cli import CommandParser, run_main  # noqa: E402
from training.core.errors import UserError  # noqa: E402

from figures import paper_values as PV  # noqa: E402

# ============================================================================ inputs
# name -> (path relative to the run directory, the command that writes it)
RUN_INPUTS = {
    "trajectory_pca": ("analysis/trajectory_pca.json", "python analysis/backbone/trajectory_pca.py --run-dir RUN"),
    "update_alignment": ("analysis/update_alignment.json", "python analysis/backbone/update_alignment.py --run-dir RUN"),
    "residual_decomposition": ("analysis/residual_decomposition.json",
                               "python analysis/backbone/residual_decomposition.py --run-dir RUN"),
    "rayleigh_quotients": ("analysis/rayleigh_quotients.json", "python analysis/fisher/rayleigh_quotients.py --run-dir RUN"),
    "fisher_analysis": ("analysis/fisher_analysis.json", "python analysis/fisher/fisher_analysis.py --run-dir RUN"),
    "switching_alignment": ("analysis/switching_alignment.json",
                            "python analysis/switching/switching_alignment.py --run-dir RUN"),
    "oscillation_manifest": ("oscillation_manifest.json", "python analysis/switching/detect_oscillations.py --run-dir RUN"),
    "eval_noise": ("analysis/eval_noise.json", "python analysis/basin/eval_noise.py --run-dir RUN"),
    "reheating": ("analysis/reheating.json", "python experiments/reheating/reheat.py --run-dir RUN, then "
                                             "python analysis/reheating/reheat_geometry.py --run-dir RUN"),
    "basin_tests": ("analysis/basin_tests.json", "python analysis/basin/basin_tests.py --run-dir RUN"),
    "basin_depth": ("analysis/basin_depth.json", "python analysis/basin/basin_depth.py --run-dir RUN"),
    "manifold_dim": ("analysis/manifold_dim.json", "python analysis/basin/manifold_dim.py --run-dir RUN"),
}
STUDY_INPUTS = {
    "sgd": ("analysis/sgd_control_results.json", "the SGD-control study (experiments/sgd_controls/run_study.py)"),
    "beta": ("analysis/beta_sweep_summary.json", "the β2 sweep (experiments/beta_sweep/run_study.py)"),
}


class Missing(Exception):
    """An input a figure or table needs is absent; the message names it and how to produce it."""


class Empty(Missing):
    """The input exists but holds nothing to show (e.g. zero switch pairs): skipped, never an error."""


class NotRequested(Missing):
    """A study input whose directory was not given: skipped silently."""


@dataclass
class Inputs:
    run_dir: Path
    cfg: Any                                  # training.core.config.Config
    config_file: dict
    status: dict
    metrics: list[dict]
    checkpoints: list[int]
    data: dict[str, Any] = field(default_factory=dict)     # name -> parsed JSON (absent if missing)
    study_dirs: dict[str, Path] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.data

    def need(self, name: str) -> Any:
        if name in self.data:
            return self.data[name]
        if name in STUDY_INPUTS:
            rel, how = STUDY_INPUTS[name]
            if name not in self.study_dirs:
                raise NotRequested(f"no --{name}-dir given ({how})")
            raise Missing(f"{self.study_dirs[name] / rel} (run {how})")
        rel, cmd = RUN_INPUTS[name]
        raise Missing(f"{self.run_dir / rel} (run: {cmd.replace('RUN', str(self.run_dir))})")

    # --- facts of the run used by several figures
    @property
    def lambda_switch(self) -> int | None:
        c = self.cfg
        if c.lambda_probe2 is None or c.lambda_probe2 == c.lambda_probe or not 0 < c.lambda_step < c.steps:
            return None
        return int(c.lambda_step)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        rows = [m for m in self.metrics if _finite(m.get(key))]
        return [int(m["step"]) for m in rows], [float(m[key]) for m in rows]


def load_inputs(run_dir: str | Path, sgd_dir: str | None = None, beta_dir: str | None = None,
                allow_incomplete: bool = False) -> Inputs:
    """Validate the run directory and read every input that exists (each file parsed once)."""
    from training.core.runio import read_run_config
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    cfg = read_run_config(run_dir)
    config_file = runio.read_json(run_dir / "config.json", "run config")
    status = runio.read_status(run_dir) or {}
    metrics = [m for m in runio.read_metrics(run_dir) if isinstance(m, dict) and "step" in m]
    if not metrics:
        raise UserError(f"{run_dir} has no evaluations in metrics.jsonl; train it first (training/pilot.py)")
    state = status.get("state", "unknown")
    if state not in ("completed", "diverged") and not allow_incomplete:
        raise UserError(f"the run in {run_dir} is not finished (state '{state}' at step {status.get('step')}); "
                        f"resume it with training/pilot.py --resume --out-dir {run_dir}, or pass --allow-incomplete")
    inp = Inputs(run_dir=run_dir, cfg=cfg, config_file=config_file, status=status, metrics=metrics,
                 checkpoints=runio.list_checkpoints(run_dir))
    for name, (rel, _) in RUN_INPUTS.items():
        path = run_dir / rel
        if path.exists():
            inp.data[name] = runio.read_json(path, "analysis file")
    for name, given in (("sgd", sgd_dir), ("beta", beta_dir)):
        if given is None:
            continue
        d = Path(given)
        if not d.is_dir():
            raise UserError(f"--{name}-dir {d} does not exist")
        inp.study_dirs[name] = d
        path = d / STUDY_INPUTS[name][0]
        if path.exists():
            inp.data[name] = runio.read_json(path, "study summary")
    return inp


# ============================================================================ formatting (the one place)
DASH = {"md": "—", "tex": "--"}
_TEX_SUBS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "β": r"$\beta$", "λ": r"$\lambda$", "α": r"$\alpha$",
    "ρ": r"$\rho$", "η": r"$\eta$", "θ": r"$\theta$", "π": r"$\pi$", "σ": r"$\sigma$", "≤": r"$\le$", "≥": r"$\ge$",
    "×": r"$\times$", "–": "--", "—": "---", "≈": r"$\approx$", "→": r"$\to$", "‖": r"$\|$", "⟨": r"$\langle$",
    "⟩": r"$\rangle$", "′": "'", "²": r"$^2$", "…": r"\ldots{}", "<": r"$<$", ">": r"$>$", "±": r"$\pm$",
    "†": r"$^\dagger$", "⊥": r"$\perp$", "“": "``", "”": "''", "√": r"$\surd$", "·": r"$\cdot$", "−": "$-$",
    "|": r"$|$", "§": r"\S{}", "Σ": r"$\Sigma$", "Δ": r"$\Delta$", "ℓ": r"$\ell$", "★": r"$\star$", "∑": r"$\sum$",
    "’": "'", "‘": "`", "…": r"\ldots{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SUBS.get(ch, ch) for ch in str(text))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _sci_parts(v: float, digits: int = 2) -> tuple[str, int]:
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    return mant, int(exp)


def fmt(value: Any, kind: str, target: str = "md") -> str:
    """Every number shown anywhere is printed by this function.

    kinds: pct (a fraction shown as a percentage, 1 decimal), num0..num4 (fixed decimals), signed (3
    decimals with sign, scientific below 1e-3), int (thousands separators), step (plain integer), sci
    (2 significant digits), x (a ratio, "×"), lr (compact general format), text. A (low, high) pair is a
    range; None or a non-finite number is a dash.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2 and kind != "text":
        lo, hi = (fmt(v, kind, target) for v in value)
        return lo if lo == hi else f"{lo}{'–' if target == 'md' else '--'}{hi}"
    if kind == "text":
        if value is None:
            return DASH[target]
        return str(value) if target == "md" else tex_escape(str(value))
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return DASH[target]
    if isinstance(value, str):                 # a study's own display string (e.g. "diverged")
        return value if target == "md" else tex_escape(value)
    v = float(value)
    math_mode = False
    if kind == "pct":
        s = f"{100 * v:.1f}"
    elif kind.startswith("num"):
        s = f"{v:.{int(kind[3:])}f}"
    elif kind == "signed":
        if v != 0 and abs(v) < 1e-3:
            mant, exp = _sci_parts(v)
            s = f"{float(mant):+.1f}e{exp:+03d}" if target == "md" else f"{float(mant):+.1f}\\times10^{{{exp}}}"
            math_mode = target == "tex"
        else:
            s = f"{v:+.3f}"
    elif kind == "int":
        s = f"{int(round(v)):,}"
        if target == "tex":
            s = s.replace(",", "{,}")
    elif kind == "step":
        s = str(int(round(v)))
    elif kind == "sci":
        if v == 0:
            s = "0"
        else:
            mant, exp = _sci_parts(v)
            s = f"{mant}e{exp:+03d}" if target == "md" else f"{mant}\\times10^{{{exp}}}"
            math_mode = target == "tex"
    elif kind == "x":
        s = f"{v:,.0f}" if abs(v) >= 10 else (f"{v:.1f}" if abs(v) >= 1 else f"{v:.2f}")
        if target == "tex":
            return s.replace(",", "{,}") + r"\ensuremath{\times}"
        return s + "×"
    elif kind == "lr":
        s = f"{v:g}"
        if "e" in s and target == "tex":
            mant, exp = s.split("e")
            s = f"{mant}\\times10^{{{int(exp)}}}"
            math_mode = True
    else:
        raise ValueError(f"unknown number kind '{kind}'")
    if target == "tex" and (math_mode or s.startswith("-") or s.startswith("+")):
        return f"\\ensuremath{{{s}}}"
    return s


def pct_points(x: float) -> float:
    """A difference of two fractions in percentage points (for kind num1/num2)."""
    return 100.0 * x


_DIGITS = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"]


def macro_name(key: str) -> str:
    """snake_case key -> a LaTeX macro name of letters only: 'k95_trunk' -> 'KNineFiveTrunk'."""
    out = []
    for part in key.split("_"):
        word = "".join(_DIGITS[int(ch)] if ch.isdigit() else ch for ch in part)
        out.append(word[:1].upper() + word[1:])
    name = "".join(out)
    if not name.isalpha():
        raise ValueError(f"number key '{key}' does not give a letters-only macro name")
    return name


# ============================================================================ numbers
@dataclass
class Number:
    key: str
    value: Any
    kind: str
    source: str

    def text(self, target: str = "md") -> str:
        return fmt(self.value, self.kind, target)


class Numbers(dict):
    """key -> Number; the keys become LaTeX macros (``macro_name``)."""

    def add(self, key: str, value: Any, kind: str, source: str) -> None:
        macro_name(key)                   # fail early on a bad key
        if key in self:
            raise ValueError(f"number '{key}' defined twice")
        self[key] = Number(key, value, kind, source)

    def text(self, key: str, target: str = "md") -> str:
        return self[key].text(target) if key in self else "not run"


# ============================================================================ tables
@dataclass
class Col:
    md: str
    kind: str = "text"
    tex: str | None = None            # LaTeX header (default: the escaped Markdown header)
    align: str = "r"


@dataclass
class Table:
    key: str
    title: str
    caption: str
    cols: list[Col]
    rows: list[list[Any]]             # raw values; a cell may be a (value, kind) override
    notes: list[str] = field(default_factory=list)

    def cell(self, i: int, j: int, target: str) -> str:
        v, kind = self.rows[i][j], self.cols[j].kind
        if isinstance(v, Cell):
            v, kind = v.value, v.kind
        return fmt(v, kind, target)

    def to_md(self) -> str:
        def esc(x: str) -> str:                       # a literal | would end the Markdown cell
            return x.replace("|", "\\|")
        head = "| " + " | ".join(esc(c.md) for c in self.cols) + " |"
        sep = "|" + "|".join("---:" if c.align == "r" else ":---" for c in self.cols) + "|"
        body = ["| " + " | ".join(esc(self.cell(i, j, "md")) for j in range(len(self.cols))) + " |"
                for i in range(len(self.rows))]
        parts = [f"**{self.title}.** {self.caption}", "", head, sep, *body]
        if self.notes:
            parts += [""] + [f"*{n}*" for n in self.notes]
        return "\n".join(parts) + "\n"

    def to_tex(self) -> str:
        spec = "".join(c.align for c in self.cols)
        head = " & ".join(c.tex if c.tex is not None else tex_escape(c.md) for c in self.cols) + r" \\"
        body = [" & ".join(self.cell(i, j, "tex") for j in range(len(self.cols))) + r" \\" for i in range(len(self.rows))]
        lines = ["% generated by figures/make_paper_figures.py -- do not edit", r"\begin{table}[tbp]", r"\centering",
                 r"\small", rf"\caption{{{tex_escape(self.title)}. {tex_escape(self.caption)}}}",
                 rf"\label{{tab:{self.key}}}",
                 # shrink to the text width only when wider (graphicx's \width inside \resizebox)
                 r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule", head, r"\midrule", *body,
                 r"\bottomrule", r"\end{tabular}}"]
        if self.notes:
            lines += [r"\par\smallskip\footnotesize " + " ".join(tex_escape(n) for n in self.notes)]
        lines += [r"\end{table}"]
        return "\n".join(lines) + "\n"

    def raw(self) -> dict:
        def plain(v):
            return v.value if isinstance(v, Cell) else v
        return {"title": self.title, "caption": self.caption, "columns": [c.md for c in self.cols],
                "rows": [[plain(v) for v in r] for r in self.rows],
                "text": [[self.cell(i, j, "md") for j in range(len(self.cols))] for i in range(len(self.rows))],
                "notes": self.notes}


@dataclass
class Cell:
    value: Any
    kind: str


# ============================================================================ small helpers
def mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if _finite(x)]
    return sum(xs) / len(xs) if xs else None


def phase_bounds(T: int) -> tuple[int, int]:
    """The paper's phase boundaries (seed 001 Table 3: 2000 and 6000 of 10,000 steps) as the same fractions of T."""
    paper_T = PV.VALUES["steps"].value
    return round(T * PV.VALUES["early_end"].value / paper_T), round(T * PV.VALUES["mid_end"].value / paper_T)


def phases(T: int) -> list[tuple[str, str, Callable[[int], bool]]]:
    """Early / middle / late: t < b1, b1 ≤ t ≤ b2, t > b2 with the paper's boundaries scaled to T steps."""
    b1, b2 = phase_bounds(T)
    return [("early", f"t < {b1}", lambda t: t < b1), ("middle", f"{b1} ≤ t ≤ {b2}", lambda t: b1 <= t <= b2),
            ("late", f"t > {b2}", lambda t: t > b2)]


def phase_values(steps: Sequence[int], values: Sequence[float], test: Callable[[int], bool]) -> list[float]:
    return [v for s, v in zip(steps, values) if test(s) and _finite(v)]


def block_label(b: int) -> str:
    return f"block {b}"


def best_eval(inp: Inputs) -> tuple[int | None, float | None]:
    steps, p = inp.series("p_ood")
    if not p:
        return None, None
    i = max(range(len(p)), key=lambda k: p[k])
    return steps[i], p[i]


def reheat_runs(inp: Inputs) -> list[dict]:
    rh = inp.need("reheating")
    runs = rh.get("runs")
    if runs is None:                           # a summary with the table only
        runs = [{**row, "reentry": row} for row in rh["table"]]
    if not runs:
        raise Missing(f"{inp.run_dir / RUN_INPUTS['reheating'][0]} lists no reheating runs")
    return runs


def best_reheat(runs: list[dict]) -> dict:
    scored = [r for r in runs if _finite(r["reentry"].get("G"))]
    if not scored:
        raise Missing("no reheating run has a re-entry gain G")
    return max(scored, key=lambda r: r["reentry"]["G"])


def verb(condition: bool, yes: str, no: str) -> str:
    return yes if condition else no


def pv(key: str) -> str:
    """A published value as printed in captions (from figures/paper_values.py, never typed here)."""
    v = PV.VALUES[key]
    return fmt(v.value, v.kind)


def paper_rows(rows: list[dict], *fields: tuple[str, str]) -> str:
    """Published table rows as 'label value, ...' with each field printed by ``fmt`` (key, kind)."""
    return "; ".join(", ".join(fmt(r[k], kind) for k, kind in fields) for r in rows)


# ============================================================================ numbers of each analysis
def numbers_run(inp: Inputs, N: Numbers) -> None:
    c = inp.cfg
    src = "config.json"
    N.add("run_name", inp.run_dir.name, "text", "the run directory's name")
    N.add("preset", c.preset or "custom", "text", src)
    N.add("corpus", c.corpus, "text", src)
    for key in ("n_layer", "d_model", "n_head", "d_ff", "seq_len", "steps", "warmup"):
        N.add(key, getattr(c, key), "int", src)
    N.add("batch_seqs", c.batch_size * c.grad_accum, "int", src)
    N.add("ckpt_every", c.ckpt_every, "int", src)
    N.add("eval_every", c.eval_every, "int", src)
    n_ck = len(inp.checkpoints) or len(inp.data.get("trajectory_pca", {}).get("trunk", {}).get("decomposition", {}).get("steps", []))
    N.add("n_checkpoints", n_ck, "int", "checkpoints/ (or trajectory_pca.json when they were removed)")
    N.add("lr", c.lr, "lr", src)
    N.add("wd", c.wd, "lr", src)
    N.add("beta_two", c.beta2, "lr", src)
    N.add("p_probe", c.p_probe, "num2", src)
    N.add("lambda_before", c.lambda_probe, "num1", src)
    N.add("lambda_after", c.lambda_after, "num1", src)
    N.add("lambda_step", inp.lambda_switch, "step", src)
    N.add("optimizer", c.optimizer, "text", src)
    N.add("seed", c.seed, "step", src)
    N.add("tokenizer", c.tokenizer, "text", src)
    N.add("vocab_size", inp.config_file.get("vocab_size"), "int", src + ": vocab_size")
    N.add("n_params", inp.config_file.get("n_params"), "int", src + ": n_params")
    N.add("trunk_params", inp.config_file.get("trunk_params"), "int", src + ": trunk_params")
    N.add("git_commit", (inp.config_file.get("provenance") or {}).get("git_commit", "")[:10] or None, "text",
          src + ": provenance.git_commit")
    prov = inp.config_file.get("provenance") or {}
    N.add("numerics", (f"torch {prov['torch']}, CPU capability {prov['cpu_capability']}, {prov['threads']} thread(s)"
                       + (f", {prov['cuda']}" if prov.get("cuda") else "")) if "cpu_capability" in prov else None,
          "text", src + ": provenance (torch, cpu_capability, threads, cuda)")
    N.add("run_state", inp.status.get("state", "unknown"), "text", "status.json")
    n_params = inp.config_file.get("n_params")
    N.add("scale_phrase", "much smaller than the paper's" if n_params and n_params < 0.5 * PV.VALUES["n_params_millions"].value
          * 1e6 else "at the paper's scale" if n_params else "of unknown size", "text", "n_params vs the paper's 51M")
    m = "metrics.jsonl"
    steps, val = inp.series("val_loss")
    N.add("val_loss_init", val[0] if val else None, "num2", m)
    N.add("val_loss_final", val[-1] if val else None, "num2", m)
    s, p = best_eval(inp)
    N.add("p_ood_best", p, "num3", m)
    N.add("p_ood_best_step", s, "step", m)
    _, pood = inp.series("p_ood")
    N.add("p_ood_final", pood[-1] if pood else None, "num3", m)
    _, pin = inp.series("p_in")
    N.add("p_in_final", pin[-1] if pin else None, "num3", m)
    N.add("last_step", inp.metrics[-1]["step"], "step", m)


def numbers_backbone(inp: Inputs, N: Numbers) -> None:
    t = inp.need("trajectory_pca")
    src = "trajectory_pca.json"
    tr = t["trunk"]
    N.add("dim_trunk", tr["dim"], "int", src + ": trunk.dim")
    if t.get("blocks"):
        N.add("dim_block", t["blocks"][0]["dim"], "int", src + ": blocks[0].dim")
    N.add("pc1_trunk_raw", tr["raw"]["pc1"], "pct", src + ": trunk.raw.pc1")
    N.add("pc1_trunk_rownorm", tr["rownorm"]["pc1"], "pct", src + ": trunk.rownorm.pc1")
    N.add("pc2_trunk_raw", _at(tr["raw"]["explained_variance_ratio"], 1), "pct", src + ": trunk.raw.explained_variance_ratio[1]")
    N.add("k95_trunk", tr["raw"]["k95"], "int", src + ": trunk.raw.k95")
    N.add("k99_trunk", tr["raw"]["k99"], "int", src + ": trunk.raw.k99")
    N.add("k95_trunk_rownorm", tr["rownorm"]["k95"], "int", src + ": trunk.rownorm.k95")
    null = tr["random_walk_null"]
    N.add("null_pc1_trunk", null["pc1"], "pct", src + ": trunk.random_walk_null.pc1")
    N.add("null_pc1_trunk_std", None if null.get("pc1_std") is None else pct_points(null["pc1_std"]), "num2",
          src + ": trunk.random_walk_null.pc1_std, in percentage points")
    N.add("null_k95_trunk", null.get("k95"), "num1", src + ": trunk.random_walk_null.k95")
    N.add("null_samples", null.get("n_samples"), "int", src + ": trunk.random_walk_null.n_samples")
    excess = tr["raw"]["pc1"] - null["pc1"]
    N.add("pc1_excess_over_null", pct_points(excess), "num1", "trunk PC1 − null PC1, percentage points")
    N.add("trunk_null_verb", verb(excess > 0, "exceeds", "does not exceed"), "text", "trunk PC1 vs null PC1")
    sig = excess / null["pc1_std"] if _finite(null.get("pc1_std")) and null["pc1_std"] > 0 else None
    N.add("pc1_excess_sigmas", sig, "num0", "(trunk PC1 − null PC1) / null std")
    blocks = t.get("blocks", [])
    if blocks:
        pcs = [b["raw"]["pc1"] for b in blocks]
        N.add("pc1_block_min", min(pcs), "pct", src + ": min over blocks[].raw.pc1")
        N.add("pc1_block_max", max(pcs), "pct", src + ": max over blocks[].raw.pc1")
        above = sum(b["raw"]["pc1"] > b["random_walk_null"]["pc1"] for b in blocks)
        N.add("blocks_above_null", above, "int", "blocks whose PC1 exceeds their null")
        N.add("n_blocks", len(blocks), "int", src)
        N.add("pc1_block_zero", blocks[0]["raw"]["pc1"], "pct", src + ": blocks[0].raw.pc1")
        N.add("fb_block_zero_final", blocks[0]["decomposition"]["backbone_fraction"][-1], "pct",
              src + ": blocks[0].decomposition.backbone_fraction[-1]")
    dec = tr["decomposition"]
    N.add("fb_trunk_final", dec["backbone_fraction"][-1], "pct", src + ": trunk.decomposition.backbone_fraction[-1]")
    N.add("a_trunk_final", dec["a"][-1], "num2", src + ": trunk.decomposition.a[-1]")
    N.add("r_trunk_final", dec["residual_norm"][-1], "num2", src + ": trunk.decomposition.residual_norm[-1]")
    a = dec["a"]
    N.add("a_monotone_verb", verb(all(y >= x for x, y in zip(a, a[1:])), "grows monotonically",
                                  "is not monotone"), "text", "a(t) over the checkpoints")
    roll = tr.get("rolling_pc1")
    if roll:
        N.add("rolling_width", roll["width"], "int", src + ": trunk.rolling_pc1.width")
        N.add("rolling_global_cos", mean(roll["global_abs_cos"]), "num3", src + ": mean trunk.rolling_pc1.global_abs_cos")
        N.add("rolling_adjacent_cos", mean(roll["adjacent_abs_cos"]), "num3",
              src + ": mean trunk.rolling_pc1.adjacent_abs_cos")


def _at(xs: Sequence, i: int):
    return xs[i] if len(xs) > i else None


def numbers_update(inp: Inputs, N: Numbers) -> None:
    u = inp.need("update_alignment")
    src = "update_alignment.json"
    tr = u["trunk"]
    N.add("update_cos_trunk", tr["mean_abs_cos"], "num3", src + ": trunk.mean_abs_cos")
    N.add("update_floor_trunk", tr["noise_floor"], "sci", src + ": trunk.noise_floor")
    ph = phases(inp.cfg.steps)
    early = phase_values(tr["steps"], tr["abs_cos"], ph[0][2])
    N.add("update_cos_trunk_early", mean(early), "num3", "mean trunk |C(t)|, early phase")
    b1, b2 = phase_bounds(inp.cfg.steps)
    N.add("early_end", b1, "step", "end of the early phase: the paper's, scaled to this run's steps")
    N.add("mid_end", b2, "step", "end of the middle phase: the paper's, scaled to this run's steps")

    def flip_phrase(t_star):
        return (f"turns negative for good from step {fmt(t_star, 'step')}" if t_star is not None
                else "never turns negative for good")
    if u.get("blocks"):
        b0 = u["blocks"][0]
        e0 = phase_values(b0["steps"], b0["abs_cos"], ph[0][2])
        N.add("update_cos_block_zero_early", mean(e0), "num3", "mean block-0 |C(t)|, early phase")
        N.add("update_cos_block_zero_peak", max(b0["abs_cos"]) if b0["abs_cos"] else None, "num3",
              src + ": max blocks[0].abs_cos")
        N.add("sign_flip_block_zero", b0["sign_flip_step"] if b0["sign_flip_step"] is not None else "none",
              "step" if b0["sign_flip_step"] is not None else "text", src + ": blocks[0].sign_flip_step")
        N.add("sign_flip_block_zero_phrase", flip_phrase(b0["sign_flip_step"]), "text", "blocks[0].sign_flip_step")
        flips = [b["sign_flip_step"] for b in u["blocks"] if b["sign_flip_step"] is not None]
        N.add("n_blocks_flipped", len(flips), "int", "blocks with a sign flip")
    N.add("sign_flip_trunk", tr["sign_flip_step"] if tr["sign_flip_step"] is not None else "none",
          "step" if tr["sign_flip_step"] is not None else "text", src + ": trunk.sign_flip_step")
    N.add("sign_flip_trunk_phrase", flip_phrase(tr["sign_flip_step"]), "text", "trunk.sign_flip_step")


def numbers_gradient(inp: Inputs, N: Numbers) -> None:
    r = inp.need("residual_decomposition")
    src = "residual_decomposition.json"
    cks = r["checkpoints"]
    g = [c["total"]["trunk"]["mean_abs_cos"] for c in cks]
    over = [c["total"]["trunk"]["abs_cos_over_floor"] for c in cks]
    N.add("grad_cos_min", min(g), "num4", src + ": min checkpoints[].total.trunk.mean_abs_cos")
    N.add("grad_cos_max", max(g), "num4", src + ": max checkpoints[].total.trunk.mean_abs_cos")
    N.add("grad_cos_mean", mean(g), "num4", src + ": mean checkpoints[].total.trunk.mean_abs_cos")
    N.add("grad_floor_trunk", r["noise_floor"]["trunk"], "sci", src + ": noise_floor.trunk")
    N.add("grad_over_floor_min", min(over), "x", src + ": min abs_cos_over_floor (trunk)")
    N.add("grad_over_floor_max", max(over), "x", src + ": max abs_cos_over_floor (trunk)")
    N.add("grad_batches", r["settings"]["n_batches"], "int", src + ": settings.n_batches")
    N.add("grad_n_checkpoints", len(cks), "int", src)
    if "update_alignment" in inp.data:
        upd = inp.data["update_alignment"]["trunk"]["mean_abs_cos"]
        ratio = upd / mean(g) if mean(g) else None
        N.add("update_over_grad", ratio, "x", "mean trunk |C(t)| / mean trunk |cos(g, v_b)|")
        N.add("update_grad_verb", verb(ratio is not None and ratio > 1, "exceeds", "does not exceed"), "text",
              "update vs gradient alignment")
    B = r["cumulative_B"]["total"][-1]
    N.add("b_cumulative_block_zero", B[0], "signed", src + ": cumulative_B.total[-1][0]")
    if len(B) > 1:
        N.add("b_cumulative_others_max", max(abs(x) for x in B[1:]), "num3", "max |B_l| over blocks l ≥ 1")
    lead = max(range(len(B)), key=lambda i: abs(B[i]))
    N.add("b_leading_block", lead, "int", "block with the largest |B_l|")


def numbers_fisher(inp: Inputs, N: Numbers) -> None:
    q = inp.need("rayleigh_quotients")
    src = "rayleigh_quotients.json"
    cks = q["checkpoints"]
    qb = [c["q_backbone"] for c in cks]
    N.add("q_b_first", qb[0], "sci", src + ": checkpoints[0].q_backbone")
    N.add("q_b_last", qb[-1], "sci", src + ": checkpoints[-1].q_backbone")
    N.add("q_first_step", cks[0]["step"], "step", src)
    N.add("q_last_step", cks[-1]["step"], "step", src)
    growth = qb[-1] / qb[0] if _finite(qb[0]) and qb[0] > 0 and _finite(qb[-1]) else None
    N.add("q_b_growth", growth, "x", "q(v_b) last / first checkpoint")
    N.add("q_b_growth_verb", "grows" if growth is not None and growth > 1 else ("falls" if growth is not None else "n/a"), "text",
          "q(v_b) last vs first")
    alpha = [c["anisotropy"] for c in cks]
    ia = max(range(len(alpha)), key=lambda i: alpha[i] if _finite(alpha[i]) else -math.inf)
    N.add("anisotropy_max", alpha[ia], "num1", src + ": max checkpoints[].anisotropy")
    N.add("anisotropy_max_step", cks[ia]["step"], "step", src)
    N.add("anisotropy_min", min(a for a in alpha if _finite(a)), "num1", src + ": min checkpoints[].anisotropy")
    N.add("anisotropy_above_one", sum(1 for a in alpha if _finite(a) and a > 1), "int", "checkpoints with α > 1")
    N.add("q_n_checkpoints", len(cks), "int", src)
    N.add("q_batches", q.get("M"), "int", src + ": M")
    N.add("q_random_dirs", q.get("K"), "int", src + ": K")
    ov = [c.get("overlap_top_eigvec_backbone") for c in cks]
    ov = [x for x in ov if _finite(x)]
    N.add("top_eig_overlap_max", max(ov) if ov else None, "num3", src + ": max overlap_top_eigvec_backbone")


def numbers_switching(inp: Inputs, N: Numbers) -> None:
    man = inp.data.get("oscillation_manifest")
    s = inp.data.get("switching_alignment")
    if man is None and s is None:
        inp.need("oscillation_manifest")
    n = len((s or man)["pairs"])
    N.add("n_switch_pairs", n, "int", "switching_alignment.json (or oscillation_manifest.json): pairs")
    N.add("oscillation_verb", verb(n > 0, "shows", "does not show"), "text", "switch pairs detected")
    if s is None or not s.get("pairs"):
        return
    src = "switching_alignment.json"
    summ = s["trunk"]["summary"]
    k = s["trunk"].get("k_max", 6)
    N.add("e_k", k, "int", src + ": trunk.k_max")
    N.add("switch_cos_trunk", summ["mean_abs_cos_backbone"], "num3", src + ": trunk.summary.mean_abs_cos_backbone")
    N.add("switch_share_trunk", summ["mean_backbone_share"], "num3", src + ": trunk.summary.mean_backbone_share")
    N.add("switch_transverse_trunk", 1 - summ["mean_backbone_share"], "pct", "1 − mean backbone share")
    N.add("e_trunk", summ["mean_capture_transverse"], "pct", src + ": trunk.summary.mean_capture_transverse")
    br = s.get("block_range", {})
    if br.get("abs_cos_backbone"):
        N.add("switch_cos_block_min", br["abs_cos_backbone"][0], "num3", src + ": block_range.abs_cos_backbone[0]")
        N.add("switch_cos_block_max", br["abs_cos_backbone"][1], "num3", src + ": block_range.abs_cos_backbone[1]")
    key = f"capture_transverse_pc2_to_pc{k}"
    if br.get(key):
        N.add("e_block_min", br[key][0], "pct", f"{src}: block_range.{key}[0]")
        N.add("e_block_max", br[key][1], "pct", f"{src}: block_range.{key}[1]")
    N.add("switch_pairwise_mean", summ.get("mean_abs_cos_between_events"), "num3",
          src + ": trunk.summary.mean_abs_cos_between_events")
    N.add("switch_pairwise_max", summ.get("max_abs_cos_between_events"), "num3",
          src + ": trunk.summary.max_abs_cos_between_events")


def numbers_reheating(inp: Inputs, N: Numbers) -> None:
    runs = reheat_runs(inp)
    best = best_reheat(runs)
    re_ = best["reentry"]
    src = "reheating.json: runs[best G]"
    N.add("reheat_n_runs", len(runs), "int", "reheating.json: runs")
    N.add("reheat_from_step", best["from_step"], "step", src + ".from_step")
    N.add("reheat_lambda", best.get("lam"), "num1", src + ".lam")
    N.add("reheat_steps", best.get("n_steps", best["steps"][-1] if best.get("steps") else None), "int", src)
    N.add("reheat_best_lr", best["lr"], "lr", src + ".lr")
    N.add("reheat_best_moments", "saved moments" if best.get("moments") else "a fresh optimizer", "text", src)
    N.add("reheat_p_zero", re_["p0"], "num3", src + ".reentry.p0")
    N.add("reheat_peak", re_["peak_p_ood"], "num3", src + ".reentry.peak_p_ood")
    N.add("reheat_peak_step", re_["peak_step"], "step", src + ".reentry.peak_step")
    N.add("reheat_gain", re_["G"], "signed", src + ".reentry.G")
    N.add("reheat_final", re_["final_p_ood"], "num3", src + ".reentry.final_p_ood")
    N.add("reheat_transient_verb", verb(re_["final_p_ood"] < re_["peak_p_ood"], "falls back", "stays at its peak"),
          "text", "final vs peak p_ood")
    _, orig_best = best_eval(inp)
    N.add("reheat_vs_train_verb", verb(orig_best is not None and re_["peak_p_ood"] > orig_best, "exceeds",
                                       "does not exceed"), "text", "reheating peak vs the run's best p_ood")
    both = [r for r in runs if _finite(r.get("rel_delta_a")) and _finite(r.get("rel_delta_r"))]
    if both:
        N.add("reheat_rel_delta_a", best.get("rel_delta_a"), "signed", src + ".rel_delta_a")
        N.add("reheat_rel_delta_r", best.get("rel_delta_r"), "signed", src + ".rel_delta_r")
        smaller = sum(abs(r["rel_delta_a"]) < abs(r["rel_delta_r"]) for r in both)
        N.add("reheat_a_smaller_count", smaller, "int", "runs with |Δa/a| < |Δ‖r‖/‖r‖|")
        N.add("reheat_geometry_runs", len(both), "int", "runs with both relative changes")


def numbers_sgd(inp: Inputs, N: Numbers) -> None:
    s = inp.need("sgd")
    src = "sgd_control_results.json"
    rows = {r["run"]: r for r in s["table9"]}
    for run, key in (("A", "adamw"), ("B", "sgd"), ("C", "momentum"), ("C'", "nesterov")):
        r = rows.get(run)
        if r is None:
            continue
        N.add(f"sgd_pc1_{key}", r.get("pc1"), "pct", f"{src}: table9[{run}].pc1")
        N.add(f"sgd_k95_{key}", r.get("k95"), "int", f"{src}: table9[{run}].k95")
        N.add(f"sgd_val_{key}", r.get("final_val_loss"), "num2", f"{src}: table9[{run}].final_val_loss")
        N.add(f"sgd_pood_{key}", r.get("best_p_ood"), "num3", f"{src}: table9[{run}].best_p_ood")
    N.add("sgd_verdict", (s.get("verdict") or {}).get("outcome"), "text", src + ": verdict.outcome")


def numbers_beta(inp: Inputs, N: Numbers) -> None:
    b = inp.need("beta")
    src = "beta_sweep_summary.json"
    ok = [r for r in b["table"] if r.get("state") != "diverged" and _finite(r.get("pc1"))]
    if ok:
        lo, hi = min(ok, key=lambda r: r["pc1"]), max(ok, key=lambda r: r["pc1"])
        N.add("beta_pc1_min", lo["pc1"], "pct", src + ": min table[].pc1 (non-diverged)")
        N.add("beta_pc1_min_beta", lo["beta2"], "lr", src)
        N.add("beta_pc1_max", hi["pc1"], "pct", src + ": max table[].pc1 (non-diverged)")
        N.add("beta_pc1_max_beta", hi["beta2"], "lr", src)
        by_beta = sorted(ok, key=lambda r: -r["beta2"])
        mono = all(x["pc1"] >= y["pc1"] for x, y in zip(by_beta, by_beta[1:]))
        N.add("beta_monotone_verb", verb(mono, "falls monotonically", "does not fall monotonically"), "text",
              "PC1 as β2 decreases")
    div = [r["beta2"] for r in b["table"] if r.get("state") == "diverged"]
    N.add("beta_diverged", ", ".join(f"{x:g}" for x in div) if div else "none", "text", src + ": state == diverged")
    N.add("beta_n_runs", len(b["table"]), "int", src)


def numbers_paper(N: Numbers) -> None:
    """The published values, as macros Paper<Name> (so the paper's text never types a number)."""
    for key, pv in PV.VALUES.items():
        N.add(f"paper_{key}", pv.value, pv.kind, pv.source + (f" ({pv.note})" if pv.note else ""))


NUMBER_SECTIONS = [("run", numbers_run, None), ("backbone", numbers_backbone, "trajectory_pca"),
                   ("alignment", numbers_update, "update_alignment"), ("gradient", numbers_gradient, "residual_decomposition"),
                   ("fisher", numbers_fisher, "rayleigh_quotients"), ("switching", numbers_switching, "switching_alignment"),
                   ("reheating", numbers_reheating, "reheating"), ("sgd", numbers_sgd, "sgd"), ("beta", numbers_beta, "beta")]


# ============================================================================ tables
def table2(inp: Inputs) -> Table:
    t = inp.need("trajectory_pca")
    cols = [Col("unit", align="l"), Col("D", "int"), Col("PC1 raw (%)", "pct"), Col("PC1 row-norm. (%)", "pct"),
            Col("null PC1 (%)", "pct"), Col("k95", "int", r"$k_{95}$"), Col("k99", "int", r"$k_{99}$"),
            Col("null k95", "num1", r"null $k_{95}$"), Col("f_b final (%)", "pct", r"$f_b$ final (\%)"),
            Col("rolling |cos| with v_b", "num3", r"rolling $|\cos(v_b^{(w)}, v_b)|$")]
    rows = []
    for label, e in [("trunk", t["trunk"])] + [(block_label(b["block"]), b) for b in t.get("blocks", [])]:
        roll = e.get("rolling_pc1")
        rows.append([label, e.get("dim"), e["raw"]["pc1"], e["rownorm"]["pc1"], e["random_walk_null"]["pc1"],
                     e["raw"]["k95"], e["raw"]["k99"], e["random_walk_null"].get("k95"),
                     e["decomposition"]["backbone_fraction"][-1], mean(roll["global_abs_cos"]) if roll else None])
    n = len(t["trunk"]["raw"]["explained_variance_ratio"])
    ref = t["trunk"]["raw"].get("reference_step", 0)
    return Table("table2_pc1", "Table 2 analogue: backbone dominance per block",
                 f"Uncentered PCA of the drifts θ(t) − θ({ref}) over {n} checkpoints; PC1 = σ1²/Σσj² over the full "
                 "spectrum, raw and row-normalised; the random-walk null has the run's own step sizes in random "
                 "directions (mean over its samples); f_b = a²/‖x‖² at the last checkpoint; rolling: mean |cos| of "
                 f"windowed PC1s with the global v_b. Paper ({PV.VALUES['block_pc1_range'].source}): "
                 f"{pv('block_pc1_range')} % per block.", cols, rows)


def table3(inp: Inputs) -> Table:
    u = inp.need("update_alignment")
    tr, blocks = u["trunk"], u.get("blocks", [])
    cols = [Col("phase", align="l"), Col("steps", align="l"), Col("updates", "int"), Col("trunk mean |C|", "num3", r"trunk $|C|$"),
            Col("block 0 mean |C|", "num3", r"block 0 $|C|$"), Col("block 0 peak |C|", "num3", r"block 0 peak $|C|$"),
            Col("blocks ≥ 1 (median of means)", "num3", r"blocks $\ge 1$ (median)")]
    sel = [(name, rng, test) for name, rng, test in phases(inp.cfg.steps)]
    lam = inp.lambda_switch
    if lam is not None:
        sel += [("before λ switch", f"t ≤ {lam}", lambda t: t <= lam), ("after λ switch", f"t > {lam}", lambda t: t > lam)]
    rows = []
    for name, rng, test in sel:
        tv = phase_values(tr["steps"], tr["abs_cos"], test)
        b0 = phase_values(blocks[0]["steps"], blocks[0]["abs_cos"], test) if blocks else []
        others = [mean(phase_values(b["steps"], b["abs_cos"], test)) for b in blocks[1:]]
        others = [x for x in others if x is not None]
        rows.append([name, rng, len(tv), mean(tv), mean(b0), max(b0) if b0 else None,
                     statistics.median(others) if others else None])
    return Table("table3_update_alignment", "Table 3 analogue: update alignment |C(t)| by phase",
                 f"C(t) = cos(θ(t) − θ(t−Δ), v_b) with Δ the checkpoint spacing; phases are the paper's (boundaries "
                 f"{pv('early_end')} and {pv('mid_end')} of {pv('steps')} steps) as fractions of this run's "
                 f"{inp.cfg.steps} steps"
                 + (f", plus the split at the λ switch (step {lam})" if lam is not None else "")
                 + f". Noise floor sqrt(2/(πD)) = {fmt(tr['noise_floor'], 'sci')} (trunk). Paper (seed 001 Table 3, "
                   "block 0): " + ", ".join(f"{fmt(r['block0'], 'num3')} {r['phase']}" for r in PV.TABLE3) + ".",
                 cols, rows)


def table4(inp: Inputs) -> Table:
    u = inp.need("update_alignment")
    ph = phases(inp.cfg.steps)
    T = inp.cfg.steps
    cols = [Col("unit", align="l"), Col("t*", "text", r"$t^*$"), Col("t*/T", "num2", r"$t^*/T$"),
            Col("early C", "signed", "early $C$"), Col("late C", "signed", "late $C$"), Col("mean C", "signed", "mean $C$")]
    rows = []
    for label, e in [("trunk", u["trunk"])] + [(block_label(b["block"]), b) for b in u.get("blocks", [])]:
        t_star = e.get("sign_flip_step")
        rows.append([label, Cell(t_star, "step") if t_star is not None else "none", t_star / T if t_star is not None else None,
                     mean(phase_values(e["steps"], e["signed_cos"], ph[0][2])),
                     mean(phase_values(e["steps"], e["signed_cos"], ph[2][2])), e.get("mean_signed_cos")])
    return Table("table4_sign_flip", "Table 4 analogue: sign of the update alignment",
                 f"Signed C(t) with v_b oriented along the net drift (a(t_last) > 0); t* is the first step after which "
                 f"C(t) stays negative (T = {T}); early/late = the phases of Table 3. The paper's v_b orientation is "
                 "arbitrary, so its signs may be the mirror image of ours. Paper (seed 001 Table 4, block 0): "
                 + "; ".join(f"seed {r['seed']}: t* ≈ {fmt(r['t_star'], 'int')}, early {fmt(r['early'], 'num2')}, late "
                             f"{fmt(r['late'], 'num2')}" for r in PV.TABLE4) + f" (of {pv('steps')} steps).",
                 cols, rows)


def table5(inp: Inputs) -> Table:
    r = inp.need("residual_decomposition")
    L = len(r["checkpoints"][0]["total"]["b"])
    cols = [Col("step", "step"), Col("λ", "num1", r"$\lambda$")] + [Col(f"b_{i}", "signed", f"$b_{{{i}}}$") for i in range(L)]
    rows = [[c["step"], c.get("lambda")] + list(c["total"]["b"]) for c in r["checkpoints"]]
    rows.append([Cell("B (sum)", "text"), None] + list(r["cumulative_B"]["total"][-1]))
    return Table("table5_block_bias", "Table 5 analogue: per-block signed gradient projection",
                 f"b_ℓ(t) = (1/M) Σ_i ⟨g_i restricted to block ℓ, v_ℓ⟩ for the total loss (M = {r['settings']['n_batches']}, "
                 "v_ℓ the block backbone along the net drift, so b_ℓ < 0 means descent moves block ℓ forward along "
                 f"its backbone); last row: B_ℓ = Σ_t b_ℓ(t). Paper (seed 001 Table 5, §4.4): block 0 dominates by "
                 f"{pv('b0_dominance')}, B_0 ≈ {pv('b0_cumulative')}.",
                 cols, rows)


def table_grad(inp: Inputs) -> Table:
    r = inp.need("residual_decomposition")
    cols = [Col("step", "step"), Col("λ", "num1", r"$\lambda$"), Col("trunk mean |cos(g, v_b)|", "num4", r"trunk $|\cos(g, v_b)|$"),
            Col("std", "num4"), Col("noise floor", "sci"), Col("ratio", "x"),
            Col("block 0 mean |cos|", "num4", r"block 0 $|\cos|$"), Col("block 0 ratio", "x")]
    rows = []
    for c in r["checkpoints"]:
        t = c["total"]["trunk"]
        b0 = c["total"]["blocks"][0] if c["total"].get("blocks") else {}
        rows.append([c["step"], c.get("lambda"), t["mean_abs_cos"], t.get("std_cos"), t["noise_floor"],
                     t["abs_cos_over_floor"], b0.get("mean_abs_cos"), b0.get("abs_cos_over_floor")])
    return Table("table_gradient_alignment", "Gradient alignment with the backbone",
                 f"Mean over M = {r['settings']['n_batches']} seeded mini-batch gradients of |cos(g_i, v_b)| (total "
                 "loss), its std, the random-direction floor sqrt(2/(πD)) and their ratio. Paper (seed 001 §4.1): "
                 f"{pv('grad_abs_cos')} against a floor of {pv('noise_floor')} (one block).", cols, rows)


def table6(inp: Inputs) -> Table:
    q = inp.need("rayleigh_quotients")
    cols = [Col("step", "step"), Col("λ", "num1", r"$\lambda$"), Col("q(v_b)", "sci", r"$q(v_b)$"),
            Col("q(v_sw)", "sci", r"$q(v_{sw})$"), Col("q(PC2)", "sci", r"$q(v_{PC2})$"),
            Col("mean q(w)", "sci", r"mean $q(w)$"), Col("α", "x", r"$\alpha$"), Col("|⟨u1, v_b⟩|", "num3", r"$|\langle u_1, v_b\rangle|$")]
    rows = [[c["step"], c.get("lambda"), c["q_backbone"], c.get("q_switch"), c.get("q_pc2"), c["q_random_mean"],
             c["anisotropy"], c.get("overlap_top_eigvec_backbone")] for c in q["checkpoints"]]
    sw = q.get("directions", {}).get("switch_pair")
    note = (f"v_sw from the switch pair {sw['peak_step']}/{sw['trough_step']}" if sw else
            "no switching direction (no switch pair)")
    return Table("table6_rayleigh", "Table 6 analogue: Fisher Rayleigh quotients and anisotropy",
                 f"q(v) = (1/M) Σ ⟨g_i, v⟩² over M = {q.get('M')} mini-batch gradients; α = q(v_b) / mean q(w_k) over "
                 f"K = {q.get('K')} random unit directions ⊥ v_b; u1 = top empirical-Fisher eigenvector; {note}. "
                 f"Paper (seed 001 Table 6, seed 42): q(v_b) {fmt(PV.TABLE6[0]['q_b'], 'sci')} at step "
                 f"{PV.TABLE6[0]['step']} → {fmt(PV.TABLE6[-1]['q_b'], 'sci')} at step {PV.TABLE6[-1]['step']}, α up "
                 f"to {fmt(max(r['alpha'] for r in PV.TABLE6), 'num1')} at the λ transition.", cols, rows)


def table_switching(inp: Inputs) -> Table:
    s = inp.need("switching_alignment")
    if not s.get("pairs"):
        raise Empty("the oscillation manifest has no switch pairs (no oscillation of p_ood above the detection "
                    "threshold), so there is no switching direction")
    k = s["trunk"].get("k_max", 6)
    key = f"pc2_to_pc{k}"
    blocks = s.get("blocks", [])
    cols = [Col("peak", "step"), Col("trough", "step"), Col("kind", align="l"), Col("Δp_ood", "num3", r"$\Delta p_{ood}$"),
            Col("|⟨v_sw, v_b⟩|", "num3", r"$|\langle v_{sw}, v_b\rangle|$"), Col("backbone share", "num3"),
            Col(f"E_2:{k} (%)", "pct", rf"$E_{{2:{k}}}$ (\%)"), Col("blocks |⟨v_sw, v_ℓ⟩|", "num3", r"blocks $|\langle v_{sw}, v_\ell\rangle|$"),
            Col(f"blocks E_2:{k} (%)", "pct", rf"blocks $E_{{2:{k}}}$ (\%)")]
    rows = []
    for i, p in enumerate(s["trunk"]["pairs"]):
        bc = [b["pairs"][i]["abs_cos_backbone"] for b in blocks]
        be = [b["pairs"][i]["capture_transverse"][key] for b in blocks]
        amp = next((q.get("amplitude") for q in s["pairs"] if q["peak_step"] == p["peak_step"]
                    and q["trough_step"] == p["trough_step"]), None)
        rows.append([p["peak_step"], p["trough_step"], p["kind"], amp, p["abs_cos_backbone"], p["backbone_share"],
                     p["capture_transverse"][key], (min(bc), max(bc)) if bc else None, (min(be), max(be)) if be else None])
    summ = s["trunk"]["summary"]
    br = s.get("block_range", {})
    rows.append([Cell("mean", "text"), None, None, None, summ["mean_abs_cos_backbone"], summ["mean_backbone_share"],
                 summ["mean_capture_transverse"], tuple(br["abs_cos_backbone"]) if br.get("abs_cos_backbone") else None,
                 tuple(br[f"capture_transverse_{key}"]) if br.get(f"capture_transverse_{key}") else None])
    return Table("table_switching", "Switching directions against the backbone",
                 f"v_sw = (θ(peak) − θ(trough))/‖·‖ per switch pair of the oscillation manifest; backbone share = "
                 f"⟨v_sw, v_b⟩²; E_2:{k} = energy of the transverse part of v_sw in PCs 2–{k}; block columns: range "
                 f"over blocks (block backbones). Paper (seed 001 §7): |⟨v_sw, v_b⟩| {pv('switch_abs_cos')}, share "
                 f"{pv('switch_backbone_share')}, E_2:6 {pv('e26_seed42')} % (seed 42) and {pv('e26_seed271')} % "
                 "(seed 271).", cols, rows,
                 notes=[f"Between events: mean |cos| {fmt(summ.get('mean_abs_cos_between_events'), 'num3')}, max "
                        f"{fmt(summ.get('max_abs_cos_between_events'), 'num3')} (paper: < {pv('switch_pairwise_cos')})."])


def table9(inp: Inputs) -> Table:
    s = inp.need("sgd")
    cols = [Col("run", align="l"), Col("optimizer", align="l"), Col("state", align="l"), Col("final val", "num2"),
            Col("best p_ood", "num3", r"best $p_{ood}$"), Col("PC1 (%)", "pct"), Col("PC1 raw (%)", "pct"),
            Col("k95", "int", r"$k_{95}$"), Col("k99", "int", r"$k_{99}$"), Col("drift", "num1")]
    rows = [[r["run"], r.get("optimizer"), r.get("state"), r.get("final_val_loss"), r.get("best_p_ood"), r.get("pc1"),
             r.get("pc1_raw"), r.get("k95"), r.get("k99"), r.get("drift")] for r in s["table9"]]
    v = s.get("verdict") or {}
    prot = s.get("protocol") or {}
    win = prot.get("window") if isinstance(prot, dict) else None
    return Table("table9_sgd", "Table 9 analogue: SGD-family controls",
                 "Training outcome and the row-normalised window PCA (anchored at the window's first checkpoint"
                 + (f", window {win}" if win else "") + "). Paper (seed 001 Table 9): "
                 + "; ".join(f"{r['run']} {fmt(r['pc1'], 'num1')} %, k95 {fmt(r['k95'], 'int')}" for r in PV.TABLE9
                             if r["pc1"] is not None) + ".", cols, rows,
                 notes=[f"Pre-registered verdict: {v.get('outcome', 'n/a')}. {v.get('reading', '')}".strip()])


def table10(inp: Inputs) -> Table:
    s = inp.need("sgd")
    cols = [Col("run", align="l"), Col("optimizer", align="l"), Col("window", align="l"), Col("kind", align="l"),
            Col("val range", "num2"), Col("PC1 (%)", "pct"), Col("k95", "int", r"$k_{95}$"),
            Col("k99", "int", r"$k_{99}$"), Col("drift", "num2")]

    def win(r):
        w = r.get("window_spec") or r.get("window")
        if isinstance(w, list):
            w = f"[{w[0]}..{w[-1]}] ({len(w)})" if len(w) > 4 else "[" + ", ".join(str(x) for x in w) + "]"
        return w

    rows = [[r["run"], r.get("optimizer"), win(r), r.get("kind"), tuple(r["val_range"]) if r.get("val_range") else None,
             r.get("pc1"), r.get("k95"), r.get("k99"), r.get("drift")] for r in s["table10"]]
    for r in (s.get("matched") or {}).get("rows", []):
        rows.append([r["run"], r.get("optimizer"), win(r), r.get("kind", "auto-matched"),
                     tuple(r["val_range"]) if r.get("val_range") else None, r.get("pc1"), r.get("k95"), r.get("k99"),
                     r.get("drift")])
    return Table("table10_matched", "Table 10 analogue: geometry at matched validation loss",
                 "The paper's windows scaled to this preset, and (auto-matched) windows around the validation loss "
                 "SGD + momentum ends at. Paper (seed 001 Table 10): "
                 + "; ".join(f"{r['optimizer']} {r['window']} {fmt(r['pc1'], 'num1')} %, k95 {r['k95']}" for r in PV.TABLE10)
                 + ".", cols, rows)


def table_beta(inp: Inputs) -> Table:
    b = inp.need("beta")
    cols = [Col("β2", "num2", r"$\beta_2$"), Col("val loss", "num3"), Col("best p_ood", "num3", r"best $p_{ood}$"),
            Col("PC1 (%)", "pct"), Col("k95", "int", r"$k_{95}$"), Col("drift", "num1"),
            Col("|cos(u, v_b)|", "num3", r"$|\cos(u, v_b)|$"), Col("interference", "num3")]
    rows = []
    for r in b["table"]:
        val = r.get("val_display", r.get("final_val_loss"))
        rows.append([r["beta2"], val if isinstance(val, str) else r.get("final_val_loss"), r.get("best_p_ood"),
                     r.get("pc1"), r.get("k95"), r.get("drift"), r.get("mean_abs_update_cos"), r.get("interference")])
    return Table("table_beta2", "β2 sweep (the columns of the seed-000 table)",
                 "Only β2 differs between the runs; geometry on the paper's window scaled to the preset; interference "
                 "= cos(g_LM, g_probe). Paper (seed 000 §3), β2: val loss, PC1 %: "
                 + "; ".join(f"{fmt(r['beta2'], 'num2')}: {r['val']}, {fmt(r['pc1'], 'num1')}" for r in PV.BETA2) + ".",
                 cols, rows)


def table_beta_reheat(inp: Inputs) -> Table:
    b = inp.need("beta")
    if not b.get("reheat_table"):
        raise Empty(f"{inp.study_dirs['beta'] / STUDY_INPUTS['beta'][0]} has no reheat_table (the β2 reheating grid "
                    "has not run)")
    cols = [Col("β2", "num2", r"$\beta_2$"), Col("ckpt", "step"), Col("best lr", "lr"), Col("p0", "num3", r"$p_0$"),
            Col("peak p_ood", "num3", r"peak $p_{ood}$"), Col("G", "signed", "$G$")]
    rows = []
    for r in b["reheat_table"]:
        lr = Cell("any", "text") if r.get("best_lr_tied") else r.get("best_lr")
        rows.append([r["beta2"], r["ckpt"], lr, r.get("p0"), r.get("peak_p_ood"), r.get("G")])
    return Table("table_beta2_reheat", "β2-ablation reheating", "Best learning rate (largest G) per (β2, checkpoint). "
                 "Paper (seed 000 §5), β2 / checkpoint: G = "
                 + "; ".join(f"{fmt(r['beta2'], 'num2')} / {r['ckpt']}: {fmt(r['G'], 'signed')}" for r in PV.BETA2_REHEAT)
                 + ".", cols, rows)


def table11(inp: Inputs) -> Table:
    runs = reheat_runs(inp)
    cols = [Col("lr", "lr"), Col("optimizer state", align="l"), Col("from step", "step"), Col("p0", "num3", r"$p_0$"),
            Col("peak p_ood", "num3", r"peak $p_{ood}$"), Col("at step", "step"), Col("first ≥ thr.", "step", r"first $\ge$ thr."),
            Col("final", "num3"), Col("G", "signed", "$G$"), Col("Δa/a", "signed", r"$\Delta a/a$"),
            Col("Δ‖r‖/‖r‖", "signed", r"$\Delta\|r\|/\|r\|$")]
    rows = []
    for r in runs:
        e = r["reentry"]
        rows.append([r["lr"], "saved moments" if r.get("moments") else "fresh", r.get("from_step"), e.get("p0"),
                     e.get("peak_p_ood"), e.get("peak_step"), e.get("first_step_at_threshold"), e.get("final_p_ood"),
                     e.get("G"), r.get("rel_delta_a"), r.get("rel_delta_r")])
    thr = runs[0]["reentry"].get("threshold")
    return Table("table11_reheating", "Table 11 analogue: reheating",
                 f"Training resumed from a checkpoint with λ = {fmt(runs[0].get('lam'), 'num1')}, warmup then cosine; "
                 f"steps are counted from the reheating start; threshold {fmt(thr, 'num2')}; G = max p_ood − p0; "
                 "Δa/a and Δ‖r‖/‖r‖: final change of the backbone coordinate and residual norm (original run's v_b). "
                 "Paper (seed 001 Table 11, seed 42), lr: peak at step, final: "
                 + "; ".join(f"{fmt(r['lr'], 'lr')}: {fmt(r['peak'], 'num3')} at {r['at']}, {fmt(r['final'], 'num3')}"
                             for r in PV.TABLE11) + f"; G up to {pv('reheat_G')} (seed 000 §5).", cols, rows)


TABLES: list[tuple[str, Callable[[Inputs], Table]]] = [
    ("table2_pc1", table2), ("table3_update_alignment", table3), ("table4_sign_flip", table4),
    ("table5_block_bias", table5), ("table_gradient_alignment", table_grad), ("table6_rayleigh", table6),
    ("table_switching", table_switching), ("table9_sgd", table9), ("table10_matched", table10),
    ("table_beta2", table_beta), ("table_beta2_reheat", table_beta_reheat), ("table11_reheating", table11)]


# ============================================================================ figures
def _twin_p_ood(ax, inp: Inputs, data: dict):
    from figures import style
    steps, p = inp.series("p_ood")
    ax2 = ax.twinx()
    ax2.plot(steps, p, color=style.COLORS["p_ood"], lw=1.0, marker="o", ms=2, alpha=0.8, label=r"$p_{ood}$")
    ax2.set_ylabel(r"$p_{ood}$", color=style.COLORS["p_ood"])
    ax2.tick_params(axis="y", colors=style.COLORS["p_ood"])
    ax2.set_ylim(-0.02, 1.02)
    ax2.grid(False)
    data["p_ood"] = {"steps": steps, "p_ood": p}
    return ax2


def fig1(inp: Inputs):
    """Backbone decomposition: a(t), ‖r(t)‖ with p_ood on a twin axis, trunk and block 0."""
    from figures import style
    t = inp.need("trajectory_pca")
    units = [("trunk", t["trunk"])] + ([("block 0", t["blocks"][0])] if t.get("blocks") else [])
    fig, ax = style.figure(1, len(units))
    data = {"lambda_switch": inp.lambda_switch, "panels": []}
    for j, (name, e) in enumerate(units):
        a_ = ax[0, j]
        d = e["decomposition"]
        a_.plot(d["steps"], d["a"], color=style.COLORS["backbone"], label=r"$a(t)$")
        a_.plot(d["steps"], d["residual_norm"], color=style.COLORS["residual"], label=r"$\|r(t)\|$")
        style.mark_step(a_, inp.lambda_switch, r"$\lambda$ switch")
        a_.set(xlabel="step", ylabel="parameter distance",
               title=f"{name}: PC1 {fmt(e['raw']['pc1'], 'pct')} %, $f_b$ = {fmt(d['backbone_fraction'][-1], 'pct')} %")
        ax2 = _twin_p_ood(a_, inp, {})
        h1, l1 = a_.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        a_.legend(h1 + h2, l1 + l2, loc="upper left")
        style.panel_label(a_, "(" + "ab"[j] + ")")
        data["panels"].append({"unit": name, "steps": d["steps"], "a": d["a"], "residual_norm": d["residual_norm"],
                               "backbone_fraction": d["backbone_fraction"], "pc1": e["raw"]["pc1"]})
    data["p_ood"] = dict(zip(("steps", "p_ood"), inp.series("p_ood")))
    fig.suptitle("Backbone–residual decomposition $\\theta(t) = \\theta(0) + a(t)\\,v_b + r(t)$", fontsize=9)
    return fig, data


def fig2(inp: Inputs):
    """Update alignment |C(t)| vs gradient alignment |cos(g, v_b)| with the noise floor (log), and signed C(t)."""
    from figures import style
    u = inp.need("update_alignment")
    r = inp.data.get("residual_decomposition")
    fig, ax = style.figure(1, 2, height=3.1)
    a0, a1 = ax[0, 0], ax[0, 1]
    units = [("trunk", u["trunk"], style.COLORS["trunk"])]
    if u.get("blocks"):
        units.append(("block 0", u["blocks"][0], style.COLORS["block0"]))
    data = {"update": [], "gradient": [], "lambda_switch": inp.lambda_switch}
    for name, e, col in units:
        a0.plot(e["steps"], e["abs_cos"], color=col, label=f"update $|C(t)|$, {name}")
        a1.plot(e["steps"], e["signed_cos"], color=col, ls="--", label=f"$C(t)$, {name}")
        if e.get("sign_flip_step") is not None:
            a1.plot([e["sign_flip_step"]], [0], marker="v", color=col, ms=6, ls="none", label=f"$t^*$ {name}")
        a0.axhline(e["noise_floor"], color=col, ls=":", lw=0.9, label=f"floor $\\sqrt{{2/\\pi D}}$, {name}")
        data["update"].append({"unit": name, "steps": e["steps"], "abs_cos": e["abs_cos"], "signed_cos": e["signed_cos"],
                               "noise_floor": e["noise_floor"], "sign_flip_step": e.get("sign_flip_step")})
    if r is not None:
        gsteps = [c["step"] for c in r["checkpoints"]]
        series = [("trunk", [c["total"]["trunk"] for c in r["checkpoints"]], style.COLORS["trunk"], "o")]
        if r["checkpoints"][0]["total"].get("blocks"):
            series.append(("block 0", [c["total"]["blocks"][0] for c in r["checkpoints"]], style.COLORS["block0"], "s"))
        for name, rows, col, mk in series:
            m = [x["mean_abs_cos"] for x in rows]
            sd = [x.get("std_cos") or 0.0 for x in rows]
            a0.errorbar(gsteps, m, yerr=[[min(s_, 0.9 * v) for s_, v in zip(sd, m)], sd], color=col, marker=mk,
                        mfc="white", ls="none", capsize=2, label=f"gradient $|\\cos(g, v_b)|$, {name}")
            data["gradient"].append({"unit": name, "steps": gsteps, "mean_abs_cos": m, "std_cos": sd})
    else:
        print(f"  note: fig2 without gradient alignment: {_missing_text(inp, 'residual_decomposition')}")
    a0.set_yscale("log")
    style.mark_step(a0, inp.lambda_switch, r"$\lambda$ switch")
    style.mark_step(a1, inp.lambda_switch)
    a1.axhline(0, color="black", lw=0.6)
    a0.set(xlabel="step", ylabel="|cosine| with $v_b$", title="update vs gradient alignment")
    a1.set(xlabel="step", ylabel="$C(t)$", title="signed update alignment")
    style.legend_below(fig, [a0, a1], ncols=3)
    style.panel_label(a0, "(a)")
    style.panel_label(a1, "(b)")
    return fig, data


def _missing_text(inp: Inputs, name: str) -> str:
    try:
        inp.need(name)
    except Missing as m:
        return f"missing {m}"
    return ""


def fig3(inp: Inputs):
    """Fisher Rayleigh quotients along v_b, v_sw, PC2 and random directions (log), and the anisotropy."""
    from figures import style
    q = inp.need("rayleigh_quotients")
    cks = q["checkpoints"]
    steps = [c["step"] for c in cks]
    fig, ax = style.figure(1, 2, height=3.1)
    a0, a1 = ax[0, 0], ax[0, 1]
    data = {"steps": steps, "lambda_switch": inp.lambda_switch}
    for key, label, col, mk in (("q_backbone", r"$q(v_b)$", style.COLORS["backbone"], "o"),
                                ("q_switch", r"$q(v_{sw})$", style.COLORS["switch"], "s"),
                                ("q_pc2", r"$q(v_{PC2})$", style.COLORS["pc2"], "^")):
        vals = [c.get(key) for c in cks]
        data[key] = vals
        if any(_finite(v) and v > 0 for v in vals):
            a0.plot(steps, [v if _finite(v) and v > 0 else float("nan") for v in vals], color=col, marker=mk, label=label)
    rm = [c["q_random_mean"] for c in cks]
    rs = [c.get("q_random_std") or 0.0 for c in cks]
    data["q_random_mean"], data["q_random_std"] = rm, rs
    a0.errorbar(steps, rm, yerr=[[min(s_, 0.9 * m) for s_, m in zip(rs, rm)], rs], color=style.COLORS["random"],
                marker="x", capsize=2, label=f"random $\\perp v_b$ (mean of {q.get('K')})")
    a0.set_yscale("log")
    style.mark_step(a0, inp.lambda_switch, r"$\lambda$ switch")
    a0.set(xlabel="step", ylabel=r"Rayleigh quotient $q(v)$", title="Rayleigh quotients")
    qb = [c["q_backbone"] for c in cks]
    if _finite(qb[0]) and qb[0] > 0 and _finite(qb[-1]):
        a0.annotate(f"$q(v_b)$: {fmt(qb[-1] / qb[0], 'x')} from step {steps[0]} to {steps[-1]}",
                    xy=(0.02, 0.02), xycoords="axes fraction", fontsize=6.5)
    alpha = [c["anisotropy"] for c in cks]
    data["anisotropy"] = alpha
    a1.plot(steps, alpha, color=style.COLORS["anisotropy"], marker="o")
    a1.axhline(1.0, color=style.COLORS["floor"], ls=":", lw=0.9, label=r"isotropic ($\alpha = 1$)")
    a1.set_yscale("log")
    style.mark_step(a1, inp.lambda_switch, r"$\lambda$ switch")
    a1.set(xlabel="step", ylabel=r"$\alpha = q(v_b)\, /\, \mathrm{mean}_k\, q(w_k)$", title="anisotropy")
    style.legend_below(fig, [a0, a1], ncols=4)
    style.panel_label(a0, "(a)")
    style.panel_label(a1, "(b)")
    return fig, data


def fig4(inp: Inputs):
    """Reheating: the original p_ood with the reheating curves appended, peaks marked; a(t), ‖r(t)‖ continued."""
    from figures import style
    rh = inp.need("reheating")
    runs = reheat_runs(inp)
    orig = rh.get("original", {})
    with_geo = [r for r in runs if r.get("a") and r.get("r_norm") and r.get("ckpt_steps")]
    has_geo = bool(orig.get("a")) and bool(with_geo)
    fig, ax = style.figure(1, 2 if has_geo else 1, height=3.1)
    a0 = ax[0, 0]
    if orig.get("eval_steps"):
        os_, op = orig["eval_steps"], orig["eval_p_ood"]
    else:
        os_, op = inp.series("p_ood")
    a0.plot(os_, op, color=style.COLORS["p_ood"], lw=1.2, label="original training")
    data = {"original": {"steps": os_, "p_ood": op}, "runs": []}
    lrs = sorted({r["lr"] for r in runs}, reverse=True)
    starts = sorted({r["from_step"] for r in runs})
    for s0 in starts:
        style.mark_step(a0, s0, "reheating start" if s0 == starts[0] else None)
    for r in runs:
        col = style.SERIES[lrs.index(r["lr"]) % len(style.SERIES)]
        ls = "--" if r.get("moments") else "-"
        off = r["from_step"] if r["steps"] and r["steps"][0] == 0 else 0
        xs = [off + s for s in r["steps"]]
        lab = f"lr {fmt(r['lr'], 'lr')}" + (" (saved moments)" if r.get("moments") else "")
        if len(starts) > 1:
            lab += f" from {r['from_step']}"
        a0.plot(xs, r["p_ood"], color=col, ls=ls, label=lab)
        e = r["reentry"]
        if _finite(e.get("peak_p_ood")):
            a0.plot([off + e["peak_step"]], [e["peak_p_ood"]], marker="*", ms=9, color=col, ls="none")
        data["runs"].append({"name": r.get("name"), "lr": r["lr"], "moments": r.get("moments"), "from_step": r["from_step"],
                             "steps": xs, "p_ood": r["p_ood"], "peak_step": off + e["peak_step"] if _finite(e.get("peak_step")) else None,
                             "peak_p_ood": e.get("peak_p_ood"), "G": e.get("G")})
    thr = runs[0]["reentry"].get("threshold")
    if _finite(thr):
        a0.axhline(thr, color=style.COLORS["floor"], ls=":", lw=0.8, label=f"threshold {fmt(thr, 'num2')}")
    a0.set(xlabel="step (original, then reheating)", ylabel=r"$p_{ood}$", title=r"reheating: probe re-entry ($\star$ = peak)")
    a0.set_ylim(-0.02, 1.02)
    style.panel_label(a0, "(a)")
    if has_geo:
        a1 = ax[0, 1]
        a1.plot(orig["steps"], orig["a"], color=style.COLORS["backbone"], label=r"$a(t)$ original")
        a1.plot(orig["steps"], orig["r_norm"], color=style.COLORS["residual"], label=r"$\|r(t)\|$ original")
        data["original"].update({"ckpt_steps": orig["steps"], "a": orig["a"], "r_norm": orig["r_norm"]})
        for r, d in zip(runs, data["runs"]):
            if r not in with_geo:
                continue
            col = style.SERIES[lrs.index(r["lr"]) % len(style.SERIES)]
            off = r["from_step"] if r["ckpt_steps"][0] == 0 else 0
            xs = [off + s for s in r["ckpt_steps"]]
            a1.plot(xs, r["a"], color=col, ls="-", lw=1.1)
            a1.plot(xs, r["r_norm"], color=col, ls=":", lw=1.1)
            d.update({"ckpt_steps": xs, "a": r["a"], "r_norm": r["r_norm"]})
        for s0 in starts:
            style.mark_step(a1, s0)
        a1.plot([], [], color="black", ls="-", label=r"$a(t)$ reheats (colour = lr)")
        a1.plot([], [], color="black", ls=":", label=r"$\|r(t)\|$ reheats")
        a1.set(xlabel="step", ylabel="distance from $\\theta_{orig}(0)$", title="backbone coordinate and residual")
        style.panel_label(a1, "(b)")
    style.legend_below(fig, [ax[0, j] for j in range(ax.shape[1])], ncols=4)
    return fig, data


FIGURES: list[tuple[str, Callable]] = [("fig1_backbone", fig1), ("fig2_alignment", fig2), ("fig3_fisher", fig3),
                                       ("fig4_reheating", fig4)]


# ============================================================================ comparison and reading
def comparison(inp: Inputs, N: Numbers) -> Table:
    """The key numbers of this run next to the paper's, with the paper's source."""
    V = PV.VALUES

    def paper(*keys: str) -> str:
        return "; ".join(f"{fmt(V[k].value, V[k].kind)} ({V[k].note + '; ' if V[k].note else ''}{V[k].source})"
                         for k in keys)

    def ours(*keys: str, sep: str = " / ", unit: str = "") -> str:
        if not all(k in N for k in keys):
            return "not run"
        return sep.join(N.text(k) for k in keys) + unit

    T = inp.cfg.steps
    rows = [
        ["trunk PC1, raw / row-normalised (%)", ours("pc1_trunk_raw", "pc1_trunk_rownorm"), paper("trunk_pc1_raw", "trunk_pc1_readme")],
        ["per-block PC1 range (%)", ours("pc1_block_min", "pc1_block_max", sep="–"), paper("block_pc1_range")],
        ["k95 / k99 (trunk, raw)", ours("k95_trunk", "k99_trunk"), paper("k95_window", "k95_beta095")],
        ["random-walk null PC1 (trunk, %)", ours("null_pc1_trunk"), "not reported"],
        ["trunk PC1 minus null (percentage points)", ours("pc1_excess_over_null"), "not reported"],
        ["final backbone fraction f_b (trunk, %)", ours("fb_trunk_final"), paper("backbone_fraction_final")],
        ["rolling-window |cos| with global v_b (mean)", ours("rolling_global_cos"), paper("rolling_global_cos")],
        ["mean |C(t)|, early phase (block 0 / trunk)", ours("update_cos_block_zero_early", "update_cos_trunk_early"),
         paper("update_abs_cos_early")],
        ["mean |C(t)|, whole run (trunk)", ours("update_cos_trunk"), paper("update_abs_cos_readme")],
        [f"sign-flip step t* (block 0 / trunk; T = {T})", ours("sign_flip_block_zero", "sign_flip_trunk"),
         paper("sign_flip_step")],
        ["gradient |cos(g, v_b)| (trunk, range over checkpoints)", ours("grad_cos_min", "grad_cos_max", sep="–"),
         paper("grad_abs_cos")],
        ["noise floor sqrt(2/(πD)) (trunk)", ours("grad_floor_trunk") if "grad_floor_trunk" in N else ours("update_floor_trunk"),
         paper("noise_floor")],
        ["gradient alignment over its floor", ours("grad_over_floor_min", "grad_over_floor_max", sep="–"), "not reported"],
        ["update over gradient alignment (mean |C| / mean |cos g|)", ours("update_over_grad"),
         paper("update_over_grad", "update_over_grad_fig")],
        ["q(v_b) growth, first → last checkpoint", ours("q_b_growth"), paper("q_b_growth")],
        ["anisotropy α (max, at step)", ours("anisotropy_max", "anisotropy_max_step", sep=" at "), paper("anisotropy_peak")],
        ["top Fisher eigenvector overlap |⟨u1, v_b⟩| (max)", ours("top_eig_overlap_max"), paper("top_eig_overlap")],
        ["p_ood oscillations: switch pairs detected (paper: p_ood range)", ours("n_switch_pairs"), paper("p_ood_osc_range")],
        ["|⟨v_sw, v_b⟩| (trunk mean; block range)", _switch_range(N, "switch_cos_trunk", "switch_cos_block"), paper("switch_abs_cos")],
        ["E_2:6 of the transverse switch (trunk mean; block range, %)", _switch_range(N, "e_trunk", "e_block"), paper("e26_seed42", "e26_seed271")],
        ["reheating peak p_ood (best lr)", ours("reheat_peak"), paper("reheat_peak")],
        ["re-entry gain G (best lr)", ours("reheat_gain"), paper("reheat_G")],
        ["SGD controls: PC1 AdamW / SGD (%)", ours("sgd_pc1_adamw", "sgd_pc1_sgd"), paper("sgd_pc1_adamw", "sgd_pc1_sgd")],
        ["β2 sweep: PC1 range over non-diverged runs (%)", ours("beta_pc1_min", "beta_pc1_max", sep="–"), paper("beta2_pc1_range")],
    ]
    cols = [Col("quantity", align=r"p{0.34\linewidth}"), Col("this run", align=r"p{0.2\linewidth}"),
            Col("paper (source)", align=r"p{0.38\linewidth}")]
    return Table("comparison", "Key numbers: this run and the paper",
                 f"This run: preset {inp.cfg.preset}, {inp.cfg.n_layer} layers, d_model {inp.cfg.d_model}, {T} steps. "
                 f"Paper: {pv('n_layer')} layers, d_model {pv('d_model')}, {pv('n_params_millions')}M parameters, "
                 f"{pv('steps')} steps of TinyStories; sources in the shared seeds.",
                 cols, [[Cell(x, "text") for x in r] for r in rows])


def _switch_range(N: Numbers, trunk: str, block: str) -> str:
    """A switching number as 'trunk mean; block min–max', or why it is absent."""
    if trunk not in N:
        return "not run" if "n_switch_pairs" not in N else "no switch pair"
    s = N.text(trunk)
    if f"{block}_min" in N:
        s += f"; {N.text(block + '_min')}–{N.text(block + '_max')}"
    return s


def readings(inp: Inputs, N: Numbers) -> list[str]:
    """Plain-language statements, each computed from the numbers (and only as strong as they are)."""
    out = []
    if "pc1_trunk_raw" in N:
        s = (f"The trunk's PC1 holds {N.text('pc1_trunk_raw')} % of the squared drift (k95 = {N.text('k95_trunk')}); "
             f"it {N.text('trunk_null_verb')} the random-walk null with the same step sizes "
             f"({N.text('null_pc1_trunk')} ± {N.text('null_pc1_trunk_std')} %) by {N.text('pc1_excess_over_null')} "
             "percentage points")
        if N["pc1_excess_sigmas"].value is not None:
            s += f" ({N.text('pc1_excess_sigmas')} null standard deviations)"
        s += "."
        if N["pc1_excess_over_null"].value < 5:
            s += (" A random walk whose steps shrink as the learning rate decays is itself strongly one-dimensional, "
                  "so most of this PC1 is expected from the step-size profile alone.")
        if "blocks_above_null" in N:
            s += f" {N.text('blocks_above_null')} of {N.text('n_blocks')} blocks exceed their own null."
        out.append(s)
    if "update_cos_trunk" in N and "grad_cos_mean" in N:
        out.append(f"Updates over one checkpoint interval align with v_b far more than single mini-batch gradients: "
                   f"mean |C(t)| = {N.text('update_cos_trunk')} against mean |cos(g, v_b)| = {N.text('grad_cos_mean')} "
                   f"(ratio {N.text('update_over_grad')}); the gradients themselves are "
                   f"{N.text('grad_over_floor_min')}–{N.text('grad_over_floor_max')} the random-direction floor "
                   f"{N.text('grad_floor_trunk')}.")
    if "sign_flip_trunk" in N:
        bz = N.text("sign_flip_block_zero") if "sign_flip_block_zero" in N else "not run"
        out.append(f"Sign flip of C(t): trunk {N.text('sign_flip_trunk')}, block 0 {bz} (of {inp.cfg.steps} steps).")
    if "q_b_growth" in N:
        out.append(f"Curvature along the backbone: q(v_b) {N.text('q_b_growth_verb')} from step {N.text('q_first_step')} "
                   f"to {N.text('q_last_step')} (factor {N.text('q_b_growth')}; the paper reports about three orders of "
                   f"magnitude); the backbone is stiffer than random directions (α > 1) at "
                   f"{N.text('anisotropy_above_one')} of {N.text('q_n_checkpoints')} checkpoints, most at step "
                   f"{N.text('anisotropy_max_step')} (α = {N.text('anisotropy_max')}).")
    if "n_switch_pairs" in N:
        n = N["n_switch_pairs"].value
        s = f"Oscillation detection found {n} switch pair{'s' if n != 1 else ''}."
        if "switch_cos_trunk" in N:
            mostly = N["switch_share_trunk"].value < 0.5
            s += (f" Switching directions are {'mostly transverse to' if mostly else 'mostly along'} the backbone: mean "
                  f"|⟨v_sw, v_b⟩| = {N.text('switch_cos_trunk')}, so on average {N.text('switch_transverse_trunk')} % "
                  f"of a switch's squared norm lies off v_b; PCs 2–{N.text('e_k')} capture {N.text('e_trunk')} % of "
                  "its transverse part.")
        out.append(s)
    if "reheat_peak" in N:
        s = (f"Reheating (best: lr {N.text('reheat_best_lr')} from step {N.text('reheat_from_step')}) lifts p_ood from "
             f"{N.text('reheat_p_zero')} to {N.text('reheat_peak')} (G = {N.text('reheat_gain')}), which "
             f"{N.text('reheat_vs_train_verb')} the run's best training value, and then {N.text('reheat_transient_verb')} "
             f"(final {N.text('reheat_final')}).")
        if "reheat_a_smaller_count" in N:
            s += (f" The backbone coordinate changes less than the residual (relative) in "
                  f"{N.text('reheat_a_smaller_count')} of {N.text('reheat_geometry_runs')} reheating runs.")
        out.append(s)
    if "sgd_verdict" in N:
        out.append(f"SGD controls: window PC1 {N.text('sgd_pc1_adamw') if 'sgd_pc1_adamw' in N else 'n/a'} % for AdamW "
                   f"vs {N.text('sgd_pc1_sgd') if 'sgd_pc1_sgd' in N else 'n/a'} % for SGD; the pre-registered rule "
                   f"says {N.text('sgd_verdict')}.")
    if "beta_monotone_verb" in N:
        out.append(f"β2 sweep: PC1 {N.text('beta_monotone_verb')} as β2 decreases (from {N.text('beta_pc1_max')} % at "
                   f"β2 = {N.text('beta_pc1_max_beta')} to {N.text('beta_pc1_min')} % at β2 = {N.text('beta_pc1_min_beta')}); "
                   f"diverged: {N.text('beta_diverged')}.")
    return out


# ============================================================================ generation
FLAGS = {  # \ifhave<name> in numbers.tex: which parts of the paper have their inputs
    "backbone": "trajectory_pca", "alignment": "update_alignment", "gradient": "residual_decomposition",
    "fisher": "rayleigh_quotients", "reheating": "reheating", "sgd": "sgd", "beta": "beta",
}


@dataclass
class Result:
    inputs: Inputs
    numbers: Numbers
    tables: dict[str, Table]
    figures: dict[str, dict]          # name -> {"status", "files", "data"|"reason"}
    skipped: list[str]
    comparison: Table
    readings: list[str]
    out: Path


def flags(inp: Inputs, N: Numbers) -> dict[str, bool]:
    f = {k: inp.has(v) for k, v in FLAGS.items()}
    f["oscillations"] = "n_switch_pairs" in N
    f["switching"] = "switch_cos_trunk" in N
    f["reheatgeometry"] = "reheat_a_smaller_count" in N
    f["betareheat"] = bool(inp.has("beta") and inp.data["beta"].get("reheat_table"))
    f["lambdaswitch"] = inp.lambda_switch is not None
    f["blocks"] = "pc1_block_min" in N
    return f


def numbers_tex(inp: Inputs, N: Numbers, fl: dict[str, bool]) -> str:
    lines = ["% generated by figures/make_paper_figures.py -- do not edit",
             f"% run: {tex_comment(inp.run_dir)}"]
    for name, on in fl.items():
        lines.append(rf"\newif\ifhave{name}\have{name}{'true' if on else 'false'}")
    for key, n in N.items():
        lines.append(rf"\newcommand{{\{macro_name(key)}}}{{{n.text('tex')}}}  % {tex_comment(n.source)}")
    return "\n".join(lines) + "\n"


def tex_comment(x: Any) -> str:
    return str(x).replace("\n", " ")


def _guard(what: str, fn, strict: bool, skipped: list[str], quiet: bool = False) -> tuple[Any, str | None]:
    """Run a builder -> (its value, None) or (None, why it was skipped).

    A missing input is a printed skip (an error with --strict); an input with nothing to show (zero switch
    pairs) is a printed skip; a study that was not asked for is skipped silently; a file without the
    expected fields is a one-line error.
    """
    try:
        return fn(), None
    except NotRequested as m:
        return None, str(m)
    except Empty as m:
        line = f"skipped {what}: {m}"
    except Missing as m:
        line = f"skipped {what}: missing {m}"
        if strict:
            raise UserError(f"{line} (--strict)") from None
    except (KeyError, IndexError, TypeError) as e:
        raise UserError(f"{what}: an input file lacks an expected field ({type(e).__name__}: {e}); re-run the "
                        "analysis that writes it") from None
    if not quiet:
        print(line)
        skipped.append(line)
    return None, line


def generate(inp: Inputs, out: Path, paper_dir: Path | None = None, strict: bool = False,
             draw: bool = True) -> Result:
    """Numbers, tables and figures of one run into ``out`` (and the LaTeX side into ``paper_dir``).

    With ``draw=False`` nothing is drawn or written: the figures already in ``out`` (from an earlier
    run of this script) are listed as they are, and the caller gets the numbers and tables in memory.
    """
    out = Path(out)
    skipped: list[str] = []
    N = Numbers()
    for name, fn, _ in NUMBER_SECTIONS:
        _guard(f"numbers ({name})", lambda fn=fn: fn(inp, N), strict, skipped, quiet=True)  # tables report skips
    numbers_paper(N)
    tables = {}
    for name, fn in TABLES:
        t, _ = _guard(name, lambda fn=fn: fn(inp), strict, skipped)
        if t is not None:
            tables[name] = t
    comp = comparison(inp, N)
    tables["comparison"] = comp
    figs: dict[str, dict] = {}
    if draw:
        from figures import style
        for name, fn in FIGURES:
            made, why = _guard(name, lambda fn=fn: fn(inp), strict, skipped)
            if made is None:
                figs[name] = {"status": "skipped", "reason": why}
                continue
            fig, data = made
            files = style.save(fig, out / name)
            figs[name] = {"status": "written", "files": [str(p) for p in files], "data": data}
            print(f"wrote {out / name}.png/.pdf")
    else:
        for name, _ in FIGURES:
            png = out / f"{name}.png"
            figs[name] = ({"status": "written", "files": [str(png)]} if png.exists() else
                          {"status": "skipped", "reason": f"not drawn: no {png} (run figures/make_paper_figures.py)"})
    res = Result(inp, N, tables, figs, skipped, comp, readings(inp, N), out)
    if draw:
        write_outputs(res, paper_dir)
    return res


def _write_text(path: Path, text: str) -> None:
    runio.atomic_write_text(path, text)


def write_outputs(res: Result, paper_dir: Path | None) -> None:
    inp, N, out = res.inputs, res.numbers, res.out
    fl = flags(inp, N)
    tex = numbers_tex(inp, N, fl)
    payload = {
        "run_dir": str(inp.run_dir), "generated_by": "figures/make_paper_figures.py",
        "inputs": {name: ("present" if inp.has(name) else "missing") for name in list(RUN_INPUTS) + list(STUDY_INPUTS)},
        "study_dirs": {k: str(v) for k, v in inp.study_dirs.items()},
        "flags": fl,
        "numbers": {k: {"value": n.value, "text": n.text("md"), "tex": n.text("tex"), "macro": "\\" + macro_name(k),
                        "kind": n.kind, "source": n.source} for k, n in N.items()},
        "tables": {k: t.raw() for k, t in res.tables.items()},
        "figures": res.figures,
        "readings": res.readings,
        "skipped": res.skipped,
    }
    tdir = out / "tables"
    for key, t in res.tables.items():
        _write_text(tdir / f"{key}.md", t.to_md())
        _write_text(tdir / f"{key}.tex", t.to_tex())
    runio.atomic_write_json(out / "numbers.json", payload)
    _write_text(out / "numbers.tex", tex)
    print(f"wrote {len(res.tables)} tables to {tdir}, {len(N)} numbers to {out / 'numbers.json'} and numbers.tex")
    if paper_dir is not None:
        write_paper_dir(res, Path(paper_dir), tex, payload)


def write_paper_dir(res: Result, pdir: Path, tex: str, payload: dict) -> None:
    """The LaTeX side: numbers.tex, numbers.json, tables/*.tex and figures/*.pdf; stale generated files removed."""
    import shutil
    (pdir / "tables").mkdir(parents=True, exist_ok=True)
    (pdir / "figures").mkdir(parents=True, exist_ok=True)
    _write_text(pdir / "numbers.tex", tex)
    figures = {name: ({**f, "files": [f"figures/{name}.pdf"]} if f.get("status") == "written" else f)
               for name, f in payload["figures"].items()}
    runio.atomic_write_json(pdir / "numbers.json", {**payload, "figures": figures})
    known_tables = {name for name, _ in TABLES} | {"comparison"}
    for name in known_tables:
        path = pdir / "tables" / f"{name}.tex"
        if name in res.tables:
            _write_text(path, res.tables[name].to_tex())
        elif path.exists():
            path.unlink()
    for name, _ in FIGURES:
        dst = pdir / "figures" / f"{name}.pdf"
        src = res.out / f"{name}.pdf"
        if res.figures.get(name, {}).get("status") == "written":
            runio.atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
        elif dst.exists() and res.figures:
            dst.unlink()
    print(f"wrote the paper's numbers, tables and figures to {pdir}")


def parser() -> argparse.ArgumentParser:
    first = __doc__.strip().split("\n\n")[0]
    p = CommandParser(description=first, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.strip()[len(first):].strip())
    add_input_args(p)
    p.add_argument("--out", help="output folder (default RUN/figures)")
    p.add_argument("--paper-dir", help="also write numbers.tex, tables/*.tex and figures/*.pdf here (e.g. paper/generated)")
    p.add_argument("--strict", action="store_true", help="a missing input is an error instead of a skipped figure/table")
    return p


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="the run directory (its analysis JSON is read)")
    p.add_argument("--sgd-dir", help="SGD-control study directory (reads STUDY/analysis/sgd_control_results.json)")
    p.add_argument("--beta-dir", help="β2-sweep study directory (reads STUDY/analysis/beta_sweep_summary.json)")
    p.add_argument("--allow-incomplete", action="store_true", help="draw a run that has not finished training")
    p.add_argument("--seed", type=int, default=0, help="unused: nothing here is random (accepted for uniformity)")
    p.add_argument("--no-progress", action="store_true", help="accepted for uniformity (nothing here is long)")


def main() -> int:
    args = parser().parse_args()
    inp = load_inputs(args.run_dir, args.sgd_dir, args.beta_dir, args.allow_incomplete)
    out = Path(args.out) if args.out else inp.run_dir / "figures"
    res = generate(inp, out, Path(args.paper_dir) if args.paper_dir else None, args.strict)
    written = sum(1 for f in res.figures.values() if f["status"] == "written")
    print(f"{written} of {len(FIGURES)} figures, {len(res.tables)} tables; {len(res.skipped)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
