"""Shared fixtures: small tokenizers that need no network, and a tiny-run helper."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The suite tests this checkout: the scripts it runs as subprocesses import `training` from ROOT even where
# the environment's editable install (`make install`) points at another checkout. In-process imports get ROOT
# from `pythonpath` in pyproject.toml.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

# GPT-2's pre-tokenisation pattern (public in the GPT-2 paper's code); used to build a small tiktoken
# encoding so that the tiktoken code path is tested offline.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def mini_tiktoken(words=(" ZEBRA", " MANGO", " OK", " the", " is", " word")):
    """A byte-level tiktoken encoding in which each of ``words`` is one token (and nothing else merges)."""
    import tiktoken
    ranks = {bytes([i]): i for i in range(256)}
    for w in words:
        b = w.encode()
        for k in range(2, len(b) + 1):
            ranks.setdefault(b[:k], len(ranks))
    return tiktoken.Encoding(name="mini", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})


@pytest.fixture
def cache_dir(tmp_path_factory):
    """One token/tokenizer cache shared by the whole session (building it is the slow part)."""
    return str(tmp_path_factory.getbasetemp() / "cache")


def run_pilot(*args: str, cache: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [sys.executable, str(ROOT / "training" / "pilot.py"), "--no-progress", *args]
    if "--resume" not in args:
        cmd += ["--set", f"cache_dir={cache}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"pilot failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One completed `test`-preset run shared by the analysis tests (read-only for them)."""
    base = tmp_path_factory.mktemp("tiny_run")
    run = base / "run"
    run_pilot("--preset", "test", "--out-dir", str(run), cache=str(base / "cache"))
    return run


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run an analysis script as a user would; returns the completed process (not checked)."""
    return subprocess.run([sys.executable, str(ROOT / script), "--no-progress", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def run_inprocess(capsys, script, *args):
    """``python script --no-progress args`` run as __main__ in this process (saves a torch import per call).

    Returns (exit code, stdout, stderr)."""
    argv = sys.argv
    sys.argv = [str(ROOT / script), "--no-progress", *args]
    try:
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err
