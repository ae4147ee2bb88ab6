"""The symmetry study's training side: SOAP and Muon through the registry, ECD and disordered attention
through the Trainer (bit-identical kill-and-resume), FineWeb token shards, the symmetry-breaking-files model presets (124m ... 1.3b), and a
tiny end-to-end run of experiments/symmetry/run_study.py."""
import io
import json
import math

import numpy as np
import pytest
import torch

from conftest import run_inprocess
from training.core import runio
from training.core.config import preset
from training.core.errors import UserError
from training.core.model import GPT, trunk_parameters
from training.core.optim import OPTIMIZERS, build_optimizer
from training.core.tasks import validate


def small_model(seed=0):
    cfg = preset("test")
    torch.manual_seed(seed)
    return GPT(cfg, 50), cfg


def lm_loss(model, seed=0):
    x = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(seed))
    logits = model(x)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), x[:, 1:].reshape(-1))


def one_step(model, opt, seed=0):
    opt.zero_grad(set_to_none=True)
    lm_loss(model, seed).backward()
    opt.step()


# ---------------------------------------------------------------------------- SOAP and Muon
def test_soap_builds_and_steps():
    pytest.importorskip("pytorch_optimizer")
    model, cfg = small_model()
    opt, spec = build_optimizer(model, cfg.replace(optimizer="soap", lr=3e-3), torch.device("cpu"))
    assert not spec.needs_closure
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    one_step(model, opt)            # SOAP's first step only sets up its preconditioner
    assert all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    losses = [float(lm_loss(model).detach())]
    for i in range(15):
        one_step(model, opt)
        losses.append(float(lm_loss(model).detach()))
    assert losses[-1] < losses[0]
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())


def test_soap_on_vectors_is_bias_corrected_adam_with_decay_after_the_step():
    # 1-D parameters are not preconditioned: from the second call on, SOAP is Adam with its moments started
    # at that call (step count j = call - 1), eps added to sqrt(v) before the bias correction of the step size
    # (lr * sqrt(1 - b2^j) / (1 - b1^j)), and decoupled decay p <- p - lr*wd*p applied after the update.
    pytest.importorskip("pytorch_optimizer")
    gpt, cfg = small_model()
    for m in gpt.modules():                      # give the LayerNorms non-trivial, distinct parameters
        if isinstance(m, torch.nn.LayerNorm):
            torch.nn.init.normal_(m.weight, 1.0, 0.1)
            torch.nn.init.normal_(m.bias, 0.0, 0.1)

    class WithLogitBias(torch.nn.Module):        # a 1-D parameter in the decayed group (LayerNorms are not)
        def __init__(self):
            super().__init__()
            self.gpt = gpt
            self.logit_bias = torch.nn.Parameter(0.1 * torch.randn(50, generator=torch.Generator().manual_seed(3)))

        def forward(self, x):
            return self.gpt(x) + self.logit_bias

    model = WithLogitBias()
    cfg = cfg.replace(optimizer="soap", lr=2e-2, beta1=0.9, beta2=0.95, eps=1e-8, wd=0.5)
    opt, _ = build_optimizer(model, cfg, torch.device("cpu"))
    vectors = [(p, g["weight_decay"]) for g in opt.param_groups for p in g["params"] if p.ndim == 1]
    assert {wd for _, wd in vectors} == {0.0, 0.5}       # both the no-decay LayerNorms and the decayed bias
    ref = [(p.detach().double().clone(), torch.zeros_like(p, dtype=torch.float64),
            torch.zeros_like(p, dtype=torch.float64), wd) for p, wd in vectors]
    for call in range(1, 9):
        opt.zero_grad(set_to_none=True)
        lm_loss(model, seed=call).backward()
        grads = [p.grad.detach().double().clone() for p, _ in vectors]
        opt.step()
        if call == 1:                            # the first call only sets up the preconditioners
            continue
        j = call - 1
        step = cfg.lr * math.sqrt(1 - cfg.beta2 ** j) / (1 - cfg.beta1 ** j)
        for (theta, m1, m2, wd), g in zip(ref, grads):
            m1.mul_(cfg.beta1).add_((1 - cfg.beta1) * g)
            m2.mul_(cfg.beta2).add_((1 - cfg.beta2) * g * g)
            theta.sub_(step * m1 / (m2.sqrt() + cfg.eps))
            theta.sub_(cfg.lr * wd * theta)
        for (p, _), (theta, *_rest) in zip(vectors, ref):
            np.testing.assert_allclose(p.detach().double().numpy(), theta.numpy(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("lr", [3e-3, 1e-2])
def test_soap_beats_adamw_on_an_ill_conditioned_matrix_quadratic(lr):
    # a smoke check, not an equality: L(W) = mean((A W B - C)^2) with A, B of condition number ~32 each;
    # SOAP's Kronecker preconditioner undoes both sides, AdamW's diagonal one cannot (200 steps, same lr/betas)
    pytest.importorskip("pytorch_optimizer")
    g = torch.Generator().manual_seed(1)
    m, n = 16, 12
    Qa, _ = torch.linalg.qr(torch.randn(m, m, generator=g))
    Qb, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    A = Qa @ torch.diag(torch.logspace(0, 1.5, m)) @ Qa.T
    B = Qb @ torch.diag(torch.logspace(0, 1.5, n)) @ Qb.T
    C = torch.randn(m, n, generator=g)

    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = torch.nn.Parameter(torch.zeros(m, n))

        def forward(self):
            return ((A @ self.W @ B - C) ** 2).mean()

    final = {}
    for name in ("adamw", "soap"):
        model = Quadratic()
        cfg = preset("test").replace(optimizer=name, lr=lr, beta1=0.95, beta2=0.95, wd=0.0)
        opt, _ = build_optimizer(model, cfg, torch.device("cpu"))
        for _ in range(200):
            opt.zero_grad(set_to_none=True)
            model().backward()
            opt.step()
        final[name] = float(model().detach())
    assert final["soap"] < 0.5 * final["adamw"], final


def test_muon_on_trunk_and_adamw_elsewhere_with_exact_state_round_trip():
    model, cfg = small_model()
    c = cfg.replace(optimizer="muon", lr=1e-2)
    opt, _ = build_optimizer(model, c, torch.device("cpu"))
    trunk = {id(p) for _, p in trunk_parameters(model)}
    assert {id(p) for g in opt.muon.param_groups for p in g["params"]} == trunk
    assert all(p.ndim == 2 for g in opt.muon.param_groups for p in g["params"])
    assert {id(p) for g in opt.adamw.param_groups for p in g["params"]} == {id(p) for p in model.parameters()} - trunk
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for i in range(3):
        one_step(model, opt, i)
    assert all(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    snap = {n: p.detach().clone() for n, p in model.named_parameters()}
    for i in range(3, 6):
        one_step(model, opt, i)
    want = {n: p.detach().clone() for n, p in model.named_parameters()}
    model2, _ = small_model(1)
    model2.load_state_dict(snap, strict=False)
    opt2, _ = build_optimizer(model2, c, torch.device("cpu"))
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for i in range(3, 6):
        one_step(model2, opt2, i)
    assert all(torch.equal(want[n], p.detach()) for n, p in model2.named_parameters())


def test_registry_has_the_new_optimizers():
    assert OPTIMIZERS["ecd"].needs_closure and not OPTIMIZERS["soap"].needs_closure
    assert "muon" in OPTIMIZERS
    with pytest.raises(UserError, match="ecd_projection"):
        validate(preset("test").replace(optimizer="ecd", ecd_projection="x"))
    with pytest.raises(UserError, match="attn_bias_eval"):
        validate(preset("test").replace(attn_bias_eval="x"))
    # the new fields at their defaults do not change the hash of earlier configs
    c = preset("test")
    assert c.hash() == c.replace(ecd_eta=100.0).hash() != c.replace(ecd_eta=50.0).hash()


# ---------------------------------------------------------------------------- Trainer: ECD + disorder, resume
TRAIN_ARGS = ("--preset", "test", "--optimizer", "ecd", "--lr", "0.3", "--steps", "10", "--eval-every", "5",
              "--ckpt-every", "5", "--set", "ecd_nu=0.2", "--set", "ecd_F0=0.5", "--set", "ecd_eta=25",
              "--set", "attn_disorder=qv", "--set", "grad_clip=0", "--set", "warmup=0",
              "--set", "lr_floor=1")


def test_ecd_with_disorder_resumes_bit_identically(tmp_path, cache_dir, capsys, monkeypatch):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    code, out, err = run_inprocess(capsys, "training/pilot.py", *TRAIN_ARGS, "--out-dir", str(ref),
                                   "--set", f"cache_dir={cache_dir}")
    assert code == 0, err
    assert runio.list_checkpoints(ref) == [0, 5, 10]
    stats = json.loads((ref / "checkpoints" / "step_000010.attn_bias.json").read_text())
    assert stats["layers"][0]["draws"] == 10 * preset("test").grad_accum     # one draw per training micro-batch
    assert json.loads((ref / "status.json").read_text())["state"] == "completed"
    rec = runio.read_metrics(ref)[-1]
    assert rec["ecd_steps"] == 5 and rec["ecd_updates_total"] == 10 and rec["ecd_skipped_total"] == 0
    lr_s = 0.3 / math.sqrt(25)
    assert rec["ecd_drift_length"] == pytest.approx(lr_s, rel=1e-6)       # unit speed at every step start
    assert rec["ecd_step_length"] >= rec["ecd_drift_length"] and rec["ecd_turn_angle"] > 0

    real = runio.write_status
    calls = {"n": 0}

    def stop_after_5(run_dir, state, step, message=""):
        real(run_dir, state, step, message)
        if state == "running" and step == 5 and calls["n"] == 0:
            calls["n"] += 1
            raise KeyboardInterrupt
    monkeypatch.setattr(runio, "write_status", stop_after_5)
    code, _, _ = run_inprocess(capsys, "training/pilot.py", *TRAIN_ARGS, "--out-dir", str(cut),
                               "--set", f"cache_dir={cache_dir}")
    assert code != 0 and runio.list_checkpoints(cut) == [0, 5]
    monkeypatch.setattr(runio, "write_status", real)
    code, _, err = run_inprocess(capsys, "training/pilot.py", "--resume", "--out-dir", str(cut))
    assert code == 0, err
    strip = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs]   # noqa: E731
    assert strip(runio.read_metrics(ref)) == strip(runio.read_metrics(cut))
    for s in (5, 10):
        assert runio.checkpoint_path(ref, s).read_bytes() == runio.checkpoint_path(cut, s).read_bytes(), s
        a = json.loads((ref / "checkpoints" / f"step_{s:06d}.attn_bias.json").read_text())
        b = json.loads((cut / "checkpoints" / f"step_{s:06d}.attn_bias.json").read_text())
        assert a == b
    sa = runio.load_state(ref)["optimizer"]["ecd"]
    sb = runio.load_state(cut)["optimizer"]["ecd"]
    assert sa["iteration"] == sb["iteration"] == 10 and sa["p2"] == sb["p2"]
    assert torch.equal(sa["generator"], sb["generator"])


# ---------------------------------------------------------------------------- FineWeb shards
def test_shard_round_trip_concatenation_and_corruption(tmp_path):
    from training.core.fineweb import HEADER_BYTES, ShardArray, read_shard, shard_files, write_shard
    a, b = np.arange(0, 700, dtype=np.uint16), np.arange(1000, 1500, dtype=np.uint16)
    write_shard(tmp_path / "fw_train_000001.bin", a)
    write_shard(tmp_path / "fw_train_000002.bin", b)
    write_shard(tmp_path / "fw_val_000000.bin", np.arange(300, dtype=np.uint16))
    raw = (tmp_path / "fw_train_000001.bin").read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * 700
    assert np.frombuffer(raw[:12], dtype=np.int32).tolist() == [20240520, 1, 700]
    assert np.array_equal(read_shard(tmp_path / "fw_train_000001.bin"), a)
    files = shard_files(tmp_path)
    arr = ShardArray([read_shard(f) for f in files["train"]])
    full = np.concatenate([a, b])
    assert len(arr) == 1200
    idx = np.array([0, 650, 695, 1100])[:, None] + np.arange(65)[None, :]
    idx[-1] = np.minimum(idx[-1], 1199)
    idx[-1] = np.arange(1135, 1200)
    assert np.array_equal(arr[idx], full[idx])                 # windows crossing the shard boundary
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x_train_1.bin").write_bytes(b"\0" * 2048)
    with pytest.raises(UserError, match="corrupt or not a FineWeb shard"):
        read_shard(bad / "x_train_1.bin")
    (bad / "y_train_2.bin").write_bytes(raw[:-10])
    with pytest.raises(UserError, match="truncated"):
        read_shard(bad / "y_train_2.bin")
    (bad / "z_val.bin").write_bytes(raw[:100])
    with pytest.raises(UserError, match="shorter than the 1024-byte header"):
        read_shard(bad / "z_val.bin")
    with pytest.raises(UserError, match="not a directory"):
        shard_files(tmp_path / "missing")


def test_fineweb_corpus_through_the_data_layer(tmp_path):
    from training.core.data import corpus_identity, token_cache
    from training.core.fineweb import write_shard
    rng = np.random.default_rng(0)
    write_shard(tmp_path / "fw_train_000001.bin", rng.integers(0, 50257, 5000))
    write_shard(tmp_path / "fw_val_000000.bin", rng.integers(0, 50257, 800))
    cfg = validate(preset("test").replace(corpus="fineweb", corpus_path=str(tmp_path), tokenizer="gpt2"))
    splits = token_cache(cfg, tok=None)
    assert len(splits["train"].tokens) == 5000 and len(splits["val"].tokens) == 800
    assert splits["train"].offsets.tolist() == [0, 5000]
    sizes = {e[0].rsplit("/", 1)[1]: e[1] for e in corpus_identity(cfg)["shards"]}
    assert sizes == {"fw_train_000001.bin": 1024 + 2 * 5000, "fw_val_000000.bin": 1024 + 2 * 800}
    with pytest.raises(UserError, match="tokenizer=gpt2"):
        validate(preset("test").replace(corpus="fineweb", corpus_path=str(tmp_path)))


def test_prepare_fineweb_help(capsys):
    code, out, _ = run_inprocess(capsys, "experiments/symmetry/prepare_fineweb.py", "--help")
    assert code == 0 and "256-int32 header" in out


# ---------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name,L,H,d", [("124m", 12, 12, 768), ("355m", 24, 16, 1024), ("774m", 36, 20, 1280),
                                        ("1.3b", 48, 25, 1600)])
def test_seed_model_presets(name, L, H, d):
    cfg = preset(name)
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.d_ff, cfg.seq_len) == (L, H, d, 4 * d, 512)
    assert cfg.optimizer == "ecd" and cfg.corpus == "fineweb"
    V = 50257
    with torch.device("meta"):
        n = GPT(cfg, V).num_params()
    assert n == V * d + 512 * d + L * (12 * d * d + 4 * d) + 2 * d       # no linear biases, tied head
    if name == "124m":
        assert 120e6 < n < 125e6


def test_study_gpu_size_uses_the_reference_settings():
    from training.studies.symmetry_study import ARMS, OPTIMIZERS, run_configs
    cfgs = run_configs("gpu", 1, OPTIMIZERS, ("sym", "bq"))
    assert len(cfgs) == 10 and all(c.preset == "symmetry_gpu" and c.n_layer == 12 for c in cfgs.values())
    e = cfgs["ecd_bq"]
    assert (e.lr, e.ecd_eta, e.ecd_F0, e.ecd_nu, e.attn_disorder, e.grad_clip, e.warmup) == (1.0, 100.0, 2.0, 0.0, "q", 0.0, 0)
    assert cfgs["adamw_sym"].lr == 1e-4 and cfgs["adamw_sym"].attn_disorder == "none"
    with pytest.raises(UserError, match="unknown study size"):
        run_configs("tpu", 1, OPTIMIZERS, ARMS)


# ---------------------------------------------------------------------------- the study, end to end
def test_study_end_to_end_at_test_size(tmp_path, cache_dir, capsys):
    out = tmp_path / "study"
    args = ["--optimizers", "ecd_global", "--arms", "sym,bq,bq_learned", "--out-dir", str(out),
            "--set", "steps=8", "--set", "eval_every=4", "--set", "ckpt_every=4", "--set", "n_layer=1",
            "--set", "d_model=32", "--set", "n_head=2", "--set", "d_ff=64", "--set", "n_train_docs=600",
            "--set", "n_val_docs=60", "--set", "bpe_vocab_size=512", "--set", "n_val_seqs=16",
            "--set", "eval_ood_gap=[10,12]", "--set", "train_gap=[5,10]", "--set", "eval_in_gap=[5,10]",
            "--set", f"cache_dir={cache_dir}"]
    code, stdout, err = run_inprocess(capsys, "experiments/symmetry/run_study.py", *args)
    assert code == 0, err
    res = json.loads((out / "analysis" / "symmetry_results.json").read_text())
    assert {r["run"] for r in res["table"]} == {"ecd_global_sym", "ecd_global_bq", "ecd_global_bq_learned"}
    rows = {r["run"]: r for r in res["table"]}
    assert all(r["state"] == "completed" for r in rows.values())
    # the global-projection ECD keeps the (velocity) Noether charge of the symmetric model at rounding level
    assert rows["ecd_global_sym"]["ecd_velocity_qk_charge_rel_max"] < 1e-5
    assert rows["ecd_global_bq"]["ecd_velocity_qk_charge_rel_max"] > 1e-4
    # the learned bQ: the layer charge (with the bias's term) stays at float32 rounding, the per-head one does not
    learned = rows["ecd_global_bq_learned"]
    assert learned["ecd_velocity_qk_layer_charge_rel_max"] < 1e-5 < learned["ecd_velocity_qk_charge_rel_max"]
    assert rows["ecd_global_bq"]["ecd_velocity_qk_layer_charge_rel_max"] > 1e-4
    assert learned["bq_alignment_kind"] == "learned bQ at this checkpoint"
    charge = [c for c in res["arm_claims"] if c["claim"].startswith("a learned bQ keeps the symmetry")]
    assert len(charge) == 1 and charge[0]["verdict"].startswith("ecd_global: conserved")
    assert {(c["arm"], c["reference"]) for c in res["arm_contrasts"]} == {("bq_learned", "bq"), ("bq_learned", "sym")}
    assert rows["ecd_global_bq"]["bq_alignment_kind"].startswith("mean of the run's bQ draws")
    assert rows["ecd_global_sym"]["bq_alignment_kind"].startswith("null")
    assert set(res["deltas"]) == {"ecd_global"} and res["verdicts"]
    report = (out / "report.md").read_text()
    assert "| ecd_global_sym | completed |" in report and "seed Δ, bQ only" in report
    for name, r in res["runs"].items():       # the EWM (α 0.1, adjust=True) of the curve: its last value and minimum
        v = np.asarray(r["curve"]["val_loss"])
        sm = [float((0.9 ** np.arange(t + 1)[::-1]) @ v[:t + 1] / (0.9 ** np.arange(t + 1)).sum()) for t in range(len(v))]
        assert (rows[name]["smoothed_final_val_loss"], rows[name]["smoothed_min_val_loss"]) == \
            (pytest.approx(sm[-1], rel=1e-12), pytest.approx(min(sm), rel=1e-12))
    assert "| smoothed final | smoothed min |" in report and "Δ smoothed final" in report
    assert "## Control arms: bQ + bV, zero-mean bQ, learned bQ" in report
    assert "| ecd_global | bq_learned − sym |" in report
    assert (out / "analysis" / "curves.png").stat().st_size > 0
    # the bQ alignment by token class, layer 0's recency, the puzzles, the claims and their figures
    for head in ("## Downstream logic puzzles", "## bQ alignment by token class", "## Positional recency of layer 0",
                 "## Claims of the bQ analyses", "Seeds: 1. Verdict: inconclusive (single seed)"):
        assert head in report
    for name in ("ecd_global_sym", "ecd_global_bq"):
        lp = res["runs"][name]["logic_puzzles"]
        assert lp["overall"]["n"] == 40 * 7 and lp["suite"]["seed"] == 0
        layer = res["runs"][name]["bq_alignment"]["layers"][0]
        assert set(layer["token_classes"]["classes"]) >= {"punctuation", "function", "content"}
        assert layer["position_recency"]["spearman"] is not None
    assert "overall" in res["puzzle_comparisons"]["ecd_global"]
    assert len(res["alignment_claims"]) == 3
    assert (out / "analysis" / "bq_alignment.png").exists() and (out / "analysis" / "logic_puzzles.png").exists()
    # the analysis scripts on the study's runs
    code, stdout, err = run_inprocess(capsys, "analysis/symmetry/bq_alignment.py", "--run-dir", str(out / "ecd_global_bq"))
    assert code == 0, err
    al = json.loads((out / "ecd_global_bq" / "analysis" / "bq_alignment.json").read_text())
    assert al["direction"].startswith("mean of the run's bQ draws") and len(al["layers"]) == 1
    assert len(al["layers"][0]["top_text"]) == 15 and (out / "ecd_global_bq" / "analysis" / "bq_alignment.png").exists()
    assert al["layers"][0]["token_classes"]["structure_content"]["holds"] is not None
    code, stdout, err = run_inprocess(capsys, "analysis/symmetry/symmetry_diagnostics.py", "--run-dir",
                                      str(out / "ecd_global_sym"))
    assert code == 0, err
    diag = json.loads((out / "ecd_global_sym" / "analysis" / "symmetry_diagnostics.json").read_text())
    assert [r["step"] for r in diag["rows"]] == [4, 8] and len(diag["velocity_charge"]) == 2
    assert max(v["qk"]["charge_rel"] for v in diag["velocity_charge"]) < 1e-5
    code, _, err = run_inprocess(capsys, "analysis/symmetry/bq_alignment.py", "--run-dir", str(out / "ecd_global_bq"),
                                 "--step", "3")
    assert code == 2 and "no checkpoint at step 3" in err
    # a second invocation resumes nothing and re-analyses
    code, stdout, err = run_inprocess(capsys, "experiments/symmetry/run_study.py", *args)
    assert code == 0 and "already completed" in stdout
    code, _, err = run_inprocess(capsys, "experiments/symmetry/run_study.py", "--out-dir", str(out), "--set", "lr=1")
    assert code == 2 and "protocol" in err and len(err.strip().splitlines()) == 1
