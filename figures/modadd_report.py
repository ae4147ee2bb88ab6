"""Figures and the markdown report of the modular-addition study (from the study's JSON results only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures.style import figure as _fig
from figures.style import save as _save_all
from training.core import runio

ROLE_LABEL = {"attn": "attention-only", "attn_seed2": "attention-only (2nd seed)", "mlp": "standard (attn + MLP)",
              "strict": "attention-only, strict data", "curriculum": "attention-only, curriculum",
              "mlp_seed2": "standard (2nd seed)", "curriculum_seed2": "curriculum (2nd seed)",
              "mul": "attention-only, multiplication", "mul_seed2": "multiplication (2nd seed)"}


def _save(fig, path: Path) -> str:
    """Write ``fig`` as the PNG ``path`` (atomically, in the one figure style) and return its file name."""
    return _save_all(fig, Path(path).with_suffix(""), ("png",))[0].name


# ---------------------------------------------------------------------------- figures (one per analysis)
def plot_training(res: dict, path: Path) -> str:
    roles = list(res["runs"])
    fig, ax = _fig(1, len(roles), width=3.6)
    for a, role in zip(ax[0], roles):
        rows = res["runs"][role].get("metrics", [])
        steps = [r["step"] for r in rows]
        for key in sorted({k for r in rows for k in r if k.startswith("acc_m")}):
            a.plot(steps, [r.get(key) for r in rows], label=key.replace("acc_", ""))
        other = [k for k in (rows[-1] if rows else {}) if k.endswith("_acc") and not k.startswith("acc")]
        for k in other:
            a.plot(steps, [r.get(k) for r in rows], "k:", label=k)
        a.set(title=ROLE_LABEL.get(role, role), xlabel="step", ylim=(-0.02, 1.02))
        a.legend(fontsize=6)
    ax[0, 0].set_ylabel("answer accuracy")
    return _save(fig, path)


def plot_spectra(spec: dict, title: str, path: Path, other: dict | None = None, other_label: str = "") -> str:
    fig, ax = _fig(1, 2, width=5.5)
    labels = list(spec["blocks"])
    x = np.arange(len(labels))
    r90 = [spec["blocks"][b]["centered"]["r90"] or 0 for b in labels]
    null = [spec["blocks"][b].get("null_centered", {}).get("k90", np.nan) for b in labels]
    ax[0, 0].bar(x - 0.2, r90, 0.4, label="r90 (centred)")
    ax[0, 0].bar(x + 0.2, [spec["blocks"][b]["uncentered"]["r90"] or 0 for b in labels], 0.4, label="r90 (uncentred)")
    ax[0, 0].plot(x, null, "k_", ms=12, mew=2, label="random-walk null (centred)")
    if other is not None:
        ox = [spec_b for spec_b in other["blocks"] if spec_b in spec["blocks"]]
        ax[0, 0].plot([labels.index(b) for b in ox], [other["blocks"][b]["centered"]["r90"] for b in ox], "r^",
                      label=other_label)
    ax[0, 0].set_xticks(x, labels, rotation=90, fontsize=7)
    ax[0, 0].set(ylabel="components for 90 %", title=title)
    ax[0, 0].legend(fontsize=6)
    for b in labels:
        al = spec["blocks"][b]["alignment_to_final"]
        ax[0, 1].plot(spec["steps"][1:], al, lw=0.8)
    ax[0, 1].set(xlabel="step", ylabel="cos(θ(t) − θ(0), θ(T) − θ(0))", title="alignment to final, every block",
                 ylim=(-0.05, 1.05))
    return _save(fig, path)


def plot_attention(att: dict, path: Path) -> str:
    fig, ax = _fig(1, 2, width=5.0)
    for m, v in att["last_layer_entropy"].items():
        ax[0, 0].plot(att["steps"], v, label=f"m={m}")
    ax[0, 0].axhline(att["uniform_entropy"], color="0.5", ls=":", label="uniform")
    ax[0, 0].set(xlabel="step", ylabel="entropy (nats)", title="last-layer readout-row entropy (mean over heads)")
    ax[0, 0].legend(fontsize=7)
    ks = att["override"]["ks"]
    for m, v in att["override"]["acc"].items():
        ax[0, 1].plot(range(len(ks)), [v[str(k)] for k in ks], "o-", label=f"m={m}")
    ax[0, 1].set_xticks(range(len(ks)), [str(k) for k in ks])
    ax[0, 1].set(xlabel="k kept per row (every layer)", ylabel="accuracy", title="top-k attention override",
                 ylim=(-0.02, 1.02))
    ax[0, 1].legend(fontsize=7)
    return _save(fig, path)


def plot_commutators(comm: dict, path: Path) -> str:
    rows = comm["checkpoints"]
    st = [r["step"] for r in rows]
    fig, ax = _fig(1, 3, width=4.2)
    ax[0, 0].plot(st, [r["D_median"] for r in rows], "o-", label="D (η finite)")
    ax[0, 0].plot(st, [r["D_hvp_median"] for r in rows], "s--", label="D, HVP form (η → 0)")
    ax[0, 0].set(xlabel="step", ylabel="normalised defect", title="commutator defect (median)")
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].plot(st, [r["rho_exec_median"] for r in rows], "o-", label="ρ exec (per-block PCs)")
    ax[0, 1].plot(st, [r["median_sample"]["rho_backbone"] for r in rows], "s-", label="ρ backbone (top PCs)")
    ax[0, 1].plot(st, [r["median_sample"]["rho_rand"] for r in rows], "k:", label=f"random, exact E[ρ], K={rows[-1]['K_exec']}")
    bb = [r["median_sample"]["rho_backbone"] / r["median_sample"]["ratio_backbone"] for r in rows]
    ax[0, 1].plot(st, bb, "k--", lw=0.8, label=f"random, exact E[ρ], K={rows[-1]['K_backbone']}")
    mc = [r["median_sample"]["rho_rand_mc"] for r in rows]
    if all(v is not None for v in mc):
        ax[0, 1].plot(st, mc, "kx", label=f"random, Monte Carlo, K={rows[-1]['K_exec']}")
    ax[0, 1].set(xlabel="step", ylabel="ρ = ‖Πδ‖/‖δ‖", title="projection of δ", yscale="log")
    ax[0, 1].legend(fontsize=7)
    ax[0, 2].plot(st, [r["ratio_exec_median"] for r in rows], "o-", label="exec / random")
    ax[0, 2].plot(st, [r["ratio_backbone_median"] for r in rows], "s-", label="backbone / random")
    ax[0, 2].plot(st, [r["scaled_defect_median"] for r in rows], "^-", label="scaled defect ∈ [0,1]")
    ax[0, 2].axhline(1, color="0.5", ls=":")
    ax[0, 2].set(xlabel="step", title="ratio to random; scaled defect")
    ax[0, 2].legend(fontsize=7)
    return _save(fig, path)


def plot_commutator_series(series: dict, path: Path) -> str:
    """D and the loss fluctuation over the checkpoints (log scale) and the (m_A, m_B) heatmaps of median D and
    median cos(g_A, g_B) (empty cells blank)."""
    sp, cells = series["spikes"], series["cells"]
    fig, ax = _fig(1, 3, width=4.2)
    a = ax[0, 0]
    a.plot(sp["steps"], sp["D"], "o-", label="D (median over samples)")
    a.plot(sp["steps"], np.asarray(sp["delta_over_eta2"]) / np.median(sp["delta_over_eta2"]) * np.median(sp["D"]),
           "s:", ms=3, label="‖δ‖/η² (rescaled)")
    a.set(xlabel="step", ylabel="normalised defect", yscale="log", title="commutator defect and loss fluctuation")
    b = a.twinx()
    b.plot(sp["steps"], sp["loss_fluctuation"], "r^--", ms=3, label="|ΔL| (fixed set)")
    b.set(yscale="log", ylabel="|L(t) − L(t − Δ)|")
    a.legend(fontsize=6, loc="upper left")
    b.legend(fontsize=6, loc="lower right")
    ms = cells["ms"]
    for a, key, title in ((ax[0, 1], "D_median", "median D"), (ax[0, 2], "grad_cos_median", "median cos(g_A, g_B)")):
        grid = np.array([[np.nan if v is None else v for v in row] for row in cells[key]], dtype=float)
        im = a.imshow(grid, origin="lower", cmap="viridis")
        a.set_xticks(range(len(ms)), [str(m) for m in ms])
        a.set_yticks(range(len(ms)), [str(m) for m in ms])
        a.set(xlabel="m_B", ylabel="m_A", title=f"{title} per (m_A, m_B)")
        for i in range(len(ms)):
            for j in range(len(ms)):
                a.text(j, i, f"n={cells['n'][i][j]}", ha="center", va="center", fontsize=5, color="w")
        fig.colorbar(im, ax=a, fraction=0.046)
    return _save(fig, path)


def plot_sae_m(sae_m: dict, path: Path) -> str:
    """|r| with m of every live latent, sorted, for the SAE and the random-feature control, beside the
    family-wise null threshold (last stage)."""
    st = sae_m["stages"][-1]
    fig, ax = _fig(1, 1, width=6.0)
    for name, style in (("sae", "o-"), ("random", "s--")):
        r = sorted((abs(v) for v in st[name]["r"] if v is not None), reverse=True)
        ax[0, 0].plot(range(1, len(r) + 1), r, style, ms=3,
                      label=f"{'SAE latents' if name == 'sae' else 'random directions'} "
                            f"({st[name]['n_significant']} of {st[name]['n_live']} beyond the null)")
        ax[0, 0].axhline(st[name]["threshold"], color="0.5" if name == "sae" else "0.7", ls=":", lw=0.8)
    ax[0, 0].set(xlabel="latent (sorted by |r|)", ylabel="|Pearson r| with m (answer slot)",
                 title=f"step {st['step']}: correlation with m; dotted: family-wise null "
                       f"({1 - sae_m['alpha']:.0%} of max |r|)")
    ax[0, 0].legend(fontsize=7)
    return _save(fig, path)


def plot_sae(sae: dict, path: Path) -> str:
    fig, ax = _fig(1, 1, width=6.0)
    st = sae["stages"]
    keys = ("clean", "recon", "ablate_top", "ablate_random")
    x = np.arange(len(st))
    for i, k in enumerate(keys):
        ax[0, 0].bar(x + (i - 1.5) * 0.2, [s["mean"][k] for s in st], 0.2, label=k)
    ax[0, 0].set_xticks(x, [f"step {s['step']}" for s in st])
    ax[0, 0].set(ylabel="accuracy (mean over m)", ylim=(0, 1.05),
                 title=f"SAE at block {sae['layer']}: {sae['n_ablate']} latents ablated, propagated to the readout")
    ax[0, 0].legend(fontsize=7)
    return _save(fig, path)


def plot_linear_probes(res: dict, path: Path) -> str:
    fig, ax = _fig(1, 2, width=4.6)
    x = np.arange(len(res["layer_names"]))
    for a, t, title in ((ax[0, 0], "y", f"label y = Σ values mod {res['classes']}"),
                        (ax[0, 1], "m", f"number of markers m ∈ {res['ms']}")):
        a.plot(x, res[f"{t}_test_acc"], "o-", label="held-out")
        a.plot(x, res[f"{t}_train_acc"], "s--", alpha=0.7, label="training (not the result)")
        a.axhline(res["chance"][t], color="0.5", ls=":", label="chance (uniform)")
        a.axhline(res["chance"][f"{t}_majority"], color="0.7", ls="-.", lw=0.8, label="majority class")
        if t == "y":
            a.plot(x[-1], res["model_answer_acc_test"], "k*", ms=10, label="model's answer")
        a.set_xticks(x, res["layer_names"], rotation=30, fontsize=7)
        a.set(title=title, ylim=(-0.02, 1.02), xlabel="residual stream after")
        a.legend(fontsize=6)
    ax[0, 0].set_ylabel(f"probe accuracy (step {res['step']}, {res['n_test']} held-out)")
    return _save(fig, path)


def plot_subspace_distance(items, path: Path) -> str:
    """Overlap of the drifts-so-far top-k subspace with the final one, over training, beside the random walk;
    ``items``: (label, modadd_subspace_distance result) pairs."""
    fig, ax = _fig(1, 2, width=5.0)
    for label, sd in items:
        s0, steps = sd["steps"][0], np.asarray(sd["steps"][1:], dtype=float)
        frac = (steps - s0) / (steps[-1] - s0)
        att = [b for b in sd["blocks"].values() if b["kind"] in ("WQ", "WK", "WV", "WO") and "run" in b]
        ov = np.array([b["run"]["overlap"] for b in att])
        nv = np.array([b["null"]["overlap"] for b in att])
        line, = ax[0, 0].plot(frac, np.median(ov, 0), label=label)
        ax[0, 0].fill_between(frac, ov.min(0), ov.max(0), color=line.get_color(), alpha=0.15)
        ax[0, 0].plot(frac, np.median(nv, 0), ls=":", color=line.get_color(), label="random walk, same steps")
        ax[0, 1].plot(frac, sd["trunk"]["run"]["overlap"], color=line.get_color(), label=label)
        ax[0, 1].plot(frac, sd["trunk"]["null"]["overlap"], ls=":", color=line.get_color(), label="random walk")
    k = items[0][1]["k"]
    ax[0, 0].set(xlabel="fraction of training", ylabel=f"overlap with the final top-{k} subspace",
                 title="attention blocks (median, min–max band)", ylim=(-0.02, 1.02))
    ax[0, 1].set(xlabel="fraction of training", title="whole trunk", ylim=(-0.02, 1.02))
    for a in ax[0]:
        a.legend(fontsize=6)
    return _save(fig, path)


def plot_curriculum(cur: dict, path: Path) -> str:
    fig, ax = _fig(1, 1, width=6.0)
    for m, v in cur["acc"].items():
        ax[0, 0].plot(cur["steps"], v, label=f"m={m}")
    for s in cur["stage_starts"][1:]:
        ax[0, 0].axvline(s - 1, color="0.6", ls=":")
    ax[0, 0].set(xlabel="step", ylabel="accuracy", title="curriculum m = 1 → 4 (dotted: stage starts)", ylim=(-0.02, 1.02))
    ax[0, 0].legend(fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------------------- the report
def _f(v, spec=".3g"):
    if v is None:
        return "n/a"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_f(x, spec) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_f(x, spec)}" for k, x in v.items())
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _probe_table(res: dict) -> list[str]:
    """Held-out linear-probe accuracy per layer (training accuracy in brackets) for the attention-only and
    standard runs."""
    runs = res["runs"]
    have = [role for role in ("attn", "mlp") if "linear_probes" in runs.get(role, {})]
    if not have:
        return []
    names = max((runs[r]["linear_probes"]["layer_names"] for r in have), key=len)
    first = runs[have[0]]["linear_probes"]
    L = ["## Linear probes (held-out accuracy)", "",
         f"A multinomial logistic-regression probe on the residual stream at the readout (separator) position, "
         f"fitted on {first['n_train']} sequences and scored on {first['n_test']} others (a disjoint seeded set), "
         f"at the last checkpoint; training accuracy in brackets (the reference reported only that). After the "
         f"embedding the readout slot holds the same vector in every sequence, so that column is the majority-class "
         f"baseline. Details: `RUN/analysis/modadd_linear_probes.json`.", "",
         "| run | target (chance) | " + " | ".join(names) + " | model's answer |",
         "|---|---|" + "---|" * len(names) + "---|"]
    for role in have:
        p = runs[role]["linear_probes"]
        for t, label in (("y", "y = Σ values mod C"), ("m", "m markers")):
            cells = [f"{p[f'{t}_test_acc'][i]:.2f} ({p[f'{t}_train_acc'][i]:.2f})" if i < len(p["layer_names"]) else ""
                     for i in range(len(names))]
            ans = _f(p["model_answer_acc_test"], ".2f") if t == "y" else ""
            L.append(f"| {ROLE_LABEL.get(role, role)} | {label} ({p['chance'][t]:.2f}) | " + " | ".join(cells)
                     + f" | {ans} |")
    return L + [""]


def _series_figures(r: dict, figdir: Path) -> dict:
    """The commutator-series and SAE-vs-m figures of one run's results (those it has)."""
    figs = {}
    if "commutator_series" in r:
        figs["commutator_series"] = plot_commutator_series(r["commutator_series"],
                                                           figdir / "commutator_series_attn.png")
    if "sae_m" in r:
        figs["sae_m"] = plot_sae_m(r["sae_m"], figdir / "sae_m_attn.png")
    return figs


SERIES_RULES = [
    "- commutator spikes vs loss fluctuations (attention-only seeds): D at many checkpoints (first-order form, "
    "no projections), and the loss change on a fixed set between each checkpoint and the one before (|ΔL|). Both "
    "are turned into spike indices, log of the value over its rolling median (5 checkpoints), which removes D's "
    "growth and the loss's decay; their Pearson r is judged against phase-randomised and circularly shifted "
    "surrogates (1,000). *Confirmed* (weak) when |r| < 0.3 in every seed; *not confirmed* when |r| ≥ 0.3 with "
    "phase-surrogate p < 0.05 in a seed. Normalisation control: D ∝ curvature / (‖g_A‖‖g_B‖), so D's spike "
    "index is also correlated with that of 1/(‖g_A‖‖g_B‖), and the unnormalised ‖δ‖/η² with |ΔL|. Spikes = "
    "D above 2× its rolling median, counted beside the mean count of phase-randomised surrogates of its index.",
    "- SAE latents vs m (attention-only seeds, last SAE stage): a Top-K SAE trained on sequences of mixed m "
    "(balanced), each latent's Pearson r with m at the answer slot (one vector per sequence), and a family-wise "
    "null: m permuted across sequences 1,000 times, the maximum |r| over latents each time; a latent counts "
    "when its family-wise p < 0.05 (under the null the count is ≥ 1 in at most 5 % of draws). *Confirmed* "
    "(a small number) when 1 to 10 % of the live latents count in every seed; *not confirmed* when none do or "
    "more than 10 % do. The control: an untrained SAE of the same size (random unit directions, same k).",
    "- (m_A, m_B) cells: the commutator samples' (m_A, m_B) follow a balanced design (every cell equally often, "
    "in random order over checkpoints); same-m against cross-m: the difference of the medians, with a "
    "permutation p-value (labels shuffled within each checkpoint, 2,000 times).",
]


def _series_rows(h: dict) -> list[tuple]:
    """Headline rows of the commutator-series and SAE-vs-m claims: (claim, reference value, numbers, verdict)."""
    rows = []
    if "commutator_spikes" in h:
        c = h["commutator_spikes"]
        rows.append((c["claim"], c["seed_value"],
                     f"per seed: r(spike index of D, of |ΔL|) {_f(c['r_D_vs_loss'], '.2f')} (phase-surrogate p "
                     f"{_f(c['p_phase_D_vs_loss'], '.2f')}, shift p {_f(c['p_shift_D_vs_loss'], '.2f')}); "
                     f"normalisation control r(D, 1/‖g_A‖‖g_B‖) {_f(c['r_D_vs_inverse_grad_norms'], '.2f')} (p "
                     f"{_f(c['p_phase_D_vs_inverse_grad_norms'], '.2f')}); unnormalised ‖δ‖/η² vs |ΔL| "
                     f"{_f(c['r_delta_vs_loss'], '.2f')} (p {_f(c['p_phase_delta_vs_loss'], '.2f')}); D vs |ΔL| on "
                     f"differences {_f(c['r_differences_D_vs_loss'], '.2f')} "
                     f"(p {_f(c['p_differences_D_vs_loss'], '.2f')}); "
                     f"D range {_f(c['D_range'], '.3g')}; spikes {_f(c['spike_count'])} (second half "
                     f"{_f(c['spike_count_second_half'])}) vs null {_f(c['spike_null_mean_count'], '.2f')}; "
                     f"{_f(c['n_checkpoints'])} checkpoints; {c['n_seeds']} seed(s)", c["verdict"]))
    if "sae_m" in h:
        c = h["sae_m"]
        rows.append((c["claim"], c["seed_value"],
                     f"at steps {_f(c['steps'])}: latents beyond the family-wise null (α {c['alpha']}) "
                     f"{_fmt_of(c['n_significant'], c['n_live'])} live (null count {_f(c['null_mean_count'], '.2f')}); "
                     f"max |r| {_f(c['max_abs_r'], '.2f')} (null threshold {_f(c['threshold'], '.2f')}); |r| ≥ "
                     f"{c['strong_r']}: {_f(c['n_strong'])}; random directions "
                     f"{_fmt_of(c['random_n_significant'], c['random_n_live'])} "
                     f"(max |r| {_f(c['random_max_abs_r'], '.2f')}; "
                     f"|r| ≥ {c['strong_r']}: {_f(c['random_n_strong'])}); {c['n_seeds']} seed(s)", c["verdict"]))
    if "commutator_cells" in h:
        c = h["commutator_cells"]
        rows.append((c["claim"], c["seed_value"],
                     f"median D same-m vs cross-m per seed {_f(c['D_same_cross'], '.3g')} (permutation p "
                     f"{_f(c['D_p'], '.2f')}); median cos {_f(c['cos_same_cross'], '.2f')} "
                     f"(p {_f(c['cos_p'], '.2f')}); "
                     f"{_f(c['n_samples'])} samples, empty cells {_f(c['empty_cells'])}; {c['n_seeds']} seed(s)",
                     c["verdict"]))
    return rows


def _report_figures(res: dict, root: Path) -> dict:
    """Draw the study's figures into root/figures; their file names by key (only those the results have)."""
    figdir = root / "figures"
    figs = {}
    runs = res["runs"]
    for role, r in runs.items():
        r["metrics"] = runio.read_metrics(root / _run_name(res, role))
    figs["training"] = plot_training(res, figdir / "training.png")
    if "attn" in runs:
        figs["spectra"] = plot_spectra(runs["attn"]["spectra"], "attention-only, per block", figdir / "spectra_attn.png",
                                       _get(runs, "attn_seed2", "spectra"), "2nd seed (centred r90)")
        figs["attention"] = plot_attention(runs["attn"]["attention"], figdir / "attention_attn.png")
        if "commutators" in runs["attn"]:
            figs["commutators"] = plot_commutators(runs["attn"]["commutators"], figdir / "commutators_attn.png")
        if "sae" in runs["attn"]:
            figs["sae"] = plot_sae(runs["attn"]["sae"], figdir / "sae_attn.png")
        figs.update(_series_figures(runs["attn"], figdir))
        if "linear_probes" in runs["attn"]:
            figs["linear_probes"] = plot_linear_probes(runs["attn"]["linear_probes"], figdir / "linear_probes_attn.png")
    sd_roles = [r for r in ("attn", "attn_seed2", "mlp") if "subspace_distance" in runs.get(r, {})]
    if sd_roles:
        figs["subspace_distance"] = plot_subspace_distance(
            [(ROLE_LABEL.get(r, r), runs[r]["subspace_distance"]) for r in sd_roles], figdir / "subspace_distance.png")
    if "mlp" in runs:
        figs["spectra_mlp"] = plot_spectra(runs["mlp"]["spectra"], "standard blocks, per block", figdir / "spectra_mlp.png")
    if "strict" in runs:
        figs["attention_strict"] = plot_attention(runs["strict"]["attention"], figdir / "attention_strict.png")
    if "curriculum" in runs:
        figs["curriculum"] = plot_curriculum(runs["curriculum"]["curriculum"], figdir / "curriculum.png")
    for r in runs.values():
        r.pop("metrics", None)
    return figs


def _headline_rows(h: dict) -> list[tuple]:
    """Rows of the headline table: (claim, reference value, this study's numbers, verdict), the leak control last."""
    rows = []
    if "collapse" in h:
        c = h["collapse"]
        rows.append((c["claim"], c["seed_value"],
                     f"centred r90 median per seed {_f(c['r90_median_per_seed'])} (range {_f(c['r90_range'])}); random-walk "
                     f"null r90 {_f(c['null_r90_median'])}; uncentred r90 {_f(c['uncentered_r90_median'])}; participation "
                     f"ratio {_f(c['pr_median'])}; singular-value erank {_f(c['erank_median'])}; cross-seed overlap of top-3 PCs "
                     f"{_f(c['cross_seed_overlap_median'])} (random {_f(c['cross_seed_random_overlap'])})", c["verdict"]))
    if "commutator" in h:
        c = h["commutator"]
        rows.append((c["claim"], c["seed_value"],
                     f"ρ_exec {_f(c['rho_exec_range'])} vs exact random {_f(c['rho_rand'])}; ratio early/late "
                     f"{_f(c['ratio_early_late'])}; perpendicular energy ≥ {_f(c['perp_energy_fraction_min'])}; D "
                     f"{_f(c['D_range'])}; scaled defect {_f(c['scaled_defect_range'])}", c["verdict"]))
    if "bubbling" in h:
        c = h["bubbling"]
        rows.append((c["claim"], c["seed_value"],
                     f"uniform {_f(c['uniform_entropy'])}; minimum per m {_f(c['min_entropy_per_m'], '.2f')} at steps "
                     f"{_f(c['step_of_min_per_m'])}; final {_f(c['final_entropy_per_m'], '.2f')}; last-layer readout mass "
                     f"(m max) {_f(c['final_last_layer_slot_mass_m_max'], '.2f')}; top-k override accuracy "
                     f"{_f(c['override_acc_mean'], '.2f')}", c["verdict"]))
    if "mlp" in h:
        c = h["mlp"]
        rows.append((c["claim"], c["seed_value"],
                     f"attention-block r90: attention-only {_f(c['r90_attention_blocks_attn_only'])}, standard "
                     f"{_f(c['r90_attention_blocks_standard'])} (MLP blocks {_f(c['r90_mlp_blocks_standard'])}); random-walk "
                     f"null {_f(c['null_r90_attn_only'])} / {_f(c['null_r90_standard'])}; accuracy "
                     f"{_f(c['acc_attn_only'])} vs {_f(c['acc_standard'])} (per seed {_f(c['seeds'])}); higher in "
                     f"{c['higher_in']} of {c['n_seeds']}, worse in {c['worse_in']} of {c['n_seeds']}", c["verdict"]))
    if "curriculum" in h:
        c = h["curriculum"]
        rows.append((c["claim"], c["seed_value"], "; ".join(
            f"seed {sd}: drop from the peak in its own stage, per m: {_f(dr, '.2f')}; final {_f(fa, '.2f')}"
            for sd, dr, fa in zip(c["seeds"], c["drop_from_peak_per_m"], c["final_acc"]))
            + f" (forgetting in {c['forgetting_in']} of {c['n_seeds']} seeds)", c["verdict"]))
    if "mul" in h:
        c = h["mul"]
        rows.append((c["claim"], c["seed_value"],
                     f"median centred r90 of the attention blocks, multiplication (C = {c['classes_mul']}, chance "
                     f"{_f(c['chance_mul'], '.2f')}, accuracy {_f(c['acc_mul'], '.2f')}) per seed {_f(c['r90_mul_per_seed'])} "
                     f"vs random-walk null {_f(c['null_r90_mul_per_seed'])}; addition {_f(c['r90_add_per_seed'])} vs null "
                     f"{_f(c['null_r90_add_per_seed'])}; participation ratio {_f(c['pr_mul_per_seed'])} vs "
                     f"{_f(c['pr_add_per_seed'])}", c["verdict"]))
    if "sae" in h:
        c = h["sae"]
        rows.append((c["claim"], c["seed_value"], f"at steps {_f(c['steps'])}: drop (top-variance latents) "
                     f"{_f(c['drop_top'], '.3f')}, drop (random latents) {_f(c['drop_random'], '.3f')}, FVU "
                     f"{_f(c['fvu'], '.3f')}", c["verdict"]))
    if "settling" in h:
        c = h["settling"]
        rows.append((c["claim"], c["seed_value"],
                     f"overlap of the top-{c['k']} subspace of the drifts so far with the final one at "
                     f"{c['at_fraction']:.0%} of training (median over attention blocks), per seed: "
                     f"{_f(c['attention_overlap_median_per_seed'], '.2f')} vs random walk "
                     f"{_f(c['null_overlap_median_per_seed'], '.2f')} (excess {_f(c['excess_per_seed'], '.2f')}, margin "
                     f"{c['margin']}); trunk {_f(c['trunk_overlap_per_seed'], '.2f')} vs "
                     f"{_f(c['trunk_null_overlap_per_seed'], '.2f')}; settles (overlap ≥ 0.9 to the end) at "
                     f"{_f(c['settle_fraction_median_per_seed'], '.2f')} vs {_f(c['null_settle_fraction_median_per_seed'], '.2f')} "
                     f"of training; {c['n_seeds']} seed(s)", c["verdict"]))
    rows += _series_rows(h)
    if "leak" in h:
        c = h["leak"]
        rows.append(("(the leak) the reference task needs the markers", "label = Σ(tokens < C) mod C in every sequence",
                     f"reference-trained model: {_f(c['reference_model_acc'])} on reference data, "
                     f"{_f(c['reference_model_on_strict'])} on strict data (chance {_f(c['chance'])}); strict-trained "
                     f"model {_f(c['strict_model_acc'])}", c["verdict"]))
    return rows


VERDICT_RULES = [
    "- collapse: *confirmed* when the median centred r90 of the attention blocks is ≤ 3.5 in every seed and at "
    "least 1 below the random-walk null with the same step sizes; *not distinguishable from a random walk* when "
    "it is low but not below the null.",
    "- commutators: the projection ratio ρ_exec / E[ρ_rand] (early and late medians); above 1.5 in both means "
    "the execution subspace holds *more* commutator than chance, which contradicts 'negligible along execution "
    "directions' in the relative sense even when ρ itself is small (ρ is small mostly because K ≪ P).",
    "- bubbling: the last-layer readout entropy falls below half of ln(T+1). The attention mass on value slots "
    "tells whether the readout reads the values directly, which in reference mode the leak makes sufficient.",
    "- MLP: standard blocks' attention r90 at least 1 above the attention-only one, and accuracy at least 0.05 "
    "lower, per seed (attention-only and standard run of the same seed; differences smaller than that are not "
    "read as effects); *confirmed* when both hold in every seed, *mixed* when seeds disagree.",
    "- curriculum: accuracy on a smaller m falls by more than 0.1 from its peak during its own stage (a peak at "
    "least chance + 0.2); *confirmed* when it happens in every seed, *mixed* when seeds disagree.",
    "- multiplication: every multiplication seed's median centred r90 (attention blocks) at least 1 above every "
    "addition seed's and at least 1 below its own random-walk null; *confirmed* when also inside 4–6. Values "
    "are 1..C−1 with C prime (chance 1/(C−1)); the reference mode leaks the product just as it leaks the sum.",
    "- SAE: the accuracy drop after zeroing the top-variance latents (propagated through the remaining layers) "
    "against zeroing as many random latents.",
    "- distance to the final subspace: per attention block, the overlap (mean squared principal-angle cosine) "
    "between the top-3 uncentred PCs of the drifts up to the checkpoint nearest 20 % of training and the final "
    "top-3 PCs, minus the same for a random walk with the block's own step sizes (median over blocks). *Confirmed* "
    "when that excess is ≥ 0.1 in every seed (≥ 2 seeds) and its mean is ≥ 2 × the seeds' sd; *not confirmed* "
    "when its mean is ≤ 0 or every seed is below 0.05; otherwise inconclusive. The overlap is 1 at the end by "
    "construction, so only the excess over the walk means anything.",
]


def _figure_section(figs: dict) -> list[str]:
    """The report's figure section: one titled image per figure drawn."""
    L = ["## Figures", ""]
    for key, title in (("spectra", "Per-block trajectory spectra (attention-only)"),
                       ("spectra_mlp", "Per-block trajectory spectra (standard blocks)"),
                       ("attention", "Attention entropy and top-k override (attention-only, reference data)"),
                       ("attention_strict", "Attention entropy and top-k override (strict data)"),
                       ("commutators", "SGD commutators and their projections (attention-only)"),
                       ("commutator_series",
                        "Commutator defect vs loss fluctuations, and by (m_A, m_B) (attention-only)"),
                       ("sae_m", "SAE latents correlated with m, beside the permutation null and random directions"),
                       ("subspace_distance", "Distance to the final subspace (principal angles) beside the random walk"),
                       ("sae", "SAE ablation by training stage"), ("curriculum", "Curriculum: accuracy per m"),
                       ("linear_probes", "Linear probes per layer (attention-only; held-out and training accuracy)")):
        if key in figs:
            L += [f"### {title}", "", f"![{key}](figures/{figs[key]})", ""]
    return L


CAVEATS = ["## Caveats", "",
           "- Sizes: see `analysis/modadd_study.json` → protocol; the quick preset is far smaller than the reference "
           "(d 128, 5 layers, 20,000 steps). Numbers at quick size are indicative.",
           "- The readout is the LM head at a separator position (not a C-way head at T−1); weight decay spares "
           "LayerNorm parameters; standard blocks have a second LayerNorm before the MLP (the reference's disabled MLP "
           "had none).",
           "- ρ baselines use the model's full parameter count P (no dead parameters here, unlike the reference).", ""]


def write_report(res: dict, root: Path) -> Path:
    root = Path(root)
    figs = _report_figures(res, root)
    runs = res["runs"]
    h = res["headline"]
    L = [f"# Modular-addition study ({res['preset']}, seed {res['seed']})", "",
         "Generated by `experiments/modadd/run_study.py` (or `report.py`) from the JSON results in this directory; "
         "every number below is in `analysis/modadd_study.json` and the runs' `analysis/modadd_*.json`.", "",
         "Task: marker modular addition, T body tokens + a separator, answer read through the LM head at the separator "
         "(see training/core/modadd.py). *Reference mode* reproduces the reference generator, whose label leaks (it equals "
         "the sum of all tokens below C); *strict mode* lets distractors take value tokens so that only the markers "
         "identify the summands.", ""]
    L += ["## Runs", "", "| run | blocks | data | schedule | final acc (own mode) | acc on the other mode | per m |",
          "|---|---|---|---|---|---|---|"]
    for role, r in runs.items():
        a = h["accuracy"][role]
        c = r["config"]
        L.append(f"| {_run_name(res, role)} | {'attention-only' if c['attn_only'] else 'attention + MLP'} | "
                 f"{c['modadd_mode']}{', ×, C = ' + str(c['modadd_classes']) if c.get('modadd_op') == 'mul' else ''} | "
                 f"{c['modadd_schedule']} | {_f(a['acc'])} | {a['other_mode']}: {_f(a['acc_other_mode'])} "
                 f"| {_f(a['per_m'], '.2f')} |")
    L += ["", f"![training curves](figures/{figs['training']})", ""]
    L += ["## Headline: the bubble-modadd README's claims next to this toolkit's numbers", "",
          "| claim (bubble-modadd README) | README / reference value | this study | verdict |", "|---|---|---|---|"]
    for claim, seed_v, ours, verdict in _headline_rows(h):
        L.append(f"| {claim} | {seed_v} | {ours} | **{verdict}** |")
    L += ["", "### How the verdicts are decided", "", *VERDICT_RULES, *SERIES_RULES, "",
          "What the leak explains: in reference mode a model can answer by summing every value token it sees; the "
          "accuracy of the reference-trained model on strict data tests this directly. Claims measured only in "
          "reference mode (collapse, bubbling, commutators) describe how that shortcut is learned, not marker-driven "
          "addition; the strict run is the control.", ""]
    L += _probe_table(res) + _figure_section(figs) + CAVEATS
    path = root / "report.md"
    runio.atomic_write_text(path, "\n".join(L) + "\n")
    return path


def _fmt_of(k, n) -> str:
    return ", ".join(f"{a} of {b}" for a, b in zip(k or [], n or []))


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _run_name(res: dict, role: str) -> str:
    from training.studies.modadd_study import run_specs
    return {s.role: s.name for s in run_specs(res["seed"])}[role]
