#!/usr/bin/env python
"""Replay test of optimizer integration (arXiv 2602.23696 §4.2; claim 7): updates vs the gradients they integrate.

From each checkpoint t with a saved optimizer state (step 0 always; the others where the run was trained
with ``optimizer_state_every`` or ``keep_optimizer_states``), Δ steps are trained again exactly as the run
trained them -- its own batches, schedule, clipping and moments -- and over the same Δ steps and batches the
script compares

- cos(U, v_b), U = Σ u_s the applied updates (for AdamW also its decay part −Σ η_s·wd·θ and the rest),
- cos(−G, v_b), G = Σ g_s the gradients the optimizer received along the same path,
- cos(U_sgd, v_b), plain SGD from the same start on the same batches with every step's norm matched to u_s,

v_b the trunk backbone (raw PC1 of all checkpoints' drift from the first). Averaging alone makes Σ of Δ·accum
gradients about √(Δ·accum) times better aligned than one of them, so the ratio that tests the mechanism is
|cos(U, v_b)| / |cos(G, v_b)| (same number of gradients on both sides); docs/claims.md's rule asks for ≥ 2 at
≥ 3 checkpoints (``claim7``). With Δ = the checkpoint spacing (the default) the replayed weights are checked
against the next checkpoint (``replay_error``, relative to that interval's drift: ≈ 0 when the replay is the
run's own training).

Writes RUN/analysis/integration_test.json and integration_test.png.

Examples::

    python analysis/backbone/integration_test.py --run-dir runs/quick
    python analysis/backbone/integration_test.py --run-dir runs/paper_s42 --delta 200 --device cuda
"""
import sys
import time

import numpy as np
import torch

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.cli import show as _f
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.model import trunk_names
from training.core.trainer import autocast_context
from training.geometry.analysis_io import analysis_parser, open_run, parse_step_list, write_result
from training.geometry.replay import claim7_summary, optimizer_state_at, replay, replay_starts, trunk_vector
from training.geometry.trajectory import cached_gram, held_out_backbone, pca


def build_parser():
    p = analysis_parser(__doc__)
    p.add_argument("--delta", type=int, help="steps replayed from each checkpoint (default: the checkpoint spacing)")
    p.add_argument("--steps", help="comma-separated start checkpoints (default: every one with a saved optimizer state)")
    p.add_argument("--no-sgd-control", action="store_true", help="skip the matched-step-norm SGD control")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    return p


def main() -> int:
    args = build_parser().parse_args()
    t0 = time.monotonic()
    run = open_run(args.run_dir, args.out_dir)
    cfg = run.cfg
    delta = args.delta if args.delta is not None else cfg.ckpt_every
    if delta < 1:
        raise UserError(f"--delta must be >= 1 (got {delta})")
    starts, lacking = replay_starts(run.dir, cfg, run.steps, delta)
    if args.steps:
        wanted = parse_step_list(args.steps, run.steps)
        missing = [s for s in wanted if s not in starts]
        if missing:
            raise UserError(f"no replay from step(s) {missing}: a start needs a saved optimizer state and t + Δ ≤ "
                            f"{cfg.steps} (replayable here: {starts or 'none'})")
        starts = wanted
    device = resolve_device(args.device)
    ckpts = run.checkpoints()
    gram = cached_gram(ckpts, progress=not args.no_progress)
    p = pca(gram, k=1)

    def unit(coeffs) -> torch.Tensor:
        v = torch.as_tensor(ckpts.materialise(gram, coeffs), dtype=torch.float64, device=device)
        return v / v.norm()

    v_full = unit(p.coeffs[0])
    task = run.task()
    amp = lambda: autocast_context(cfg, device)  # noqa: E731
    names = trunk_names(cfg)
    records = []
    for start in starts:
        t1 = time.monotonic()
        end = start + delta
        rep = replay(run.model(start, attention=cfg.attention, device=device), cfg, task, start, delta, device, amp,
                     optimizer_state_at(run.dir, start, cfg),
                     None if args.no_sgd_control else lambda s=start: run.model(s, attention=cfg.attention, device=device))
        rec = rep.summary()
        rec["full"] = rep.report(v_full)
        if end in gram.steps:
            rec["held_out"] = rep.report(unit(held_out_backbone(gram, start, end)))
            after = trunk_vector(run.model(end, device=device), names)
            rec["replay_error"] = float((rep.theta_end - after).norm() / (after - rep.theta_start).norm())
        else:        # no checkpoint at t + Δ: neither the held-out backbone nor the check against the run exists
            rec["held_out"] = {"why_not": f"no checkpoint at step {end} (Δ other than the checkpoint spacing)"}
            rec["replay_error"] = None
        rec["seconds"] = round(time.monotonic() - t1, 2)
        records.append(rec)
        h = rec["held_out"] if "cos_update" in rec["held_out"] else rec["full"]
        sgd = f", SGD {_f(h.get('cos_sgd'), '+.3f')}" if "cos_sgd" in h else ""
        print(f"from step {start}: cos(U, v_b) {_f(h['cos_update'], '+.3f')}, cos(-G, v_b) {_f(h['cos_gradient'], '+.3f')}"
              f"{sgd}; ratio {_f(h['ratio_gradient'], '.2f')} (full backbone {_f(rec['full']['ratio_gradient'], '.2f')}; "
              f"single-batch ratio {_f(h['single_batch_ratio'], '.1f')} vs sqrt(delta*accum) "
              f"{rec['sqrt_delta_accum']:.1f}); replay error {_f(rec['replay_error'], '.1e')}")
    summary = claim7_summary([r for r in records if "cos_update" in r["held_out"]])
    if len(records) < summary["need"]:
        every = max(cfg.ckpt_every, cfg.steps // 5 // cfg.ckpt_every * cfg.ckpt_every)
        summary["why_not"] = (f"{len(records)} replayable checkpoint(s) (step 0 and those with a saved optimizer state); "
                              f"the rule needs {summary['need']}: train the run with --set optimizer_state_every={every}")
        print(f"claim 7 not measurable: {summary['why_not']}", file=sys.stderr)
    result = {"settings": {"delta": delta, "grad_accum": cfg.grad_accum, "starts": starts,
                           "sgd_control": not args.no_sgd_control, "device": str(device)},
              "backbone": {"anchor_step": ckpts.steps[0], "n_checkpoints": len(ckpts.steps), "dim": gram.dim,
                           "pc1": float(p.explained_variance_ratio[0])},
              "sign_convention": "v_b points along the net drift; cos(-G, v_b) > 0 means the summed gradients push along "
                                 "it (descent moves along -g)",
              "checkpoints_without_optimizer_state": lacking,
              "replays": records, "claim7": summary, "seconds": round(time.monotonic() - t0, 1)}
    path = write_result(run, "integration_test", result)
    if records:
        x = np.arange(len(records))
        fig, ax = figure(1, 2, width=5.6)
        for k, (key, label) in enumerate((("cos_update", "Σu (updates)"), ("cos_gradient", "−Σg (gradients)"),
                                          ("cos_sgd", "SGD, matched step norm"))):
            vals = [abs(r["held_out"][key]) if r["held_out"].get(key) is not None else np.nan for r in records]
            ax[0, 0].bar(x + (k - 1) * 0.27, vals, width=0.27, label=label)
        ax[0, 0].set(xticks=x, xticklabels=[str(r["start"]) for r in records], xlabel="replayed from step",
                     ylabel="|cos(·, v_b)|", title=f"{delta}-step sums, held-out v_b")
        ax[0, 0].legend(fontsize=6)
        for key, style, label in (("held_out", "o-", "held-out v_b"), ("full", "s--", "full v_b")):
            ax[0, 1].plot(x, [r[key].get("ratio_gradient") or np.nan for r in records], style, label=label)
        ax[0, 1].axhline(summary["limit"], ls="--", c="gray", label=f"rule: ≥ {summary['limit']:g} at ≥ {summary['need']}")
        ax[0, 1].axhline(1.0, ls=":", c="gray", lw=0.8, label="averaging alone")
        ax[0, 1].set(xticks=x, xticklabels=[str(r["start"]) for r in records], xlabel="replayed from step",
                     ylabel="|cos Σu| / |cos Σg|", title="integration vs accumulation")
        ax[0, 1].legend(fontsize=6)
        save_figure(fig, run, "integration_test")
    print(f"claim 7: ratio >= {summary['limit']:g} at {summary['n_at_or_above_limit']} of {summary['n_checkpoints']} "
          f"checkpoints (3rd largest {_f(summary['third_largest_ratio'], '.2f')}); wrote {path} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
