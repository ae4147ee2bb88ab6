"""Per architecture, which foreign tensors make each trunk matrix of the toolkit, and how.

The toolkit's trunk (training/core/model.py, ``TRUNK_SUFFIXES``) is, per block b, four matrices in the
nn.Linear layout (out_features × in_features), flattened row-major, block after block in this order::

    blocks.b.attn.qkv.weight      the attention input projections, rows [query; key; value]
    blocks.b.attn.out_proj.weight the attention output projection
    blocks.b.mlp.w_up.weight      the MLP input projection(s), rows [gate; up] where the MLP is gated
    blocks.b.mlp.w_down.weight    the MLP output projection

An imported trajectory is written under exactly these names, so every trajectory analysis reads it unchanged.
What each name was made of (recorded in the run's config.json under ``imported.mapping``):

=========  ====================================  ========================================  =========================
arch       qkv                                   out_proj / w_up / w_down                  transform
=========  ====================================  ========================================  =========================
mini_gpt   blocks.b.attn.qkv.weight              attn.out_proj, mlp.w_up, mlp.w_down       identity (same names)
gpt2       h.b.attn.c_attn.weight                attn.c_proj, mlp.c_fc, mlp.c_proj         transpose (Conv1D: in × out)
gpt_neox   layers.b.attention.query_key_value    attention.dense, mlp.dense_h_to_4h,       qkv de-interleaved: rows
                                                 mlp.dense_4h_to_h                         (head, q|k|v, dim) -> (q|k|v, head, dim)
llama      layers.b.self_attn.{q,k,v}_proj       self_attn.o_proj, mlp.{gate,up}_proj      rows concatenated
                                                 (w_up = [gate; up]), mlp.down_proj
=========  ====================================  ========================================  =========================

(``mistral`` and ``qwen2`` use the llama names.) Biases and norms are not trunk. A permutation of the entries
changes no inner product, so the Gram matrix and every spectrum are those of the foreign matrices however
they are laid out; the layout above is chosen so that a name means the same thing in every run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from training.core.errors import UserError
from training.core.model import TRUNK_SUFFIXES


@dataclass(frozen=True)
class Part:
    """One trunk matrix: the foreign tensors (suffixes after the block prefix) and the transform that joins them."""
    sources: tuple[str, ...]
    transform: str            # identity | transpose | neox_qkv | concat_rows


@dataclass(frozen=True)
class Architecture:
    name: str
    block: str                # regex with one group, the block index, matched at the start of a name or after a dot
    parts: dict               # trunk suffix -> Part
    native: bool = False      # the toolkit's own GPT (the reference mini_gpt code's model): the model loads

    def block_prefix(self, name: str) -> tuple[str, int] | None:
        """(prefix up to and including the block index and its dot, block) of a foreign tensor name, or None."""
        m = re.search(rf"(?:^|\.)({self.block})\.", name)
        if m is None:
            return None
        return name[:m.end()], int(m.group(2))


_LLAMA = {
    "attn.qkv.weight": Part(("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
                            "concat_rows"),
    "attn.out_proj.weight": Part(("self_attn.o_proj.weight",), "identity"),
    "mlp.w_up.weight": Part(("mlp.gate_proj.weight", "mlp.up_proj.weight"), "concat_rows"),
    "mlp.w_down.weight": Part(("mlp.down_proj.weight",), "identity"),
}

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("mini_gpt", r"blocks\.(\d+)", {s: Part((s,), "identity") for s in TRUNK_SUFFIXES}, native=True),
    Architecture("gpt2", r"h\.(\d+)", {
        "attn.qkv.weight": Part(("attn.c_attn.weight",), "transpose"),
        "attn.out_proj.weight": Part(("attn.c_proj.weight",), "transpose"),
        "mlp.w_up.weight": Part(("mlp.c_fc.weight",), "transpose"),
        "mlp.w_down.weight": Part(("mlp.c_proj.weight",), "transpose"),
    }),
    Architecture("gpt_neox", r"layers\.(\d+)", {
        "attn.qkv.weight": Part(("attention.query_key_value.weight",), "neox_qkv"),
        "attn.out_proj.weight": Part(("attention.dense.weight",), "identity"),
        "mlp.w_up.weight": Part(("mlp.dense_h_to_4h.weight",), "identity"),
        "mlp.w_down.weight": Part(("mlp.dense_4h_to_h.weight",), "identity"),
    }),
    Architecture("llama", r"layers\.(\d+)", _LLAMA),
    Architecture("mistral", r"layers\.(\d+)", _LLAMA),
    Architecture("qwen2", r"layers\.(\d+)", _LLAMA),
)}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise UserError(f"unknown architecture '{name}' (supported: {', '.join(ARCHITECTURES)}); the trunk of another "
                        "architecture needs its mapping in training/importers/architectures.py")
    return ARCHITECTURES[name]


def detect(names) -> str:
    """The architecture whose trunk names a state dict holds (the one with the most matched block-0 tensors)."""
    names = list(names)
    best, score = None, 0
    for arch in ARCHITECTURES.values():
        if arch.name in ("mistral", "qwen2"):
            continue                       # the llama names: detected as llama
        found = set()
        for n in names:
            hit = arch.block_prefix(n)
            if hit is not None:
                suffix = n[len(hit[0]):]
                found |= {s for s, p in arch.parts.items() if suffix in p.sources}
        if len(found) > score:
            best, score = arch.name, len(found)
    if best is None:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise UserError(f"unknown architecture: no trunk tensors of {', '.join(a for a in ARCHITECTURES)} among the "
                        f"checkpoint's names ({shown}); give --architecture, or add its mapping to "
                        "training/importers/architectures.py")
    return best


@dataclass
class TrunkEntry:
    """One trunk matrix of one checkpoint: its toolkit name, the foreign names it is made of, its shape."""
    name: str
    sources: tuple[str, ...]
    transform: str
    shape: tuple[int, ...]


def plan(arch: Architecture, shapes: dict[str, tuple[int, ...]], what: str, n_head: int | None = None) -> list[TrunkEntry]:
    """The trunk of a checkpoint whose tensors have ``shapes`` (foreign name -> shape), in canonical order.

    Every block found must have every trunk matrix of the architecture; a missing one is a one-line
    UserError naming it (``what`` names the checkpoint)."""
    prefixes: dict[int, set[str]] = {}
    for n in shapes:
        hit = arch.block_prefix(n)
        if hit is not None and n[len(hit[0]):] in {s for p in arch.parts.values() for s in p.sources}:
            prefixes.setdefault(hit[1], set()).add(hit[0])
    if not prefixes:
        raise UserError(f"{what} holds no trunk tensors of architecture {arch.name} (such as "
                        f"{next(iter(arch.parts.values())).sources[0]} of a block); is it another architecture?")
    n_layer = max(prefixes) + 1
    out = []
    for b in range(n_layer):
        if len(prefixes.get(b, ())) > 1:
            raise UserError(f"{what} holds block {b} under several prefixes ({', '.join(sorted(prefixes[b]))})")
        prefix = next(iter(prefixes.get(b, {""})))
        for suffix in TRUNK_SUFFIXES:
            part = arch.parts[suffix]
            src = tuple(prefix + s for s in part.sources)
            missing = [s for s in src if s not in shapes] if prefix else [f"block {b}'s {part.sources[0]}"]
            if missing:
                raise UserError(f"{what} lacks the trunk tensor {missing[0]} (architecture {arch.name}: "
                                f"blocks.{b}.{suffix} is made of {', '.join(part.sources)})")
            out.append(TrunkEntry(f"blocks.{b}.{suffix}", src, part.transform,
                                  mapped_shape(part.transform, [shapes[s] for s in src], f"{what}: {src[0]}", n_head)))
    return out


def mapped_shape(transform: str, shapes: list[tuple[int, ...]], what: str, n_head: int | None) -> tuple[int, ...]:
    if any(len(s) != 2 for s in shapes):
        raise UserError(f"{what} is not a matrix (shape {list(shapes[0])})")
    if transform == "transpose":
        return (shapes[0][1], shapes[0][0])
    if transform == "concat_rows":
        if len({s[1] for s in shapes}) != 1:
            raise UserError(f"{what}: the matrices joined into one trunk matrix differ in width ({shapes})")
        return (sum(s[0] for s in shapes), shapes[0][1])
    if transform == "neox_qkv":
        rows = shapes[0][0]
        if n_head is None or rows % (3 * n_head):
            raise UserError(f"{what}: query_key_value has {rows} rows, not 3 × heads × head size "
                            f"(heads {n_head}); give the number of heads with --set n_head=N")
    return tuple(shapes[0])


def assemble(entry: TrunkEntry, tensors: list[torch.Tensor], n_head: int | None) -> torch.Tensor:
    """The trunk matrix ``entry`` from its foreign tensors (float32, contiguous, the toolkit's layout)."""
    ts = [t.to(torch.float32) for t in tensors]
    if entry.transform == "identity":
        out = ts[0]
    elif entry.transform == "transpose":
        out = ts[0].T
    elif entry.transform == "concat_rows":
        out = torch.cat(ts, dim=0)
    elif entry.transform == "neox_qkv":
        # GPT-NeoX fuses per head: rows (head, [q | k | v], head_dim); ours are ([q | k | v], head, head_dim)
        w = ts[0]
        rows, cols = w.shape
        out = w.reshape(n_head, 3, rows // (3 * n_head), cols).transpose(0, 1).reshape(rows, cols)
    else:
        raise ValueError(f"unknown transform {entry.transform}")
    out = out.contiguous()
    if tuple(out.shape) != tuple(entry.shape):
        raise UserError(f"{entry.sources[0]} gives a {list(out.shape)} matrix where {list(entry.shape)} was expected")
    return out
