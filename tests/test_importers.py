"""Foreign trajectories (training/importers): tiny GPT-2, GPT-NeoX and Llama series built locally with transformers
and the reference mini_gpt code's state_dict layout import into run directories whose trajectory PCA is dense numpy's
on the same weights; every failure path ends in one ``error:`` line. Nothing here touches the network."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as np_load

from conftest import ROOT, run_script

transformers = pytest.importorskip("transformers")

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
STEPS = (0, 100, 200, 300, 400)

# the foreign trunk: per architecture, the names of the weight matrices of each block (any order: PCA does not care)
FOREIGN_TRUNK = {
    "gpt2": r"h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$",
    "gpt_neox": r"layers\.(\d+)\.(attention\.query_key_value|attention\.dense|mlp\.dense_h_to_4h|mlp\.dense_4h_to_h)\.weight$",
    "llama": r"layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.gate_proj|mlp\.up_proj|mlp\.down_proj)\.weight$",
    "mini_gpt": r"blocks\.(\d+)\.(attn\.qkv|attn\.out_proj|mlp\.w_up|mlp\.w_down)\.weight$",
}


def run_import(*args, env=None, timeout=300):
    e = dict(os.environ, **OFFLINE, **(env or {}))
    return subprocess.run([sys.executable, "-m", "training.importers", "--no-progress", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=e)


def one_error_line(p):
    assert p.returncode != 0, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    return lines[-1]


def planted(params: dict[str, torch.Tensor], k: int, gen: torch.Generator, dirs: dict) -> None:
    """θ_k = θ_0 + k·A + (k²/4)·B + noise_k: two planted directions and a little isotropic noise per revision."""
    with torch.no_grad():
        for n, p in params.items():
            if n not in dirs:
                dirs[n] = (p.detach().clone(), torch.randn(p.shape, generator=gen), torch.randn(p.shape, generator=gen))
            p0, a, b = dirs[n]
            p.copy_(p0 + 0.01 * k * a + 0.0025 * k * k * b + 0.002 * torch.randn(p.shape, generator=gen))


def hf_model(kind: str):
    torch.manual_seed(0)
    small = dict(vocab_size=64)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, **small)
        return transformers.GPT2LMHeadModel(cfg)
    if kind == "gpt_neox":
        cfg = transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=32, **small)
        return transformers.GPTNeoXForCausalLM(cfg)
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=48, max_position_embeddings=32, **small)
    return transformers.LlamaForCausalLM(cfg)


def hf_series(root: Path, kind: str, steps=STEPS) -> list[Path]:
    """save_pretrained "revisions" step<N> of a tiny randomly initialised model with planted drifts."""
    model = hf_model(kind)
    gen, dirs, out = torch.Generator().manual_seed(1), {}, []
    params = dict(model.named_parameters())
    for k, s in enumerate(steps):
        planted(params, k, gen, dirs)
        d = root / kind / f"step{s}"
        model.save_pretrained(d)
        out.append(d)
    return out


def reference_series(root: Path, steps=(1, 200, 400, 600, 800)) -> Path:
    """The reference mini_gpt code's layout: ckpt_{step:06d}.pt = {"step", "model_state_dict"} with the tied head
    under both names and the causal-mask buffers blocks.i.attn.bias, and its config.json (n_head)."""
    from training.core.config import preset
    from training.core.model import GPT
    cfg = preset("test").replace(n_layer=2, d_model=32, n_head=4, d_ff=64, seq_len=16)
    torch.manual_seed(0)
    model = GPT(cfg, 50)
    gen, dirs = torch.Generator().manual_seed(1), {}
    params = dict(model.named_parameters())
    d = root / "mini_gpt"
    d.mkdir(parents=True)
    for k, s in enumerate(steps):
        planted(params, k, gen, dirs)
        sd = dict(model.state_dict())
        for b in range(cfg.n_layer):
            sd[f"blocks.{b}.attn.bias"] = torch.ones(1, 1, cfg.seq_len, cfg.seq_len).tril()
        torch.save({"step": s, "model_state_dict": sd}, d / f"ckpt_{s:06d}.pt")
    (d / "config.json").write_text(json.dumps({"n_layer": 2, "d_model": 32, "n_head": 4, "d_ff": 64, "seq_len": 16}))
    (d / "codewords.json").write_text(json.dumps({"codewords": [" ZEBRA", " MANGO"], "count": 2}))
    (d / "pilot_metrics.json").write_text(json.dumps([{"step": s, "val_loss": 3.0 - k / 10, "probe_in_acc": 0.1 * k,
                                                        "probe_ood_acc": 0.05 * k, "cur_lambda": 2.0}
                                                       for k, s in enumerate(steps)]))
    return d


def foreign_weights(path: Path, kind: str) -> dict[str, np.ndarray]:
    if path.suffix == ".pt":
        sd = torch.load(path, weights_only=True)["model_state_dict"]
        tensors = {k: v.numpy() for k, v in sd.items()}
    else:
        tensors = np_load(str(path / "model.safetensors"))
    return tensors


def dense_spectrum(files: list[Path], kind: str, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(singular values, explained fractions) of the drifts from the first checkpoint, by numpy SVD in float64 on the
    foreign trunk matrices as stored (their own names, layout and order)."""
    rows = []
    for f in files:
        w = foreign_weights(f, kind)
        keep = sorted(k for k in w if (m := re.search(FOREIGN_TRUNK[kind], k)) and (block is None or int(m.group(1)) == block))
        assert keep
        rows.append(np.concatenate([w[k].astype(np.float64).ravel() for k in keep]))
    X = np.stack(rows[1:]) - rows[0]
    s = np.linalg.svd(X, compute_uv=False)
    return s, s ** 2 / np.sum(s ** 2)


def check_pca(run: Path, files: list[Path], kind: str, n_layer: int = 2):
    p = run_script("analysis/backbone/trajectory_pca.py", "--run-dir", str(run), "--window", "3", "--null-samples", "3")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads((run / "analysis" / "trajectory_pca.json").read_text())
    for block, got in [(None, out["trunk"])] + [(b["block"], b) for b in out["blocks"]]:
        s, evr = dense_spectrum(files, kind, block)
        np.testing.assert_allclose(got["raw"]["singular_values"], s, rtol=1e-8)
        np.testing.assert_allclose(got["raw"]["explained_variance_ratio"], evr, rtol=1e-8)
    assert len(out["blocks"]) == n_layer
    assert out["trunk"]["null_profile"]["random_walk"]["pc1"] > 0        # the nulls ran
    return out


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    return {"root": root, "gpt2": hf_series(root, "gpt2"), "gpt_neox": hf_series(root, "gpt_neox"),
            "llama": hf_series(root, "llama"), "mini_gpt": reference_series(root)}


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "llama"])
def test_hf_series_imports_with_the_dense_spectrum(series, tmp_path, kind):
    revs = series[kind]
    run = tmp_path / "run"
    p = run_import(*revs, "--out-dir", run)
    assert p.returncode == 0, p.stdout + p.stderr
    record = json.loads((run / "config.json").read_text())
    imp = record["imported"]
    assert imp["architecture"] == kind and [c["step"] for c in imp["checkpoints"]] == list(STEPS)
    assert set(imp["mapping"]) == {"blocks.{b}.attn.qkv.weight", "blocks.{b}.attn.out_proj.weight",
                                   "blocks.{b}.mlp.w_up.weight", "blocks.{b}.mlp.w_down.weight"}
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    from training.core.runio import read_run_config
    assert read_run_config(run).n_layer == 2
    check_pca(run, revs, kind)
    # the other trajectory analyses accept it too: update alignment, the sketch for large models
    p = run_script("analysis/backbone/update_alignment.py", "--run-dir", str(run))
    assert p.returncode == 0, p.stderr
    p = run_script("analysis/backbone/trajectory_pca.py", "--run-dir", str(run), "--sketch", "64", "--window", "3",
                   "--null-samples", "2")
    assert p.returncode == 0, p.stderr
    # analyses that need the model refuse in one line, saying why
    p = run_script("analysis/fisher/fisher_analysis.py", "--run-dir", str(run))
    line = one_error_line(p)
    assert "imported" in line and kind in line


def test_neox_qkv_is_deinterleaved_and_gpt2_transposed(series, tmp_path):
    """A name means the same matrix in every run: rows [q; k; v], nn.Linear layout (out × in)."""
    from safetensors.torch import load_file
    for kind in ("gpt_neox", "gpt2"):
        run = tmp_path / kind
        assert run_import(series[kind][0], series[kind][1], "--out-dir", run).returncode == 0
        ours = load_file(str(run / "checkpoints" / "step_000000.safetensors"))
        theirs = load_file(str(series[kind][0] / "model.safetensors"))
        if kind == "gpt2":
            assert torch.equal(ours["blocks.1.attn.qkv.weight"], theirs["transformer.h.1.attn.c_attn.weight"].T)
            assert torch.equal(ours["blocks.1.mlp.w_down.weight"], theirs["transformer.h.1.mlp.c_proj.weight"].T)
        else:
            w = theirs["gpt_neox.layers.1.attention.query_key_value.weight"]      # rows (head, q|k|v, head_dim)
            q_head2 = w.view(4, 3, 8, 32)[2, 0]
            assert torch.equal(ours["blocks.1.attn.qkv.weight"][16:24], q_head2)     # q rows of head 2
            assert torch.equal(ours["blocks.1.attn.qkv.weight"][32 + 8:32 + 16], w.view(4, 3, 8, 32)[1, 1])   # k, head 1


def test_reference_state_dict_series_imports_the_whole_model(series, tmp_path):
    d = series["mini_gpt"]
    run = tmp_path / "run"
    p = run_import(d, "--out-dir", run)
    assert p.returncode == 0, p.stdout + p.stderr
    imp = json.loads((run / "config.json").read_text())["imported"]
    assert imp["architecture"] == "mini_gpt" and imp["native_model"] is True
    assert [c["step"] for c in imp["checkpoints"]] == [1, 200, 400, 600, 800] and imp["reference_step"] == 1
    files = sorted(d.glob("ckpt_*.pt"))
    out = check_pca(run, files, "mini_gpt")
    # the reference run's codewords and metrics come along (p_ood renamed), so the p_ood coupling is computed
    assert json.loads((run / "codewords.json").read_text())["codewords"] == [" ZEBRA", " MANGO"]
    from training.core.runio import read_metrics
    m = read_metrics(run)
    assert [r["step"] for r in m] == [1, 200, 400, 600, 800] and m[2]["p_ood"] == 0.1 and m[0]["lambda"] == 2.0
    assert out["trunk"]["coupling_residual_p_ood"] is not None
    # the native model loads (model analyses work on it) with the file's weights
    from training.geometry.analysis_io import open_run
    model = open_run(run).model(400)
    sd = torch.load(d / "ckpt_000400.pt", weights_only=True)["model_state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_bare_state_dicts_and_init(series, tmp_path):
    """Bare state dicts without a step inside, named model-<N>.pt, and an initialisation given apart (step 0)."""
    src = tmp_path / "bare"
    src.mkdir()
    files = sorted(series["mini_gpt"].glob("ckpt_*.pt"))
    for f in files[1:]:
        sd = torch.load(f, weights_only=True)["model_state_dict"]
        torch.save(sd, src / f"model-{int(f.stem.split('_')[1])}.pt")
    init = tmp_path / "init.pt"
    torch.save(torch.load(files[0], weights_only=True), init)
    run = tmp_path / "run"
    p = run_import(src, "--init", init, "--out-dir", run)
    assert p.returncode == 0, p.stdout + p.stderr
    imp = json.loads((run / "config.json").read_text())["imported"]
    assert [c["step"] for c in imp["checkpoints"]] == [0, 200, 400, 600, 800]
    check_pca(run, files, "mini_gpt")


def test_stream_checkpoint_writes_the_bytes_of_write_checkpoint(tmp_path):
    from training.core import runio
    g = torch.Generator().manual_seed(0)
    tensors = {"blocks.0.attn.qkv.weight": torch.randn(12, 4, generator=g), "tok_emb.weight": torch.randn(7, 4, generator=g),
               "a": torch.randn(3, generator=g)}
    runio.write_checkpoint(tmp_path / "a", 5, tensors, "h", contents="trunk")
    runio.stream_checkpoint(tmp_path / "b", 5, {k: tuple(v.shape) for k, v in tensors.items()},
                            lambda n: tensors[n].double(), "h", contents="trunk")
    a, b = (runio.checkpoint_path(tmp_path / x, 5).read_bytes() for x in "ab")
    assert a == b


# ---------------------------------------------------------------------------- failure paths: one error line each
def test_unknown_architecture(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    for s in (0, 10):
        torch.save({"encoder.layer.0.weight": torch.randn(4, 4)}, d / f"ckpt_{s}.pt")
    line = one_error_line(run_import(d, "--out-dir", tmp_path / "run"))
    assert "unknown architecture" in line
    bert = transformers.BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                   vocab_size=32)
    for s in (0, 10):
        transformers.BertModel(bert).save_pretrained(tmp_path / "bert" / f"step{s}")
    line = one_error_line(run_import(tmp_path / "bert", "--out-dir", tmp_path / "run2"))
    assert "unknown architecture 'bert'" in line
    line = one_error_line(run_import(d, "--architecture", "rwkv", "--out-dir", tmp_path / "run3"))
    assert "unknown architecture 'rwkv'" in line
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())


def test_missing_revision(series, tmp_path):
    revs = series["gpt2"]
    line = one_error_line(run_import(revs[0], tmp_path / "gone" / "step100", "--out-dir", tmp_path / "run"))
    assert "does not exist" in line
    line = one_error_line(run_import(revs[0].parent, "--revisions", "step0,step999", "--out-dir", tmp_path / "run"))
    assert "revision step999 is missing" in line


def test_checkpoint_missing_trunk_tensors(series, tmp_path):
    d = tmp_path / "cut"
    d.mkdir()
    for i, f in enumerate(sorted(series["mini_gpt"].glob("ckpt_*.pt"))[:3]):
        obj = torch.load(f, weights_only=True)
        if i == 2:
            del obj["model_state_dict"]["blocks.1.mlp.w_up.weight"]
        torch.save(obj, d / f.name)
    line = one_error_line(run_import(d, "--out-dir", tmp_path / "run"))
    assert "lacks the trunk tensor blocks.1.mlp.w_up.weight" in line and "ckpt_000400.pt" in line


def test_checkpoint_of_another_shape_leaves_no_run(series, tmp_path):
    """A revision of another model size is refused before anything is written."""
    other = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=4, n_positions=32,
                                                                 vocab_size=64))
    other.save_pretrained(tmp_path / "step999")
    run = tmp_path / "run"
    line = one_error_line(run_import(*series["gpt2"][:2], tmp_path / "step999", "--out-dir", run))
    assert "does not have the trunk of" in line and "step999" in line
    assert not run.exists() or not any(run.iterdir())


def test_hub_id_offline(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    p = run_import("EleutherAI/pythia-70m", "--revisions", "step0,step1000", "--out-dir", tmp_path / "run", env=env)
    line = one_error_line(p)
    assert "download or cache it first" in line and "EleutherAI/pythia-70m@step0" in line
    line = one_error_line(run_import("EleutherAI/pythia-70m", "--out-dir", tmp_path / "run", env=env))
    assert "--revisions" in line


def test_refuses_an_existing_run(series, tmp_path):
    run = tmp_path / "run"
    assert run_import(*series["gpt2"][:2], "--out-dir", run).returncode == 0
    line = one_error_line(run_import(*series["gpt2"][:2], "--out-dir", run))
    assert "already holds a run" in line


def test_script_wrapper_help():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_trajectory.py"), "--help"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and "--revisions" in p.stdout
