"""Data-parallel training under torchrun (2 CPU processes, gloo) equals the single-process run.

The single-process reference is trained in this process; the 2-process runs go through
``python -m torch.distributed.run --standalone`` (a free port of its own) running ``training/pilot.py``'s
main, as a user starts them (one launch for both runs, to start torch once).
Equality is within fp32 round-off: the two ranks' gradient halves are summed in another order.
"""
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from training.core import runio
from training.core.config import preset
from training.core.distributed import Dist, check_config
from training.core.errors import UserError

STEPS = [0, 5, 10, 15, 20]
ATOL = 2e-6          # weights: |w| ~ 0.02-1, 20 AdamW steps; observed differences ~1e-7


# Both 2-process runs share one torchrun launch (starting torch in three processes is most of the cost):
# a fresh run, then the resumption of a run rewound to step 10, each through `training/pilot.py`'s main.
# The process group is joined once (as pilot.main would) and kept for both runs: tearing it down and
# joining again within one torchrun launch is not something a user does, and can hang.
JOB = """
import sys

from training.core import distributed
from training import pilot
dist = distributed.from_env("cpu")
shutdown, distributed.shutdown = distributed.shutdown, lambda d: None
a, b = sys.argv[1].split("|"), sys.argv[2].split("|")
assert pilot.main(a) == 0
dist.barrier()
print("=== resume ===", flush=True)
assert pilot.main(b) == 0
shutdown(dist)
"""


def torchrun(job, *args, timeout=180):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(job), *args]
    # a session of its own, so that a hung launch is killed with all its workers (none is left behind to
    # hold a port or a core for the rest of the suite)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s (killed):\n{out[-2000:]}\n{err[-2000:]}")
    p = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def rewind(src, dst, step):
    """A copy of the run ``src`` as if it had been killed right after checkpoint ``step`` (needs kept optimizer states)."""
    import shutil
    shutil.copytree(src, dst)
    kept = torch.load(runio.optimizer_state_path(dst, step), weights_only=True)
    # at a step with both an evaluation and a checkpoint the loss accumulators are freshly reset
    runio.save_state(dst, {"step": step, "config_hash": kept["config_hash"], "optimizer": kept["optimizer"],
                           "torch_rng": torch.get_rng_state(), "cuda_rng": None,
                           "acc": {"loss": 0.0, "lm": 0.0, "probe": 0.0, "probe_n": 0, "n": 0, "gnorm": 0.0,
                                   "steps": 0}, "elapsed_s": 1.0})
    for s in runio.list_checkpoints(dst):
        if s > step:
            runio.checkpoint_path(dst, s).unlink()
    runio.write_status(dst, "failed", step, "killed")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    cache = str(base / "cache")
    cfg = preset("test").replace(device="cpu", cache_dir=cache, keep_optimizer_states=True, progress=False)
    single = base / "single"
    from training.core.trainer import Trainer
    assert Trainer(cfg.replace(out_dir=str(single)), single, resume=False).run() == "completed"
    rewound = base / "rewound"
    rewind(single, rewound, 10)
    ddp = base / "ddp"
    job = base / "job.py"
    job.write_text(JOB)
    fresh = ["--preset", "test", "--out-dir", str(ddp), "--no-progress", "--set", "device=cpu",
             "--set", f"cache_dir={cache}", "--set", "keep_optimizer_states=true"]
    resume = ["--resume", "--out-dir", str(rewound), "--device", "cpu", "--no-progress"]
    p = torchrun(job, "|".join(fresh), "|".join(resume))
    return single, ddp, rewound, p.stdout.split("=== resume ===")[-1]


def _weights(run, step):
    return runio.load_checkpoint(runio.checkpoint_path(run, step))[0]


def assert_same_weights(a, b, steps):
    for s in steps:
        wa, wb = _weights(a, s), _weights(b, s)
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=ATOL, msg=f"{k} at step {s}")


def test_two_processes_equal_single_process(runs):
    single, ddp = runs[:2]
    assert runio.list_checkpoints(ddp) == STEPS
    assert runio.read_status(ddp)["state"] == "completed"
    assert_same_weights(single, ddp, STEPS)
    # the weights did move: the comparison is not between two initialisations
    assert (_weights(single, 20)["blocks.0.attn.qkv.weight"] - _weights(single, 0)["blocks.0.attn.qkv.weight"]).abs().max() > 1e-3
    m1, m2 = runio.read_metrics(single), runio.read_metrics(ddp)
    assert [r["step"] for r in m2] == STEPS
    for r1, r2 in zip(m1, m2):
        for k in ("train_loss", "train_lm_loss", "train_probe_loss", "grad_norm", "val_loss", "p_in", "p_ood",
                  "nll_in", "nll_ood", "lr", "lambda", "tokens"):
            if r1.get(k) is None:
                assert r2.get(k) is None, k
            else:
                assert r2[k] == pytest.approx(r1[k], rel=1e-5, abs=1e-6), (r1["step"], k)


def test_rank_zero_alone_writes(runs):
    ddp = runs[1]
    names = sorted(p.name for p in ddp.iterdir())
    assert names == sorted([".lock", "checkpoints", "codewords.json", "config.json", "metrics.jsonl", "state",
                            "status.json", "tokenizer.json"])
    # one record per evaluation: a second writer would have duplicated the lines
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == len(STEPS)
    assert not [p for p in ddp.rglob("*.tmp*")]


def test_two_processes_resume_together(runs):
    """The single-process run rewound to step 10 and resumed on 2 processes ends where it ends."""
    single, _, rewound, out = runs
    assert out.count("resuming") == 1            # printed by rank 0 only
    assert runio.read_status(rewound)["state"] == "completed"
    assert_same_weights(single, rewound, [15, 20])
    assert [r["step"] for r in runio.read_metrics(rewound)] == STEPS
    for r1, r2 in zip(runio.read_metrics(single)[3:], runio.read_metrics(rewound)[3:]):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-5)


def test_batch_must_split_over_the_processes():
    cfg = preset("test")          # micro-batch 8
    check_config(cfg, Dist(rank=0, world=2))
    with pytest.raises(UserError, match="does not split evenly over 3 processes"):
        check_config(cfg, Dist(rank=0, world=3))
    assert [Dist(rank=r, world=4).slice_rows(8) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6),
                                                                       slice(6, 8)]


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_rank_slices_sum_to_the_single_process_gradient(lam):
    """The per-rank loss normalisation, checked in one process: (g_rank0 + g_rank1) / 2 (what DDP's averaging
    gives) equals the single-process gradient, and the summed statistics equal the single-process sums."""
    import contextlib

    from training.core.batch import Batch
    from training.core.distributed import forward_backward_ddp
    from training.core.model import GPT
    from training.core.trainer import forward_backward
    cfg = preset("test")
    torch.manual_seed(0)
    model = GPT(cfg, 300)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    params = list(model.parameters())

    def batch(micro):
        gm = torch.Generator().manual_seed(100 + micro)
        x = torch.randint(0, 300, (8, cfg.seq_len), generator=gm)
        y = torch.randint(0, 300, (8, cfg.seq_len), generator=gm)
        y[torch.rand(8, cfg.seq_len, generator=gm) < 0.2] = -100          # ignored targets, unevenly spread
        mask = torch.zeros(8, cfg.seq_len, dtype=torch.bool)
        mask[:3, 5] = True                                                   # probe targets on rank 0 only
        return Batch(x, y, mask)
    ref = forward_backward(model, opt, batch, 2, lam, 0.0, params, contextlib.nullcontext)
    ref_grads = [p.grad.clone() for p in params]

    class NoSync:
        def no_sync(self):
            return contextlib.nullcontext()

    class Local(Dist):             # rank ``rank`` of 2 without a process group: the sums are taken below
        def all_reduce_sum(self, t):
            return t
    total, grads = None, [torch.zeros_like(p) for p in params]
    for rank in (0, 1):
        out = forward_backward_ddp(model, NoSync(), opt, batch, 2, lam, 0.0, params, contextlib.nullcontext,
                                   Local(rank=rank, world=2), torch.device("cpu"))
        for acc, p in zip(grads, params):
            acc += p.grad / 2
        part = {k: out[k].double() for k in ("loss", "lm", "probe", "probe_n")}
        total = part if total is None else {k: total[k] + part[k] for k in part}
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for k in ("loss", "lm", "probe", "probe_n"):
        assert float(total[k]) == pytest.approx(float(ref[k]), rel=1e-5), k
