#!/usr/bin/env python
"""Train a GPT with dense checkpoints: the training command of the toolkit.

Examples::

    python training/pilot.py --preset quick                       # offline default, a few minutes on a CPU
    python training/pilot.py --preset paper --seed 271            # the paper's run (GPU, TinyStories, GPT-2 BPE)
    python training/pilot.py --preset paper --dry-run             # print the config and parameter counts
    python training/pilot.py --resume --out-dir runs/NAME         # continue a killed run exactly
    torchrun --nproc_per_node 8 training/pilot.py --preset paper  # data-parallel over 8 GPUs, same global batch
    python training/pilot.py --preset paper --init-from runs/NAME/checkpoints/step_010000.safetensors \\
        --lambda-probe 4 --lambda-probe2 4 --lr 6e-4 --warmup 200 --steps 2000   # reheating

Any config field can be set with ``--set FIELD=VALUE`` (e.g. ``--set n_layer=4 --set corpus=files
--set corpus_path=data/stories.jsonl``); ``--config FILE`` starts from a saved config.json.

Under ``torchrun`` (several processes) the run is trained with DistributedDataParallel: each process
takes its slice of every micro-batch (``--batch-size`` is the global micro-batch and must divide by
the number of processes), so results equal the single-process run within round-off; rank 0 alone
writes the run directory, and ``--resume`` resumes all processes from the same state.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training import reference_flags
from training.core.cli import CommandParser, run_main
from training.core.config import PRESETS, Config, parse_override, preset
from training.core.errors import UserError
from training.core.tracking import parse_flag
from training.core.tasks import validate

# flag -> config field, for the flags that map one to one
FLAG_FIELDS = {
    "seed": "seed", "steps": "steps", "lr": "lr", "wd": "wd", "beta1": "beta1", "beta2": "beta2",
    "optimizer": "optimizer", "warmup": "warmup", "lambda_probe": "lambda_probe",
    "lambda_probe2": "lambda_probe2", "lambda_step": "lambda_step", "p_probe": "p_probe",
    "eval_every": "eval_every", "ckpt_every": "ckpt_every", "batch_size": "batch_size",
    "grad_accum": "grad_accum", "momentum": "momentum", "device": "device", "data_seed": "data_seed",
    "suppress_strength": "suppress_strength", "suppress_k": "suppress_k", "suppress_every": "suppress_every",
}


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description="Train a GPT on stories + the key-retrieval probe, with dense checkpoints.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("Examples::")[1])
    p.add_argument("--preset", default="quick", help=f"{' | '.join(PRESETS)} (default: quick)")
    p.add_argument("--config", help="start from this config JSON (a run's config.json or a plain field dict)")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--wd", type=float)
    p.add_argument("--beta1", type=float)
    p.add_argument("--beta2", type=float)
    p.add_argument("--momentum", type=float, help="momentum of the SGD variants")
    p.add_argument("--optimizer", help="adamw | sgd | sgd_momentum | sgdw_nesterov | ecd | soap | muon")
    p.add_argument("--warmup", type=int)
    p.add_argument("--lambda-probe", type=float, help="probe-loss weight before --lambda-step")
    p.add_argument("--lambda-probe2", type=float, help="probe-loss weight from --lambda-step on")
    p.add_argument("--lambda-step", type=int)
    p.add_argument("--p-probe", type=float, help="probability that a training sequence carries a probe")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--ckpt-every", type=int)
    p.add_argument("--ckpt-dense", action="append", default=[], metavar="FROM:TO:EVERY",
                   help="extra checkpoints every EVERY steps in [FROM, TO]; repeatable")
    p.add_argument("--batch-size", type=int, help="micro-batch size in sequences")
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--data-seed", type=int, help="seed of the training data stream (default: --seed)")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--early-stop", action="store_true", help="stop once the last 5 p_ood values are >= 0.8")
    p.add_argument("--suppress-strength", type=float, metavar="LAMBDA_C",
                   help="subspace suppression: g <- g - LAMBDA_C * P_S g on the trunk gradient (0 = off; "
                        "training/core/control.py)")
    p.add_argument("--suppress-basis", metavar="FILE",
                   help="suppress the span of these trunk directions (.npy / .safetensors, k x D_trunk) instead of "
                        "the top-k g_probe - g_LM directions estimated during training")
    p.add_argument("--suppress-k", type=int, help="estimated subspace: its dimension (default 3)")
    p.add_argument("--suppress-every", type=int, help="estimated subspace: refresh every N steps (default 200)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="set any config field; repeatable")
    p.add_argument("--out-dir", help="run directory (default: runs/<name encoding the settings>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir exactly where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an --out-dir that holds a run: its content is moved to RUN.previous-<time>/ "
                        "(nothing is deleted)")
    p.add_argument("--init-from", metavar="CKPT", help="start from these weights with a fresh optimizer (reheating)")
    p.add_argument("--with-moments", action="store_true",
                   help="with --init-from: also start from the saved optimizer moments of that step")
    p.add_argument("--print-run-dir", action="store_true", help="print the default run directory of these settings")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter counts; train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log", action="append", default=[], metavar="SINK",
                   help="also log metrics.jsonl's records to tensorboard (RUN/tensorboard) and/or wandb (RUN/wandb, "
                        "offline without WANDB_API_KEY); repeatable or comma-separated; with --resume: replaces the "
                        "run's sinks (none: no sink)")
    reference_flags.add_arguments(p)     # the reference codes' flags (README, "their command -> ours")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    if args.config:
        from training.core.runio import read_json
        d = read_json(args.config, "config file")
        cfg = Config.from_dict(d["config"] if isinstance(d, dict) and "config" in d else d)
    else:
        cfg = preset(args.preset)
    changes = {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag) is not None}
    if args.ckpt_dense:
        try:
            changes["ckpt_dense"] = tuple(tuple(int(v) for v in w.split(":")) for w in args.ckpt_dense)
        except ValueError:
            raise UserError(f"--ckpt-dense expects FROM:TO:EVERY integers, got {args.ckpt_dense}") from None
    if args.compile:
        changes["compile"] = True
    if args.early_stop:
        changes["early_stop"] = True
    if args.no_progress:
        changes["progress"] = False
    if args.log:
        changes["log"] = parse_flag(args.log)
    if args.init_from:
        if not Path(args.init_from).is_file():
            kind = "is a directory, not a checkpoint file" if Path(args.init_from).is_dir() else "does not exist"
            raise UserError(f"--init-from {args.init_from} {kind}")
        changes["init_from"] = str(Path(args.init_from).resolve())
        if args.with_moments:
            from training.core.runio import find_optimizer_state
            changes["init_optimizer"] = str(find_optimizer_state(args.init_from).resolve())
    elif args.with_moments:
        raise UserError("--with-moments needs --init-from CKPT")
    if args.suppress_basis:
        changes["suppress_basis"] = str(Path(args.suppress_basis).resolve())
    for item in args.set:
        k, v = parse_override(item)
        changes[k] = v
    changes = reference_flags.reference_changes(args, cfg, changes)
    cfg = validate(cfg.replace(**changes))
    if cfg.suppress_basis:            # a bad basis file stops here, before anything is printed or written
        from training.core.control import read_basis_file
        from training.core.model import trunk_size
        read_basis_file(cfg.suppress_basis, trunk_size(cfg))
    return cfg


def dry_run(cfg: Config) -> None:
    import torch

    from training.core.data_tokenizers import GPT2_VOCAB_SIZE
    from training.core.model import GPT, trunk_size
    if cfg.tokenizer == "gpt2":
        vocab, note = GPT2_VOCAB_SIZE, "GPT-2 BPE"
    else:
        vocab, note = cfg.bpe_vocab_size, "trained BPE, before its codeword tokens are added"
    with torch.device("meta"):
        model = GPT(cfg, vocab)
    print(cfg.to_json())
    print(f"vocab_size      {vocab:,} ({note})")
    print(f"parameters      {model.num_params():,}")
    print(f"trunk           {trunk_size(cfg):,} ({trunk_size(cfg, 0):,} per block)")
    print(f"tokens per step {cfg.tokens_per_step:,}")
    from training.core.regime import regime, table
    print("\n".join(table(regime(cfg, n_params=model.num_params()))))


def main(argv: list[str] | None = None) -> int:
    args = reference_flags.parse(build_parser(), argv)
    from training.core import distributed
    device = args.device or next((v.split("=", 1)[1] for v in args.set if v.replace("-", "_").startswith("device=")),
                                 "auto")
    dist = distributed.from_env(device)   # single process unless started by torchrun
    try:
        return _main(args, dist)
    finally:
        distributed.shutdown(dist)


def _main(args: argparse.Namespace, dist) -> int:
    from training.core.runio import check_out_dir, read_run_config
    from training.core.trainer import Trainer, run_name
    if args.out_dir is not None:
        check_out_dir(args.out_dir)
    if args.resume:
        if not args.out_dir:
            raise UserError("--resume needs --out-dir RUN (the run directory to continue)")
        if args.overwrite:
            raise UserError("--resume continues a run and --overwrite starts one again: pass one of them")
        run_dir = Path(args.out_dir)
        if not (run_dir / "config.json").exists():
            raise UserError(f"{run_dir} holds no run to resume (no config.json)")
        given = [f for f in FLAG_FIELDS if getattr(args, f) is not None and f != "device"] + args.set
        if given or args.config or args.init_from or args.suppress_basis:
            raise UserError("--resume continues a run with its own config; drop the other training flags")
        sinks = {"log": parse_flag(args.log)} if args.log else {}     # --log again: other sinks from here on
        cfg = read_run_config(run_dir).replace(device=args.device or "auto", progress=not args.no_progress,
                                               compile=args.compile, **sinks)
        state = Trainer(cfg, run_dir, resume=True, dist=dist).run()
    else:
        cfg = resolve_config(args)
        if args.print_run_dir:
            print(Path(args.out_dir) if args.out_dir else Path("runs") / run_name(cfg))
            return 0
        if args.dry_run:
            dry_run(cfg)
            return 0
        run_dir = Path(args.out_dir) if args.out_dir else Path("runs") / run_name(cfg)
        cfg = cfg.replace(out_dir=str(run_dir))
        if dist.is_main:
            print(f"run directory: {run_dir}", file=sys.stderr)
        state = Trainer(cfg, run_dir, resume=False, dist=dist, overwrite=args.overwrite).run()
    if dist.is_main:
        print(f"{state}: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
