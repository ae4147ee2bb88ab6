"""Corpora, the token cache, and the language-model + probe task.

Corpora (README, "Training"): ``synthetic`` (built in, offline), ``tinystories`` (Hugging Face ``datasets``),
``files`` (local .txt / .jsonl / .parquet), ``fineweb`` (GPT-2 token shards, :mod:`training.core.fineweb`). Each is tokenised once into a memory-mapped cache keyed by
(corpus, tokenizer): ``<cache>/tokens/<key>/{train,val}.bin`` hold every document followed by an
end-of-text token, ``{train,val}_offsets.npy`` the document starts. Batches are cut from these arrays
with numpy; nothing is tokenised in the training loop.

Training batches are a pure function of (data seed, step, micro-batch): each micro-batch draws from its
own ``numpy`` generator seeded with that triple. A resumed run therefore sees exactly the batches an
uninterrupted run would, without any data-loader state.

Evaluation sets (validation windows and the two probe sets) are drawn from the validation split with
generators seeded by ``eval_seed`` only, so runs with different training seeds are measured on the same
examples. Probe eval sets use validation text as filler (skydancerosel/mini_gpt's ``training/dataset.py`` used random token ids).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import torch

from training.core import runio
from training.core.batch import Batch, TokenSplit
from training.core.config import Config
from training.core.data_probe import (
    KEY_TEMPLATES,
    QUERY_TEMPLATES,
    ProbeTokens,
    build_probe_tokens,
    pseudo_words,
    select_codewords,
    splice_probe,
)
from training.core.data_synthetic import generate_stories
from training.core.data_tokenizers import BPETokenizer, Tokenizer, add_word_tokens, gpt2_tokenizer, train_bpe
from training.core.errors import UserError
from training.core.fineweb import fineweb_identity, fineweb_splits
from training.core.losses import probe_stats, token_ce

CACHE_FORMAT = 2       # 2: deterministic BPE training
SYNTHETIC_VERSION = 1     # bump when the synthetic generator's output changes


def default_cache_dir() -> Path:
    return Path(__file__).resolve().parent.parent / ".cache"


def cache_root(cfg: Config) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


# ---------------------------------------------------------------------------- corpora
def corpus_identity(cfg: Config) -> dict:
    """What determines the corpus' documents (the key of the caches built from it)."""
    ident = {"corpus": cfg.corpus, "n_train": cfg.n_train_docs, "n_val": cfg.n_val_docs, "min_chars": cfg.min_doc_chars}
    if cfg.corpus == "synthetic":
        ident.update(seed=cfg.corpus_seed, version=SYNTHETIC_VERSION)
    elif cfg.corpus == "fineweb":
        ident["shards"] = fineweb_identity(cfg.corpus_path)
    elif cfg.corpus == "files":
        files = _corpus_files(cfg.corpus_path)
        ident["files"] = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return ident


def load_corpus(cfg: Config) -> tuple[list[str], list[str]]:
    """(train documents, validation documents) of the configured corpus."""
    if cfg.corpus == "synthetic":
        docs = generate_stories(cfg.n_train_docs + cfg.n_val_docs, cfg.corpus_seed)
        docs = [d for d in docs if len(d) >= cfg.min_doc_chars]
        return docs[:cfg.n_train_docs], docs[cfg.n_train_docs:]
    if cfg.corpus == "tinystories":
        return _load_tinystories(cfg)
    docs = []
    for f in _corpus_files(cfg.corpus_path):
        docs.extend(d for d in _read_documents(f) if len(d.strip()) >= cfg.min_doc_chars)
    if len(docs) < 2:
        raise UserError(f"corpus {cfg.corpus_path} has fewer than 2 documents of at least {cfg.min_doc_chars} characters")
    n_val = min(cfg.n_val_docs, max(1, len(docs) // 10))
    return docs[:-n_val][:cfg.n_train_docs], docs[-n_val:]


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_tinystories(cfg: Config) -> tuple[list[str], list[str]]:
    if not _hub_reachable():
        # use only the local cache; without this, datasets retries the network for half a minute
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import datasets
        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        splits = {s: datasets.load_dataset("roneneldan/TinyStories", split=s) for s in ("train", "validation")}
    except Exception as e:
        raise UserError("TinyStories could not be loaded from the Hugging Face hub or its local cache "
                        f"({type(e).__name__}); download it once with network access (datasets caches it under "
                        "~/.cache/huggingface) or train offline with --preset quick / --set corpus=synthetic") from None

    def first(split, n):
        out = []
        for text in split["text"]:
            if text and len(text.strip()) >= cfg.min_doc_chars:
                out.append(text.strip())
                if len(out) == n:
                    break
        return out
    return first(splits["train"], cfg.n_train_docs), first(splits["validation"], cfg.n_val_docs)


def _corpus_files(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".txt", ".jsonl", ".parquet"))
    elif p.is_file():
        files = [p]
    else:
        raise UserError(f"corpus_path {path} does not exist")
    if not files or any(f.suffix not in (".txt", ".jsonl", ".parquet") for f in files):
        raise UserError(f"corpus_path {path} must be a .txt, .jsonl or .parquet file or a directory of them")
    return files


def _read_documents(path: Path) -> list[str]:
    """Documents of one file: .txt split on <|endoftext|> (else on blank lines); .jsonl / .parquet 'text' field."""
    try:
        if path.suffix == ".txt":
            text = path.read_text(encoding="utf-8")
            parts = text.split("<|endoftext|>") if "<|endoftext|>" in text else text.split("\n\n")
            return [p.strip() for p in parts if p.strip()]
        if path.suffix == ".jsonl":
            out = []
            with path.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                            raise UserError(f"{path}:{i}: each line must be a JSON object with a 'text' string")
                        out.append(row["text"])
            return out
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise UserError(f"{path} has no 'text' column (columns: {', '.join(table.column_names)})")
        return [t for t in table.column("text").to_pylist() if isinstance(t, str)]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read corpus file {path}: {e}") from None
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise UserError(f"corpus file {path} disappeared while reading") from None
        raise UserError(f"cannot read corpus file {path} ({e})") from None


# ---------------------------------------------------------------------------- cache plumbing
def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _publish_dir(tmp: Path, final: Path) -> None:
    """Atomically move a fully written temp directory into place (a concurrent builder may have won)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise


class _LazyCorpus:
    """Loads the corpus documents at most once, and only if some cache has to be built."""

    def __init__(self, cfg: Config):
        self.cfg, self._docs = cfg, None

    def get(self) -> tuple[list[str], list[str]]:
        if self._docs is None:
            self._docs = load_corpus(self.cfg)
        return self._docs


def get_tokenizer(cfg: Config, corpus: _LazyCorpus | None = None) -> Tokenizer:
    """The run's tokenizer: GPT-2 (tiktoken) or a BPE trained on this corpus (cached by corpus and size)."""
    if cfg.tokenizer == "gpt2":
        return gpt2_tokenizer()
    corpus = corpus or _LazyCorpus(cfg)
    key = _key({"corpus": corpus_identity(cfg), "vocab": cfg.bpe_vocab_size, "codewords": cfg.n_codewords,
                "codeword_seed": cfg.codeword_seed, "format": CACHE_FORMAT})
    final = cache_root(cfg) / "bpe" / key
    path = final / "tokenizer.json"
    if not path.exists():
        train_docs, _ = corpus.get()
        tok = train_bpe(_with_probe_templates(train_docs, cfg), cfg.bpe_vocab_size)
        tok = add_word_tokens(tok, bpe_codeword_candidates(cfg))
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        tok.save(tmp / "tokenizer.json")
        _publish_dir(tmp, final)
    return BPETokenizer.load(path)


def _with_probe_templates(docs: list[str], cfg: Config):
    """The training documents plus the probe templates at the rate they occur in training (p_probe).

    The templates are part of the training distribution, so the tokenizer learns them as it would any
    frequent phrase (short key and query sequences); the codewords are added separately.
    """
    yield from docs
    repeats = max(1, round(cfg.p_probe * len(docs) / len(KEY_TEMPLATES)))
    for key, query in zip(KEY_TEMPLATES, QUERY_TEMPLATES):
        text = key.format("").replace(" .", ".") + " " + query.format("").rstrip()
        for _ in range(repeats):
            yield text


def bpe_codeword_candidates(cfg: Config) -> list[str]:
    return pseudo_words(cfg.n_codewords, cfg.codeword_seed)


def token_cache(cfg: Config, tok: Tokenizer, corpus: _LazyCorpus | None = None) -> dict[str, TokenSplit]:
    """Tokenise the corpus once into memmaps keyed by (corpus, tokenizer); return the train and val splits."""
    if cfg.corpus == "fineweb":     # already tokenised (GPT-2 ids in uint16 shards): read in place
        return fineweb_splits(cfg)
    corpus = corpus or _LazyCorpus(cfg)
    key = _key({"corpus": corpus_identity(cfg), "tokenizer": tok.identity, "format": CACHE_FORMAT})
    final = cache_root(cfg) / "tokens" / key
    if not (final / "meta.json").exists():
        train_docs, val_docs = corpus.get()
        if not train_docs or not val_docs:
            raise UserError(f"corpus '{cfg.corpus}' gave {len(train_docs)} training and {len(val_docs)} validation documents; "
                            "both must be non-empty")
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        dtype = np.uint16 if tok.vocab_size <= 65535 else np.uint32
        for name, docs in (("train", train_docs), ("val", val_docs)):
            lengths = np.zeros(len(docs) + 1, dtype=np.int64)
            with open(tmp / f"{name}.bin", "wb") as fh:
                for start in range(0, len(docs), 4096):
                    chunk = tok.encode_batch(docs[start:start + 4096])
                    flat = np.fromiter((t for ids in chunk for t in (*ids, tok.eos_id)), dtype=dtype)
                    fh.write(flat.tobytes())
                    lengths[start + 1:start + 1 + len(chunk)] = [len(ids) + 1 for ids in chunk]
            np.save(tmp / f"{name}_offsets.npy", np.cumsum(lengths))
        (tmp / "meta.json").write_text(json.dumps({"dtype": np.dtype(dtype).name, "tokenizer": tok.identity,
                                                   "corpus": corpus_identity(cfg)}, indent=1))
        _publish_dir(tmp, final)
    meta = json.loads((final / "meta.json").read_text())
    splits = {}
    for name in ("train", "val"):
        offsets = np.load(final / f"{name}_offsets.npy")
        tokens = np.memmap(final / f"{name}.bin", dtype=meta["dtype"], mode="r")
        if len(tokens) != offsets[-1]:
            raise UserError(f"token cache {final} is corrupt ({name}.bin has {len(tokens)} tokens, expected "
                            f"{offsets[-1]}); delete that directory and run again")
        splits[name] = TokenSplit(tokens, offsets)
    return splits


# ---------------------------------------------------------------------------- the task
EVAL_SETS = ("val", "probe_in", "probe_ood")     # the fixed evaluation sets, in the order they are evaluated


class LMProbeTask:
    """Language modelling on the corpus with the key-retrieval probe injected at rate p_probe."""

    def __init__(self, cfg: Config, tok: Tokenizer, splits: dict[str, TokenSplit], codewords: list[str]):
        self.cfg, self.tok = cfg, tok
        self.train, self.val = splits["train"], splits["val"]
        self.codewords = codewords
        self.probe: ProbeTokens = build_probe_tokens(tok, codewords)
        L = cfg.seq_len + 1
        need = self.probe.max_key_len + self.probe.max_query_len + 3
        for name in ("train_gap", "eval_in_gap", "eval_ood_gap"):
            if getattr(cfg, name)[1] + need > L:
                raise UserError(f"{name} up to {getattr(cfg, name)[1]} does not fit seq_len={cfg.seq_len} with this "
                                f"tokenizer's templates (need seq_len >= {getattr(cfg, name)[1] + need - 1})")
        if cfg.window == "packed" and len(self.train.tokens) <= L:
            raise UserError(f"the training split has only {len(self.train.tokens)} tokens, fewer than one window")
        self._eval_cache: dict[str, Batch] = {}
        self._probe_order: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ----- windows of plain text
    def _windows(self, split: TokenSplit, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n windows of seq_len+1 tokens and their real lengths (story mode pads short stories with EOS)."""
        L = self.cfg.seq_len + 1
        if self.cfg.window == "packed":
            starts = rng.integers(0, len(split.tokens) - L + 1, size=n)
            idx = starts[:, None] + np.arange(L)
            return np.asarray(split.tokens[idx], dtype=np.int64), np.full(n, L)
        docs = rng.integers(0, split.n_docs, size=n)
        out = np.full((n, L), self.tok.eos_id, dtype=np.int64)
        lengths = np.empty(n, dtype=np.int64)
        for i, d in enumerate(docs):
            a, b = split.offsets[d], split.offsets[d + 1]
            if b - a > L:
                a = a + int(rng.integers(0, b - a - L + 1))
                b = a + L
            out[i, :b - a] = split.tokens[a:b]
            lengths[i] = b - a
        return out, lengths

    def _make_batch(self, windows: np.ndarray, lengths: np.ndarray, probe_rows: np.ndarray,
                    rng: np.random.Generator, gap: tuple[int, int]) -> Batch:
        n, L = windows.shape
        mask = np.zeros((n, L - 1), dtype=bool)
        for i in np.flatnonzero(probe_rows):
            seq, code_pos = splice_probe(windows[i], self.probe, rng, gap)
            windows[i] = seq
            lengths[i] = max(lengths[i], code_pos + 1)
            mask[i, code_pos - 1] = True
        x = torch.from_numpy(windows[:, :-1].copy())
        y = torch.from_numpy(windows[:, 1:].copy())
        pad = np.arange(L - 1)[None, :] >= (lengths[:, None] - 1)
        y[torch.from_numpy(pad)] = -100
        return Batch(x, y, torch.from_numpy(mask))

    def train_batch(self, step: int, micro: int) -> Batch:
        """The micro-batch ``micro`` of update ``step``: a pure function of (data seed, step, micro)."""
        return self.sample_batch([self.cfg.effective_data_seed, step, micro])

    def sample_batch(self, key: list[int], batch_size: int | None = None, p_probe: float | None = None) -> Batch:
        """A training-distribution batch drawn from a generator seeded with ``key`` (a list of ints).

        Analyses draw their mini-batches here with keys of their own (e.g. [seed, 7, i]), so the same
        seed gives the same batches and no training batch is replayed by accident.
        """
        n = self.cfg.batch_size if batch_size is None else batch_size
        p = self.cfg.p_probe if p_probe is None else p_probe
        rng = np.random.default_rng(key)
        windows, lengths = self._windows(self.train, rng, n)
        probe_rows = rng.random(n) < p
        return self._make_batch(windows, lengths, probe_rows, rng, self.cfg.train_gap)

    # ----- fixed evaluation sets (depend on eval_seed only)
    def eval_set(self, name: str) -> Batch:
        """'val' (plain validation windows), 'probe_in' or 'probe_ood' (every example a probe)."""
        if name not in self._eval_cache:
            tag = {"val": 0, "probe_in": 1, "probe_ood": 2}[name]
            rng = np.random.default_rng([self.cfg.eval_seed, tag])
            n = self.cfg.n_val_seqs if name == "val" else self.cfg.n_probe_eval
            windows, lengths = self._windows(self.val, rng, n)
            if name == "val":
                rows = np.zeros(n, dtype=bool)
                gap = self.cfg.eval_in_gap
            else:
                rows = np.ones(n, dtype=bool)
                gap = self.cfg.eval_in_gap if name == "probe_in" else self.cfg.eval_ood_gap
            self._eval_cache[name] = self._make_batch(windows, lengths, rows, rng, gap)
        return self._eval_cache[name]


    def _probe_batches(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(order of the examples, columns each needs) for evaluating probe set ``name``: the stored order and full
        windows, or with ``probe_eval_crop`` the examples sorted by where their answer ends, each cut after it."""
        if name not in self._probe_order:
            s = self.eval_set(name)
            n, T = s.probe_mask.shape
            if self.cfg.probe_eval_crop:
                cols = torch.arange(1, T + 1).expand(n, T)
                ends = torch.where(s.probe_mask, cols, torch.zeros_like(cols)).max(dim=1).values
                ends = torch.where(ends > 0, ends, torch.full_like(ends, T))
                order = torch.sort(ends, stable=True).indices
            else:
                ends, order = torch.full((n,), T), torch.arange(n)
            self._probe_order[name] = (order, ends)
        return self._probe_order[name]

    # ----- evaluation
    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device, amp=contextlib.nullcontext,
                 sets: tuple[str, ...] = EVAL_SETS) -> dict:
        """val_loss on the fixed validation windows; p/nll/lm on the fixed probe sets (one forward per set).

        ``sets`` restricts the evaluation to some of the three sets (e.g. only ``probe_ood``).
        """
        was_training = model.training
        model.eval()
        bs = self.cfg.eval_batch_size
        out: dict[str, float] = {}
        try:
            if "val" in sets:
                val = self.eval_set("val")
                total, count = torch.zeros((), device=device), torch.zeros((), device=device)
                for i in range(0, len(val.x), bs):
                    x, y = val.x[i:i + bs].to(device), val.y[i:i + bs].to(device)
                    with amp():
                        logits = model(x)
                    ce = token_ce(logits, y)
                    total += ce.sum()
                    count += (y != -100).sum()
                out["val_loss"] = (total / count).item()
            for name, tag in (("probe_in", "in"), ("probe_ood", "ood")):
                if name not in sets:
                    continue
                s = self.eval_set(name)
                order, ends = self._probe_batches(name)
                sums: dict[str, torch.Tensor] = {}
                for i in range(0, len(s.x), bs):
                    rows, end = order[i:i + bs], int(ends[order[i:i + bs]].max())
                    b = Batch(s.x[rows, :end], s.y[rows, :end], s.probe_mask[rows, :end]).to(device)
                    with amp():
                        logits = model(b.x)
                    for k, v in probe_stats(logits, b.y, b.probe_mask).items():
                        sums[k] = sums.get(k, 0) + v
                sums = {k: float(v) for k, v in sums.items()}
                out[f"p_{tag}"] = sums["correct"] / max(1.0, sums["scored"])
                out[f"nll_{tag}"] = sums["nll_sum"] / max(1.0, sums["nll_n"])
                out[f"lm_{tag}"] = sums["lm_sum"] / max(1.0, sums["lm_n"])
        finally:
            model.train(was_training)
        return out

    def resets_optimizer(self, step: int) -> bool:
        """Never: one stage, one optimizer state."""
        return False


def prepare_lm_probe(cfg: Config, run_dir: Path | None = None) -> LMProbeTask:
    """Tokenizer, token cache and codewords for ``cfg``; with ``run_dir``, reuse or record them there.

    A run directory's tokenizer.json and codewords.json, when present, are authoritative (a resumed or
    analysed run uses exactly what it was trained with).
    """
    corpus = _LazyCorpus(cfg)
    tok_path = run_dir / "tokenizer.json" if run_dir else None
    if tok_path is not None and tok_path.exists():
        tok: Tokenizer = BPETokenizer.load(tok_path)
    else:
        tok = get_tokenizer(cfg, corpus)
        if tok_path is not None and isinstance(tok, BPETokenizer):
            tok.save(tok_path)
    cw_path = run_dir / "codewords.json" if run_dir else None
    if cw_path is not None and cw_path.exists():
        codewords = read_codewords(cw_path)
    else:
        candidates = bpe_codeword_candidates(cfg) if isinstance(tok, BPETokenizer) else None
        codewords = select_codewords(tok, cfg.n_codewords, cfg.codeword_seed, candidates)
        if cw_path is not None:
            runio.atomic_write_json(cw_path, {"codewords": codewords, "count": len(codewords)})
    return LMProbeTask(cfg, tok, token_cache(cfg, tok, corpus), codewords)


def run_tokenizer(run_dir: Path, cfg: Config) -> Tokenizer:
    """The tokenizer a run was trained with, without building its token cache: the run directory's
    tokenizer.json (a trained BPE) or GPT-2's; a run with neither (a synthetic task, a BPE run whose
    tokenizer.json is missing) is refused in one line."""
    path = Path(run_dir) / "tokenizer.json"
    if path.exists():
        return BPETokenizer.load(path)
    if cfg.task == "lm_probe" and cfg.tokenizer == "gpt2":
        return gpt2_tokenizer()
    raise UserError(f"{run_dir} has no tokenizer (task {cfg.task}, tokenizer {cfg.tokenizer}, no tokenizer.json): "
                    "this analysis needs a text-trained run")


def read_codewords(path: Path) -> list[str]:
    try:
        d = json.loads(Path(path).read_text())
        words = d["codewords"]
        assert isinstance(words, list) and all(isinstance(w, str) for w in words)
        return words
    except (OSError, ValueError, KeyError, AssertionError):
        raise UserError(f"{path} is not a valid codewords file ({{\"codewords\": [...]}}); restore it from the run's "
                        "original directory") from None
