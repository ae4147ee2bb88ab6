"""Import time and peak memory of a synthetic ~1B-parameter checkpoint series (training/importers).

Writes ``--n-checkpoints`` Hugging Face GPT-NeoX revisions in the shape of Pythia-1B (16 layers, d_model 2048,
d_ff 8192, vocab 50,304: 1.01B parameters, 805M of them trunk) as ``config.json`` + ``model.safetensors``, each
written tensor by tensor (so the generator never holds a model either), then runs ``python -m
training.importers`` on them in a child process and reports its wall time and peak RSS (``ru_maxrss`` of the
child), and optionally the trunk trajectory PCA of the imported run likewise. The generated files live under
``--work`` and are deleted at the end unless ``--keep``; they are never part of the repository.

Check the free disk first: the series takes n × (2 bytes × 1.01B with --dtype float16, 4 with float32) and the
imported run n × 4 bytes × 805M (3.2 GB per checkpoint).

Example:  python benchmarks/import_scale.py --work /tmp/import_scale --n-checkpoints 4 --dtype float16 --analyse
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"float16": (torch.float16, "F16"), "float32": (torch.float32, "F32"), "bfloat16": (torch.bfloat16, "BF16")}


def neox_shapes(n_layer: int, d: int, ff: int, vocab: int) -> dict[str, tuple[int, ...]]:
    s = {"gpt_neox.embed_in.weight": (vocab, d), "embed_out.weight": (vocab, d),
         "gpt_neox.final_layer_norm.weight": (d,), "gpt_neox.final_layer_norm.bias": (d,)}
    for b in range(n_layer):
        p = f"gpt_neox.layers.{b}."
        s.update({p + "input_layernorm.weight": (d,), p + "input_layernorm.bias": (d,),
                  p + "post_attention_layernorm.weight": (d,), p + "post_attention_layernorm.bias": (d,),
                  p + "attention.query_key_value.weight": (3 * d, d), p + "attention.query_key_value.bias": (3 * d,),
                  p + "attention.dense.weight": (d, d), p + "attention.dense.bias": (d,),
                  p + "mlp.dense_h_to_4h.weight": (ff, d), p + "mlp.dense_h_to_4h.bias": (ff,),
                  p + "mlp.dense_4h_to_h.weight": (d, ff), p + "mlp.dense_4h_to_h.bias": (d,)})
    return s


def write_revision(path: Path, shapes: dict, k: int, dtype: str) -> None:
    """model.safetensors of revision k: θ_k = θ_0 + 0.01·k·u (u a fixed direction, θ_0 N(0, 0.02²)), per tensor."""
    tdt, code = DTYPES[dtype]
    names = sorted(shapes)
    header, pos = {"__metadata__": {"format": "pt"}}, 0
    for n in names:
        nb = 2 * torch.Size(shapes[n]).numel() if code != "F32" else 4 * torch.Size(shapes[n]).numel()
        header[n] = {"dtype": code, "shape": list(shapes[n]), "data_offsets": [pos, pos + nb]}
        pos += nb
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "model.safetensors", "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for i, n in enumerate(names):
            g0, g1 = torch.Generator().manual_seed(2 * i), torch.Generator().manual_seed(2 * i + 1)
            t = 0.02 * torch.randn(shapes[n], generator=g0)
            if k:
                t += (0.01 * k) * torch.randn(shapes[n], generator=g1)
            f.write(memoryview(t.to(tdt).contiguous().view(torch.uint8).numpy()).cast("B"))
            del t


# runs a module (-m NAME) or a script in this interpreter and, at exit, writes its own peak RSS (VmHWM of
# /proc/self/status: the high-water mark of this process's memory since exec). The rusage ru_maxrss of a child is
# no use here: Linux carries the parent's resident size at fork into it.
_WRAP = r"""
import atexit, runpy, sys
out = sys.argv.pop(1)
def hwm():
    kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    open(out, "w").write(str(kb))
atexit.register(hwm)
if sys.argv[1] == "-m":
    name = sys.argv[2]
    sys.argv = [name] + sys.argv[3:]
    runpy.run_module(name, run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def child(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GiB, last output line) of ``python CMD...`` run as a fresh child process."""
    hwm = log.with_suffix(".hwm")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.run([sys.executable, "-c", _WRAP, str(hwm), *cmd], stdout=fh, stderr=subprocess.STDOUT,
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t0
    text = log.read_text()
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{text[-2000:]}")
    return wall, int(hwm.read_text()) / 2**20, (text.strip().splitlines() or [""])[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/import_scale", help="where the series and the run are written")
    ap.add_argument("--n-checkpoints", type=int, default=4)
    ap.add_argument("--dtype", default="float16", choices=sorted(DTYPES), help="of the synthetic series (Pythia: float16)")
    ap.add_argument("--n-layer", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--d-ff", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--analyse", action="store_true", help="also time the trunk trajectory PCA of the imported run")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    from transformers import GPTNeoXConfig
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    shapes = neox_shapes(args.n_layer, args.d_model, args.d_ff, args.vocab)
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    trunk = args.n_layer * (4 * args.d_model ** 2 + 2 * args.d_model * args.d_ff)
    cfg = GPTNeoXConfig(num_hidden_layers=args.n_layer, hidden_size=args.d_model, num_attention_heads=args.d_model // 128,
                        intermediate_size=args.d_ff, vocab_size=args.vocab)
    t0 = time.perf_counter()
    revs = []
    for k in range(args.n_checkpoints):
        d = work / "series" / f"step{1000 * k}"
        cfg.save_pretrained(d)
        write_revision(d, shapes, k, args.dtype)
        revs.append(str(d))
    gen = time.perf_counter() - t0
    src_gb = sum((Path(r) / "model.safetensors").stat().st_size for r in revs) / 1e9
    print(f"series: {args.n_checkpoints} checkpoints of {n_params / 1e9:.3f}B parameters ({trunk / 1e9:.3f}B trunk), "
          f"{args.dtype}, {src_gb:.1f} GB, written in {gen:.0f} s")
    run = work / "run"
    wall, peak, line = child(["-m", "training.importers", "--no-progress", *revs, "--out-dir", str(run)],
                             work / "import.log")
    out_gb = sum(p.stat().st_size for p in (run / "checkpoints").glob("*.safetensors")) / 1e9
    result = {"n_checkpoints": args.n_checkpoints, "n_params": n_params, "trunk_params": trunk, "dtype": args.dtype,
              "source_gb": round(src_gb, 2), "imported_gb": round(out_gb, 2), "import_s": round(wall, 1),
              "import_peak_rss_gib": round(peak, 2), "import_gb_per_s": round((src_gb + out_gb) / wall, 2),
              "cpus": os.cpu_count()}
    print(f"import: {wall:.1f} s, peak RSS {peak:.2f} GiB ({line})")
    if args.analyse:
        wall, peak, line = child(["analysis/backbone/trajectory_pca.py", "--no-progress", "--run-dir",
                                  str(run), "--no-blocks", "--null-samples", "3", "--window", "3"], work / "pca.log")
        result.update(pca_s=round(wall, 1), pca_peak_rss_gib=round(peak, 2))
        print(f"trajectory PCA (trunk): {wall:.1f} s, peak RSS {peak:.2f} GiB ({line})")
    print(json.dumps(result))
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
