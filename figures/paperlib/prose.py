"""The plain-language reading of a run: sentences built from the computed numbers (never typed values), each
only as strong as its numbers are, e.g. whether the trunk's PC1 exceeds its random-walk null and by how
much. The report shows them under "Reading" and numbers.json keeps them.
"""
from __future__ import annotations

from figures.paperlib.inputs import Inputs
from figures.paperlib.numbers import Numbers


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
