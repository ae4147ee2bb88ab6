"""The reference codes' command lines, resolved by ``training/pilot.py --dry-run`` (training/reference_flags.py).

Each published training command (the mini_gpt README's, the paper run's ``scripts/run_seed.sh`` command line
and its β2 sweep and reheating stages, the symmetry-breaking README's) is run through the training command's
main with ``--dry-run`` and the resolved config is checked field by field; the checkpoint steps of mini_gpt's
dense/sparse flags are compared with that code's rule computed here step by step, and the token budget's
update count with its loop simulated here. Every refusal is one ``error:`` line.
"""
from __future__ import annotations

import json

import pytest

from training import pilot
from training.core.cli import run_main
from training.core.config import checkpoint_steps, preset

PAPER_ARCH = "--n-layer 8 --d-model 512 --n-head 16 --d-ff 2048"
RUN_SEED = ("--seed {seed} --wd 0.5 --lr 0.001 --lambda-probe 2.0 --lambda-probe2 4.0 --lambda-step 4000 "
            "--steps 10000 --eval-every 200 --p-probe 0.10 " + PAPER_ARCH)
BETA2_SWEEP = ("--seed 42 --wd 0.5 --lr 0.001 --beta2 {beta2} --lambda-probe 2.0 --lambda-probe2 4.0 "
               "--lambda-step 4000 --steps 4000 --warmup 1500 --eval-every 200 --ckpt-dense-from 600 "
               "--ckpt-dense-to 2000 --ckpt-dense-every 50 --ckpt-sparse-from 2000 --ckpt-sparse-every 100 "
               + PAPER_ARCH)
ECD_DISORDERED = ("--model 124m --optimizer ecd --ecd_lr 1.0 --ecd_eta 100 --ecd_F0 2 --train_tokens 500000000 "
                  "--data_root data/fineweb10B --name ecd-disordered-run1")
ECD_SYMMETRIC = ("--model 124m --optimizer ecd --ecd_lr 1.0 --ecd_eta 100 --ecd_F0 2 --train_tokens 500000000 "
                 "--data_root data/fineweb10B --name ecd-symmetric-run1")
ADAMW_DISORDERED = ("--model 124m --optimizer adam --adam_lr 0.0001 --adam_wd 0.01 --train_tokens 500000000 "
                    "--data_root data/fineweb10B --name adamw-disordered-run1")


def run(cmd: str, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = run_main(lambda: pilot.main(cmd.split()))
    out, err = capsys.readouterr()
    return rc, out, err


def resolve(cmd: str, capsys) -> dict:
    rc, out, err = run(cmd + " --dry-run", capsys)
    assert rc == 0, err
    return json.loads(out[: out.index("\n}\n") + 2])


def refused(cmd: str, capsys) -> str:
    rc, out, err = run(cmd + " --dry-run", capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), (rc, out, err)
    return lines[0]


# ---------------------------------------------------------------------------- mini_gpt
def reference_checkpoints(steps: int, eval_every: int, dense=None, sparse=None) -> set[int]:
    """mini_gpt pilot.py's checkpoint steps, its rule written out: a checkpoint at every evaluation (step 1 and
    the multiples of eval_every), plus the multiples of the dense spacing inside [from, to] and the multiples
    of the sparse spacing from its start on."""
    out = set()
    for s in range(1, steps + 1):
        if s == 1 or s % eval_every == 0:
            out.add(s)
        if dense and dense[0] <= s <= dense[1] and s % dense[2] == 0:
            out.add(s)
        if sparse and s >= sparse[0] and s % sparse[1] == 0:
            out.add(s)
    return out


def as_ours(ref: set[int], steps: int) -> list[int]:
    """Ours keeps step 0 (the initial weights) where mini_gpt keeps step 1, and always the last step."""
    return sorted((ref - {1}) | {0, steps})


def test_run_seed_command_is_the_paper_preset(capsys):
    """scripts/run_seed.sh's training stage resolves to the paper preset itself, seed aside."""
    cfg = resolve(RUN_SEED.format(seed=271), capsys)
    assert cfg == preset("paper").replace(seed=271).to_dict()
    assert len(checkpoint_steps(preset("paper"))) == len(reference_checkpoints(10_000, 200)) == 51


@pytest.mark.parametrize("beta2", ["0.99", "0.80", "0.0"])
def test_beta2_sweep_command_and_its_52_checkpoints(beta2, capsys):
    cfg = resolve(BETA2_SWEEP.format(beta2=beta2), capsys)
    assert (cfg["beta2"], cfg["steps"], cfg["warmup"], cfg["eval_every"], cfg["ckpt_every"]) == \
        (float(beta2), 4000, 1500, 200, 200)
    assert (cfg["lambda_probe"], cfg["lambda_probe2"], cfg["lambda_step"]) == (2.0, 4.0, 4000)
    assert (cfg["n_layer"], cfg["d_model"], cfg["n_head"], cfg["d_ff"]) == (8, 512, 16, 2048)
    assert cfg["p_probe"] == 0.10          # not given there: our preset's value (the sweep ran with its 0.20)
    ours = checkpoint_steps(preset("paper").replace(**{k: cfg[k] for k in ("steps", "ckpt_every")},
                                                    ckpt_dense=tuple(map(tuple, cfg["ckpt_dense"]))))
    ref = reference_checkpoints(4000, 200, dense=(600, 2000, 50), sparse=(2000, 100))
    assert len(ref) == 52 and ours == as_ours(ref, 4000)


@pytest.mark.parametrize("steps,eval_every,dense,sparse", [
    (4000, 250, (630, 1990, 50), (2050, 300)),     # window ends off the spacing's multiples
    (3000, 500, (0, 40, 7), (2999, 1000)),          # a sparse start with no multiple left before the end
    (1000, 100, (301, 349, 50), None),              # a dense window holding no multiple at all
])
def test_dense_and_sparse_checkpoints_follow_mini_gpts_rule(steps, eval_every, dense, sparse, capsys):
    cmd = f"--steps {steps} --eval-every {eval_every} --warmup 10 --lambda-step 0 " \
          f"--ckpt-dense-from {dense[0]} --ckpt-dense-to {dense[1]} --ckpt-dense-every {dense[2]}"
    if sparse:
        cmd += f" --ckpt-sparse-from {sparse[0]} --ckpt-sparse-every {sparse[1]}"
    cfg = resolve(cmd, capsys)
    ours = checkpoint_steps(preset(cfg["preset"]).replace(steps=steps, ckpt_every=cfg["ckpt_every"],
                                                           ckpt_dense=tuple(map(tuple, cfg["ckpt_dense"]))))
    assert ours == as_ours(reference_checkpoints(steps, eval_every, dense, sparse), steps)


def test_mini_gpt_readme_command(capsys):
    """The README's "Train baseline AdamW" line sets what it names on our default preset; the spelled-out
    equivalent with mini_gpt's own defaults (16M model, λ 0, p_probe 0.20, evaluation and checkpoint every
    100 steps, early stop) resolves to that model."""
    literal = resolve("--seed 42 --wd 0.5 --lr 0.001 --steps 10000", capsys)
    assert (literal["preset"], literal["seed"], literal["wd"], literal["lr"], literal["steps"], literal["optimizer"]) \
        == ("quick", 42, 0.5, 0.001, 10000, "adamw")
    full = resolve("--seed 42 --wd 0.5 --lr 0.001 --steps 10000 --n-layer 4 --d-model 256 --n-head 8 --d-ff 1024 "
                   "--lambda-probe 0 --p-probe 0.2 --eval-every 100 --early-stop", capsys)
    assert full["preset"] == "paper"
    assert (full["n_layer"], full["d_model"], full["n_head"], full["d_ff"]) == (4, 256, 8, 1024)
    assert (full["lambda_probe"], full["lambda_probe2"], full["p_probe"]) == (0.0, None, 0.2)
    assert (full["eval_every"], full["ckpt_every"], full["early_stop"], full["warmup"], full["beta2"]) == \
        (100, 100, True, 1500, 0.95)
    assert (full["batch_size"], full["grad_accum"], full["seq_len"]) == (64, 2, 256)


def test_reheating_stage_of_run_seed(tmp_path, capsys):
    """run_seed.sh stage 7: --resume-from the last checkpoint, λ 4 throughout, 2,000 steps, warmup 200."""
    ckpt = tmp_path / "step_010000.safetensors"
    ckpt.write_bytes(b"")                     # a dry run only checks that the file is there
    cfg = resolve(f"--resume-from {ckpt} --lambda-probe 4.0 --steps 2000 --warmup 200 --lr 6e-4 --wd 0.5 "
                  f"--p-probe 0.10 --eval-every 200 --seed 42 " + PAPER_ARCH, capsys)
    assert cfg["init_from"] == str(ckpt.resolve()) and cfg["init_optimizer"] == ""
    assert (cfg["lambda_probe"], cfg["lambda_probe2"]) == (4.0, None)
    assert cfg["lambda_step"] <= cfg["steps"] == 2000
    assert (cfg["warmup"], cfg["lr"], cfg["data_seed"]) == (200, 6e-4, 42)   # mini_gpt re-seeds: same data order
    cfg = resolve(f"--resume-from {ckpt} --data-seed 7 --steps 2000 --warmup 200 --lambda-step 0", capsys)
    assert cfg["data_seed"] == 7


def test_no_early_stop(capsys):
    assert resolve("--no-early-stop --n-layer 2", capsys)["early_stop"] is False
    assert "contradict" in refused("--no-early-stop --early-stop", capsys)


# ---------------------------------------------------------------------------- the symmetry-breaking code
GPT2_SIZES = {"124m": (12, 12, 768), "355m": (24, 16, 1024), "774m": (36, 20, 1280), "1.3b": (48, 25, 1600)}


def reference_updates(train_tokens: float, batch: int, accum: int, ctx: int) -> int:
    """The symmetry code's loop: one update per batch·accum·ctx tokens while fewer than train_tokens were used."""
    consumed = updates = 0
    while consumed < train_tokens:
        consumed += batch * accum * ctx
        updates += 1
    return updates


@pytest.mark.parametrize("cmd,disorder", [(ECD_DISORDERED + " --set attn_disorder=qk", "qk"),
                                          (ECD_SYMMETRIC, "none")])
def test_symmetry_readme_ecd_commands(cmd, disorder, capsys):
    cfg = resolve(cmd, capsys)
    assert (cfg["preset"], cfg["n_layer"], cfg["n_head"], cfg["d_model"], cfg["d_ff"]) == ("124m", 12, 12, 768, 3072)
    assert (cfg["optimizer"], cfg["lr"], cfg["ecd_eta"], cfg["ecd_F0"], cfg["ecd_nu"], cfg["wd"]) == \
        ("ecd", 1.0, 100.0, 2.0, 0.0, 0.0)
    assert (cfg["corpus"], cfg["corpus_path"], cfg["tokenizer"], cfg["seq_len"]) == \
        ("fineweb", "data/fineweb10B", "gpt2", 512)
    assert cfg["steps"] == reference_updates(5e8, 8, 1, 512) == 122_071
    assert cfg["attn_disorder"] == disorder
    assert (cfg["attn_bq_mean"], cfg["attn_bq_std_first"], cfg["attn_bq_std_last"]) == (0.5, 0.05, 0.15)


def test_symmetry_readme_adamw_command(capsys):
    cfg = resolve(ADAMW_DISORDERED, capsys)
    assert (cfg["optimizer"], cfg["lr"], cfg["wd"], cfg["beta1"], cfg["beta2"]) == ("adamw", 1e-4, 0.01, 0.9, 0.95)
    assert cfg["steps"] == 122_071 and cfg["preset"] == "124m"


def test_symmetry_readme_troubleshooting_batch(capsys):
    """"--batch_size 4 --grad_accum 2  # Effective batch = 8": a micro-batch and its accumulation, as ours."""
    cfg = resolve("--model 124m --batch_size 4 --grad_accum 2 --train_tokens 1e6", capsys)
    assert (cfg["batch_size"], cfg["grad_accum"]) == (4, 2)
    assert cfg["steps"] == reference_updates(1e6, 4, 2, 512) == 245
    same = resolve("--model 124m --batch-size 4 --grad-accum 2 --train_tokens 1e6", capsys)
    assert same == cfg
    assert "batch_size" in refused("--model 124m --batch_size 4 --batch-size 8", capsys)


def test_run_name_is_runs_slash_name(capsys):
    rc, out, err = run(ECD_SYMMETRIC + " --print-run-dir", capsys)
    assert rc == 0 and out.strip() == "runs/ecd-symmetric-run1", err


@pytest.mark.parametrize("size", sorted(GPT2_SIZES))
def test_model_sizes_are_gpt2_shapes(size, capsys):
    cfg = resolve(f"--model {size} --ctx 256", capsys)
    n_layer, n_head, d_model = GPT2_SIZES[size]
    assert (cfg["n_layer"], cfg["n_head"], cfg["d_model"], cfg["d_ff"], cfg["seq_len"]) == \
        (n_layer, n_head, d_model, 4 * d_model, 256)


@pytest.mark.parametrize("theirs,ours,expect", [
    ("sgdm", "sgdw_nesterov", {"lr": 0.03, "momentum": 0.95, "wd": 0.0}),
    ("soap", "soap", {"lr": 3e-4, "wd": 0.01, "beta1": 0.95, "beta2": 0.95, "soap_precondition_frequency": 10}),
    ("adam", "adamw", {"lr": 1e-4, "wd": 0.01, "beta1": 0.9, "beta2": 0.95}),
])
def test_optimizer_names_and_their_hyperparameters(theirs, ours, expect, capsys):
    cfg = resolve(f"--model 124m --optimizer {theirs}", capsys)
    assert cfg["optimizer"] == ours and {k: cfg[k] for k in expect} == expect
    if theirs != ours:                 # a name of theirs alone is their command line: their default model
        assert resolve(f"--optimizer {theirs}", capsys) == cfg


def test_disorder_flags(capsys):
    cfg = resolve("--model 124m --mean_Q 0.3 --std_Q 0.1", capsys)
    assert (cfg["attn_disorder"], cfg["attn_bq_mean"], cfg["attn_bq_std_first"], cfg["attn_bq_std_last"]) == \
        ("qk", 0.3, 0.1, 0.1)
    assert resolve("--model 124m --disable_k_bias", capsys)["attn_disorder"] == "q"
    assert resolve("--model 124m --symmetric", capsys)["attn_disorder"] == "none"


def test_wandb_maps_to_log(capsys):
    if "--log" in pilot.build_parser()._option_string_actions:
        resolve(ADAMW_DISORDERED + " --wandb", capsys)
    else:
        assert "--log wandb" in refused(ADAMW_DISORDERED + " --wandb", capsys)


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("cmd,words", [
    ("--model 999m", "unknown size"),
    ("--model 124m --preset paper", "contradict"),
    ("--train_tokens 0", "positive"),
    ("--train_tokens=-5e8", "positive"),
    ("--train_tokens 1e6 --steps 10", "--steps"),
    ("--resume-from missing/ckpt_010000.pt", "does not exist"),
    ("--continue-from runs/x/ckpt_004000.pt", "no exact equivalent"),
    ("--ckpt-dense-from 600", "go together"),
    ("--ckpt-sparse-every 100", "--ckpt-sparse-from"),
    ("--ckpt-dense-from 600 --ckpt-dense-to 2000 --ckpt-dense-every 0", "positive"),
    ("--ckpt-dense-from 900 --ckpt-dense-to 600", "from <= to"),
    ("--steps 4000 --ckpt-sparse-from 5000", "past the run's last step"),
    ("--optimizer ecd --adam_lr 1e-4", "--optimizer adam"),
    ("--optimizer adam --adam_lr 1e-4 --lr 3e-4", "give one of them"),
    ("--n-layer 4 --ecd_eta 10", "mixes"),
    ("--symmetric --mean_Q 0.5", "contradicts"),
    ("--name a/b", "plain directory name"),
    ("--name run1 --out-dir runs/other", "contradict"),
    ("--ctx 100", "seq_len"),
])
def test_bad_reference_flags_are_one_error_line(cmd, words, capsys):
    assert words in refused(cmd, capsys)


def test_resume_from_refuses_a_directory_and_a_pt_file(tmp_path, capsys):
    assert "directory" in refused(f"--resume-from {tmp_path}", capsys)
    pt = tmp_path / "ckpt_010000.pt"
    pt.write_bytes(b"")
    assert "not a checkpoint of this toolkit" in refused(f"--resume-from {pt}", capsys)


def test_resume_refuses_reference_flags(tmp_path, capsys):
    rc, out, err = run(f"--resume --out-dir {tmp_path} --n-layer 4", capsys)
    assert rc == 2 and err.startswith("error: --resume continues") and len(err.strip().splitlines()) == 1
