"""The analyses of a modular-addition run directory (one function each; scripts and the study call them).

* :func:`spectra` -- per-block trajectory spectra (training/geometry/exec_subspace.py) with random-walk nulls;
* :func:`cross_subspaces` -- principal angles between blocks of two runs (seeds) or two layers;
* :func:`subspace_distance` -- principal angles between the top-k subspace of the drifts so far and the
  final top-k subspace, over training, per block and for the trunk, beside the random-walk null
  (training/geometry/subspace_distance.py);
* :func:`attention` -- readout-row entropy and top-k mass per layer and head over the checkpoints, the
  attention mass on value / marker / separator / distractor slots, and the top-k override accuracy;
* :func:`commutators` -- SGD commutators at checkpoints and their projections on the causal per-block
  trajectory basis and on the toolkit's backbone (training/geometry/commutator.py);
* :func:`sae_ablation` -- Top-K SAE at early / mid / late checkpoints with latent ablation patched at the
  SAE's own site and propagated to the readout (training/geometry/sae.py);
* :func:`sae_latents_m` -- an SAE on mixed-m sequences: each latent's correlation with m at the answer slot,
  with a family-wise permutation null and a random-feature control (training/geometry/permutation.py);
* :func:`commutator_series` -- D at many checkpoints with a balanced (m_A, m_B) design: D's spikes against
  loss fluctuations with surrogate nulls (:func:`spike_summary`) and D and cos(g_A, g_B) per (m_A, m_B) cell
  with a same-m / cross-m permutation test (:func:`cell_summary`);
* :func:`curriculum` -- accuracy per m while a curriculum moves to larger m;
* :func:`linear_probes` -- held-out accuracy of linear probes for y and m on the readout-position residual
  after the embedding and after each block (training/geometry/linear_probe.py).

Every random draw comes from a generator seeded by the ``seed`` argument; batches are drawn from the
task with keys of the analysis' own (never a training batch).
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.core.errors import UserError
from training.core.modadd import ModAddTask, answer_stats
from training.geometry.analysis_io import open_run
from training.geometry.attention_probe import override_logits, readout_attention_stats, record_attention
from training.geometry.commutator import FlatModel, embed, orthonormal_basis, projection_summary, sgd_commutator
from training.geometry.exec_subspace import (
    block_report,
    block_slices,
    principal_angles,
    read_block_snapshots,
    top_directions,
)
from training.geometry.linear_probe import probe_report
from training.geometry.sae import latent_variance, patch_hook, train_sae
from training.geometry.switching import residual_stream
from training.geometry.subspace_distance import dense_gram, distance_beside_null
from training.geometry.trajectory import CheckpointSet, compute_gram, pca


def _open(run_dir):
    run = open_run(run_dir)
    if run.cfg.task != "modadd":
        raise UserError(f"{run.dir} is not a modular-addition run (task = {run.cfg.task})")
    return run


def _task(run):
    return ModAddTask(run.cfg)


def _progress(it, on: bool, desc: str, total=None):
    from tqdm import tqdm
    return tqdm(it, desc=desc, total=total, disable=not (on and sys.stderr.isatty()), leave=False)


# ---------------------------------------------------------------------------- spectra
def spectra(run_dir, null_samples: int = 20, seed: int = 0, steps: Sequence[int] | None = None) -> dict:
    """Per-block centred and uncentred spectra, alignment to final and random-walk nulls."""
    run = _open(run_dir)
    steps = list(steps or run.steps)
    if len(steps) < 3:
        raise UserError(f"{run.dir} has {len(steps)} checkpoints; per-block spectra need at least 3")
    blocks = block_slices(run.cfg)
    snaps = read_block_snapshots(run.dir, steps, blocks)
    out = {"steps": steps, "blocks": {}}
    for i, b in enumerate(blocks):
        rep = block_report(snaps[b.label], null_samples=null_samples, seed=seed + i)
        out["blocks"][b.label] = {"layer": b.layer, "kind": b.kind, **rep}
    out["summary"] = _spectra_summary(out["blocks"])
    return out


def _spectra_summary(blocks: dict) -> dict:
    def collect(kinds, key, sub="centered"):
        return [b[sub][key] for b in blocks.values() if b["kind"] in kinds and b[sub].get(key) is not None]
    att = ("WQ", "WK", "WV", "WO")
    s = {}
    for name, kinds in (("attention", att), ("mlp", ("Wup", "Wdown"))):
        r90 = collect(kinds, "r90")
        if not r90:
            continue
        null = [b["null_centered"]["k90"] for b in blocks.values() if b["kind"] in kinds and "null_centered" in b]
        s[name] = {"r90_median": float(np.median(r90)), "r90_mean": float(np.mean(r90)),
                   "r90_min": int(min(r90)), "r90_max": int(max(r90)),
                   "erank_median": float(np.median(collect(kinds, "erank"))),
                   "pr_median": float(np.median(collect(kinds, "participation_ratio"))),
                   "uncentered_r90_median": float(np.median(collect(kinds, "r90", "uncentered"))),
                   "null_r90_median": float(np.median(null)) if null else None}
    return s


def cross_subspaces(run_a, run_b=None, k: int = 3) -> dict:
    """Principal-angle overlap of the top-k centred trajectory PCs of equal-shape blocks: across two runs
    (same block), and within run_a across layers (same kind)."""
    ra = _open(run_a)
    blocks = block_slices(ra.cfg)
    A = read_block_snapshots(ra.dir, ra.steps, blocks)
    Ua = {lbl: top_directions(X, k) for lbl, X in A.items()}
    out: dict = {"k": k, "across_layers": {}}
    for kind in sorted({b.kind for b in blocks}):
        lbls = [b.label for b in blocks if b.kind == kind]
        pairs = [(x, y) for i, x in enumerate(lbls) for y in lbls[i + 1:]]
        out["across_layers"][kind] = [{"a": x, "b": y, **principal_angles(Ua[x], Ua[y])} for x, y in pairs]
    if run_b is not None:
        rb = _open(run_b)
        if block_slices(rb.cfg) != blocks:
            raise UserError(f"{ra.dir} and {rb.dir} have different architectures; cannot compare their blocks")
        B = read_block_snapshots(rb.dir, rb.steps, blocks)
        out["across_runs"] = {lbl: principal_angles(Ua[lbl], top_directions(B[lbl], k)) for lbl in Ua}
        out["runs"] = [str(ra.dir), str(rb.dir)]
    return out


# ---------------------------------------------------------------------------- distance to the final subspace
SUBSPACE_K = 3              # the top-3 PCs per block, as the reference's execution basis
EARLY_FRACTIONS = (0.1, 0.15, 0.2, 0.5)


def subspace_distance(run_dir, k: int = SUBSPACE_K, steps: Sequence[int] | None = None,
                      fractions: Sequence[float] = EARLY_FRACTIONS) -> dict:
    """Per attention/MLP block and for the whole trunk: the overlap (mean squared principal-angle cosine) of the
    top-k uncentred subspace of the drifts up to each checkpoint with the final top-k subspace, the share of
    x(t) in the final subspace, and the same for the random walk with the block's own increment norms."""
    run = _open(run_dir)
    steps = list(steps or run.steps)
    if len(steps) < 3:
        raise UserError(f"{run.dir} has {len(steps)} checkpoints; the distance to the final subspace needs at least 3")
    blocks = block_slices(run.cfg)
    snaps = read_block_snapshots(run.dir, steps, blocks)
    out: dict = {"k": k, "steps": steps, "fractions": list(fractions), "blocks": {}}
    for b in blocks:
        X = snaps[b.label]
        if not np.any(X[1:] != X[0]):
            out["blocks"][b.label] = {"layer": b.layer, "kind": b.kind, "reason": "the block never moved"}
            continue
        out["blocks"][b.label] = {"layer": b.layer, "kind": b.kind,
                                  **distance_beside_null(dense_gram(X, steps), k, fractions=fractions)}
    out["trunk"] = distance_beside_null(compute_gram(CheckpointSet(run.dir), steps=steps), k, fractions=fractions)
    out["summary"] = _distance_summary(out, fractions)
    return out


def _distance_summary(res: dict, fractions) -> dict:
    att = [b for b in res["blocks"].values() if b["kind"] in ("WQ", "WK", "WV", "WO") and "run" in b]
    s: dict = {"k": res["k"], "attention_blocks": len(att)}
    for f in fractions:
        key = f"{f:g}"
        ov = [b["at_fraction"][key]["overlap"] for b in att]
        nv = [b["at_fraction"][key]["null_overlap"] for b in att]
        s[key] = {"attention_overlap_median": float(np.median(ov)) if ov else None,
                  "attention_null_overlap_median": float(np.median(nv)) if nv else None,
                  "attention_excess_median": float(np.median(np.subtract(ov, nv))) if ov else None,
                  "trunk_overlap": res["trunk"]["at_fraction"][key]["overlap"],
                  "trunk_null_overlap": res["trunk"]["at_fraction"][key]["null_overlap"]}
    settle = [b["settle_fraction"] for b in att if b["settle_fraction"] is not None]
    nsettle = [b["null_settle_fraction"] for b in att if b["null_settle_fraction"] is not None]
    s["attention_settle_median"] = float(np.median(settle)) if settle else None
    s["attention_null_settle_median"] = float(np.median(nsettle)) if nsettle else None
    s["trunk_settle"] = res["trunk"]["settle_fraction"]
    s["trunk_null_settle"] = res["trunk"]["null_settle_fraction"]
    return s


# ---------------------------------------------------------------------------- attention
def attention(run_dir, probe_n: int = 128, ks: Sequence[int] = (8, 4, 2, 1), steps: Sequence[int] | None = None,
              progress: bool = False) -> dict:
    """Readout entropy / top-k mass per layer and head at each checkpoint, per m (fixed probe batches =
    the first ``probe_n`` sequences of each eval set), slot-type attention mass, and at the last
    checkpoint the top-k override accuracy for k in {T+1, *ks}."""
    run = _open(run_dir)
    task = _task(run)
    steps = list(steps or run.steps)
    n_keys = run.cfg.modadd_T + 1
    out = {"steps": steps, "ms": task.ms, "n_keys": n_keys, "uniform_entropy": math.log(n_keys), "per_m": {}}
    probes = {m: task.eval_set(m).slice(0, probe_n) for m in task.ms}
    out["per_m"] = {str(m): [] for m in task.ms}
    for s in _progress(steps, progress, "attention"):
        model = run.model(s, attention="math")
        for m, ex in probes.items():
            _, atts = record_attention(model, ex.x)
            st = readout_attention_stats(model, ex.x, atts=atts)
            out["per_m"][str(m)].append({"step": s, "layers": st["layers"],
                                         "slot_mass": [_slot_mass(att[:, :, -1, :], ex) for att in atts]})
    last = steps[-1]
    model = run.model(last, attention="math")
    kk = [n_keys] + [k for k in ks if k < n_keys]
    over = {}
    for m in task.ms:
        ex = task.eval_set(m)
        over[str(m)] = {str(k): answer_stats(model, ex, "cpu", logits_fn=lambda xb, k=k: override_logits(model, xb, k)[:, -1])["acc"]
                        for k in kk}
    out["override"] = {"step": last, "ks": kk, "acc": over,
                       "mean": {str(k): float(np.mean([over[str(m)][str(k)] for m in task.ms])) for k in kk}}
    L = run.cfg.n_layer - 1
    ent_last = {str(m): [float(np.mean(r["layers"][L]["entropy"])) for r in out["per_m"][str(m)]] for m in task.ms}
    out["last_layer_entropy"] = ent_last
    return out


def _slot_mass(last_row: torch.Tensor, ex) -> dict:
    """Mean (over batch and heads) readout attention on value, marker, separator and other slots."""
    vm = ex.value_mask()
    mm = torch.zeros_like(vm)
    mm.scatter_(1, ex.positions, True)
    sep = torch.zeros_like(vm)
    sep[:, -1] = True
    other = ~(vm | mm | sep)
    a = last_row.mean(1)                                          # (B, T)
    return {name: float((a * mask).sum(1).mean()) for name, mask in
            (("value", vm), ("marker", mm), ("separator", sep), ("other", other))}


# ---------------------------------------------------------------------------- commutators
def _embed_blocks(fm, blocks, dirs: dict, cfg) -> torch.Tensor:
    cols = []
    for b in blocks:
        U = dirs.get(b.label)
        if U is None or U.shape[1] == 0:
            continue
        shape = fm.shapes[fm.names.index(b.name)]
        off = fm.offsets[b.name] + b.rows[0] * int(np.prod(shape[1:]))
        cols += [(off, torch.from_numpy(U[:, j])) for j in range(U.shape[1])]
    return embed(cols, fm.P)


def _backbone_basis(run, fm, steps: list[int], k: int) -> tuple[torch.Tensor, list[float]]:
    """Top-k uncentred PCs of the trunk drift θ(t) − θ(0) over ``steps`` (training/geometry/trajectory.py), in R^P."""
    ck = CheckpointSet(run.dir)
    gram = compute_gram(ck, steps=steps)
    p = pca(gram, k=k)
    V = ck.materialise(gram, p.coeffs.T)                          # D_trunk × k
    cols, pos = [], 0
    names = ck.names()
    sizes = [int(np.prod(ck.shapes()[n])) for n in names]
    blocks = []
    for n, sz in zip(names, sizes):
        blocks.append((fm.offsets[n], pos, sz))
        pos += sz
    for j in range(V.shape[1]):
        v = torch.zeros(fm.P, dtype=torch.float64)
        for off, a, sz in blocks:
            v[off:off + sz] = torch.from_numpy(V[a:a + sz, j])
        cols.append((0, v))
    return embed(cols, fm.P), [float(x) for x in p.explained_variance_ratio[:k]]


def commutators(run_dir, n_checkpoints: int = 6, samples: int = 5, eta: float = 1e-3, pcs_per_block: int = 3,
                backbone_k: int = 3, n_mc: int = 10, min_snapshots: int = 5, batch_size: int | None = None,
                seed: int = 0, progress: bool = False) -> dict:
    """Commutator samples at ``n_checkpoints`` checkpoints (from the first with ``min_snapshots``
    snapshots on) and their projections on causal bases (built from checkpoints up to that step)."""
    run = _open(run_dir)
    task = _task(run)
    if len(run.steps) < min_snapshots + 1:
        raise UserError(f"{run.dir} has {len(run.steps)} checkpoints; commutator bases need at least {min_snapshots + 1}")
    cand = run.steps[min_snapshots - 1:]
    idx = np.unique(np.linspace(0, len(cand) - 1, min(n_checkpoints, len(cand))).round().astype(int))
    where = [cand[i] for i in idx]
    blocks = block_slices(run.cfg)
    snaps = read_block_snapshots(run.dir, run.steps, blocks)
    gen = torch.Generator().manual_seed(seed)
    bs = batch_size or run.cfg.batch_size

    def loss(fwd, ex):
        return F.cross_entropy(fwd(ex.x)[:, -1, :], ex.label)
    rows = []
    for s in _progress(where, progress, "commutators"):
        model = run.model(s, attention="math").double()
        fm = FlatModel(model)
        f = fm.loss_fn(loss)
        theta = fm.theta()
        upto = [t for t in run.steps if t <= s]
        dirs = {b.label: top_directions(snaps[b.label][:len(upto)], pcs_per_block) for b in blocks}
        Q_exec = orthonormal_basis(_embed_blocks(fm, blocks, dirs, run.cfg))
        Q_bb, bb_evr = _backbone_basis(run, fm, upto, backbone_k)
        Q_bb = orthonormal_basis(Q_bb)
        samp = []
        for i in range(samples):
            a = task.sample([seed, 91, s, i, 0], n=bs)
            b = task.sample([seed, 91, s, i, 1], n=bs)
            r = sgd_commutator(f, theta, a, b, eta, second_order=True)
            d = r["delta"]
            samp.append({"m_a": a.m, "m_b": b.m, "D": r["D"], "D_hvp": r["D_hvp"], "scaled_defect": r["scaled_defect"],
                         "rel_err_hvp": r["rel_err_hvp"], "grad_cos": r["grad_cos"], "delta_norm": r["delta_norm"],
                         "g_a_norm": r["g_a_norm"], "g_b_norm": r["g_b_norm"],
                         "exec": projection_summary(d, Q_exec, n_mc=n_mc, generator=gen),
                         "backbone1": projection_summary(d, Q_bb[:, :1]),
                         "backbone": projection_summary(d, Q_bb)})
        med = sorted(samp, key=lambda z: z["D"])[len(samp) // 2]
        same = [z["D"] for z in samp if z["m_a"] == z["m_b"]]
        cross = [z["D"] for z in samp if z["m_a"] != z["m_b"]]
        rows.append({"step": s, "P": fm.P, "K_exec": Q_exec.shape[1], "K_backbone": Q_bb.shape[1],
                     "backbone_evr": bb_evr, "samples": samp,
                     "D_median": float(np.median([z["D"] for z in samp])),
                     "D_p90": float(np.percentile([z["D"] for z in samp], 90)),
                     "D_hvp_median": float(np.median([z["D_hvp"] for z in samp])),
                     "scaled_defect_median": float(np.median([z["scaled_defect"] for z in samp])),
                     "grad_cos_median": float(np.median([z["grad_cos"] for z in samp])),
                     "D_same_m_median": float(np.median(same)) if same else None,
                     "D_cross_m_median": float(np.median(cross)) if cross else None,
                     "median_sample": {"rho_exec": med["exec"]["rho"], "rho_rand": med["exec"]["rho_rand_exact"],
                                       "rho_rand_mc": med["exec"].get("rho_rand_mc", {}).get("mean"),
                                       "ratio": med["exec"]["ratio"], "rho_backbone1": med["backbone1"]["rho"],
                                       "ratio_backbone1": med["backbone1"]["ratio"],
                                       "rho_backbone": med["backbone"]["rho"], "ratio_backbone": med["backbone"]["ratio"],
                                       "perp_norm_fraction": med["exec"]["perp_norm_fraction"],
                                       "perp_energy_fraction": med["exec"]["perp_energy_fraction"],
                                       "one_minus_rho_reference": med["exec"]["one_minus_rho_reference"]},
                     "rho_exec_median": float(np.median([z["exec"]["rho"] for z in samp])),
                     "ratio_exec_median": float(np.median([z["exec"]["ratio"] for z in samp])),
                     "ratio_backbone_median": float(np.median([z["backbone"]["ratio"] for z in samp]))})
    n = len(rows)
    early, late = rows[:max(1, n // 5 or 1)], rows[-max(1, n // 5 or 1):]
    summary = {"eta": eta, "samples_per_checkpoint": samples, "pcs_per_block": pcs_per_block,
               "ratio_exec_early": float(np.median([r["ratio_exec_median"] for r in early])),
               "ratio_exec_late": float(np.median([r["ratio_exec_median"] for r in late])),
               "rho_exec_range": [min(r["rho_exec_median"] for r in rows), max(r["rho_exec_median"] for r in rows)],
               "rho_rand": rows[-1]["median_sample"]["rho_rand"],
               "perp_energy_fraction_min": min(z["exec"]["perp_energy_fraction"] for r in rows for z in r["samples"]),
               "D_range": [min(r["D_median"] for r in rows), max(r["D_median"] for r in rows)],
               "scaled_defect_range": [min(r["scaled_defect_median"] for r in rows),
                                       max(r["scaled_defect_median"] for r in rows)],
               "hvp_rel_err_max": max(z["rel_err_hvp"] for r in rows for z in r["samples"])}
    return {"checkpoints": rows, "summary": summary}


# ---------------------------------------------------------------------------- SAE
def block_output(model, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The residual stream after block ``layer`` (n, T+1, d) for inputs ``x``."""
    store = {}
    h = model.blocks[layer].register_forward_hook(lambda mod, i, o: store.__setitem__("h", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return store["h"]


def collect_site(model, layer: int, ex, positions: str = "values+answer") -> torch.Tensor:
    """Residual-stream vectors after block ``layer`` at the value slots and the answer slot."""
    return block_output(model, layer, ex.x)[_site_mask(ex, positions)]


def _site_mask(ex, positions: str = "values+answer") -> torch.Tensor:
    mask = ex.value_mask()
    if "answer" in positions:
        mask[:, -1] = True
    return mask


SAE_FRACTIONS = (0.1, 0.4, 0.9)      # early / mid / late, as the reference's SAE steps 2000, 8000, 18000 of 20000


def steps_at_fractions(steps: Sequence[int], fractions: Sequence[float] = SAE_FRACTIONS) -> list[int]:
    """The checkpoints nearest the given fractions of the last step (sorted, without repeats)."""
    return sorted({min(steps, key=lambda s: abs(s - f * steps[-1])) for f in fractions})


def sae_ablation(run_dir, steps: Sequence[int] | None = None, layer: int | None = None, n_batches: int = 20,
                 expansion: int = 2, k: int | None = None, sae_steps: int = 1500, n_ablate: int = 6,
                 n_random: int = 5, seed: int = 0, progress: bool = False) -> dict:
    """Train a Top-K SAE on the residual after block ``layer`` (value slots + answer slot, m = m_max
    sequences) at each of ``steps`` (default: 10 %, 40 %, 90 % of the run), then measure accuracy with
    the site patched: reconstruction only, the ``n_ablate`` highest-variance latents zeroed, and as many
    random latents zeroed (mean of ``n_random`` draws)."""
    run = _open(run_dir)
    task = _task(run)
    cfg = run.cfg
    layer = max(0, cfg.n_layer - 2) if layer is None else layer
    if not 0 <= layer < cfg.n_layer:
        raise UserError(f"--layer {layer} is out of range for a {cfg.n_layer}-layer model")
    if steps is None:
        steps = steps_at_fractions(run.steps)
    k = k or max(1, cfg.d_model // 8)
    d_sae = expansion * cfg.d_model
    rng = np.random.default_rng(seed)
    out = {"layer": layer, "site": "residual after block (value slots + answer slot)", "d_sae": d_sae, "k": k,
           "n_ablate": n_ablate, "stages": []}
    m_fit = task.ms[-1]
    for s in _progress(steps, progress, "sae"):
        model = run.model(s)
        X = torch.cat([collect_site(model, layer, task.sample([seed, 97, s, i], m=m_fit)) for i in range(n_batches)])
        fit = train_sae(X, d_sae, k, steps=sae_steps, seed=seed)
        var = latent_variance(fit.sae, X)
        top = torch.argsort(var, descending=True)[:n_ablate]
        rows = {}
        for m in task.ms:
            ex = task.eval_set(m)
            mask = _site_mask(ex)

            def acc_with(ablate):
                h = model.blocks[layer].register_forward_hook(patch_hook(fit.sae, mask, ablate))
                try:
                    return answer_stats(model, ex, "cpu", batch_size=len(ex.x))["acc"]
                finally:
                    h.remove()
            clean = answer_stats(model, ex, "cpu", batch_size=len(ex.x))["acc"]
            rand = [acc_with(torch.from_numpy(rng.choice(d_sae, n_ablate, replace=False))) for _ in range(n_random)]
            rows[str(m)] = {"clean": clean, "recon": acc_with(None), "ablate_top": acc_with(top),
                            "ablate_random": float(np.mean(rand))}
        mean = {key: float(np.mean([r[key] for r in rows.values()])) for key in ("clean", "recon", "ablate_top", "ablate_random")}
        out["stages"].append({"step": s, "fvu": fit.fvu, "n_vectors": int(len(X)), "per_m": rows, "mean": mean,
                              "drop_top": mean["recon"] - mean["ablate_top"],
                              "drop_random": mean["recon"] - mean["ablate_random"],
                              "recon_change": mean["clean"] - mean["recon"]})
    return out


# ---------------------------------------------------------------------------- SAE latents against m
def mixed_m_sequences(task, n: int, seed: int = 0):
    """``n`` task sequences, m cycling through the task's ms (balanced), each drawn on its own from the key
    [seed, 101, i] (so its marker positions are its own: sequences are exchangeable units for a permutation).
    Returns (x (n, T+1), m (n,), site mask (n, T+1) of the value slots + answer slot)."""
    parts = [task.sample([seed, 101, i], n=1, m=task.ms[i % len(task.ms)]) for i in range(n)]
    x = torch.cat([p.x for p in parts])
    ms = torch.tensor([p.m for p in parts], dtype=torch.long)
    mask = torch.cat([_site_mask(p) for p in parts])
    return x, ms, mask


def sae_latents_m(run_dir, steps: Sequence[int] | None = None, fractions: Sequence[float] = SAE_FRACTIONS,
                  layer: int | None = None, n_sequences: int = 1024, expansion: int = 2, k: int | None = None,
                  sae_steps: int = 1500, n_perm: int = 1000, alpha: float = 0.05, seed: int = 0,
                  progress: bool = False) -> dict:
    """Which SAE latents correlate with the marker count m? At each of ``steps`` (default: the checkpoints
    nearest ``fractions`` of the run, 10 %, 40 %, 90 % as :func:`sae_ablation`): a Top-K SAE trained on the
    residual after block ``layer`` at the value slots + answer slot of ``n_sequences`` sequences of MIXED m
    (balanced over the task's ms); Pearson's r of every latent's activation (the Top-K code) at the answer
    slot (one vector per sequence) with the sequence's m; the family-wise permutation null (m permuted across sequences, max |r| over latents;
    training/geometry/permutation.py); and the same for an untrained SAE of the same size (random unit
    encoder directions, same k), the random-feature control.

    The answer slot only is correlated because pooling value slots with it would make any latent that tells
    the slot types apart correlate with m trivially (a sequence with m markers has m value slots per answer
    slot). The reference trained its SAE on m = 4 only, where a correlation with m is undefined.
    """
    from training.geometry.permutation import max_correlation_test
    from training.geometry.sae import TopKSAE
    run = _open(run_dir)
    task = _task(run)
    cfg = run.cfg
    layer = max(0, cfg.n_layer - 2) if layer is None else layer
    if not 0 <= layer < cfg.n_layer:
        raise UserError(f"--layer {layer} is out of range for a {cfg.n_layer}-layer model")
    if len(task.ms) < 2:
        raise UserError(f"the run uses one marker count (m = {task.ms[0]}); a correlation with m needs at least two")
    if steps is None:
        steps = steps_at_fractions(run.steps, fractions)
    k = k or max(1, cfg.d_model // 8)
    d_sae = expansion * cfg.d_model
    x, m_seq, mask = mixed_m_sequences(task, n_sequences, seed)
    out = {"layer": layer, "site": "residual after block (SAE: value slots + answer slot; correlation: answer slot)",
           "statistic": "Pearson r of the latent's Top-K activation with m, one vector per sequence",
           "null": "m permuted across sequences; family-wise p from the maximum |r| over latents",
           "d_sae": d_sae, "k": k, "n_sequences": n_sequences, "ms": task.ms, "n_perm": n_perm, "alpha": alpha,
           "stages": []}
    for s in _progress(steps, progress, "sae-m"):
        H = block_output(run.model(s), layer, x)
        fit = train_sae(H[mask], d_sae, k, steps=sae_steps, seed=seed)
        rand = TopKSAE(cfg.d_model, d_sae, k, seed=seed + 7919)
        with torch.no_grad():
            rand.b_pre.copy_(H[mask].float().mean(0))
            Z, Zr = fit.sae.encode(H[:, -1].float()), rand.encode(H[:, -1].float())
        res = {"step": s, "fvu": fit.fvu}
        for name, codes in (("sae", Z), ("random", Zr)):
            t = max_correlation_test(codes.numpy(), m_seq.numpy(), n_perm=n_perm, alpha=alpha, seed=seed)
            active = (codes != 0).double().mean(0).numpy()
            for row in t["top"]:
                row["frac_active"] = float(active[row["index"]])
            res[name] = t
        out["stages"].append(res)
    return out


# ---------------------------------------------------------------------------- commutator series and (m_A, m_B) cells
def cell_design(ms: Sequence[int], n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` ordered (m_A, m_B) pairs, every cell of ms × ms as often as possible (counts differ by at most
    one), in a seeded random order (so the cells a checkpoint gets do not follow a pattern in time)."""
    cells = [(a, b) for a in ms for b in ms]
    order = np.random.default_rng([seed, 211]).permutation(n)
    return [cells[i % len(cells)] for i in order]


def commutator_series(run_dir, n_checkpoints: int = 20, samples: int = 4, eta: float = 1e-3, eval_per_m: int = 64,
                      batch_size: int | None = None, window: int = 5, factor: float = 2.0, n_surrogates: int = 1000,
                      n_perm: int = 2000, seed: int = 0, progress: bool = False) -> dict:
    """The normalised defect D at many checkpoints, for two questions: do D's spikes go with loss
    fluctuations (:func:`spike_summary`), and how do D and cos(g_A, g_B) depend on (m_A, m_B)
    (:func:`cell_summary`)?

    At ``n_checkpoints`` checkpoints (evenly spread, step 0 excluded), ``samples`` commutators each (plain
    SGD steps of ``eta``, first-order form only; no projections), with (m_A, m_B) from :func:`cell_design`;
    per checkpoint also the loss on a fixed set (the first ``eval_per_m`` evaluation sequences of each m) there
    and at the checkpoint before it, whose difference is the loss fluctuation."""
    run = _open(run_dir)
    task = _task(run)
    if len(run.steps) < 3:
        raise UserError(f"{run.dir} has {len(run.steps)} checkpoints; a commutator series needs at least 3")
    cand = run.steps[1:]
    idx = np.unique(np.linspace(0, len(cand) - 1, min(n_checkpoints, len(cand))).round().astype(int))
    where = [cand[i] for i in idx]
    design = cell_design(task.ms, len(where) * samples, seed)
    fixed = [task.eval_set(m).slice(0, eval_per_m) for m in task.ms]
    bs = batch_size or run.cfg.batch_size

    def loss(fwd, ex):
        return F.cross_entropy(fwd(ex.x)[:, -1, :], ex.label)

    @torch.no_grad()
    def fixed_loss(step):
        model = run.model(step)
        return float(np.mean([float(loss(model, ex)) for ex in fixed]))

    rows = []
    for c, s in enumerate(_progress(where, progress, "commutator series")):
        fm = FlatModel(run.model(s, attention="math").double())
        f = fm.loss_fn(loss)
        theta = fm.theta()
        samp = []
        for i in range(samples):
            ma, mb = design[c * samples + i]
            a = task.sample([seed, 93, s, i, 0], n=bs, m=ma)
            b = task.sample([seed, 93, s, i, 1], n=bs, m=mb)
            r = sgd_commutator(f, theta, a, b, eta)
            with torch.no_grad():
                la, lb = float(f(theta, a)), float(f(theta, b))
            samp.append({"m_a": ma, "m_b": mb, "D": r["D"], "grad_cos": r["grad_cos"], "delta_norm": r["delta_norm"],
                         "g_a_norm": r["g_a_norm"], "g_b_norm": r["g_b_norm"], "loss_a": la, "loss_b": lb})
        prev = run.steps[run.steps.index(s) - 1]
        rows.append({"step": s, "prev_step": prev, "loss": fixed_loss(s), "loss_prev": fixed_loss(prev),
                     "samples": samp})
    return {"eta": eta, "samples_per_checkpoint": samples, "ms": task.ms, "batch_size": bs, "checkpoints": rows,
            "spikes": spike_summary(rows, eta, window=window, factor=factor, n_surrogates=n_surrogates, seed=seed),
            "cells": cell_summary(rows, task.ms, n_perm=n_perm, seed=seed)}


LOSS_FLOOR = 1e-15          # a loss change below this (identical checkpoints) is floored before taking logs


def spike_summary(rows: list[dict], eta: float, window: int = 5, factor: float = 2.0, n_surrogates: int = 1000,
                  seed: int = 0) -> dict:
    """D's spikes against loss fluctuations over the checkpoints of a :func:`commutator_series`.

    Per checkpoint: D = the median D of its samples, the gradient-norm product ‖g_A‖‖g_B‖ (median), the
    unnormalised ‖δ‖/η² (median) and the loss fluctuation |L(t) − L(t_prev)| on the fixed set. Reported:
    the spike-index correlation (training/geometry/surrogates.py: spike_coupling) of D with the loss
    fluctuation (the claim's number), of D with 1/(‖g_A‖‖g_B‖) (the normalisation: D ∝ curvature / gradient
    norms) and of ‖δ‖/η² with the loss fluctuation (the commutator without that normalisation); the
    levels / differences / detrended correlation of D with the fluctuation (surrogates.coupling); and the
    number of D spikes (overall and in the second half) beside the mean count in phase-randomised
    surrogates of D's spike index (a linear Gaussian series with the same spectrum)."""
    from training.geometry.surrogates import coupling, phase_randomised_surrogates, spike_coupling, spike_index
    steps = [r["step"] for r in rows]
    med = lambda r, fn: float(np.median([fn(z) for z in r["samples"]]))      # noqa: E731
    D = np.array([med(r, lambda z: z["D"]) for r in rows])
    gg = np.array([med(r, lambda z: z["g_a_norm"] * z["g_b_norm"]) for r in rows])
    dn = np.array([med(r, lambda z: z["delta_norm"]) for r in rows]) / eta ** 2
    fl = np.maximum(np.abs([r["loss"] - r["loss_prev"] for r in rows]), LOSS_FLOOR)
    kw = dict(window=window, factor=factor, n_surrogates=n_surrogates, seed=seed)
    out = {"steps": steps, "D": D.tolist(), "grad_norm_product": gg.tolist(), "delta_over_eta2": dn.tolist(),
           "loss_fluctuation": fl.tolist(), "window": window, "factor": factor}
    if len(rows) < window or np.any(~np.isfinite(D)) or np.any(D <= 0):
        return {**out, "reason": f"{len(rows)} checkpoints (or a non-positive D); no spike analysis"}
    out["D_vs_loss"] = spike_coupling(D, fl, **kw)
    out["D_vs_inverse_grad_norms"] = spike_coupling(D, 1.0 / gg, **kw)
    out["delta_vs_loss"] = spike_coupling(dn, fl, **kw)
    out["levels"] = coupling(steps, D.tolist(), fl.tolist(), n_surrogates=n_surrogates, seed=seed)
    s = spike_index(D, window)
    is_spike = s > np.log(factor)
    null = phase_randomised_surrogates(s, n_surrogates, np.random.default_rng([seed, 5])) if np.ptp(s) > 0 else s[None]
    half = len(s) // 2
    out["spikes"] = {"count": int(is_spike.sum()), "count_second_half": int(is_spike[half:].sum()),
                     "n": len(s), "null_mean_count": float((null > np.log(factor)).sum(1).mean()),
                     "max_ratio_to_rolling_median": float(np.exp(s.max()))}
    return out


def cell_summary(rows: list[dict], ms: Sequence[int], n_perm: int = 2000, seed: int = 0) -> dict:
    """Median D and median cos(g_A, g_B) per ordered (m_A, m_B) cell (grids indexed [m_A][m_B] in ``ms``
    order; None for an empty cell, listed in ``empty``), and same-m against cross-m: the difference of the
    medians with a permutation p-value, same/cross labels shuffled within each checkpoint
    (training/geometry/permutation.py: group_difference_test)."""
    from training.geometry.permutation import group_difference_test
    flat = [(c, z) for c, r in enumerate(rows) for z in r["samples"]]
    out: dict = {"ms": list(ms), "n_samples": len(flat)}
    grid = {key: [[None] * len(ms) for _ in ms] for key in ("D_median", "grad_cos_median", "n")}
    empty = []
    for i, ma in enumerate(ms):
        for j, mb in enumerate(ms):
            zs = [z for _, z in flat if z["m_a"] == ma and z["m_b"] == mb]
            grid["n"][i][j] = len(zs)
            if not zs:
                empty.append([ma, mb])
                continue
            grid["D_median"][i][j] = float(np.median([z["D"] for z in zs]))
            grid["grad_cos_median"][i][j] = float(np.median([z["grad_cos"] for z in zs]))
    out.update(grid, empty=empty)
    same = [z["m_a"] == z["m_b"] for _, z in flat]
    strata = [c for c, _ in flat]
    for key in ("D", "grad_cos"):
        out[f"same_vs_cross_{key}"] = group_difference_test([z[key] for _, z in flat], same, strata=strata,
                                                            n_perm=n_perm, seed=seed)
    return out


# ---------------------------------------------------------------------------- curriculum
def curriculum(run_dir) -> dict:
    """Accuracy per m at every evaluation and the forgetting of each m after its own stage."""
    run = _open(run_dir)
    task = _task(run)
    if run.cfg.modadd_schedule != "curriculum":
        raise UserError(f"{run.dir} was not trained with a curriculum (modadd_schedule = {run.cfg.modadd_schedule})")
    rows = run.metrics()
    starts = task.stage_starts()
    out = {"stage_starts": starts, "ms": task.ms, "steps": [r["step"] for r in rows],
           "acc": {str(m): [r.get(f"acc_m{m}") for r in rows] for m in task.ms}, "forgetting": {}}
    for i, m in enumerate(task.ms[:-1]):
        end = starts[i + 1] - 1
        during = [r[f"acc_m{m}"] for r in rows if r["step"] <= end and r["step"] >= starts[i] - 1]
        final = rows[-1][f"acc_m{m}"]
        peak = max(during) if during else None
        out["forgetting"][str(m)] = {"acc_end_of_own_stage": during[-1] if during else None, "peak_in_own_stage": peak,
                                     "final": final, "drop_from_peak": None if peak is None else peak - final}
    return out


# ---------------------------------------------------------------------------- linear probes
PROBE_CHUNK = 32        # probe sequences are drawn in chunks of this size, each with one m (and, as in training,
                        # one position set when modadd_shared_positions)


def probe_sets(task, n_train: int, n_test: int, seed: int = 0):
    """Two disjoint seeded sets of task sequences (training and held-out) for the linear probes.

    Chunk c of split s is drawn from the generator keyed [seed, 113, s, c] with m = ms[c mod len(ms)], so
    the m classes are balanced. Held-out sequences that also occur in the training set (possible in
    principle, never seen in practice at T = 16) are dropped; ``n_dropped`` says how many.
    """
    def draw(split, n):
        parts = [task.sample([seed, 113, split, c], n=min(PROBE_CHUNK, n - a), m=task.ms[c % len(task.ms)])
                 for c, a in enumerate(range(0, n, PROBE_CHUNK))]
        x = torch.cat([p.x for p in parts])
        ms = torch.cat([torch.full((len(p.x),), p.m, dtype=torch.long) for p in parts])
        return x, torch.cat([p.label for p in parts]), ms

    if n_train < 2 or n_test < 1:
        raise UserError(f"the probes need at least 2 training and 1 held-out sequence (got {n_train}, {n_test})")
    train, test = draw(0, n_train), draw(1, n_test)
    seen = {bytes(row.numpy()) for row in train[0]}
    keep = torch.tensor([bytes(row.numpy()) not in seen for row in test[0]], dtype=torch.bool)
    test = tuple(t[keep] for t in test)
    if not len(test[0]):
        raise UserError("every held-out probe sequence also occurs in the training set; use more sequences")
    return {"train": dict(zip(("x", "y", "m"), train)), "test": dict(zip(("x", "y", "m"), test)),
            "n_dropped": int((~keep).sum())}


@torch.no_grad()
def readout_residuals(model, x: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual stream at the readout (separator, last) position: (n_layer + 1, n, d) -- after the
    embedding, then after each block (switching.residual_stream) -- and the model's answer logits (n, V) there."""
    feats, logits = [], []
    for a in range(0, len(x), batch_size):
        hidden, out = residual_stream(model, x[a:a + batch_size])
        feats.append(torch.stack([h[:, -1].float() for h in hidden]))
        logits.append(out[:, -1].float())
    return torch.cat(feats, 1), torch.cat(logits)


def linear_probes(run_dir, step: int | None = None, n_train: int = 2048, n_test: int = 1024, seed: int = 0,
                  l2: float | None = None) -> dict:
    """Held-out accuracy of linear probes for the label y and for m on the readout-position residual
    after the embedding and after each block, at checkpoint ``step`` (default the last); with the
    training accuracy (labelled as such) and the chance levels. Probe fitting: training/geometry/linear_probe.py."""
    run = _open(run_dir)
    task = _task(run)
    step = run.steps[-1] if step is None else int(step)
    if step not in run.steps:
        raise UserError(f"{run.dir} has no checkpoint at step {step} (available: {run.steps[0]}..{run.steps[-1]})")
    model = run.model(step)
    data = probe_sets(task, n_train, n_test, seed)
    tr, te = data["train"], data["test"]
    H_tr, _ = readout_residuals(model, tr["x"])
    H_te, logits = readout_residuals(model, te["x"])
    C, m0 = run.cfg.modadd_classes, task.ms[0]
    names = ["embedding"] + [f"block {i + 1}" for i in range(run.cfg.n_layer)]
    layers = []
    for j, name in enumerate(names):
        row = {"index": j, "name": name}
        for target, k, y_tr, y_te in (("y", C, tr["y"], te["y"]), ("m", len(task.ms), tr["m"] - m0, te["m"] - m0)):
            row[target] = probe_report(H_tr[j], y_tr.numpy(), H_te[j], y_te.numpy(), k, l2=l2, seed=seed + j)
        layers.append(row)
    model_acc = float((logits.argmax(-1) == te["y"]).double().mean())
    summary = {f"{t}_{s}_acc": [r[t][f"{s}_acc"] for r in layers] for t in ("y", "m") for s in ("test", "train")}
    return {"step": step, "site": "residual stream at the readout (separator) position; index 0 = after the "
                                  "embedding, index i = after block i",
            "probe": "multinomial logistic regression on whitened features, L2 chosen on a split of the training "
                     "set, L-BFGS (training/geometry/linear_probe.py)",
            "seed": seed, "n_train": int(len(tr["y"])), "n_test": int(len(te["y"])),
            "n_test_dropped": data["n_dropped"], "ms": task.ms, "classes": C, "mode": run.cfg.modadd_mode,
            "chance": {"y": task.spec.chance, "m": 1.0 / len(task.ms), "y_majority": layers[0]["y"]["chance_majority"],
                       "m_majority": layers[0]["m"]["chance_majority"]},
            "model_answer_acc_test": model_acc, "layer_names": names, "layers": layers, **summary}
