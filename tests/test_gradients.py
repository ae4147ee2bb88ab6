"""Gradients, alignment, empirical Fisher and the three gradient analyses, against dense numpy.

The first tests pin the coordinate pairing that skydancerosel/mini_gpt got wrong (its Fisher script dotted
registration-order gradients with sorted-order directions): a direction built by *name* must pick out
that parameter's gradient element, and drift directions materialised from checkpoints must use the
same order as the gradients.
"""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_pilot
from trajfix import make_run
from training.geometry.analysis_io import open_run
from training.core.config import preset
from training.core.errors import UserError
from training.geometry.fisher import (anisotropy_ratio, fisher_spectrum, orthogonal_random_directions, overlap, rayleigh,
                             rayleigh_jvp, top_eigenvectors)
from training.geometry.gradients import (alignment, alignment_stats, analysis_batches, block_projections, block_slices,
                                choose_steps, cumulative_bias, flat_grad, floor_summary, minibatch_gradients,
                                noise_floor, part_loss, project, signed_block_bias, spread_steps, t_statistic)
from training.core.losses import composite_loss
from training.core.model import GPT, trunk_names, trunk_size
from training.core.optim import lambda_at
from training.geometry.trajectory import CheckpointSet, compute_gram, pca

SCRIPTS = {"fisher_analysis": "analysis/fisher/fisher_analysis.py",
           "rayleigh_quotients": "analysis/fisher/rayleigh_quotients.py",
           "residual_decomposition": "analysis/backbone/residual_decomposition.py"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 20-step run of the test preset (5 checkpoints: 0, 5, 10, 15, 20)."""
    base = tmp_path_factory.mktemp("grad_runs")
    run_pilot("--preset", "test", "--out-dir", str(base / "run"), cache=str(base / "cache"))
    return base / "run"


@pytest.fixture(scope="module")
def opened(tiny_run):
    run = open_run(tiny_run)
    return run, run.task()


def tiny_model_and_loss(seed=0):
    cfg = preset("test")
    torch.manual_seed(seed)
    model = GPT(cfg, 64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 64, (3, cfg.seq_len), generator=g)
    y = torch.randint(0, 64, (3, cfg.seq_len), generator=g)
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, 20] = True
    return cfg, model, lambda: composite_loss(model(x), y, mask, 1.5).loss


def unit_vector_for(cfg, name, index):
    """The trunk-space unit vector of one element of one named matrix, located through trunk_names."""
    shapes = {n: p.shape for n, p in GPT(cfg, 64).named_parameters()}
    offset = 0
    for n in trunk_names(cfg):
        if n == name:
            v = torch.zeros(trunk_size(cfg), dtype=torch.float64)
            v[offset + int(np.ravel_multi_index(index, tuple(shapes[n])))] = 1.0
            return v
        offset += math.prod(shapes[n])
    raise KeyError(name)


# ---------------------------------------------------------------------------- coordinate pairing
def test_named_unit_direction_picks_that_parameters_gradient():
    cfg, model, loss = tiny_model_and_loss()
    loss().backward()
    names = trunk_names(cfg)
    assert names != sorted(names)          # registration order (qkv before out_proj), not sorted keys
    g = flat_grad(model, names)
    assert g.shape == (trunk_size(cfg),)
    params = dict(model.named_parameters())
    for name, idx in [("blocks.0.attn.qkv.weight", (40, 7)), ("blocks.0.attn.out_proj.weight", (3, 30)),
                      ("blocks.1.mlp.w_up.weight", (63, 0)), ("blocks.1.mlp.w_down.weight", (5, 17))]:
        v = unit_vector_for(cfg, name, idx)
        assert float(project(g[None], v)[0]) == pytest.approx(float(params[name].grad[idx]), abs=0, rel=1e-12)
    # the block slices of the trunk are the blocks' own gradients
    for b, sl in enumerate(block_slices(cfg)):
        torch.testing.assert_close(g[sl], flat_grad(model, trunk_names(cfg, b)), rtol=0, atol=0)


def test_checkpoint_drift_direction_uses_the_gradient_order(tmp_path):
    """θ(5) = θ(0) − 0.1·∇L(θ(0)): the materialised backbone must be exactly −ĝ in flat_grad order."""
    cfg, model, loss = tiny_model_and_loss(seed=1)
    loss().backward()
    g = flat_grad(model, trunk_names(cfg))
    sd0 = {k: v.clone() for k, v in model.state_dict().items()}
    sd1 = {k: v.clone() for k, v in sd0.items()}
    params = dict(model.named_parameters())
    for n in trunk_names(cfg):
        sd1[n] -= 0.1 * params[n].grad
    # and a lone element moved in a second drift, to pin one coordinate as well
    sd2 = {k: v.clone() for k, v in sd1.items()}
    sd2["blocks.1.attn.out_proj.weight"][7, 9] += 5.0
    ck = CheckpointSet(make_run(tmp_path / "r", [sd0, sd1, sd2], [0, 5, 10], cfg))
    gram = compute_gram(ck)
    v_b = ck.materialise(gram, pca(gram, steps=[5], k=1).coeffs[0])
    assert alignment(g[None], v_b)[0] == pytest.approx(-1.0, abs=1e-6)
    A = gram.drift_coeffs([10], 5)[0]            # θ(10) − θ(5): one element, by name
    d = ck.materialise(gram, A)
    e = unit_vector_for(cfg, "blocks.1.attn.out_proj.weight", (7, 9)).numpy()
    np.testing.assert_allclose(d, 5.0 * e, atol=1e-6)
    assert float(project(g[None], d)[0]) == pytest.approx(5.0 * float(params["blocks.1.attn.out_proj.weight"].grad[7, 9]),
                                                         rel=1e-6)


def test_minibatch_gradients_are_the_named_losses_gradients(opened):
    run, task = opened
    cfg, step = run.cfg, run.steps[-1]
    model = run.model(step)
    G = minibatch_gradients(model, task, cfg, step, 2, seed=3, batch_size=4)
    assert G.shape == (2, trunk_size(cfg))
    b = analysis_batches(task, 2, 3, 4)[1]
    model.zero_grad()
    composite_loss(model(b.x), b.y, b.probe_mask, lambda_at(cfg, step)).loss.backward()
    torch.testing.assert_close(G[1], flat_grad(model, trunk_names(cfg)), rtol=1e-5, atol=1e-8)
    Gb = minibatch_gradients(model, task, cfg, step, 2, seed=3, batch_size=4, block=1)
    torch.testing.assert_close(Gb, G[:, block_slices(cfg)[1]], rtol=1e-5, atol=1e-8)
    # parts: total = lm + λ·probe on the same batch; probe batches carry a probe in every sequence
    lm = minibatch_gradients(model, task, cfg, step, 2, seed=3, batch_size=4, part="lm")
    assert not torch.allclose(lm, G)
    pb = analysis_batches(task, 2, 3, 4, part="probe")
    assert all(bool(x.probe_mask.any(dim=1).all()) for x in pb)
    assert all(p.requires_grad for p in model.parameters())          # flags restored
    with pytest.raises(UserError, match="unknown loss part"):
        part_loss(model(b.x), b, 1.0, "nope")


def test_seeded_batches_are_reproducible(opened):
    run, task = opened
    model, step = run.model(run.steps[1]), run.steps[1]
    a = minibatch_gradients(model, task, run.cfg, step, 2, seed=11, batch_size=3)
    b = minibatch_gradients(model, task, run.cfg, step, 2, seed=11, batch_size=3)
    c = minibatch_gradients(model, task, run.cfg, step, 2, seed=12, batch_size=3)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.equal(analysis_batches(task, 1, 11, 3)[0].x, analysis_batches(task, 1, 12, 3)[0].x)
    # an analysis seed equal to the data seed still draws no training batch
    seed = run.cfg.effective_data_seed
    ours = analysis_batches(task, 3, seed, run.cfg.batch_size)
    for s in range(run.cfg.steps + 1):
        assert not any(torch.equal(b.x, task.train_batch(s, 0).x) for b in ours)


# ---------------------------------------------------------------------------- alignment and block bias
def test_alignment_noise_floor_and_block_projections():
    rng = np.random.default_rng(0)
    cfg = preset("test")
    D = trunk_size(cfg)
    G = torch.from_numpy(rng.normal(size=(5, D)).astype(np.float32))
    v = rng.normal(size=D)
    Gd = G.double().numpy()
    cos = Gd @ v / (np.linalg.norm(Gd, axis=1) * np.linalg.norm(v))
    np.testing.assert_allclose(alignment(G, v), cos, rtol=1e-10)
    s = alignment_stats(G, v)
    assert s["mean_abs_cos"] == pytest.approx(np.abs(cos).mean()) and s["noise_floor"] == noise_floor(D)
    # the floor is the large-D limit of the exact E|cos| = Γ(D/2) / (√π Γ((D+1)/2))
    for d in (100, 10_000):
        exact = math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)
        assert noise_floor(d) == pytest.approx(exact, rel=3 / d)
    dirs = [rng.normal(size=sl.stop - sl.start) for sl in block_slices(cfg)]
    P = block_projections(G, dirs, cfg)
    dense = np.stack([Gd[:, sl] @ (d / np.linalg.norm(d)) for sl, d in zip(block_slices(cfg), dirs)], axis=1)
    np.testing.assert_allclose(P, dense, rtol=1e-10)
    np.testing.assert_allclose(signed_block_bias(G, dirs, cfg), dense.mean(0), rtol=1e-10)
    b = rng.normal(size=(4, 2))
    np.testing.assert_allclose(cumulative_bias(b), [b[:k + 1].sum(0) for k in range(4)])


def test_t_statistic_and_the_noise_floor_verdict():
    """t against scipy's one-sample t-test; isotropic gradients sit at the floor, and a component shared by every
    mini-batch shows in t while each |cos| is still at the floor (Monte Carlo, D = 20 000, M = 64)."""
    from scipy.stats import ttest_1samp
    rng = np.random.default_rng(3)
    c = rng.normal(0.2, 1.0, size=17)
    assert t_statistic(c) == pytest.approx(ttest_1samp(c, 0.0).statistic, rel=1e-12)
    assert t_statistic([0.5]) is None and t_statistic([0.1, 0.1, 0.1]) is None
    D, M = 20_000, 64
    v = np.zeros(D)
    v[0] = 1.0
    iso = torch.from_numpy(rng.normal(size=(M, D)))
    shared = iso.clone()
    shared[:, 0] += 0.5                  # c₁ ≈ 0.5/√D ≈ 0.0035 per gradient: ≈ 0.4 × the floor 0.0056
    stats = {name: alignment_stats(G, v) for name, G in (("iso", iso), ("shared", shared))}
    for s_ in stats.values():
        assert s_["n"] == M and s_["sqrt_n_mean"] == pytest.approx(math.sqrt(M) * s_["mean_cos"])
        assert s_["t_stat"] == pytest.approx(ttest_1samp(alignment(torch.as_tensor(iso if s_ is stats["iso"] else shared), v),
                                                         0.0).statistic, rel=1e-10)
    assert abs(stats["iso"]["t_stat"]) < 3 and stats["iso"]["abs_cos_over_floor"] < 1.5
    assert stats["shared"]["t_stat"] > 3 and stats["shared"]["abs_cos_over_floor"] < 1.5
    iso_v, shared_v = floor_summary([stats["iso"]] * 2), floor_summary([stats["iso"], stats["shared"]])
    assert iso_v["at_noise_floor"] is True and iso_v["excess"] < 0 and iso_v["n_checkpoints"] == 2
    assert shared_v["at_noise_floor"] is False and shared_v["abs_t_max"] == pytest.approx(stats["shared"]["t_stat"])
    assert shared_v["excess"] == pytest.approx(max(shared_v["abs_cos_over_floor_max"] - 3, shared_v["abs_t_max"] - 3))
    # over many isotropic draws |t| ≥ 3 is rare (Student t, 63 dof: P ≈ 0.004): the verdict is not noise-triggered
    hits = sum(abs(alignment_stats(torch.from_numpy(rng.normal(size=(M, 2000))), v[:2000])["t_stat"]) >= 3
               for _ in range(200))
    assert hits <= 5
    none = floor_summary([{"abs_cos_over_floor": 1.0, "t_stat": None, "n": 1}])
    assert none["at_noise_floor"] is None and none["excess"] is None and none["abs_t_max"] is None


def test_checkpoint_choice():
    steps = list(range(0, 101, 10))
    assert spread_steps(steps, 4) == [10, 40, 70, 100]
    assert spread_steps(steps, 0) == steps[1:] and spread_steps([0], 3) == [0]
    assert choose_steps(steps, "20, 0", 4) == [0, 20]
    with pytest.raises(UserError, match="no checkpoint"):
        choose_steps(steps, "25", 4)
    with pytest.raises(UserError, match="comma-separated"):
        choose_steps(steps, "a,b", 4)


# ---------------------------------------------------------------------------- Fisher
def test_fisher_spectrum_rayleigh_and_eigenvector_match_dense():
    rng = np.random.default_rng(1)
    M, D = 7, 60
    Gn = rng.normal(size=(M, D)) * np.linspace(3, 0.1, D)       # anisotropic
    G = torch.from_numpy(Gn)
    F = Gn.T @ Gn / M
    lam, vec = np.linalg.eigh(F)
    lam, vec = lam[::-1], vec[:, ::-1]
    spec = fisher_spectrum(G)
    np.testing.assert_allclose(spec.eigenvalues, lam[:M], rtol=1e-10)
    assert spec.trace == pytest.approx(np.trace(F), rel=1e-12)
    p = lam[:M] / lam[:M].sum()
    assert spec.effective_rank == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-10)
    assert spec.participation_ratio == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-10)
    U = top_eigenvectors(G, spec, 2).numpy()
    for k in range(2):
        assert abs(U[:, k] @ vec[:, k]) == pytest.approx(1.0, abs=1e-10)
    V = rng.normal(size=(D, 3))
    Vn = V / np.linalg.norm(V, axis=0)
    np.testing.assert_allclose(rayleigh(G, V), np.einsum("dk,de,ek->k", Vn, F, Vn), rtol=1e-10)
    assert overlap(torch.from_numpy(vec[:, 0].copy()), V[:, 0]) == pytest.approx(abs(vec[:, 0] @ Vn[:, 0]), rel=1e-10)
    s = spec.summary(3)
    assert len(s["eigenvalues"]) == 3 and s["lambda_1"] == pytest.approx(lam[0])


def test_random_directions_orthonormal_and_orthogonal_to_backbone():
    rng = np.random.default_rng(2)
    v = rng.normal(size=500)
    W = orthogonal_random_directions(v, 6, seed=5).numpy()
    assert W.shape == (500, 6)
    np.testing.assert_allclose(W.T @ W, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(W.T @ v, 0, atol=1e-12 * np.linalg.norm(v))
    np.testing.assert_array_equal(W, orthogonal_random_directions(v, 6, seed=5).numpy())
    assert not np.allclose(W, orthogonal_random_directions(v, 6, seed=6).numpy())
    assert anisotropy_ratio(4.0, np.array([1.0, 3.0])) == 2.0
    with pytest.raises(UserError):
        orthogonal_random_directions(v, 500, seed=0)


def test_jvp_rayleigh_equals_gradient_matrix_rayleigh(opened):
    run, task = opened
    cfg, step = run.cfg, run.steps[-1]
    model = run.model(step).double()          # fp32 agrees to ~1e-5; float64 makes the test tight
    ck = run.checkpoints()
    gram = compute_gram(ck)
    v_b = ck.materialise(gram, pca(gram, k=1).coeffs[0])
    V = torch.cat([torch.from_numpy(v_b)[:, None], orthogonal_random_directions(v_b, 3, seed=0)], dim=1)
    G = minibatch_gradients(model, task, cfg, step, 3, seed=4, batch_size=3, part="probe")
    q_jvp = rayleigh_jvp(model, task, cfg, step, V, 3, seed=4, batch_size=3, part="probe", chunk=4)
    np.testing.assert_allclose(q_jvp, rayleigh(G, V), rtol=1e-5)
    assert model.blocks[0].attn.backend == "sdpa"                  # restored


# ---------------------------------------------------------------------------- the scripts
def run_script(name, *args, capsys=None):
    """Run a script in this process exactly as ``python SCRIPT ARGS`` would (its __main__ block included)."""
    import runpy
    argv = sys.argv
    sys.argv = [SCRIPTS[name], "--no-progress", *args]
    try:
        runpy.run_path(str(ROOT / SCRIPTS[name]), run_name="__main__")
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = argv
    raise AssertionError(f"{name} did not exit")


def finite(x):
    return x is not None and math.isfinite(x)


def test_scripts_end_to_end(tiny_run):
    run = str(tiny_run)
    (tiny_run / "oscillation_manifest.json").write_text(json.dumps({"pairs": [{"peak_step": 10, "trough_step": 15, "peak_p_ood": 0.5,
                                                                             "trough_p_ood": 0.1, "amplitude": 0.4}]}))
    small = ["--run-dir", run, "--n-batches", "3", "--batch-size", "2", "--n-checkpoints", "3"]
    assert run_script("fisher_analysis", *small, "--top-k", "5") == 0
    fa = json.loads((tiny_run / "analysis" / "fisher_analysis.json").read_text())
    assert [r["step"] for r in fa["checkpoints"]] == [5, 15, 20]
    for r in fa["checkpoints"]:
        assert len(r["eigenvalues"]) == 3 and all(map(finite, r["eigenvalues"])) and r["trace"] > 0
        assert 1 <= r["effective_rank"] <= 3
    assert (tiny_run / "analysis" / "fisher_analysis.png").stat().st_size > 0

    for method in ("grad", "jvp"):                 # the forward-mode run at the last checkpoint only
        steps = ["--n-checkpoints", "3"] if method == "grad" else ["--steps", "20"]
        assert run_script("rayleigh_quotients", *small[:-2], *steps, "--n-random", "4", "--method", method,
                          "--seed", "1") == 0
        rq = json.loads((tiny_run / "analysis" / "rayleigh_quotients.json").read_text())
        assert (rq["M"], rq["K"], rq["seed"], rq["method"]) == (3, 4, 1, method)
        assert rq["directions"]["switch_pair"] == {"peak_step": 10, "trough_step": 15}
        for r in rq["checkpoints"]:
            for key in ("q_backbone", "q_switch", "q_pc2", "q_random_mean", "anisotropy", "q_energy_matched_mean",
                        "q_span_random_mean", "q_radial", "anisotropy_energy_matched", "anisotropy_span"):
                assert finite(r[key]) and r[key] > 0, key
            assert r["q_pcs"][:2] == pytest.approx([r["q_backbone"], r["q_pc2"]])
            if method == "grad":
                assert 0 < r["q_backbone_over_trace"] <= 1 and 0 <= r["q_centred_backbone"] <= r["q_backbone"] * (1 + 1e-9)
                assert finite(r["overlap_top_eigvec_pc2"]) and finite(r["overlap_top_eigvec_span_random_mean"])
            assert finite(r["overlap_top_eigvec_backbone"]) if method == "grad" else r["overlap_top_eigvec_backbone"] is None
        assert "excess" in rq["claim10"] and "median_ratio" in rq["claim11"]
        if method == "grad":
            grad_q = [rq["checkpoints"][-1][k] for k in ("q_backbone", "q_switch", "q_pc2", "q_random_mean")]
    jvp_q = [rq["checkpoints"][-1][k] for k in ("q_backbone", "q_switch", "q_pc2", "q_random_mean")]
    np.testing.assert_allclose(jvp_q, grad_q, rtol=1e-4)
    assert (tiny_run / "analysis" / "rayleigh_quotients.png").stat().st_size > 0
    (tiny_run / "oscillation_manifest.json").unlink()

    assert run_script("residual_decomposition", *small[:-1], "2", "--parts", "total,probe") == 0
    rd = json.loads((tiny_run / "analysis" / "residual_decomposition.json").read_text())
    assert rd["settings"]["parts"] == ["total", "probe"] and len(rd["backbone"]["block_pc1"]) == 2
    for r in rd["checkpoints"]:
        for part in ("total", "probe"):
            assert all(finite(r[part]["trunk"][k]) for k in ("mean_cos", "mean_abs_cos", "abs_cos_over_floor"))
            assert len(r[part]["blocks"]) == 2 and len(r[part]["b"]) == 2 and all(map(finite, r[part]["b"]))
    np.testing.assert_allclose(rd["cumulative_B"]["total"][-1], np.sum([r["total"]["b"] for r in rd["checkpoints"]], 0))
    for part in ("total", "probe"):      # the claim-8 summary is the max over the checkpoints' own statistics
        v = rd["noise_floor_verdict"][part]
        ratios = [r[part]["trunk"]["abs_cos_over_floor"] for r in rd["checkpoints"]]
        ts = [abs(r[part]["trunk"]["t_stat"]) for r in rd["checkpoints"]]
        assert v["abs_cos_over_floor_max"] == pytest.approx(max(ratios)) and v["abs_t_max"] == pytest.approx(max(ts))
        assert v["at_noise_floor"] == (max(ratios) < 3 and max(ts) < 3) and v["batches_per_checkpoint"] == 3
    assert rd["claim8"] == {"part": "total", **rd["noise_floor_verdict"]["total"]}
    c9 = rd["claim9"]          # claim 9 over the checkpoints before the λ switch (step 10 at `test`)
    early = [r for r in rd["checkpoints"] if r["step"] < 10]
    assert early and c9["steps"] == [r["step"] for r in early]
    for r, d in zip(early, c9["dominance"]["backbone"]):
        blocks = r["total"]["blocks"]
        assert d == pytest.approx(abs(blocks[0]["mean_cos"]) / abs(blocks[1]["mean_cos"]))
        assert len(r["total"]["blocks_random"]) == 2 and len(r["total"]["blocks_pc2"]) == 2
    assert c9["null"] >= 3.0 and c9["excess"] == pytest.approx(
        min(c9["median_backbone"] - c9["null"], c9["median_block0_abs_t"] - 3.0))
    assert (tiny_run / "analysis" / "residual_decomposition.png").stat().st_size > 0


def test_block_dominance_tells_a_backbone_bias_from_a_block_with_coherent_gradients():
    """Block 0's gradients carrying a component along its backbone only: D ≫ 3, the PC2 and random ratios ≈ 1,
    confirmed. Block 0's gradients sharing a mean that projects equally on its backbone, PC2 and a random
    direction: D is as large but so are the nulls, so the excess is ≤ 0."""
    from training.geometry.gradients import dominance_summary
    rng = np.random.default_rng(5)
    L, dim, M = 4, 3000, 32
    Q = [np.linalg.qr(rng.standard_normal((dim, 3)))[0].T for _ in range(L)]     # v, pc2, random per block

    def checkpoints(shared):
        out = []
        for k in range(3):
            stats = {"backbone": [], "pc2": [], "random": []}
            for b in range(L):
                G = rng.standard_normal((M, dim))
                if b == 0:
                    G += shared * np.sqrt(dim)
                for kind, v in zip(stats, Q[b]):
                    stats[kind].append(alignment_stats(torch.from_numpy(G), v))
            out.append({"step": 10 * k, **stats})
        return out

    planted = dominance_summary(checkpoints(0.3 * Q[0][0]))
    assert planted["median_backbone"] > 10 and planted["median_pc2"] < 3 and planted["median_random"] < 3
    assert planted["null"] == 3.0 and planted["holds"] is True and planted["median_block0_abs_t"] > 10
    coherent = dominance_summary(checkpoints(0.3 * Q[0].sum(axis=0) / np.sqrt(3)))
    assert coherent["median_backbone"] > 3 and coherent["holds"] is False and coherent["excess"] < 0.5 * coherent["null"]
    one_block = dominance_summary([{"step": 0, "backbone": planted_stats, "pc2": [], "random": []}
                                   for planted_stats in [[alignment_stats(torch.ones(2, 5), np.ones(5))]]])
    assert one_block["excess"] is None and one_block["holds"] is None


def test_scripts_without_switch_manifest_and_bad_run_dirs(tiny_run, tmp_path, capsys):
    assert run_script("rayleigh_quotients", "--run-dir", str(tiny_run), "--n-batches", "2", "--batch-size", "2",
                      "--steps", "20", "--n-random", "2") == 0
    rq = json.loads((tiny_run / "analysis" / "rayleigh_quotients.json").read_text())
    assert rq["checkpoints"][0]["q_switch"] is None and "oscillation_manifest" in rq["directions"]["switch_note"]
    capsys.readouterr()
    for name in SCRIPTS:
        assert run_script(name, "--run-dir", str(tmp_path / "missing")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not exist" in err, err
    (tmp_path / "empty").mkdir()
    assert run_script("residual_decomposition", "--run-dir", str(tmp_path / "empty")) == 2
    assert "not a run directory" in capsys.readouterr().err
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    ck = bad / "checkpoints" / "step_000020.safetensors"
    ck.write_bytes(ck.read_bytes()[:300])
    assert run_script("fisher_analysis", "--run-dir", str(bad), "--steps", "20", "--n-batches", "2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt" in err, err
    # the real command line, from another directory: one line on stderr, exit status 2
    p = subprocess.run([sys.executable, str(ROOT / SCRIPTS["rayleigh_quotients"]), "--run-dir", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_help(name, capsys):
    assert run_script(name, "--help") == 0
    out = capsys.readouterr().out
    assert "--run-dir" in out and "--seed" in out and "--n-batches" in out


def test_fisher_comparison_directions_against_their_definitions():
    """Energy-matched directions have v_b's energy on every tensor exactly; in-span directions lie in the span,
    have unit norm and are not concentrated on PC1 (raw-row weights would be); the centred quotient equals the
    variance of the projections computed with numpy."""
    from training.geometry.fisher import centred_rayleigh, energy_matched_directions, span_random_coeffs
    from training.geometry.trajectory import Gram, pca
    rng = np.random.default_rng(2)
    sizes = [300, 100, 600, 50]
    v = np.concatenate([rng.standard_normal(n) * s for n, s in zip(sizes, (5.0, 0.1, 1.0, 3.0))])
    W = energy_matched_directions(v, sizes, 6, seed=4).numpy()
    vh = v / np.linalg.norm(v)
    edges = np.cumsum([0] + sizes)
    for a, b in zip(edges[:-1], edges[1:]):
        np.testing.assert_allclose(np.linalg.norm(W[a:b], axis=0), np.linalg.norm(vh[a:b]), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, rtol=1e-12)
    assert np.all(np.abs(W.T @ vh) < 0.3)                                  # random within each tensor
    np.testing.assert_array_equal(W, energy_matched_directions(v, sizes, 6, seed=4).numpy())

    T, D = 12, 400                                                  # a drift dominated by one direction
    X = np.cumsum(np.outer(np.ones(T), np.eye(D)[0]) * 3 + 0.2 * rng.standard_normal((T, D)), axis=0)
    X[0] = 0
    gram = Gram(list(range(T)), 0, None, D, X @ X.T)
    full = pca(gram, k=T)
    S = X.T @ span_random_coeffs(full.coeffs, 200, seed=1)
    np.testing.assert_allclose(np.linalg.norm(S, axis=0), 1.0, rtol=1e-9)
    Q = np.linalg.qr(X[1:].T)[0]
    np.testing.assert_allclose(Q @ (Q.T @ S), S, atol=1e-9)                 # in the span
    pc1 = X.T @ full.coeffs[0]
    assert np.mean(np.abs(pc1 @ S)) < 0.5                                  # not concentrated on PC1
    raw = X.T @ rng.standard_normal((T, 200))
    assert np.mean(np.abs(pc1 @ raw) / np.linalg.norm(raw, axis=0)) > 0.9   # raw-row weights would be

    G = torch.from_numpy(rng.standard_normal((7, 50)) + 0.5)
    V = rng.standard_normal((50, 3))
    P = G.numpy() @ (V / np.linalg.norm(V, axis=0))
    np.testing.assert_allclose(centred_rayleigh(G, V), P.var(axis=0), rtol=1e-10)


def test_claim10_and_claim11_summaries():
    from training.geometry.fisher import claim10_summary, claim11_summary
    grows = [{"step": s, "anisotropy_energy_matched": a} for s, a in ((10, 1.0), (20, 8.0), (30, 4.0))]
    c = claim10_summary(grows)
    assert (c["alpha_max"], c["alpha_max_step"], c["growth"]) == (8.0, 20, 8.0)
    assert c["excess"] == pytest.approx(min(8 / 3, 8 / 5) - 1) and c["holds"] is True
    flat = claim10_summary([{"step": s, "anisotropy_energy_matched": a} for s, a in ((10, 6.0), (20, 8.0))])
    assert flat["holds"] is False and flat["excess"] == pytest.approx(8 / 6 / 5 - 1)
    assert claim10_summary([{"step": 1, "anisotropy_energy_matched": None}])["excess"] is None
    recs = [{"overlap_top_eigvec_backbone": 0.01, "overlap_top_eigvec_pc2": 0.02,
             "overlap_top_eigvec_span_random_mean": 0.005},
            {"overlap_top_eigvec_backbone": 0.2, "overlap_top_eigvec_pc2": 0.01,
             "overlap_top_eigvec_span_random_mean": 0.02}]
    c11 = claim11_summary(recs)
    assert c11["ratios"] == pytest.approx([0.5, 10.0]) and c11["median_ratio"] == pytest.approx(5.25)
    assert c11["holds"] is False
    assert claim11_summary([{"overlap_top_eigvec_backbone": None}])["median_ratio"] is None


def test_hessian_quadratic_against_finite_differences_of_the_gradient(tiny_run):
    """v̂ᵀHv̂ by forward-over-reverse equals ⟨∇L(θ + εv̂) − ∇L(θ − εv̂), v̂⟩ / 2ε of the same batches (a float64
    model; the loss itself is evaluated in float32, so ε is 1e-2, where the difference quotient's O(ε²) error
    is below its rounding error)."""
    from training.core.model import trunk_parameters
    from training.geometry.fisher import hessian_quadratic
    from training.geometry.gradients import minibatch_gradients
    run = open_run(tiny_run)
    cfg, task = run.cfg, run.task()
    model = run.model(20).double()
    D = sum(p.numel() for _, p in trunk_parameters(model))
    V = np.random.default_rng(0).standard_normal((D, 2))
    h = hessian_quadratic(model, task, cfg, 20, V, 3, 0, 4, chunk=2)
    eps = 1e-2
    for k in range(2):
        v = torch.from_numpy(V[:, k] / np.linalg.norm(V[:, k]))

        def shift(sign):
            pos = 0
            with torch.no_grad():
                for _, p in trunk_parameters(model):
                    p += sign * eps * v[pos:pos + p.numel()].reshape(p.shape)
                    pos += p.numel()
        shift(+1)
        Gp = minibatch_gradients(model, task, cfg, 20, 3, 0, 4)
        shift(-2)
        Gm = minibatch_gradients(model, task, cfg, 20, 3, 0, 4)
        shift(+1)
        assert h[k] == pytest.approx(float(((Gp - Gm) @ v).mean()) / (2 * eps), rel=1e-5)


def test_paper_checkpoint_choices_scale_to_a_run():
    from training.geometry.gradients import choose_steps, paper_steps
    paper = list(range(0, 10_001, 200))
    assert paper_steps(paper, 10_000, "paper-table6") == [200, 1800, 4800, 9600]            # Table 6
    assert paper_steps(paper, 10_000, "paper-figure2") == [0, 800] + list(range(1800, 10_000, 1000))
    assert len(paper_steps(paper, 10_000, "paper-figure2")) == 11                            # Figure 2
    quick = list(range(0, 601, 20))                                                          # 600 steps, every 20
    assert choose_steps(quick, "paper-table6", 5, 600) == [20, 100, 280, 580]               # 12, 108, 288, 576 snapped
    assert choose_steps([0, 5, 10, 15, 20], "paper-table6", 5, 20) == [0, 5, 10, 20]        # repeats dropped
    assert choose_steps(quick, "40,60", 5, 600) == [40, 60]
