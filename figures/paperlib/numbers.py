"""Every number the paper's text quotes, computed from the inputs: ``Number`` / ``Numbers`` (key -> value,
kind, source), one ``numbers_<analysis>`` function per input file, the published values as ``Paper...``
macros, and the LaTeX side of them (numbers.tex: one macro per number, named by ``formatting.macro_name``,
and the have-flags saying which parts of the paper have their inputs). Printing goes through ``formatting.fmt``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from figures import paper_values as PV
from figures.paperlib.formatting import _finite, fmt, macro_name, pct_points, verb
from figures.paperlib.inputs import Inputs, best_eval, best_reheat, mean, phase_bounds, phase_values, phases, reheat_runs


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


# ---------------------------------------------------------------- numbers.tex
FLAGS = {  # \ifhave<name> in numbers.tex: which parts of the paper have their inputs
    "backbone": "trajectory_pca", "alignment": "update_alignment", "gradient": "residual_decomposition",
    "fisher": "rayleigh_quotients", "reheating": "reheating", "sgd": "sgd", "beta": "beta", "claims": "ledger",
}


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
