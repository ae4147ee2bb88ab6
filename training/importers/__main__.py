"""Import a series of checkpoints that this toolkit did not write as a run directory of its own.

Sources (the steps come from the names, e.g. ckpt_000200.pt -> 200, step1000 -> 1000, or from --steps):
  DIR                       a directory of PyTorch state_dict files (.pt/.pth/.bin/.safetensors), bare or wrapped
                            ({"model_state_dict": ...} as the reference mini_gpt code saves, {"model": ...}, ...)
  FILE [FILE ...]           the same files named one by one
  HFDIR [HFDIR ...]         Hugging Face save_pretrained directories, one per revision (or one directory holding
                            them as subdirectories; --revisions picks subdirectories by name)
  OWNER/NAME --revisions R1,R2,...   a hub model id at these revisions (e.g. EleutherAI/pythia-160m with
                            step0,step1000,...), read from the local Hugging Face cache, downloaded when online

Architectures: mini_gpt (the reference code's layout, the toolkit's own names: the whole model is imported),
gpt2, gpt_neox, llama (and mistral, qwen2); the trunk is each block's attention and MLP weight matrices, mapped
to the toolkit's names and layout; config.json records the mapping under "imported".

Examples:
  python -m training.importers runs_ref/pilot_wd0.5_lr0.001_lp2.0_s42 --out-dir runs/ref_s42 --preset paper
  python -m training.importers EleutherAI/pythia-160m --revisions step0,step1000,step2000 --out-dir runs/pythia160m
  python -m training.importers revs/step0 revs/step100 revs/step200 --out-dir runs/mine
"""
from __future__ import annotations

import argparse
import sys

from training.core.cli import CommandParser, run_main
from training.core.errors import UserError


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"{flag} must be a comma-separated list of integers (got '{text}')") from None


def main(argv=None) -> int:
    first = __doc__.strip().split("\n\n")[0]
    p = CommandParser(prog="python -m training.importers", description=first,
                      epilog=__doc__.strip()[len(first):].strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="checkpoint files, directories, or one hub id (see above)")
    p.add_argument("--out-dir", required=True, help="the run directory to write (must not hold a run)")
    p.add_argument("--revisions", help="comma-separated revisions of a hub id (or subdirectory names of a directory)")
    p.add_argument("--steps", help="comma-separated steps of the checkpoints, in the order given (default: from names)")
    p.add_argument("--architecture", help="mini_gpt | gpt2 | gpt_neox | llama | mistral | qwen2 (default: detected)")
    p.add_argument("--init", help="an initialisation checkpoint (file, directory) written as step 0")
    p.add_argument("--preset", help="base config (e.g. paper for the reference code's paper runs: its schedule, "
                                    "data and probe); default: an unknown schedule with no weight decay")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load .pt files with weights_only=False (only for files you trust)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from training.importers.importer import import_trajectory
    revisions = [r for r in args.revisions.split(",") if r.strip()] if args.revisions else None
    steps = _int_list(args.steps, "--steps") if args.steps else None
    imported = import_trajectory(args.sources, args.out_dir, revisions=revisions, steps=steps,
                                 architecture=args.architecture, init=args.init, preset_name=args.preset,
                                 overrides=args.set, trust_pickle=args.trust_pickle, progress=not args.no_progress)
    ck = imported["checkpoints"]
    print(f"imported {len(ck)} checkpoints ({imported['architecture']}, steps {ck[0]['step']}..{ck[-1]['step']}) "
          f"into {args.out_dir} in {imported['elapsed_s']:.1f} s; drifts are taken from step {imported['reference_step']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
