"""The per-run report RUN/report.md: configuration, outcome, figures, key numbers next to the paper's.

Draws the paper figures and tables of the run first (figures/make_paper_figures.py, into OUT, default
RUN/figures; --reuse-figures embeds the ones already there instead), then writes a Markdown report that a
user without LaTeX can read: the run's configuration, the training outcome, a short reading computed from
the numbers, the comparison table
"this run | paper (source)", every figure (relative links), every table, the figures the analysis
scripts wrote, and the analyses that have not run. Every number and sentence comes from
make_paper_figures (formatted there, once). Written atomically.

Examples:
  python figures/make_report.py --run-dir runs/quick
  python figures/make_report.py --run-dir runs/quick --sgd-dir runs/sgd_controls_quick_s42 --beta-dir runs/beta_sweep_quick_s42
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from figures import make_paper_figures as mpf
from training.core import runio
from training.core.cli import CommandParser, run_main
from training.studies import claims

FIGURE_CAPTIONS = {
    "fig1_backbone": ("Figure 1 — backbone–residual decomposition",
                      "The backbone coordinate a(t) = ⟨θ(t) − θ(0), v_b⟩ and the residual norm ‖r(t)‖ for the trunk "
                      "and block 0, with p_ood (grey, right axis) and the λ switch (dashed)."),
    "fig2_alignment": ("Figure 2 — update vs gradient alignment",
                       "(a) |C(t)| = |cos(θ(t) − θ(t−Δ), v_b)| (lines) against single mini-batch gradients "
                       "|cos(g, v_b)| (markers, ± std) and the random-direction floor sqrt(2/(πD)) (dotted), log scale; "
                       "(b) the signed C(t) with the sign-flip step t* (triangle)."),
    "fig3_fisher": ("Figure 3 — Fisher curvature along the backbone",
                    "(a) Rayleigh quotients q(v) of the empirical Fisher along v_b, the switching direction, PC2 and "
                    "random directions ⊥ v_b (log); (b) the anisotropy α = q(v_b) / mean q(w)."),
    "fig4_reheating": ("Figure 4 — reheating",
                       "(a) p_ood of the original run (grey) with the reheating runs appended at their start step, "
                       "peaks starred; (b) a(t) and ‖r(t)‖ measured against the original run's backbone, continued "
                       "along the reheating runs."),
}
TABLE_ORDER = ["table1_hyperparameters", "table2_pc1", "table_centred", "table3_update_alignment", "table4_sign_flip", "table_phases", "table_drift_scaling",
               "table_gradient_alignment",
               "table5_block_bias", "table6_rayleigh", "table_switching", "table11_reheating", "table8_optimizers", "table9_sgd",
               "table10_matched", "table_beta2", "table_beta2_reheat", "table_oscillation_tiers", "table_basin_recovery",
               "table_lr_threshold", "table_fisher_peaks"]
# figures the analysis scripts write next to their JSON (embedded when present)
ANALYSIS_PNGS = [("trajectory_pca", "trajectory PCA: spectra, per-block PC1, decomposition, rolling PC1"),
                 ("update_alignment", "update alignment per block"),
                 ("backbone_phases", "phases of the backbone: rotation curve and angles between phases"),
                 ("drift_scaling", "how the drift grows: backbone and transverse displacements, log-log"),
                 ("residual_decomposition", "gradient alignment and per-block bias"),
                 ("detect_oscillations", "oscillation detection (switch pairs)"),
                 ("switching_alignment", "switching directions and logit lens"),
                 ("fisher_analysis", "empirical Fisher spectrum"),
                 ("rayleigh_quotients", "Rayleigh quotients"),
                 ("eval_noise", "evaluation noise of p_ood"),
                 ("basin_B1_timeseries", "basin test B1: probe time series with peaks and troughs"),
                 ("basin_B2_scatter", "basin test B2: LM loss vs probe NLL"),
                 ("basin_B3_switching_alignment", "basin test B3: updates vs switching directions"),
                 ("basin_depth", "basin depth B6"),
                 ("manifold_dim", "switching-manifold dimension B7"),
                 ("reheating", "reheating"),
                 ("delta_significance", "oscillation tiers: switch-pair δ against its peak step, ±2σ/±3σ bands"),
                 ("basin_recovery", "basin recovery B1: p_ood under a fresh optimizer, raised λ and λ unchanged"),
                 ("lr_threshold_map", "learning-rate threshold map B5"),
                 ("fisher_peaks", "Fisher spectrum at peaks vs troughs"),
                 ("directional_probe", "directional probe: Δp_ood and Δloss along v_sw, v_b and random directions")]


def rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def kv_table(rows: list[tuple[str, str]]) -> str:
    t = mpf.Table("kv", "", "", [mpf.Col("", align="l"), mpf.Col("", align="l")],
                  [[mpf.Cell(k, "text"), mpf.Cell(v, "text")] for k, v in rows])
    return "\n".join(t.to_md().splitlines()[2:]) + "\n"      # the table without its (empty) title line


def claims_section(inp) -> list[str]:
    """The claims ledger first: which of the paper's claims this run supports, beside their nulls."""
    if not inp.has("claims"):
        return ["## Claims", "", "Not judged: run `python analysis/claims/claims.py --run-dir RUN` "
                "(a stage of scripts/run_seed.sh).", ""]
    body = claims.markdown(inp.data["claims"]).split("\n", 2)[2]          # without its own title
    return ["## Claims", "", body.rstrip(), ""]


def report_text(res: mpf.Result, report_path: Path) -> str:
    inp, N = res.inputs, res.numbers
    t = N.text
    base = report_path.parent
    out = [f"# Run report: `{inp.run_dir.name}`", "",
           f"Generated by `figures/make_report.py` from `{inp.run_dir}` (analysis files only; nothing recomputed). "
           f"Figures and tables: `{rel(res.out, base)}/`. The paper compared against is *Optimizer-Induced "
           f"Low-Dimensional Drift and Transverse Dynamics in Transformer Training* ({t('paper_n_params_millions')}M "
           f"parameters, TinyStories, {t('paper_steps')} steps); this run ({t('n_params')} parameters, "
           f"{t('steps')} steps) is {t('scale_phrase')}, so compare shapes and orders of magnitude, not digits.", ""]

    out += claims_section(inp)
    lam = (f"{t('lambda_before')} → {t('lambda_after')} at step {t('lambda_step')}" if N["lambda_step"].value is not None
           else t("lambda_before"))
    out += ["## Configuration", "", kv_table([
        ("preset / seed", f"{t('preset')} / {t('seed')}"),
        ("model", f"{t('n_layer')} layers, d_model {t('d_model')}, {t('n_head')} heads, d_ff {t('d_ff')}, "
                  f"context {t('seq_len')}; {t('n_params')} parameters, trunk {t('trunk_params')}"),
        ("data", f"corpus {t('corpus')}, tokenizer {t('tokenizer')} (vocabulary {t('vocab_size')}), "
                 f"p_probe {t('p_probe')}"),
        ("optimizer", f"{t('optimizer')}, lr {t('lr')}, weight decay {t('wd')}, β2 {t('beta_two')}"),
        ("schedule", f"{t('steps')} steps, warmup {t('warmup')}, {t('batch_seqs')} sequences per step, λ {lam}"),
        ("checkpoints", f"every {t('ckpt_every')} steps ({t('n_checkpoints')}); evaluation every {t('eval_every')}"),
        ("code", f"git {t('git_commit')}"),
        ("numerics", f"{t('numerics')} (bit-for-bit reproducible on the same combination; across CPU vector ISAs a "
                     "run drifts apart like a different seed)" if N["numerics"].value else "not recorded by this run"),
    ])]
    out += ["## Training outcome", "", kv_table([
        ("state", f"{t('run_state')} at step {t('last_step')}"),
        ("validation loss", f"{t('val_loss_init')} → {t('val_loss_final')}"),
        ("probe accuracy", f"p_in {t('p_in_final')} (final); p_ood best {t('p_ood_best')} at step "
                           f"{t('p_ood_best_step')}, final {t('p_ood_final')}"),
        ("oscillations", f"{t('n_switch_pairs')} switch pair(s) of p_ood detected" if "n_switch_pairs" in N else "not run"),
    ])]
    out += ["## Reading", ""]
    out += [f"- {r}" for r in res.readings] or ["- Nothing to read yet: the analyses have not run."]
    out += ["", "## Key numbers: this run and the paper", "", res.comparison.to_md()]

    out += ["## Figures", ""]
    for name, _ in mpf.FIGURES:
        title, caption = FIGURE_CAPTIONS[name]
        f = res.figures.get(name, {})
        out.append(f"### {title}")
        out.append("")
        if f.get("status") == "written":
            out += [f"![{title}]({rel(res.out / (name + '.png'), base)})", "", caption, ""]
        else:
            out += [f"not run — {f.get('reason', 'not drawn')}", ""]

    out += ["## Tables", ""]
    for key in TABLE_ORDER:
        if key in res.tables:
            out += [res.tables[key].to_md()]
    analysis = runio.analysis_dir(inp.run_dir)
    pngs = [(n, d) for n, d in ANALYSIS_PNGS if (analysis / f"{n}.png").exists()]
    if pngs:
        out += ["## Figures of the analysis scripts", ""]
        for n, d in pngs:
            out += [f"### {d}", "", f"![{n}]({rel(analysis / (n + '.png'), base)})", ""]

    for n, d in inp.study_dirs.items():
        figs = sorted((d / "analysis").glob("*.png"))
        if figs:
            out += [f"## Figures of the {'SGD-control' if n == 'sgd' else 'β2'} study (`{d}`)", ""]
            out += [f"![{f.stem}]({rel(f, base)})\n" for f in figs]

    missing = [(n, cmd.replace("RUN", str(inp.run_dir))) for n, (_, cmd) in mpf.RUN_INPUTS.items() if not inp.has(n)]
    studies = []
    for n, (relpath, how) in mpf.STUDY_INPUTS.items():
        if n in inp.study_dirs and not inp.has(n):
            studies.append(f"- `{n}`: not run — no {inp.study_dirs[n] / relpath} ({how})")
        elif n not in inp.study_dirs:
            studies.append(f"- `{n}`: not included (pass --{n}-dir STUDY; {how})")
    out += ["## Not run", ""]
    if missing or studies:
        out += [f"- `{n}`: not run (`{cmd}`)" for n, cmd in missing] + studies
    else:
        out += ["Every analysis has run."]
    if res.skipped:
        out += ["", "Skipped figures and tables:", ""] + [f"- {s}" for s in res.skipped]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    p = CommandParser(description=__doc__.strip().split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.strip().split("\n\n", 1)[1])
    mpf.add_input_args(p)
    p.add_argument("--out", help="folder of the figures and tables (default RUN/figures, or DIR/figures with --out-dir)")
    p.add_argument("--report", help="the report file (default RUN/report.md, or DIR/report.md with --out-dir)")
    p.add_argument("--reuse-figures", action="store_true",
                   help="embed the figures and tables make_paper_figures.py already wrote into OUT instead of "
                        "drawing them again")
    args = p.parse_args()
    base = mpf.use_out_dir(args.run_dir, args.out_dir)
    inp = mpf.load_inputs(args.run_dir, args.sgd_dir, args.beta_dir, args.allow_incomplete)
    out = Path(args.out) if args.out else (base or inp.run_dir) / "figures"
    res = mpf.generate(inp, out, draw=not args.reuse_figures)
    path = Path(args.report) if args.report else (base or inp.run_dir) / "report.md"
    runio.atomic_write_text(path, report_text(res, path))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
