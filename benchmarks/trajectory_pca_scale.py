#!/usr/bin/env python
"""Cost of the streaming trunk PCA next to the cost of merely reading the same checkpoints once.

Writes N synthetic checkpoints of a model shape (default: the paper's 8 × 512 trunk, 25,165,824
parameters; only the trunk tensors are stored, which is all the PCA reads) as a drifting random walk,
then times, each in a fresh process:

* ``read``: every trunk tensor of every checkpoint read once into memory (float32), nothing else -- the
  faster of the safetensors library's reader and the PCA's own (plain reads at the header's offsets);
* ``pca``: the Gram matrix streamed in float64 and the exact uncentered PCA (raw and row-normalised),
  i.e. what ``analysis/backbone/trajectory_pca.py`` does for the trunk.

* ``sketch`` (with ``--sketch DIM``): the seeded Gaussian JL sketch of the same Gram matrix
  (training/geometry/sketch.py, what ``trajectory_pca.py --sketch DIM`` does) and the same PCA, with its
  error bound and its measured error against the exact Gram of the ``pca`` measurement.

* ``online`` / ``cached`` (with ``--online``): once, the trainer's online Gram (``gram_online``,
  training/core/gramcache.py) replayed over the files as training would write them -- the time of each
  checkpoint's update (its row against every earlier checkpoint, for every block, and the cache rewrite) is
  recorded, the trunk tensors themselves being in memory in training and read untimed here; then, in every
  repeat, ``cached``: the same analysis as ``pca`` with that cache present (what ``trajectory_pca.py`` then
  costs), and its Gram's largest entry error against the streamed one.

Reports wall time and peak resident memory of each and the ratios pca / read (and sketch / read,
sketch / pca), as a table and JSON.
By default the files are in the page cache for both measurements (written just before), so the ratio
shows the cost of the analysis over a memory-speed read. ``--cold`` drops the page cache before every
measurement (needs root) so both start from the disk, as a first analysis of a fresh run does.

    python benchmarks/trajectory_pca_scale.py --checkpoints 51
    python benchmarks/trajectory_pca_scale.py --checkpoints 200 --preset quick     # a smaller shape
    python benchmarks/trajectory_pca_scale.py --checkpoints 51 200 --sketch 256 --repeats 1
    python benchmarks/trajectory_pca_scale.py --checkpoints 51 --online --workdir /tmp     # the online Gram
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training.core.cli import CommandParser, run_main
from training.core.config import preset
from training.core.errors import UserError


def write_checkpoints(run: Path, cfg, n: int, seed: int) -> int:
    import torch
    from safetensors.torch import save_file

    from training.core import runio
    from training.core.model import trunk_names
    d, f = cfg.d_model, cfg.d_ff
    shapes = {}
    for name in trunk_names(cfg):
        kind = name.split(".")[-2]
        shapes[name] = {"qkv": (3 * d, d), "out_proj": (d, d), "w_up": (f, d), "w_down": (d, f)}[kind]
    runio.atomic_write_json(run / "config.json", {"config": cfg.to_dict(), "config_hash": cfg.hash()})
    g = torch.Generator().manual_seed(seed)
    theta = {k: 0.02 * torch.randn(s, generator=g) for k, s in shapes.items()}
    drift = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_file(theta, str(runio.checkpoint_path(run, 200 * i)), metadata={"step": str(200 * i)})
        for k in theta:        # drift along a fixed direction plus isotropic noise
            theta[k] = theta[k] + 1e-4 * drift[k] + 1e-4 * torch.randn(shapes[k], generator=g)
    return sum(int(np.prod(s)) for s in shapes.values())


def child(mode: str, run: str, device: str = "cpu") -> None:
    """Run one measurement in this (fresh) process and print a JSON line."""
    from training.geometry.trajectory import CheckpointSet, compute_gram, pca
    t0 = time.perf_counter()
    ck = CheckpointSet(run)
    if mode == "read":                       # the safetensors library's reader (memory-mapped, copied out)
        from safetensors import safe_open
        total = 0.0
        for s in ck.steps:
            files: dict = {}
            for name in ck.names():
                files.setdefault(ck._file_of(s, name), []).append(name)
            for path, names in files.items():
                with safe_open(str(path), framework="numpy") as f:
                    for name in names:
                        total += float(f.get_tensor(name)[0, 0])     # forces the full read
        extra = {}
    elif mode == "read_pread":               # the PCA's own reader (plain reads at the header's offsets), no arithmetic
        from training.geometry.trajectory import DEFAULT_CHUNK_BYTES, _elems, stream_rows
        total = 0.0
        for rows in stream_rows(ck, ck.steps, None, _elems(DEFAULT_CHUNK_BYTES, len(ck.steps))):
            total += float(rows[0, 0])
        extra = {}
    elif mode == "online":
        extra = online_replay(ck)
    else:
        if mode == "pca":
            g = compute_gram(ck, device=device)     # float64 on the CPU or an accelerator
        elif mode == "cached":                  # the analysis with the online cache present
            from training.geometry.trajectory import cached_gram
            g = cached_gram(ck, compute=False)
            if g is None:
                raise UserError("the online Gram cache does not cover the checkpoints")
        else:                                   # sketch:DIM
            from training.geometry.sketch import compute_sketch
            g = compute_sketch(ck, int(mode.split(":")[1]), seed=0)
        raw, rn = pca(g, rownorm=False, k=1), pca(g, rownorm=True, k=1)
        extra = {"pc1_raw": float(raw.explained_variance_ratio[0]), "pc1_rownorm": float(rn.explained_variance_ratio[0]),
                 "k95": raw.k95}
        np.save(Path(run) / f"gram_{mode.replace(':', '')}.npy", g.G)     # for the parent's error measurement
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "wall_s": wall, "peak_rss_gb": peak_kb / 2**20, **extra}))


def online_replay(ck) -> dict:
    """The trainer's online Gram over the run's files in step order: seconds per checkpoint update."""
    from training.core.config import Config
    from training.core.gramcache import OnlineGram, read_trunk
    cfg = ck.cfg
    online = OnlineGram(ck.run_dir, cfg, Config.gram_online_mem_mb * 2**20, log=lambda msg: None)
    times = []
    for s in ck.steps:
        rows = read_trunk(ck.run_dir, s, online.all_names)       # in memory in training: not timed
        t = time.perf_counter()
        if not online.update(s, rows):
            raise UserError(f"the online Gram stopped: {online.disabled}")
        times.append(time.perf_counter() - t)
        del rows
    return {"update_s": times, "rows_held": len(online.slot_of)}


def sketch_row(run: Path, n: int, dim: int, k: int, sketches: list[dict], best_read: dict, best_pca: dict) -> dict:
    """The sketch's timing, memory, bound and measured error (against the exact Gram) for one size."""
    from training.geometry.sketch import SketchedGram, measured_error, pca_bounds
    from training.geometry.trajectory import Gram
    steps = [200 * i for i in range(n)]
    exact = Gram(steps, 0, None, dim, np.load(run / "gram_pca.npy"))
    sk = SketchedGram(steps, 0, None, dim, np.load(run / f"gram_sketch{k}.npy"), sketch_dim=k, seed=0)
    bounds = pca_bounds(sk)
    best = min(sketches, key=lambda r: r["wall_s"])
    return {"sketch": {
        "sketch_dim": k, "sketch_s": best["wall_s"], "sketch_peak_gb": best["peak_rss_gb"],
        "all_sketch_s": [r["wall_s"] for r in sketches],
        "ratio_sketch_over_read": best["wall_s"] / best_read["wall_s"],
        "ratio_sketch_over_pca": best["wall_s"] / best_pca["wall_s"],
        "epsilon": sk.epsilon, "epsilon_subspace": bounds["subspace"]["epsilon"], "failure_prob": sk.failure_prob,
        "pc1_raw": best["pc1_raw"],
        "pc1_raw_bound": ([bounds["explained_variance_ratio_lo"][0], bounds["explained_variance_ratio_hi"][0]]
                          if bounds["valid"] else None),
        "measured": measured_error(sk, exact)}}


def online_row(run: Path, online: dict, cached: list[dict], best_read: dict, best_pca: dict) -> dict:
    """The online Gram's per-checkpoint cost and the analysis' time with its cache, beside read and stream."""
    best = min(cached, key=lambda r: r["wall_s"])
    exact, got = np.load(run / "gram_pca.npy"), np.load(run / "gram_cached.npy")
    upd = online["update_s"]
    return {"online": {
        "update_s": upd, "update_total_s": sum(upd), "update_max_s": max(upd), "rows_held": online["rows_held"],
        "online_peak_gb": online["peak_rss_gb"], "cached_s": best["wall_s"],
        "all_cached_s": [r["wall_s"] for r in cached],
        "ratio_cached_over_read": best["wall_s"] / best_read["wall_s"],
        "ratio_cached_over_pca": best["wall_s"] / best_pca["wall_s"],
        "max_entry_error_over_max": float(np.abs(got - exact).max() / np.abs(exact).max())}}


def drop_page_cache() -> None:
    import os
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as e:
        raise UserError(f"--cold needs permission to write /proc/sys/vm/drop_caches ({e.strerror}); run without it") from None


def measure(mode: str, run: Path, cold: bool, device: str = "cpu") -> dict:
    if cold:
        drop_page_cache()
    p = subprocess.run([sys.executable, __file__, "--child", mode, str(run), "--device", device], capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise UserError(f"{mode} measurement failed: {p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = CommandParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[51], help="numbers of checkpoints (default 51)")
    ap.add_argument("--preset", default="paper", help="model shape: paper (default), quick or test")
    ap.add_argument("--repeats", type=int, default=2, help="alternating read/pca measurements per size (min reported)")
    ap.add_argument("--workdir", help="where to write the synthetic checkpoints (default: a temporary directory)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each measurement (root)")
    ap.add_argument("--sketch", type=int, metavar="DIM", help="also measure the DIM-dimensional JL sketch")
    ap.add_argument("--online", action="store_true",
                    help="also measure the online Gram and the analysis with its cache")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints")
    ap.add_argument("--device", default="cpu", help="where the exact Gram's float64 products run: cpu (default) | cuda | auto")
    ap.add_argument("--out", default="benchmarks/results/trajectory_pca_scale.json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, device=args.device)
        return 0
    if min(args.checkpoints) < 3 or args.repeats < 1:
        raise UserError("--checkpoints must be >= 3 and --repeats >= 1")
    cfg = preset(args.preset)
    rows = []
    for n in args.checkpoints:
        base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pca_scale_"))
        run = base / f"run_{args.preset}_{n}"
        t = time.perf_counter()
        dim = write_checkpoints(run, cfg, n, seed=0)
        write_s = time.perf_counter() - t
        reads, pcas, sketches = [], [], []
        for _ in range(args.repeats):          # alternate so that all see the same machine state
            reads.append(min(measure("read", run, args.cold), measure("read_pread", run, args.cold),
                             key=lambda r: r["wall_s"]))   # the faster of two ways to read the files once
            pcas.append(measure("pca", run, args.cold, args.device))
            if args.sketch:
                sketches.append(measure(f"sketch:{args.sketch}", run, args.cold))
        online, cached = None, []
        if args.online:
            online = measure("online", run, args.cold)
        for _ in range(args.repeats if args.online else 0):
            cached.append(measure("cached", run, args.cold))
        best_read = min(reads, key=lambda r: r["wall_s"])
        best_pca = min(pcas, key=lambda r: r["wall_s"])
        rows.append({"checkpoints": n, "trunk_params": dim, "bytes_read_gb": n * dim * 4 / 2**30, "write_s": write_s,
                     "read_s": best_read["wall_s"], "read_peak_gb": best_read["peak_rss_gb"],
                     "pca_s": best_pca["wall_s"], "pca_peak_gb": best_pca["peak_rss_gb"],
                     "ratio_pca_over_read": best_pca["wall_s"] / best_read["wall_s"],
                     "all_read_s": [r["wall_s"] for r in reads], "all_pca_s": [r["wall_s"] for r in pcas],
                     "pc1_raw": best_pca["pc1_raw"], "k95": best_pca["k95"]})
        if args.sketch:
            rows[-1].update(sketch_row(run, n, dim, args.sketch, sketches, best_read, best_pca))
        if args.online:
            rows[-1].update(online_row(run, online, cached, best_read, best_pca))
        if not args.keep:
            shutil.rmtree(run)
    print(f"{'ckpts':>6}{'trunk D':>13}{'GB read':>9}{'read s':>9}{'pca s':>9}{'ratio':>7}{'read peak GB':>14}{'pca peak GB':>13}")
    for r in rows:
        print(f"{r['checkpoints']:>6}{r['trunk_params']:>13,}{r['bytes_read_gb']:>9.2f}{r['read_s']:>9.2f}{r['pca_s']:>9.2f}"
              f"{r['ratio_pca_over_read']:>7.2f}{r['read_peak_gb']:>14.2f}{r['pca_peak_gb']:>13.2f}")
    if args.online:
        print("online Gram (gram_online): analysis with its cache, and its cost per checkpoint in training:")
        print(f"{'ckpts':>6}{'read s':>9}{'pca s':>9}{'cached s':>10}{'/read':>7}{'/pca':>7}{'row t=1 s':>11}"
              f"{'row t=T s':>11}{'rows total s':>14}{'peak GB':>9}{'max err':>10}")
        for r in rows:
            o = r["online"]
            print(f"{r['checkpoints']:>6}{r['read_s']:>9.2f}{r['pca_s']:>9.2f}{o['cached_s']:>10.3f}"
                  f"{o['ratio_cached_over_read']:>7.3f}{o['ratio_cached_over_pca']:>7.3f}{o['update_s'][1]:>11.3f}"
                  f"{o['update_s'][-1]:>11.3f}{o['update_total_s']:>14.2f}{o['online_peak_gb']:>9.2f}"
                  f"{o['max_entry_error_over_max']:>10.1e}")
    if args.sketch:
        print(f"sketch dim {args.sketch}:")
        print(f"{'ckpts':>6}{'sketch s':>10}{'/read':>7}{'/pca':>7}{'peak GB':>9}{'epsilon':>9}{'PC1 exact':>11}"
              f"{'PC1 sketch':>12}{'PC1 bound':>17}{'max entry err':>15}")
        for r in rows:
            sk = r["sketch"]
            print(f"{r['checkpoints']:>6}{sk['sketch_s']:>10.2f}{sk['ratio_sketch_over_read']:>7.2f}"
                  f"{sk['ratio_sketch_over_pca']:>7.2f}{sk['sketch_peak_gb']:>9.2f}{sk['epsilon']:>9.3f}"
                  f"{r['pc1_raw']:>11.5f}{sk['pc1_raw']:>12.5f}"
                  f"{'[%.3f, %.3f]' % tuple(sk['pc1_raw_bound']) if sk['pc1_raw_bound'] else 'none':>17}"
                  f"{sk['measured']['max_entry_error_over_norms']:>15.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": args.preset, "cold_cache": args.cold, "device": args.device, "results": rows},
                              indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
