"""The published numbers we compare against: claims of the paper, not results of this toolkit.

Sources, cited by their public identity:
- ``arXiv 2602.23696`` (section, table): the paper "Optimizer-Induced Low-Dimensional Drift and Transverse
  Dynamics in Transformer Training" (51M GPT-2-style model, TinyStories, 10,000 steps, seeds 42 and 271);
- ``mini_gpt README`` (its "Core Findings" items 1-5): the README of the paper's code, github.com/skydancerosel/mini_gpt,
  with its β2-sweep, SGD and reheating tables;
- ``mini_gpt analysis/backbone_decomposition``: the output files that repository commits for its
  ``backbone_decomposition.py`` (used only where the paper prints no number for a quantity).

Each entry is ``PaperValue(value, kind, source, note)``: ``value`` is a number or a (low, high) range in
the units the paper prints (percentages as percentages), ``kind`` names the formatter of
``figures.paperlib.formatting.fmt`` that prints it. Nothing here is computed; every number is as published.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.studies import sgd_controls as SC


@dataclass(frozen=True)
class PaperValue:
    value: Any                 # a number, a (low, high) range, or None when the paper gives none
    kind: str                  # formatter: num1, num2, num3, int, sci, x, text
    source: str                # where it is printed
    note: str = ""             # what exactly it is (seed, window, ...)


S1, S0, REF = "arXiv 2602.23696", "mini_gpt README, Core Findings", "mini_gpt analysis/backbone_decomposition"

# Seed-42 per-block PC1 of arXiv 2602.23696 Table 2 (%), blocks 0..7, and seed 271.
TABLE2 = {42: [80.5, 81.2, 80.7, 80.2, 79.7, 79.0, 78.8, 77.9],
          271: [78.6, 80.6, 80.4, 80.4, 80.1, 79.1, 79.3, 78.3]}

# arXiv 2602.23696 Table 3: mean |C(t)| by phase (seed 42): block 0, blocks 1-7 (range of medians).
TABLE3 = [
    {"phase": "early", "steps": "t < 2000", "block0": 0.27, "block0_peak": 0.34, "others": (0.20, 0.21)},
    {"phase": "middle", "steps": "2000 ≤ t ≤ 6000", "block0": 0.054, "block0_peak": None, "others": (0.054, 0.076)},
    {"phase": "late", "steps": "t > 6000", "block0": 0.110, "block0_peak": None, "others": (0.061, 0.143)},
]

# arXiv 2602.23696 Table 4: sign-flip step and block-0 C(t) early / late.
TABLE4 = [{"seed": 42, "t_star": 5200, "early": -0.27, "late": 0.11},
          {"seed": 271, "t_star": 5000, "early": -0.29, "late": 0.07}]

# arXiv 2602.23696 Table 5: mean signed gradient projection b_l (seed 42, λ = 2 phase).
TABLE5 = [{"step": 200, "label": "init", "blk0": 0.014, "blk1": 0.003, "blk2_5": 0.001, "blk6": 0.000, "blk7": 0.002},
          {"step": 1800, "label": "peak", "blk0": 0.019, "blk1": 0.001, "blk2_5": 0.001, "blk6": 0.003, "blk7": 0.004},
          {"step": 2000, "label": "trough", "blk0": 0.029, "blk1": 0.001, "blk2_5": 0.001, "blk6": 0.005, "blk7": 0.005}]

# arXiv 2602.23696 Tables 6 (seed 42) and 7 (seed 271): Rayleigh quotients, M = 32.
TABLE6 = [{"step": 200, "label": "init", "q_b": 2.4e-6, "q_sw": 2.9e-6, "q_pc2": 3.2e-6, "alpha": 1.3},
          {"step": 1800, "label": "peak", "q_b": 2.5e-6, "q_sw": 2.2e-6, "q_pc2": 5.2e-6, "alpha": 1.9},
          {"step": 4800, "label": "transition", "q_b": 1.6e-4, "q_sw": 8.2e-5, "q_pc2": 4.6e-5, "alpha": 12.4},
          {"step": 9600, "label": "late", "q_b": 8.1e-3, "q_sw": 1.8e-3, "q_pc2": 7.0e-4, "alpha": 4.8}]
TABLE7 = [{"step": 200, "label": "init", "q_b": 2.0e-6, "q_sw": 1.1e-6, "q_pc2": 1.4e-6, "alpha": 1.6},
          {"step": 2200, "label": "peak", "q_b": 1.4e-5, "q_sw": 1.1e-5, "q_pc2": 2.5e-5, "alpha": 5.9},
          {"step": 4400, "label": "transition", "q_b": 9.5e-5, "q_sw": 5.1e-5, "q_pc2": 5.2e-5, "alpha": 40.8},
          {"step": 9200, "label": "late", "q_b": 1.0e-4, "q_sw": 4.2e-5, "q_pc2": 7.6e-5, "alpha": 8.3}]

# arXiv 2602.23696 Tables 9 and 10 (= mini_gpt README finding 4): typed once, as fractions, beside the SGD-control study that
# reproduces them (training/studies/sgd_controls.py); here in the paper's units (PC1 in percent).
_OPTIMIZER = {"A": "AdamW", "C": "SGD+mom"}
TABLE9 = [{"run": r["run"].replace("prime", "'"), "optimizer": r["optimizer"], "final_val_loss": r["final_val_loss"],
           "best_p_ood": r["best_p_ood"], "pc1": None if r["pc1"] is None else round(100 * r["pc1"], 1),
           "k95": r["k95"], "drift": r["drift"]} for r in SC.PAPER_TABLE9]
TABLE10 = [{"optimizer": _OPTIMIZER[run], "window": SC.paper_window_label(spec, sep=", ", ellipsis=", ..., "),
            "pc1": round(100 * v[0], 1), "k95": v[1], "k99": v[2], "drift": v[3]}
           for (run, spec, _), v in zip(SC.PAPER_TABLE10, SC.PAPER_TABLE10_VALUES)]

# mini_gpt README finding 3: the β2 sweep (4,000 steps, seed 42).
BETA2 = [{"beta2": 0.99, "val": "1.16", "best_p_ood": 0.951, "pc1": 68.1, "k95": 6, "drift": "106", "cos": 0.226, "interference": 0.022},
         {"beta2": 0.95, "val": "1.21", "best_p_ood": 0.939, "pc1": 68.4, "k95": 6, "drift": "109", "cos": 0.225, "interference": 0.011},
         {"beta2": 0.90, "val": "1.37", "best_p_ood": 0.814, "pc1": 66.3, "k95": 7, "drift": "113", "cos": 0.220, "interference": 0.040},
         {"beta2": 0.80, "val": "1.47", "best_p_ood": 0.682, "pc1": 63.4, "k95": 8, "drift": "128", "cos": 0.214, "interference": 0.048},
         {"beta2": 0.0, "val": "diverged", "best_p_ood": 0.005, "pc1": 51.6, "k95": 7, "drift": "211,694", "cos": 0.099,
          "interference": 0.273}]

# arXiv 2602.23696 Table 11 (seed 42, from step 10,000, start p_ood 0.16) and mini_gpt README finding 5 (p0, peak, G).
TABLE11 = [{"lr": 1e-3, "peak": 0.705, "at": 900, "first_060": 600, "final": 0.221},
           {"lr": 6e-4, "peak": 0.782, "at": 1000, "first_060": 700, "final": 0.279},
           {"lr": 3e-4, "peak": 0.578, "at": 1500, "first_060": None, "final": 0.421}]
REHEAT_G = [{"seed": 42, "lr": 6e-4, "p0": 0.077, "peak": 0.782, "G": 0.705},
            {"seed": 42, "lr": 1e-3, "p0": 0.073, "peak": 0.697, "G": 0.625},
            {"seed": 42, "lr": 3e-4, "p0": 0.072, "peak": 0.578, "G": 0.506},
            {"seed": 271, "lr": 6e-4, "p0": 0.197, "peak": 0.689, "G": 0.492},
            {"seed": 271, "lr": 1e-3, "p0": 0.197, "peak": 0.421, "G": 0.224},
            {"seed": 271, "lr": 3e-4, "p0": 0.196, "peak": 0.402, "G": 0.206}]
BETA2_REHEAT = [{"beta2": 0.95, "ckpt": 2000, "best_lr": "any", "peak": 0.672, "G": 0.000},
                {"beta2": 0.95, "ckpt": 4000, "best_lr": "6e-4", "peak": 0.421, "G": 0.200},
                {"beta2": 0.80, "ckpt": 2000, "best_lr": "3e-4", "peak": 0.191, "G": 0.002},
                {"beta2": 0.80, "ckpt": 4000, "best_lr": "6e-4", "peak": 0.131, "G": 0.006}]


# Scalars and ranges quoted in the report's comparison table and in the paper's text.
VALUES: dict[str, PaperValue] = {
    # setup
    "steps": PaperValue(10_000, "int", f"{S1} Table 1"),
    "n_checkpoints": PaperValue(51, "int", f"{S1} Table 1"),
    "lambda_step": PaperValue(4000, "int", f"{S1} Table 1", "λ 2 → 4"),
    "early_end": PaperValue(2000, "int", f"{S1} Table 3", "end of the early phase"),
    "mid_end": PaperValue(6000, "int", f"{S1} Table 3", "end of the middle phase"),
    "n_params_millions": PaperValue(51, "int", f"{S1} §2.1"),
    "n_layer": PaperValue(8, "int", f"{S1} §2.1"),
    "d_model": PaperValue(512, "int", f"{S1} §2.1"),
    # oscillations
    "p_ood_osc_range": PaperValue((0.40, 0.78), "num2", f"{S1} §2.3", "seed 42"),
    "p_ood_train_peak": PaperValue(0.777, "num3", f"{S1} §6.2", "seed 42"),
    # backbone
    "block_pc1_range": PaperValue((min(TABLE2[42] + TABLE2[271]), max(TABLE2[42] + TABLE2[271])), "num1",
                                  f"{S1} Table 2", "per block, both seeds"),
    "trunk_pc1_raw": PaperValue(79.1, "num1", REF, "trunk, raw, seed 42"),
    "trunk_pc1_readme": PaperValue((65, 70), "int", f"{S0} 1", "“~65–70 % of cumulative drift”, trunk"),
    "backbone_fraction_final": PaperValue((68, 72), "int", f"{S1} §3.3", "f_b at the final checkpoint"),
    "rolling_global_cos": PaperValue((0.997, 0.998), "num3", f"{S1} §3.2", "mean |cos(v_b(w), v_b)|, W = 10"),
    "k95_window": PaperValue(9, "int", f"{S1} Table 9", "AdamW, window [600, 2000]"),
    "k95_beta095": PaperValue(6, "int", f"{S0} 3", "4,000 steps, β2 = 0.95"),
    # alignment
    "grad_abs_cos": PaperValue((0.008, 0.012), "num3", f"{S1} §4.1 eq. 10", "16 mini-batches per checkpoint"),
    "noise_floor": PaperValue(4.5e-4, "sci", f"{S1} §4.1", "D = 3.1M, one block"),
    "update_abs_cos_early": PaperValue(0.27, "num2", f"{S1} Table 3", "block 0, t < 2000, peak 0.34"),
    "update_abs_cos_early_others": PaperValue((0.20, 0.21), "num2", f"{S1} Table 3", "blocks 1–7, t < 2000"),
    "update_abs_cos_readme": PaperValue((0.2, 0.3), "num1", f"{S0} 1"),
    "update_over_grad": PaperValue((20, 30), "x", f"{S1} §4.3", "early |C| over per-batch gradient alignment ~0.01"),
    "update_over_grad_fig": PaperValue(40, "x", f"{S1} Fig. 2 caption", "≈, block 0"),
    "sign_flip_step": PaperValue((5000, 5200), "int", f"{S1} Table 4", "of 10,000 steps, seeds 271 and 42"),
    "b0_cumulative": PaperValue(0.12, "num2", f"{S1} §4.4", "B_0; blocks 1–7 ≈ 0.01"),
    "b0_dominance": PaperValue((3, 10), "x", f"{S1} Table 5", "block 0 over the others"),
    # Fisher
    "q_b_growth": PaperValue(8.1e-3 / 2.4e-6, "x", f"{S1} Table 6", "ratio of its q(v_b) at steps 9600 and 200, seed 42"),
    "anisotropy_peak": PaperValue((12.4, 40.8), "num1", f"{S1} Tables 6–7", "at the λ transition, seeds 42 and 271"),
    "top_eig_overlap": PaperValue(0.001, "num3", f"{S1} §4.5", "|⟨u_1, v_b⟩|"),
    # switching
    "switch_abs_cos": PaperValue((0.20, 0.31), "num2", f"{S1} §7", "per-block range over both seeds"),
    "switch_backbone_share": PaperValue((0.04, 0.10), "num2", f"{S1} §7", "⟨v_sw, v_b⟩²"),
    "switch_pairwise_cos": PaperValue(0.08, "num2", f"{S1} §7", "upper bound between events"),
    "e26_seed42": PaperValue((15, 22), "int", f"{S1} §7", "per block, seed 42"),
    "e26_seed271": PaperValue((60, 67), "int", f"{S1} §7", "per block, seed 271"),
    # reheating
    "reheat_peak": PaperValue(0.782, "num3", f"{S1} Table 11", "lr 6e-4 from step 10,000, seed 42"),
    "reheat_G": PaperValue(0.705, "num3", f"{S0} 5", "lr 6e-4, seed 42"),
    "reheat_final": PaperValue(0.279, "num3", f"{S1} Table 11", "lr 6e-4 at reheating step 2000"),
    # optimizer ablations
    "sgd_pc1_adamw": PaperValue(61.5, "num1", f"{S1} Table 9"),
    "sgd_pc1_sgd": PaperValue(100.0, "num1", f"{S1} Table 9"),
    "beta2_pc1_range": PaperValue((63.4, 68.4), "num1", f"{S0} 3", "β2 0.80 to 0.99"),
}
