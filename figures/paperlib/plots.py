"""The paper's figures 1-4 drawn with matplotlib in the one plotting style of ``figures/style.py``. Each
``figN(inp)`` returns the figure and the series it plotted (kept in numbers.json); ``FIGURES`` lists them
with their file names. ``figures.style`` (and with it matplotlib) is imported inside the functions, so the
rest of the package works without drawing anything.
"""
from __future__ import annotations

from typing import Callable

from figures.paperlib.formatting import _finite, fmt
from figures.paperlib.inputs import Inputs, Missing, reheat_runs


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


NULL_STYLES = (("random_walk", "random walk", (0, (4, 2))), ("weight_decayed_walk", "weight-decayed walk", ":"))


def _null_curves(entry: dict) -> list[tuple[str, dict, object]]:
    """The null profiles of one trajectory_pca unit (trunk or a block) that exist: (label, profile, line style)."""
    prof = entry.get("null_profile") or {}
    return [(label, prof[key], ls) for key, label, ls in NULL_STYLES if prof.get(key)]


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
        nulls = _null_curves(e)
        for nname, prof, ls in nulls:     # the same decomposition of the structureless walks with the run's steps
            a_.plot(prof["steps"], prof["a"], color=style.COLORS["backbone"], ls=ls, lw=0.8, alpha=0.8,
                    label=f"$a(t)$, {nname}")
            a_.plot(prof["steps"], prof["residual_norm"], color=style.COLORS["residual"], ls=ls, lw=0.8, alpha=0.8,
                    label=f"$\\|r(t)\\|$, {nname}")
        style.mark_step(a_, inp.lambda_switch, r"$\lambda$ switch")
        a_.set(xlabel="step", ylabel="parameter distance",
               title=f"{name}: PC1 {fmt(e['raw']['pc1'], 'pct')} %, $f_b$ = {fmt(d['backbone_fraction'][-1], 'pct')} %")
        ax2 = _twin_p_ood(a_, inp, {})
        h1, l1 = a_.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        a_.legend(h1 + h2, l1 + l2, loc="upper left")
        style.panel_label(a_, "(" + "ab"[j] + ")")
        data["panels"].append({"unit": name, "steps": d["steps"], "a": d["a"], "residual_norm": d["residual_norm"],
                               "backbone_fraction": d["backbone_fraction"], "pc1": e["raw"]["pc1"],
                               "nulls": {nname: {"steps": prof["steps"], "a": prof["a"],
                                                 "residual_norm": prof["residual_norm"]} for nname, prof, _ in nulls}})
    data["p_ood"] = dict(zip(("steps", "p_ood"), inp.series("p_ood")))
    fig.suptitle("Backbone–residual decomposition $\\theta(t) = \\theta(0) + a(t)\\,v_b + r(t)$", fontsize=9)
    return fig, data


def fig2(inp: Inputs):
    """Update alignment |C(t)| beside its random-walk and weight-decayed-walk profiles (trajectory_pca's null
    profile), gradient alignment |cos(g, v_b)|, the random-direction floor sqrt(2/(πD)) (log), and signed C(t)."""
    from figures import style
    u = inp.need("update_alignment")
    r = inp.data.get("residual_decomposition")
    tp = inp.data.get("trajectory_pca")
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
        a0.axhline(e["noise_floor"], color=col, ls="-.", lw=0.7,
                   label=f"random-direction floor $\\sqrt{{2/\\pi D}}$ (not a null), {name}")
        data["update"].append({"unit": name, "steps": e["steps"], "abs_cos": e["abs_cos"], "signed_cos": e["signed_cos"],
                               "noise_floor": e["noise_floor"], "sign_flip_step": e.get("sign_flip_step")})
    data["null_C"] = {}
    trunk_entry = (tp or {}).get("trunk") or {}
    for nname, prof, ls in _null_curves(trunk_entry):      # the trunk's null |C(t)| over the same checkpoints
        C = prof["C"]
        a0.plot(C["steps"], [abs(c) for c in C["signed"]], color=style.COLORS["floor"], ls=ls, lw=1.0,
                label=f"$|C(t)|$ of the {nname}, trunk")
        a1.plot(C["steps"], C["signed"], color=style.COLORS["floor"], ls=ls, lw=0.8, label=f"$C(t)$, {nname}")
        data["null_C"][nname] = {"steps": C["steps"], "signed": C["signed"]}
    if not data["null_C"]:
        print(f"  note: fig2 without the null C(t) profiles: {_missing_text(inp, 'trajectory_pca')}"
              if tp is None else "  note: fig2 without the null C(t) profiles: trajectory_pca.json has no null_profile")
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
