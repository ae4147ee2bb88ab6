"""The command lines of the reference codes, accepted by the training command with their meanings.

Two reference codes have published training command lines that this toolkit reproduces:

* ``mini_gpt`` -- skydancerosel/mini_gpt, ``training/pilot.py`` (the code of arXiv 2602.23696; the paper's
  run is the command line of its ``scripts/run_seed.sh``, the β2 sweep that of
  ``experiments/beta_sweep/run_beta2_overnight.sh``);
* ``symmetry`` -- evasilverstein/symmetry-breaking-files, ``symmetry_breaking_paper_code/train_gpt_disorder.py``
  and ``train_gpt_symmetric.py`` (the commands of its README), with the optimizer flags and defaults of the
  later unified ``paper_code/paper_code/scripts/train.py``, the one version with all four optimizers its README
  names (ecd, adam, sgdm, soap).

Each code's flags are one declarative table below (:data:`MINI_GPT`, :data:`SYMMETRY`): the flag as
written there, the config field it sets here (or the rule that handles it), its default there, and its
meaning. :func:`add_arguments` adds them to the training command's parser, :func:`parse` parses a command
line (choosing the base preset), and :func:`reference_changes` turns the parsed flags into config changes
(training/pilot.py calls these three). The README's "their command -> ours" table is the user's view.

The rules, in short:

* a reference flag given explicitly means what it meant there (its units, its rounding, its checkpoint
  rule); a reference flag not given leaves our preset's value (the reference's own defaults are *not*
  applied, with one exception: choosing another optimizer than the preset's through the symmetry code's
  ``--optimizer`` brings that optimizer's reference hyperparameters, since the preset's lr/wd belong to its
  own optimizer);
* a command that uses a code's own flags picks that code's base preset when it gives no ``--preset`` or
  ``--config``: ``paper`` for mini_gpt (its paper configuration), ``--model SIZE`` (default ``124m``) for the
  symmetry code. Flags of both codes in one command are refused;
* in a mini_gpt command the flags it shares with ours keep mini_gpt's meaning where ours differs:
  ``--lambda-probe X`` without ``--lambda-probe2`` is λ = X throughout, ``--eval-every N`` without
  ``--ckpt-every`` also checkpoints every N steps (mini_gpt checkpoints at every evaluation);
* what cannot be matched exactly is refused in one ``error:`` line saying why (``--continue-from``, a
  reference ``.pt`` checkpoint, a flag of an optimizer the run does not use, contradicting flags).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from training.core.config import PRESETS, Config
from training.core.errors import UserError


@dataclass(frozen=True)
class Flag:
    """One flag of a reference code."""
    option: str                 # as written on the reference command line
    field: str                  # the config field it sets here; "" = handled by a rule of reference_changes
    type: Any                   # int | float | str; None = a switch (no value)
    default: Any                # its default in the reference code
    meaning: str                # what it meant there, and how it maps here
    optimizer: str = ""         # an optimizer's own flag: valid only when the run uses that optimizer

    @property
    def dest(self) -> str:
        return "ref_" + self.option.lstrip("-").replace("-", "_").lower()


@dataclass(frozen=True)
class Reference:
    name: str
    source: str
    base_preset: str
    flags: tuple[Flag, ...]


MINI_GPT = Reference(
    name="mini_gpt", source="skydancerosel/mini_gpt training/pilot.py", base_preset="paper", flags=(
        Flag("--n-layer", "n_layer", int, None, "transformer blocks (None there: its Config's 4)"),
        Flag("--d-model", "d_model", int, None, "model width (None there: 256)"),
        Flag("--n-head", "n_head", int, None, "attention heads (None there: 8)"),
        Flag("--d-ff", "d_ff", int, None, "MLP width (None there: 1024)"),
        Flag("--ckpt-dense-from", "", int, None,
             "with --ckpt-dense-to: extra checkpoints at the steps in [FROM, TO] that are multiples of "
             "--ckpt-dense-every -> a ckpt_dense window starting at the first such multiple"),
        Flag("--ckpt-dense-to", "", int, None, "end (inclusive) of the dense checkpoint window"),
        Flag("--ckpt-dense-every", "", int, 50, "spacing of the dense checkpoints (multiples of it)"),
        Flag("--ckpt-sparse-from", "", int, None,
             "extra checkpoints at every multiple of --ckpt-sparse-every from this step to the end "
             "-> a ckpt_dense window up to the run's last step"),
        Flag("--ckpt-sparse-every", "", int, 100, "spacing of the sparse checkpoints"),
        Flag("--resume-from", "", str, None,
             "start from a checkpoint's weights, fresh AdamW, step count and LR schedule from 1 (reheating) "
             "-> init_from, and data_seed = seed (there the data order replays the seed's)"),
        Flag("--continue-from", "", str, None,
             "weights only, fresh AdamW, steps <= the checkpoint's skipped (schedule continued): refused"),
        Flag("--no-early-stop", "early_stop", None, False,
             "turn off the stop after 5 evaluations with p_ood >= 0.8 (on by default there, off here)"),
    ))

# The symmetry code's optimizers -> ours, and each one's hyperparameters there (paper_code/scripts/train.py).
OPTIMIZER_NAMES = {"ecd": "ecd", "adam": "adamw", "sgdm": "sgdw_nesterov", "soap": "soap"}
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "ecd": {"lr": 1.0, "wd": 0.0, "ecd_eta": 100.0, "ecd_F0": 2.0, "ecd_nu": 0.0},
    "adamw": {"lr": 1e-4, "wd": 0.01, "beta1": 0.9, "beta2": 0.95},
    "sgdw_nesterov": {"lr": 0.03, "wd": 0.0, "momentum": 0.95},
    "soap": {"lr": 3e-4, "wd": 0.01, "beta1": 0.95, "beta2": 0.95, "soap_precondition_frequency": 10},
}
SIZES = ("124m", "355m", "774m", "1.3b")

SYMMETRY = Reference(
    name="symmetry", source="evasilverstein/symmetry-breaking-files train_gpt_disorder.py", base_preset="124m",
    flags=(
        Flag("--model", "", str, "124m", "GPT-2 size 124m | 355m | 774m | 1.3b -> the preset of that name"),
        Flag("--ecd_lr", "lr", float, 1.0, "ECD's Δt̂ (train_gpt_disorder.py: 0.5)", "ecd"),
        Flag("--ecd_eta", "ecd_eta", float, 100.0, "ECD's concentration η", "ecd"),
        Flag("--ecd_F0", "ecd_F0", float, 2.0, "ECD's loss offset F0", "ecd"),
        Flag("--ecd_nu", "ecd_nu", float, 0.0, "ECD's bounce amplitude ν", "ecd"),
        Flag("--ecd_wd", "wd", float, 0.0, "ECD's coupled L2 decay", "ecd"),
        Flag("--adam_lr", "lr", float, 1e-4, "AdamW's learning rate (train_gpt_disorder.py: 1e-3)", "adamw"),
        Flag("--adam_wd", "wd", float, 0.01, "AdamW's decoupled decay (there on every parameter; here not on "
             "LayerNorm)", "adamw"),
        Flag("--adam_beta1", "beta1", float, 0.9, "AdamW's β1", "adamw"),
        Flag("--adam_beta2", "beta2", float, 0.95, "AdamW's β2", "adamw"),
        Flag("--sgdm_lr", "lr", float, 0.03, "Nesterov SGD's learning rate", "sgdw_nesterov"),
        Flag("--sgdm_momentum", "momentum", float, 0.95, "Nesterov SGD's momentum", "sgdw_nesterov"),
        Flag("--soap_lr", "lr", float, 3e-4, "SOAP's learning rate", "soap"),
        Flag("--soap_wd", "wd", float, 0.01, "SOAP's weight decay", "soap"),
        Flag("--soap_beta1", "beta1", float, 0.95, "SOAP's β1", "soap"),
        Flag("--soap_beta2", "beta2", float, 0.95, "SOAP's β2", "soap"),
        Flag("--soap_prefreq", "soap_precondition_frequency", int, 10, "SOAP's preconditioner update interval",
             "soap"),
        Flag("--mean_Q", "attn_bq_mean", float, 0.5, "mean of the random query bias bQ (switches bQ on)"),
        Flag("--std_Q", "", float, None, "std of bQ, one value for every coordinate (default there: "
             "linspace(0.05, 0.15, head_dim)) -> attn_bq_std_first = attn_bq_std_last (switches bQ on)"),
        Flag("--disable_k_bias", "", None, False, "bQ without the key bias bK -> attn_disorder q (else qk)"),
        Flag("--symmetric", "", None, False, "standard attention, no biases (paper_code's train.py) "
             "-> attn_disorder none"),
        Flag("--train_tokens", "", float, 5e8, "token budget: the loop runs while fewer tokens were consumed, "
             "so steps = ceil(train_tokens / (batch_size · grad_accum · ctx))"),
        Flag("--batch_size", "batch_size", int, 8, "sequences per forward (micro-batch) -> batch_size"),
        Flag("--grad_accum", "grad_accum", int, 1, "forwards per update -> grad_accum"),
        Flag("--ctx", "seq_len", int, 512, "context length -> seq_len"),
        Flag("--data_root", "", str, "./data/finewebedu10B", "directory of FineWeb token shards "
             "-> corpus fineweb, corpus_path, tokenizer gpt2"),
        Flag("--name", "", str, None, "run name; the run directory is runs/NAME -> --out-dir runs/NAME"),
        Flag("--valid_every_updates", "eval_every", int, 1000, "evaluation interval -> eval_every"),
        Flag("--save_every_updates", "", int, 0, "checkpoint interval (0: the final model only) -> ckpt_every "
             "(0: the run's last step, plus step 0, which is always kept here)"),
        Flag("--use_bf16", "", None, False, "bf16 autocast -> precision bf16"),
        Flag("--wandb", "", None, False, "log to Weights & Biases -> --log wandb, where this build has --log"),
    ))

REFERENCES = (MINI_GPT, SYMMETRY)


# ---------------------------------------------------------------------------- the parser
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add both codes' flags to ``parser`` (every dest starts with ``ref_`` and defaults to None)."""
    for ref in REFERENCES:
        group = parser.add_argument_group(f"{ref.name} flags ({ref.source}; README, 'their command -> ours')")
        for f in ref.flags:
            if f.option == "--wandb":
                continue          # rewritten to --log wandb before parsing (see parse)
            if f.type is None:
                group.add_argument(f.option, dest=f.dest, action="store_const", const=True, default=None,
                                   help=f.meaning)
            else:
                group.add_argument(f.option, dest=f.dest, type=f.type, default=None, help=f.meaning,
                                   metavar={int: "N", float: "X"}.get(f.type, "VALUE"))


def given(args: argparse.Namespace, ref: Reference) -> list[Flag]:
    """The flags of ``ref`` that the command line gives."""
    return [f for f in ref.flags if getattr(args, f.dest, None) is not None]


def parse(parser: argparse.ArgumentParser, argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse a training command line that may use the reference codes' flags; choose the base preset."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--wandb" in argv:
        if "--log" not in parser._option_string_actions:
            raise UserError("--wandb (the symmetry code's W&B logging) maps to --log wandb, which this version "
                            "of the training command lacks; drop --wandb")
        i = argv.index("--wandb")
        argv[i:i + 1] = ["--log", "wandb"]
    parser.set_defaults(preset=None)             # to tell an explicit --preset from the default one
    args = parser.parse_args(argv)
    if getattr(args, "optimizer", None) in ("adam", "sgdm"):
        args.ref_optimizer_name = args.optimizer         # the symmetry code's optimizer names
    dialects = [ref for ref in REFERENCES if given(args, ref)]
    if getattr(args, "ref_optimizer_name", None) and SYMMETRY not in dialects:
        dialects.append(SYMMETRY)
    if len(dialects) > 1:
        theirs = ", ".join(f.option for f in given(args, SYMMETRY)) or "--optimizer " + args.optimizer
        raise UserError(f"this command mixes flags of mini_gpt ({', '.join(f.option for f in given(args, MINI_GPT))}) "
                        f"and of the symmetry code ({theirs}); use one code's flags (or ours) per command")
    ref = dialects[0] if dialects else None
    args.ref_dialect = ref.name if ref else ""
    if ref and args.resume:
        raise UserError("--resume continues a run with its own config; drop the other training flags "
                        f"({', '.join(f.option for f in given(args, ref)) or '--optimizer ' + args.optimizer})")
    if args.ref_model is not None:
        if args.ref_model not in SIZES:
            raise UserError(f"--model {args.ref_model}: unknown size (choose from {', '.join(SIZES)})")
        if args.config:
            raise UserError("--model picks a preset and --config starts from a saved config: pass one of them")
        if args.preset is not None and args.preset != args.ref_model:
            raise UserError(f"--model {args.ref_model} and --preset {args.preset} contradict each other")
        args.preset = args.ref_model
    elif ref and args.preset is None and not args.config:
        args.preset = ref.base_preset
    if args.preset is None:
        args.preset = "quick"
    if args.preset not in PRESETS:
        raise UserError(f"unknown preset '{args.preset}' (choose from {', '.join(PRESETS)})")
    if args.ref_name is not None:
        if args.ref_name.strip() in ("", ".", "..") or Path(args.ref_name).name != args.ref_name:
            raise UserError(f"--name {args.ref_name!r} must be a plain directory name (the run goes to runs/NAME)")
        out = str(Path("runs") / args.ref_name)
        if args.out_dir is not None and Path(args.out_dir) != Path(out):
            raise UserError(f"--name {args.ref_name} (run directory {out}) and --out-dir {args.out_dir} contradict "
                            "each other")
        args.out_dir = out
    return args


# ---------------------------------------------------------------------------- flags -> config changes
class _Changes:
    """Config changes with their sources, so that two flags setting one field differently are refused."""

    def __init__(self, changes: dict[str, Any]):
        self.values = dict(changes)
        self.source = {k: f"--{k.replace('_', '-')} (or --set {k}=...)" for k in changes}

    def explicit(self, field: str) -> bool:
        return field in self.source

    def put(self, field: str, value: Any, by: str) -> None:
        if field in self.source and self.values[field] != value:
            raise UserError(f"{by} sets {field}={value!r} but {self.source[field]} sets {field}="
                            f"{self.values[field]!r}; give one of them")
        self.values[field] = value
        self.source[field] = by

    def default(self, field: str, value: Any) -> None:
        """A value that applies unless a flag set the field."""
        if field not in self.source:
            self.values[field] = value


def reference_changes(args: argparse.Namespace, base: Config, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` (from our own flags and ``--set``) plus those of the reference flags in ``args``."""
    dialect = getattr(args, "ref_dialect", "")
    if not dialect:
        return changes
    ch = _Changes(changes)
    if dialect == "mini_gpt":
        _mini_gpt(args, base, ch)
    else:
        _symmetry(args, base, ch)
    return ch.values


def _resolved(base: Config, ch: _Changes) -> Config:
    return base.replace(**ch.values)


def _mini_gpt(args: argparse.Namespace, base: Config, ch: _Changes) -> None:
    for f in given(args, MINI_GPT):
        if f.field and f.type is not None:
            ch.put(f.field, getattr(args, f.dest), f.option)
    if args.ref_no_early_stop:
        if args.early_stop:
            raise UserError("--no-early-stop and --early-stop contradict each other")
        ch.put("early_stop", False, "--no-early-stop")
    if args.ref_continue_from is not None:
        raise UserError("--continue-from (mini_gpt: a checkpoint's weights with a fresh AdamW, the steps up to it "
                        "skipped and its LR schedule continued) has no exact equivalent here: continue a run of "
                        "this toolkit exactly with --resume --out-dir RUN, or restart from weights with a fresh "
                        "optimizer and schedule with --resume-from CKPT")
    if args.ref_resume_from is not None:
        path = Path(args.ref_resume_from)
        if not path.exists():
            raise UserError(f"--resume-from {path} does not exist")
        if not path.is_file():
            raise UserError(f"--resume-from {path} is a directory, not a checkpoint file")
        if path.suffix != ".safetensors":
            raise UserError(f"--resume-from {path} is not a checkpoint of this toolkit (runs/NAME/checkpoints/"
                            "step_XXXXXX.safetensors); a mini_gpt ckpt_XXXXXX.pt must become a run of this "
                            "toolkit first")
        if args.init_from:
            raise UserError("--resume-from and --init-from both name start weights: give one of them")
        ch.put("init_from", str(path.resolve()), "--resume-from")
        # mini_gpt re-seeds with --seed, so a reheating run replays the seed's data order
        ch.default("data_seed", _resolved(base, ch).seed)
    # flags shared with ours, in mini_gpt's meaning
    if args.lambda_probe is not None and args.lambda_probe2 is None:
        ch.default("lambda_probe2", None)         # mini_gpt: --lambda-probe2 None = the same λ throughout
    if args.eval_every is not None and args.ckpt_every is None:
        ch.default("ckpt_every", args.eval_every)  # mini_gpt checkpoints at every evaluation
    cfg = _resolved(base, ch)
    if cfg.lambda_probe2 is None and not ch.explicit("lambda_step") and cfg.lambda_step > cfg.steps:
        ch.values["lambda_step"] = cfg.steps     # a constant λ: the switch step does not matter, only fits
    windows = list(cfg.ckpt_dense)
    dense = (args.ref_ckpt_dense_from, args.ref_ckpt_dense_to)
    if any(v is not None for v in dense) or args.ref_ckpt_dense_every is not None:
        if None in dense:
            raise UserError("--ckpt-dense-from, --ckpt-dense-to (and --ckpt-dense-every, default 50) go together: "
                            "mini_gpt ignores a dense window without both ends")
        windows += _multiples_window(dense[0], dense[1], _every(args.ref_ckpt_dense_every, 50, "--ckpt-dense-every"),
                                     "--ckpt-dense")
    if args.ref_ckpt_sparse_from is not None or args.ref_ckpt_sparse_every is not None:
        if args.ref_ckpt_sparse_from is None:
            raise UserError("--ckpt-sparse-every needs --ckpt-sparse-from (mini_gpt ignores it alone)")
        if args.ref_ckpt_sparse_from > cfg.steps:
            raise UserError(f"--ckpt-sparse-from {args.ref_ckpt_sparse_from} is past the run's last step {cfg.steps}")
        windows += _multiples_window(args.ref_ckpt_sparse_from, cfg.steps,
                                     _every(args.ref_ckpt_sparse_every, 100, "--ckpt-sparse-every"), "--ckpt-sparse")
    if windows != list(cfg.ckpt_dense):
        ch.values["ckpt_dense"] = tuple(windows)


def _every(value: Optional[int], default: int, flag: str) -> int:
    every = default if value is None else value
    if every <= 0:
        raise UserError(f"{flag} must be a positive number of steps (got {every})")
    return every


def _multiples_window(lo: int, hi: int, every: int, flag: str) -> list[tuple[int, int, int]]:
    """mini_gpt's rule "steps s in [lo, hi] with s % every == 0" as a ckpt_dense window (from, to, every),
    which counts from its start: start at the first multiple of ``every`` that is >= lo (none if past hi)."""
    if lo < 0 or hi < lo:
        raise UserError(f"{flag} window [{lo}, {hi}] must have 0 <= from <= to")
    first = -(-lo // every) * every
    return [(first, hi, every)] if first <= hi else []


def _symmetry(args: argparse.Namespace, base: Config, ch: _Changes) -> None:
    if args.optimizer is not None:
        # FLAG_FIELDS copied the raw value; their names are translated here
        ch.values["optimizer"] = OPTIMIZER_NAMES.get(args.optimizer, args.optimizer)
        ch.source["optimizer"] = f"--optimizer {args.optimizer}"
    optimizer = ch.values.get("optimizer", base.optimizer)
    if optimizer != base.optimizer:
        # the preset's lr / wd / betas are its own optimizer's: take the chosen optimizer's reference values
        for field, value in OPTIMIZER_DEFAULTS.get(optimizer, {}).items():
            ch.default(field, value)
    for f in given(args, SYMMETRY):
        value = getattr(args, f.dest)
        if f.optimizer and f.optimizer != optimizer:
            theirs = next(k for k, v in OPTIMIZER_NAMES.items() if v == f.optimizer)
            raise UserError(f"{f.option} is a setting of --optimizer {theirs}, but this run uses {optimizer} "
                            "(the symmetry code ignores it; here it is refused)")
        if f.field and f.type is not None:
            ch.put(f.field, value, f.option)
    # disordered attention
    bias_flags = [f.option for f in given(args, SYMMETRY) if f.option in ("--mean_Q", "--std_Q", "--disable_k_bias")]
    if args.ref_symmetric:
        if bias_flags:
            raise UserError(f"--symmetric (no attention biases) contradicts {', '.join(bias_flags)}")
        ch.put("attn_disorder", "none", "--symmetric")
    elif bias_flags:
        current = ch.values.get("attn_disorder", base.attn_disorder)
        if ch.explicit("attn_disorder") and args.ref_disable_k_bias and "k" in current:
            raise UserError(f"--disable_k_bias contradicts attn_disorder={current}")
        if current == "none":
            current = "qk"                     # train_gpt_disorder.py adds bK unless --disable_k_bias
        if args.ref_disable_k_bias:
            current = current.replace("k", "")
        ch.values["attn_disorder"] = current
    if args.ref_std_q is not None:
        ch.put("attn_bq_std_first", args.ref_std_q, "--std_Q")
        ch.put("attn_bq_std_last", args.ref_std_q, "--std_Q")
    if args.ref_data_root is not None:
        ch.put("corpus", "fineweb", "--data_root")
        ch.put("corpus_path", args.ref_data_root, "--data_root")
        ch.put("tokenizer", "gpt2", "--data_root")
    if args.ref_use_bf16:
        ch.put("precision", "bf16", "--use_bf16")
    if args.ref_train_tokens is not None:
        tokens = args.ref_train_tokens
        if not (math.isfinite(tokens) and tokens > 0):
            raise UserError(f"--train_tokens must be a positive number of tokens (got {tokens:g})")
        cfg = _resolved(base, ch)
        steps = steps_for_tokens(tokens, cfg.tokens_per_step)
        if ch.explicit("steps") and ch.values["steps"] != steps:
            raise UserError(f"--train_tokens {tokens:g} is {steps:,} updates of {cfg.tokens_per_step:,} tokens, "
                            f"but --steps is {ch.values['steps']:,}; give one of them")
        ch.put("steps", steps, "--train_tokens")
    if args.ref_save_every_updates is not None:
        every = args.ref_save_every_updates
        if every < 0:
            raise UserError(f"--save_every_updates must be >= 0 (got {every})")
        ch.put("ckpt_every", every if every > 0 else _resolved(base, ch).steps, "--save_every_updates")


def steps_for_tokens(tokens: float, tokens_per_step: int) -> int:
    """Updates of the symmetry code's token-budgeted loop (it runs while consumed < train_tokens)."""
    return max(1, math.ceil(tokens / tokens_per_step))
