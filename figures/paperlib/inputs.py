"""The inputs of the paper figures: which files of a run directory (and of the SGD / β2 study directories, and
the claims ledger given with --ledger) are read, the ``Inputs`` record that holds them parsed once, ``load_inputs`` that validates the run and reads
what exists, and the exceptions that turn an absent input into a skipped figure or table. Also the few
selections from those inputs that numbers, tables and figures share (the paper's phases scaled to the run,
the best evaluation, the reheating runs). Nothing here formats or draws.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from training.core import runio
from training.core.errors import UserError
from training.geometry import nulls

from figures.paperlib.formatting import _finite


# name -> (path relative to the run directory, the command that writes it)
RUN_INPUTS = {
    "trajectory_pca": ("analysis/trajectory_pca.json", "python analysis/backbone/trajectory_pca.py --run-dir RUN"),
    "update_alignment": ("analysis/update_alignment.json", "python analysis/backbone/update_alignment.py --run-dir RUN"),
    "backbone_phases": ("analysis/backbone_phases.json", "python analysis/backbone/backbone_phases.py --run-dir RUN"),
    "drift_scaling": ("analysis/drift_scaling.json", "python analysis/backbone/drift_scaling.py --run-dir RUN"),
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
    "claims": ("analysis/claims.json", "python analysis/claims/claims.py --run-dir RUN"),
    "oscillation_tiers": ("analysis/oscillation_tiers.json", "python analysis/switching/oscillation_tiers.py --run-dir RUN"),
    "basin_recovery": ("analysis/basin_recovery.json", "python analysis/basin/basin_recovery.py --run-dir RUN"),
    "lr_threshold_map": ("analysis/lr_threshold_map.json", "python analysis/basin/lr_threshold_map.py --run-dir RUN"),
    "fisher_peaks": ("analysis/fisher_peaks.json", "python analysis/fisher/fisher_peaks.py --run-dir RUN"),
}
# the claims ledger (--ledger): a claims.json of analysis/claims/claims.py, one run's or a seed set's
LEDGER_INPUT = ("ledger", "a claims ledger (python analysis/claims/claims.py --run-dir RUN ..., or the claims.json "
                          "of scripts/run_seeds.sh)")
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
    ledger_path: Path | None = None                          # --ledger (its JSON is data["ledger"])

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
        if name == LEDGER_INPUT[0]:
            raise NotRequested(f"no --ledger given ({LEDGER_INPUT[1]})")
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


def input_path(run_dir: Path, rel: str) -> Path:
    """Where the analysis file ``rel`` (as named in RUN_INPUTS) of a run is: under RUN, or under the folder its
    analyses were sent to with ``--out-dir`` (:func:`training.core.runio.redirect_analysis`)."""
    head, _, rest = rel.partition("/")
    return runio.analysis_dir(run_dir) / rest if head == "analysis" and rest else runio.run_output(run_dir, rel)


def use_out_dir(run_dir: str | Path, out_dir: str | Path | None) -> Path | None:
    """``--out-dir DIR`` of the figure commands: read the analyses from DIR and write there, not into the run
    (a run on a read-only disk, analysed with the same ``--out-dir``). Returns DIR, or None."""
    if out_dir is None:
        return None
    out = runio.check_out_dir(out_dir)
    runio.redirect_analysis(Path(run_dir), out)
    return out


def load_inputs(run_dir: str | Path, sgd_dir: str | None = None, beta_dir: str | None = None,
                allow_incomplete: bool = False, ledger: str | Path | None = None) -> Inputs:
    """Validate the run directory and read every input that exists (each file parsed once); ``ledger`` is a
    claims ledger JSON, which must exist and be one."""
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
        path = input_path(run_dir, rel)
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
    if ledger is not None:
        inp.data[LEDGER_INPUT[0]] = read_ledger(Path(ledger))
        inp.ledger_path = Path(ledger)
    return inp


def read_ledger(path: Path) -> dict:
    """A claims ledger (the JSON analysis/claims/claims.py writes), or a one-line error saying what is wrong."""
    if not path.is_file():
        raise UserError(f"--ledger {path} does not exist (or is not a file); write it with analysis/claims/claims.py")
    led = runio.read_json(path, "claims ledger")
    if not (isinstance(led, dict) and isinstance(led.get("claims"), list) and isinstance(led.get("n_runs"), int)):
        raise UserError(f"--ledger {path} is not a claims ledger (no 'claims' list and 'n_runs'); write one with "
                        "analysis/claims/claims.py")
    return led


# ---------------------------------------------------------------- selections shared by numbers, tables, figures
def mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if _finite(x)]
    return sum(xs) / len(xs) if xs else None


def phase_bounds(T: int) -> tuple[int, int]:
    """The paper's phase boundaries (arXiv 2602.23696, Table 3: 2000 and 6000 of 10,000 steps) scaled to T steps."""
    return nulls.phase_bounds(T)


def phases(T: int) -> list[tuple[str, str, Callable[[int], bool]]]:
    """Early / middle / late: t < b1, b1 ≤ t ≤ b2, t > b2 with the paper's boundaries scaled to T steps."""
    b1, b2 = phase_bounds(T)
    labels = {"early": f"t < {b1}", "middle": f"{b1} ≤ t ≤ {b2}", "late": f"t > {b2}"}
    return [(name, label, lambda t, name=name: nulls.phase_of(t, T) == name) for name, label in labels.items()]


def phase_values(steps: Sequence[int], values: Sequence[float], test: Callable[[int], bool]) -> list[float]:
    return [v for s, v in zip(steps, values) if test(s) and _finite(v)]


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
