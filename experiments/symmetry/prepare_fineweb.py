#!/usr/bin/env python
"""Download FineWeb-Edu and write GPT-2 token shards (needs network; the symmetry-breaking README's data preparation).

Streams the Hugging Face dataset HuggingFaceFW/fineweb-edu (config sample-10BT by default), tokenises every
document with the GPT-2 encoding (tiktoken), prefixes each with <|endoftext|>, and writes shards of
--shard-tokens tokens: the first shard is the validation split (fineweb_val_000000.bin), the rest training
shards (fineweb_train_000001.bin, ...). Each shard is a 256-int32 header (magic 20240520, version 1, token
count) followed by uint16 ids (training/core/fineweb.py reads them; train with --set corpus=fineweb
--set corpus_path=OUT or one of the presets 124m, 355m, 774m, 1.3b).

Examples:
  python experiments/symmetry/prepare_fineweb.py --out data/fineweb10B                 # all of sample-10BT
  python experiments/symmetry/prepare_fineweb.py --out data/fw_small --max-tokens 2e8  # a 200M-token slice
"""
import argparse
import socket
import sys
from pathlib import Path

import numpy as np

from training.core.cli import CommandParser, run_main
from training.core.errors import UserError
from training.core.fineweb import write_shard


def parse_args(argv=None):
    p = CommandParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory for the shards")
    p.add_argument("--dataset", default="HuggingFaceFW/fineweb-edu")
    p.add_argument("--config", default="sample-10BT", help="dataset configuration (default sample-10BT)")
    p.add_argument("--shard-tokens", type=float, default=1e8, help="tokens per shard (default 1e8)")
    p.add_argument("--max-tokens", type=float, default=0, help="stop after about this many tokens (0 = all)")
    p.add_argument("--no-progress", action="store_true")

    return p.parse_args(argv)


def online(host="huggingface.co", timeout=3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    args = parse_args(argv)
    if not online():
        raise UserError("prepare_fineweb needs network access to huggingface.co (and the GPT-2 encoding of tiktoken); "
                        "run it on a machine with network and copy the shards, or train offline with --preset quick")
    try:
        import datasets
        import tiktoken
        enc = tiktoken.get_encoding("gpt2")
        stream = datasets.load_dataset(args.dataset, name=args.config, split="train", streaming=True)
    except Exception as e:
        raise UserError(f"could not open {args.dataset}/{args.config} or the GPT-2 encoding ({type(e).__name__}: {e})") from None
    from tqdm import tqdm
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size, limit = int(args.shard_tokens), int(args.max_tokens)
    eot = enc.eot_token
    buf = np.empty(size, dtype=np.uint16)
    fill, shard = 0, 0
    bar = tqdm(unit="tok", unit_scale=True, disable=args.no_progress or not sys.stderr.isatty())

    def flush(n):
        nonlocal shard
        name = f"fineweb_{'val' if shard == 0 else 'train'}_{shard:06d}.bin"
        write_shard(out / name, buf[:n])
        shard += 1
    for doc in stream:
        toks = np.asarray([eot] + enc.encode_ordinary(doc["text"]), dtype=np.uint16)
        bar.update(len(toks))
        while len(toks):
            take = min(size - fill, len(toks))
            buf[fill:fill + take] = toks[:take]
            fill, toks = fill + take, toks[take:]
            if fill == size:
                flush(size)
                fill = 0
        if limit and bar.n >= limit:
            break
    if fill:
        flush(fill)
    bar.close()
    if shard < 2:
        raise UserError(f"only {shard} shard(s) written to {out}: lower --shard-tokens so there is a val and a train shard")
    print(f"wrote {shard} shards ({bar.n:,} tokens) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
