"""benchmarks/train_throughput.py --compare: every step variant runs and the comparison model matches ours."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

from training.core.config import preset
from training.core.trainer import build_model

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("step_variants", ROOT / "benchmarks" / "step_variants.py")
step_variants = importlib.util.module_from_spec(_spec)      # a benchmark script's module, not a package
sys.modules["step_variants"] = step_variants                # (its dataclasses look their module up there)
_spec.loader.exec_module(step_variants)
PlainGPT = step_variants.PlainGPT


def test_plain_model_has_our_shape():
    """The nanoGPT-shaped model does the same matrix work: equal parameter count and trunk matrix shapes."""
    cfg = preset("quick")
    ours, plain = build_model(cfg, 2112), PlainGPT(cfg, 2112)
    assert sum(p.numel() for p in plain.parameters()) == ours.num_params()
    mats = lambda m: sorted(tuple(p.shape) for p in m.parameters() if p.dim() == 2)  # noqa: E731
    assert mats(plain) == mats(ours)
    x = torch.randint(0, 2112, (2, cfg.seq_len))
    loss = plain(x, x)
    assert abs(float(loss) - torch.log(torch.tensor(2112.0)).item()) < 0.5    # near ln V at a small random init


def test_compare_runs_every_variant(tmp_path):
    out = tmp_path / "sc.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--compare", "--shapes", "test",
                        "--rounds", "2", "--steps", "1", "--warmup", "1", "--no-compile", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())["results"][0]
    names = [r["variant"] for r in res["rows"]]
    assert names == ["nanoGPT-shaped, eager", "ours, eager (default)", "ours, fused AdamW", "ours, one thread"]
    base = res["rows"][0]["s_per_step_median"]
    for r in res["rows"]:
        assert r["s_per_step_min"] <= r["s_per_step_median"] <= r["s_per_step_max"]
        assert abs(r["speedup_vs_nanogpt_eager"] - base / r["s_per_step_median"]) < 1e-12
        assert 0 < r["mfu"] < 2
    assert res["bitwise_repeatable"] == {"eager": True, "fused AdamW": True}
    assert "× nanoGPT eager" in p.stdout
