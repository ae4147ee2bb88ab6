"""Turn a series of foreign checkpoints into a run directory that every trajectory analysis accepts.

``import_trajectory`` resolves the series (files, directories, hub revisions), reads the steps from the
names (``ckpt_000200.pt`` -> 200, Pythia's ``step1000`` -> 1000) or from ``steps``, maps each checkpoint's
trunk to the toolkit's names (:mod:`training.importers.architectures`) and writes, tensor by tensor::

    RUN/checkpoints/step_XXXXXX.safetensors   the trunk (fp32; the whole model for the native mini_gpt layout)
    RUN/config.json                           a config the readers accept + ``imported`` (source, architecture,
                                              checkpoints, mapping, flatten order)
    RUN/status.json                           completed

The drifts of every analysis are taken from the first checkpoint of the series (their default reference
step), which is the initialisation only when the series starts at one (Pythia's ``step0``); ``init`` adds an
initialisation, written as step 0.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from training.core import runio
from training.core.config import Config, parse_override, preset
from training.core.errors import UserError
from training.core.model import GPT
from training.importers import architectures as archs
from training.importers import sources as src_mod

FLATTEN_ORDER = ("blocks in order; per block attn.qkv, attn.out_proj, mlp.w_up, mlp.w_down (training.core.model."
                 "TRUNK_SUFFIXES); each matrix row-major in the nn.Linear layout (out_features x in_features), "
                 "qkv rows [query; key; value], a gated MLP's w_up rows [gate; up]")


@dataclass
class Item:
    """One checkpoint of the series: its step, a label (file or revision), how to open it."""
    step: int | None
    label: str
    open: Callable[[], src_mod.TensorSource]
    kind: str                       # state_dict | hf
    hf: tuple[str, str | None] | None = None      # (path or hub id, revision) of a Hugging Face checkpoint
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- the series
def resolve_series(sources: list[str], revisions: list[str] | None, trust_pickle: bool) -> list[Item]:
    """The checkpoints named by ``sources`` (and ``revisions``), in the order given / found."""
    if not sources:
        raise UserError("give the checkpoints to import: a directory of state_dict files, Hugging Face "
                        "directories, or a hub id with --revisions")
    if len(sources) == 1 and src_mod.is_hub_id(sources[0]):
        repo = sources[0]
        if not revisions:
            raise UserError(f"{repo} is a hub id: give its revisions with --revisions (e.g. step0,step1000,step2000)")
        return [_hf_item(repo, r, f"{repo}@{r}", r, trust_pickle) for r in revisions]
    items: list[Item] = []
    for s in sources:
        path = Path(s)
        if not path.exists():
            raise UserError(f"{s} does not exist (a checkpoint file, a checkpoint directory or a revision "
                            "directory was expected; a hub id is owner/name)")
        if path.is_file():
            items.append(_file_item(path, trust_pickle))
        elif _is_hf_dir(path) and not revisions:
            items.append(_hf_item(str(path), None, str(path), path.name, trust_pickle))
        elif revisions:
            for r in revisions:
                d = path / r
                if not d.is_dir():
                    raise UserError(f"revision {r} is missing: {d} does not exist")
                items.append(_hf_item(str(d), None, str(d), r, trust_pickle))
        else:
            files = src_mod.checkpoint_files(path)
            subdirs = sorted(d for d in path.iterdir() if d.is_dir() and _is_hf_dir(d))
            if files:
                items += [_file_item(f, trust_pickle) for f in files]
            elif subdirs:
                items += [_hf_item(str(d), None, str(d), d.name, trust_pickle) for d in subdirs]
            else:
                raise UserError(f"{path} holds no checkpoints (no {', '.join(src_mod.CHECKPOINT_SUFFIXES)} files, "
                                "no config.json, no revision subdirectories with one)")
    return items


def _is_hf_dir(path: Path) -> bool:
    """A save_pretrained directory: config.json beside Hugging Face weight files (a directory of state_dict files
    with the reference code's config.json is a series, not one checkpoint)."""
    return (path / "config.json").is_file() and any((path / f).is_file() for f, _ in src_mod.HF_WEIGHTS)


def _file_item(path: Path, trust_pickle: bool) -> Item:
    return Item(src_mod.step_of_name(path.name), str(path), lambda: src_mod.open_file(path, trust_pickle), "state_dict")


def _hf_item(src: str, revision: str | None, label: str, name: str, trust_pickle: bool) -> Item:
    return Item(src_mod.step_of_name(name), label,
                lambda: src_mod.hf_source(src, revision, label, trust_pickle), "hf", hf=(src, revision))


def assign_steps(items: list[Item], steps: list[int] | None) -> list[Item]:
    """Each checkpoint's step (explicit list, else its name, else the step recorded in the file), sorted by step."""
    if steps is not None:
        if len(steps) != len(items):
            raise UserError(f"--steps lists {len(steps)} steps for {len(items)} checkpoints")
        for it, s in zip(items, steps):
            it.step = int(s)
    for it in items:
        if it.step is None and it.kind == "state_dict":
            src = it.open()
            it.step = src.step
            src.close()
        if it.step is None:
            raise UserError(f"cannot tell the step of {it.label} from its name (or from a 'step' in the file); "
                            "give --steps S1,S2,...")
        if it.step < 0:
            raise UserError(f"{it.label}: step {it.step} is negative")
    seen: dict[int, str] = {}
    for it in items:
        if it.step in seen:
            raise UserError(f"{it.label} and {seen[it.step]} both have step {it.step}; give --steps S1,S2,...")
        seen[it.step] = it.label
    return sorted(items, key=lambda it: it.step)


# ---------------------------------------------------------------------------- architecture and config
def _hf_arch(item: Item):
    cfg = src_mod.hf_config(item.hf[0], item.hf[1], item.label)
    mt = getattr(cfg, "model_type", None)
    if mt not in archs.ARCHITECTURES or archs.ARCHITECTURES[mt].native:
        raise UserError(f"{item.label}: unknown architecture '{mt}' (supported Hugging Face model types: "
                        f"{', '.join(a for a in archs.ARCHITECTURES if a != 'mini_gpt')})")
    return mt, cfg


def _native_config(shapes: dict, prefix: str, n_layer: int, base: Config, source_cfg: dict | None) -> tuple[Config, dict]:
    """The toolkit Config of a native (mini_gpt-layout) state dict, from its shapes; (config, what was assumed)."""
    emb = shapes.get(prefix + "tok_emb.weight")
    pos = shapes.get(prefix + "pos_emb.weight")
    up = shapes.get(prefix + "blocks.0.mlp.w_up.weight")
    qkv = shapes[prefix + "blocks.0.attn.qkv.weight"]
    d = qkv[1]
    notes = {}
    n_head = (source_cfg or {}).get("n_head")
    if not isinstance(n_head, int) or n_head <= 0 or d % n_head:
        n_head = max(1, d // 32)
        notes["n_head"] = f"not in the checkpoints; assumed head size 32 (n_head {n_head}); set it with --set n_head=N"
    cfg = base.replace(n_layer=n_layer, d_model=d, n_head=n_head, d_ff=up[0] if up else base.d_ff,
                       attn_only=up is None, seq_len=pos[0] if pos else base.seq_len)
    return cfg, {"vocab_size": emb[0] if emb else None, **notes}


def _base_config(preset_name: str | None) -> tuple[Config, str]:
    if preset_name:
        return preset(preset_name), f"preset {preset_name}"
    # the schedule of a foreign run is unknown: no weight decay assumed, so the weight-decayed walk of the nulls is
    # the random walk started at the run's own ‖θ(first)‖ (give --preset or --set lr/wd/warmup for the real one)
    return Config().replace(wd=0.0, warmup=0, lambda_step=0, preset=""), \
        "unknown: wd=0 and no warmup assumed (give --preset or --set lr=..., wd=..., warmup=...)"


# ---------------------------------------------------------------------------- the import
def _series(sources: list[str], revisions: list[str] | None, steps: list[int] | None, init: str | None,
            trust_pickle: bool) -> list[Item]:
    """The checkpoints of the series with their steps, the optional initialisation first as step 0."""
    items = resolve_series(sources, revisions, trust_pickle)
    if init is not None:
        init_items = resolve_series([init], None, trust_pickle)
        if len(init_items) != 1:
            raise UserError(f"--init {init} names {len(init_items)} checkpoints; give one")
        init_items[0].step = 0
    items = assign_steps(items, steps)
    if init is not None:
        if items[0].step == 0:
            raise UserError(f"--init: the series already has a step 0 ({items[0].label})")
        items = [init_items[0]] + items
    if len(items) < 2:
        raise UserError(f"a trajectory needs at least 2 checkpoints (got {len(items)})")
    return items


@dataclass
class _Plan:
    """What the first checkpoint decides for the whole series: architecture, trunk entries, the run's config."""
    arch: Any
    entries: list
    n_head: int | None
    cfg: Any
    contents: str
    extra: dict[str, str]             # toolkit name -> foreign name of the non-trunk tensors (native layout only)
    notes: dict
    hf_cfg: Any
    schedule: str
    first_shapes: dict


def _plan(items: list[Item], out: Path, architecture: str | None, preset_name: str | None,
          overrides: list[str]) -> _Plan:
    hf_cfg = None
    if items[0].kind == "hf":
        arch_name, hf_cfg = _hf_arch(items[0])
        if architecture and architecture != arch_name:
            raise UserError(f"--architecture {architecture}, but {items[0].label} is a {arch_name} checkpoint")
        first = items[0].open()
    else:
        first = items[0].open()
        arch_name = architecture or archs.detect(first.shapes)
    try:
        arch = archs.architecture(arch_name)
        base, schedule = _base_config(preset_name)
        for item in overrides:
            k, v = parse_override(item)
            base = base.replace(**{k: v})
        dims = src_mod.hf_dims(hf_cfg) if hf_cfg is not None else {}
        n_head = dims.get("n_head") or (base.n_head if any(o.replace("-", "_").startswith("n_head=") for o in overrides)
                                        else None)
        entries = archs.plan(arch, first.shapes, items[0].label, n_head)
        n_layer = len(entries) // 4
        notes: dict = {}
        prefix = entries[0].sources[0][: -len("blocks.0.attn.qkv.weight")] if arch.native else ""
        extra: dict[str, str] = {}
        if arch.native:
            cfg, notes = _native_config(first.shapes, prefix, n_layer, base, _source_config(items[0]))
            cfg = _apply(cfg, overrides)
            contents, extra = _native_contents(cfg, first.shapes, prefix, notes)
        else:
            cfg = base.replace(n_layer=n_layer, d_model=entries[1].shape[0], d_ff=entries[2].shape[0],
                               n_head=dims.get("n_head") or base.n_head, seq_len=dims.get("seq_len") or base.seq_len,
                               attn_only=False)
            cfg = _apply(cfg, overrides)
            contents = "trunk"
        # the run's length: the last step, or the preset's / --set's when longer (its schedule then stays as given)
        given = bool(preset_name) or any(o.replace("-", "_").startswith("steps=") for o in overrides)
        cfg = cfg.replace(steps=max(1, items[-1].step, cfg.steps if given else 0), ckpt_contents=contents,
                          out_dir=str(out))
        cfg = cfg.replace(warmup=min(cfg.warmup, cfg.steps), lambda_step=min(cfg.lambda_step, cfg.steps))
        return _Plan(arch, entries, n_head, cfg, contents, extra, notes, hf_cfg, schedule, dict(first.shapes))
    finally:
        first.close()


def _checked(k: int, it: Item, items: list[Item], plan: _Plan):
    """(source, shapes to write, trunk entries by name) of checkpoint k, refused in one line unless it has the
    series' architecture and the first checkpoint's trunk (and, for a whole model, its other tensors)."""
    arch, entries = plan.arch, plan.entries
    if it.kind == "hf" and k > 0:
        mt, _ = _hf_arch(it)
        if mt != arch.name:
            raise UserError(f"{it.label} is a {mt} checkpoint, the series' first a {arch.name} one")
    src = it.open()
    try:
        these = archs.plan(arch, src.shapes, it.label, plan.n_head)
        if [(e.name, e.shape) for e in these] != [(e.name, e.shape) for e in entries]:
            bad = next(((a, b) for a, b in zip(these, entries) if (a.name, a.shape) != (b.name, b.shape)),
                       (None, None))
            raise UserError(f"{it.label} does not have the trunk of {items[0].label}: "
                            f"{_describe_mismatch(bad, len(these), len(entries))}")
        shapes = {e.name: e.shape for e in these}
        for name, foreign in plan.extra.items():
            if src.shapes.get(foreign) != plan.first_shapes[foreign]:
                raise UserError(f"{it.label} lacks {foreign} or holds it in another shape than {items[0].label}")
            shapes[name] = src.shapes[foreign]
    except BaseException:
        src.close()
        raise
    return src, shapes, {e.name: e for e in these}


def _write_series(items: list[Item], out: Path, plan: _Plan, chash: str, progress: bool) -> set[str]:
    """Stream every checkpoint into the run directory; returns the source dtypes seen."""
    dtypes: set[str] = set()
    it = items[0]
    try:
        for k, it in enumerate(items):
            src, shapes, by_name = _checked(k, it, items, plan)
            try:
                dtypes |= {src.dtypes[s] for e in by_name.values() for s in e.sources}

                def fetch(name, src=src, by_name=by_name):
                    if name in by_name:
                        e = by_name[name]
                        return archs.assemble(e, [src.get(s) for s in e.sources], plan.n_head)
                    return src.get(plan.extra[name])
                runio.stream_checkpoint(out, it.step, shapes, fetch, chash, plan.contents)
            finally:
                src.close()
            if progress:
                print(f"imported step {it.step} ({k + 1}/{len(items)}) from {it.label}", file=sys.stderr)
    except BaseException as e:
        runio.write_status(out, "failed", it.step, f"import stopped at {it.label}: {type(e).__name__}: {e}"[:500])
        raise
    return dtypes


def import_trajectory(sources: list[str], out_dir: str | Path, revisions: list[str] | None = None,
                      steps: list[int] | None = None, architecture: str | None = None, init: str | None = None,
                      preset_name: str | None = None, overrides: list[str] = (), trust_pickle: bool = False,
                      progress: bool = True) -> dict:
    """Import the checkpoint series; returns the ``imported`` record written to config.json."""
    t0 = time.time()
    items = _series(sources, revisions, steps, init, trust_pickle)
    kinds = {it.kind for it in items}
    out = runio.check_out_dir(out_dir)
    if out.is_dir() and runio.run_contents(out):
        raise UserError(f"{out} already holds a run ({', '.join(runio.run_contents(out))}); choose another --out-dir")
    plan = _plan(items, out, architecture, preset_name, list(overrides))
    arch, cfg, hf_cfg = plan.arch, plan.cfg, plan.hf_cfg
    mapping = {e.name.replace(".0.", ".{b}.", 1): {"from": [_generic(s, arch) for s in e.sources],
                                                 "transform": e.transform} for e in plan.entries[:4]}
    imported = {
        "source": sources if len(sources) > 1 else sources[0], "kind": sorted(kinds)[0] if len(kinds) == 1 else sorted(kinds),
        "architecture": arch.name, "native_model": bool(arch.native and plan.contents == "full"),
        "checkpoints": [{"step": it.step, "from": it.label} for it in items],
        "revisions": revisions, "init": init, "reference_step": items[0].step,
        "mapping": mapping, "flatten_order": FLATTEN_ORDER,
        "schedule": plan.schedule if not preset_name else f"preset {preset_name}",
        "overrides": list(overrides), "notes": plan.notes,
        "hf_config": json.loads(hf_cfg.to_json_string()) if hf_cfg is not None else None,
    }
    trunk_params = sum(int(torch.Size(e.shape).numel()) for e in plan.entries)
    chash = cfg.hash()
    # every checkpoint is checked (headers only) before anything is written: a bad one leaves no run behind
    for k, it in enumerate(items):
        _checked(k, it, items, plan)[0].close()
    with runio.RunLock(out):
        runio.atomic_write_json(out / "config.json", {
            "config": cfg.to_dict(), "config_hash": chash, "provenance": runio.provenance(),
            "imported": imported, "vocab_size": plan.notes.get("vocab_size"), "trunk_params": trunk_params})
        runio.write_status(out, "running", items[0].step, "importing")
        dtypes = _write_series(items, out, plan, chash, progress)
        imported["copied"] = _copy_reference_files(items, out) if arch.native else []
        imported["source_dtypes"] = sorted(dtypes)
        imported["elapsed_s"] = round(time.time() - t0, 3)
        record = runio.read_json(out / "config.json", "run config")
        record["imported"] = imported
        runio.atomic_write_json(out / "config.json", record)
        runio.write_status(out, "completed", items[-1].step, f"imported {len(items)} checkpoints ({arch.name})")
    low = sorted(d for d in dtypes if d in ("float16", "bfloat16"))
    if low:
        print(f"note: the source weights are {', '.join(low)}, stored here exactly as fp32; drifts smaller than "
              "their rounding (2^-8 relative for bf16, 2^-11 for fp16) are not resolved", file=sys.stderr)
    return imported


# the reference mini_gpt code's pilot_metrics.json keys -> metrics.jsonl's (README, "The run directory")
REFERENCE_METRICS = {"probe_in_acc": "p_in", "probe_ood_acc": "p_ood", "cur_lambda": "lambda"}


def _copy_reference_files(items: list[Item], out: Path) -> list[str]:
    """From the reference code's run directory (where its ckpt_*.pt files lie): its probe codewords.json (the same
    format as ours) and its pilot_metrics.json as metrics.jsonl (p_in/p_ood/lambda renamed), so the analyses that read
    the metrics (p_ood coupling, oscillations) see them. Files that are absent or not of that form are skipped."""
    dirs = {Path(it.label).parent for it in items if it.kind == "state_dict"}
    if len(dirs) != 1:
        return []
    src = dirs.pop()
    copied = []
    cw = src / "codewords.json"
    if cw.is_file():
        from training.core.data import read_codewords
        try:
            words = read_codewords(cw)
            runio.atomic_write_json(out / "codewords.json", {"codewords": words, "count": len(words)})
            copied.append(str(cw))
        except UserError:
            print(f"note: {cw} is not a codewords file; not copied", file=sys.stderr)
    pm = src / "pilot_metrics.json"
    if pm.is_file():
        try:
            rows = runio.read_json(pm, "metrics")
        except UserError:
            rows = None
        if isinstance(rows, list) and all(isinstance(r, dict) and isinstance(r.get("step"), (int, float)) for r in rows):
            (out / "metrics.jsonl").unlink(missing_ok=True)
            for r in sorted(rows, key=lambda r: r["step"]):
                runio.append_metrics(out, {REFERENCE_METRICS.get(k, k): v for k, v in r.items()})
            copied.append(str(pm))
        else:
            print(f"note: {pm} is not a list of per-step records; not copied", file=sys.stderr)
    return copied


def _apply(cfg: Config, overrides) -> Config:
    for item in overrides:
        k, v = parse_override(item)
        cfg = cfg.replace(**{k: v})
    return cfg


def _generic(name: str, arch) -> str:
    hit = arch.block_prefix(name)
    if hit is None:
        return name
    prefix, b = hit
    return prefix[: -len(f"{b}.")] + "{b}." + name[len(prefix):]


def _describe_mismatch(bad, n_these, n_want) -> str:
    a, b = bad
    if a is None or b is None:
        return f"{n_these // 4} blocks against {n_want // 4}"
    return f"{a.name} has shape {list(a.shape)} against {list(b.shape)}" if a.name == b.name else \
        f"{a.name} where {b.name} was expected"


def _source_config(item: Item) -> dict | None:
    """The reference code's config.json next to its checkpoints (it records n_head), when there is one."""
    if item.kind != "state_dict":
        return None
    p = Path(item.label).parent / "config.json"
    if not p.is_file():
        return None
    try:
        d = runio.read_json(p, "config")
    except UserError:
        return None
    if isinstance(d, dict) and isinstance(d.get("config"), dict):
        d = d["config"]
    return d if isinstance(d, dict) else None


def _native_contents(cfg: Config, shapes: dict, prefix: str, notes: dict) -> tuple[str, dict[str, str]]:
    """("full", toolkit name -> foreign name) when the checkpoint holds the toolkit's whole GPT, else ("trunk", {})."""
    vocab = notes.get("vocab_size")
    if not vocab:
        notes["model"] = "no tok_emb.weight: trunk only"
        return "trunk", {}
    with torch.device("meta"):
        model = GPT(cfg.replace(attn_disorder="none"), vocab)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in runio.TIED}
    extra = {k: prefix + k for k in want if not k.startswith("blocks.") or k.split(".", 2)[-1] not in
             ("attn.qkv.weight", "attn.out_proj.weight", "mlp.w_up.weight", "mlp.w_down.weight")}
    missing = [k for k, f in extra.items() if shapes.get(f) != want[k]]
    if missing:
        notes["model"] = (f"not the toolkit's whole GPT ({missing[0]} missing or of another shape): trunk only, "
                          "model analyses refuse")
        return "trunk", {}
    return "full", extra
