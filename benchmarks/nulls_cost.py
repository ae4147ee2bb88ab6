#!/usr/bin/env python
"""What the nulls cost: their compute time on an analysed run beside the run's own analysis time.

The nulls of the claims ledger (training/geometry/nulls.py, surrogates.py, the oscillation calibration in
switching.py) work on T × T Gram matrices and series of T points, T the number of checkpoints, never on
parameter vectors: their memory is O(T²) whatever the model size. This script times them on the cached
Grams of an analysed run (RUN/analysis/gram/, written by analysis/backbone/trajectory_pca.py), in one
process, the median of ``--repeats`` interleaved repetitions of each piece:

- finite-D Wishart draws of the random-walk null (trunk and each block, ``--null-samples``, as trajectory_pca);
- ``beside_null``: the D → ∞ random walk, both weight-decayed walks, decay diagnostics, sign flip, coherence
  (trunk and each block);
- the surrogate test of ‖r(t)‖ against p_ood (claim 15; 1000 surrogates of each family);
- the oscillation threshold's calibration for this series length (4000 white-noise series, cold cache);

and divides their sum by the analysis stages' wall-clock time in RUN/pipeline.log or the ``--log`` files (every
``[done]`` stage but the environment snapshot and training; the reheating stage's training of its runs counts). The two times come from the same machine but not the same process;
on a shared machine take the ratio as indicative to a few tens of per cent.

Example::

    python benchmarks/nulls_cost.py --run-dir runs/cpu_seeds/s42
    make demo | tee demo.log && python benchmarks/nulls_cost.py --run-dir runs/quick --log demo.log
"""
import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import open_run
from training.geometry.nulls import beside_null
from training.geometry.surrogates import coupling
from training.geometry.switching import _null_prominences, calibrated_multiplier
from training.geometry.trajectory import cached_gram, decomposition, increment_norms, pca, random_walk_null

NOT_ANALYSIS = ("01_env_snapshot", "02_training")


def stage_times(logs: list[Path]) -> dict[str, float]:
    """Seconds of each finished stage in per-seed pipeline logs (their ``[done] NAME (N s)`` lines; a stage
    finished in several logs, e.g. a resumed pipeline, counts once, the last time)."""
    out = {}
    for log in logs:
        if not log.exists():
            raise UserError(f"{log} not found: run the per-seed pipeline (scripts/run_seeds.sh writes RUN/pipeline.log; "
                            "for scripts/run_seed.sh save its output and pass it with --log)")
        for m in re.finditer(r"^\[done\] (\S+) \((\d+) s\)", log.read_text(errors="replace"), re.M):
            out[m.group(1)] = float(m.group(2))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="an analysed run directory (per-seed pipeline finished)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions of each piece (default 3; the median is kept)")
    p.add_argument("--null-samples", type=int, default=20, help="Wishart draws per Gram (default 20, as trajectory_pca)")
    p.add_argument("--log", action="append", help="pipeline output with the stage times (default RUN/pipeline.log; "
                   "repeat for a pipeline that was resumed)")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args()
    if args.repeats < 1 or args.null_samples < 1:
        raise UserError("--repeats and --null-samples must be >= 1")
    run = open_run(args.run_dir, None)
    ckpts = run.checkpoints()
    grams = [cached_gram(ckpts, block, compute=False) for block in [None, *range(run.cfg.n_layer)]]
    if any(g is None for g in grams):
        raise UserError(f"{run.dir} has no cached Gram matrices: run analysis/backbone/trajectory_pca.py first")
    steps, ref = ckpts.steps, ckpts.steps[0]
    metrics = run.metrics()
    p_ood = {int(r["step"]): float(r["p_ood"]) for r in metrics if r.get("p_ood") is not None and "step" in r}
    dec = decomposition(grams[0], pca(grams[0], steps, ref, k=1).coeffs[0], steps, ref)

    def wishart():
        for g in grams:
            random_walk_null(increment_norms(g, steps), g.dim, n_samples=args.null_samples, seed=0)

    def profiles():
        for g in grams:
            beside_null(g, run.cfg.steps, steps, ref, cfg=run.cfg)

    def surrogates():
        if p_ood:
            coupling(dec["steps"], dec["residual_norm"], [p_ood.get(s) for s in dec["steps"]], seed=0)

    def calibration():
        _null_prominences.cache_clear()
        calibrated_multiplier(len([s for s in p_ood if s in set(steps)]))

    pieces = {"wishart_random_walk": wishart, "beside_null_profiles": profiles, "surrogates_claim15": surrogates,
              "oscillation_calibration": calibration}
    times: dict[str, list[float]] = {k: [] for k in pieces}
    for _ in range(args.repeats):
        for name, fn in pieces.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    stages = stage_times([Path(x) for x in args.log] if args.log else [run.dir / "pipeline.log"])
    analysis = sum(v for k, v in stages.items() if k not in NOT_ANALYSIS)
    total = sum(med.values())
    result = {"run_dir": str(run.dir), "checkpoints": len(steps), "grams": len(grams), "seconds": med,
              "nulls_total_s": total, "pipeline_analysis_s": analysis, "ratio": total / analysis if analysis else None,
              "stages": stages, "repeats": args.repeats}
    for name, s in med.items():
        print(f"{name:26s} {s:8.3f} s")
    print(f"nulls together {total:.2f} s over {len(steps)} checkpoints and {len(grams)} Grams; the pipeline's analysis "
          f"stages {analysis:.0f} s (pipeline log): {100 * total / analysis:.1f} %" if analysis else
          f"nulls together {total:.2f} s; no analysis stages in the pipeline log")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
