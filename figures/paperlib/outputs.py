"""One run's generation end to end: compute the numbers, build the tables and draw the figures (each behind a
guard that turns a missing input into a printed skip, or an error with --strict), then write the Markdown
and LaTeX tables, numbers.json and numbers.tex into OUT and, when asked, the LaTeX side into the paper's
generated folder (stale files removed). ``generate`` returns a ``Result`` that the report reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.core import runio
from training.core.errors import UserError

from figures.paperlib.formatting import macro_name
from figures.paperlib.inputs import LEDGER_INPUT, RUN_INPUTS, STUDY_INPUTS, Empty, Inputs, Missing, NotRequested
from figures.paperlib.numbers import NUMBER_SECTIONS, Numbers, flags, numbers_paper, numbers_tex
from figures.paperlib.plots import FIGURES
from figures.paperlib.prose import readings
from figures.paperlib.tables import TABLES, Table, comparison


@dataclass
class Result:
    inputs: Inputs
    numbers: Numbers
    tables: dict[str, Table]
    figures: dict[str, dict]          # name -> {"status", "files", "data"|"reason"}
    skipped: list[str]
    comparison: Table
    readings: list[str]
    out: Path


def _guard(what: str, fn, strict: bool, skipped: list[str], quiet: bool = False) -> tuple[Any, str | None]:
    """Run a builder -> (its value, None) or (None, why it was skipped).

    A missing input is a printed skip (an error with --strict); an input with nothing to show (zero switch
    pairs) is a printed skip; a study that was not asked for is skipped silently; a file without the
    expected fields is a one-line error.
    """
    try:
        return fn(), None
    except NotRequested as m:
        return None, str(m)
    except Empty as m:
        line = f"skipped {what}: {m}"
    except Missing as m:
        line = f"skipped {what}: missing {m}"
        if strict:
            raise UserError(f"{line} (--strict)") from None
    except (KeyError, IndexError, TypeError) as e:
        raise UserError(f"{what}: an input file lacks an expected field ({type(e).__name__}: {e}); re-run the "
                        "analysis that writes it") from None
    if not quiet:
        print(line)
        skipped.append(line)
    return None, line


def generate(inp: Inputs, out: Path, paper_dir: Path | None = None, strict: bool = False,
             draw: bool = True) -> Result:
    """Numbers, tables and figures of one run into ``out`` (and the LaTeX side into ``paper_dir``).

    With ``draw=False`` nothing is drawn or written: the figures already in ``out`` (from an earlier
    run of this script) are listed as they are, and the caller gets the numbers and tables in memory.
    """
    out = Path(out)
    skipped: list[str] = []
    N = Numbers()
    for name, fn, _ in NUMBER_SECTIONS:
        _guard(f"numbers ({name})", lambda fn=fn: fn(inp, N), strict, skipped, quiet=True)  # tables report skips
    numbers_paper(N)
    tables = {}
    for name, fn in TABLES:
        t, _ = _guard(name, lambda fn=fn: fn(inp), strict, skipped)
        if t is not None:
            tables[name] = t
    comp = comparison(inp, N)
    tables["comparison"] = comp
    figs: dict[str, dict] = {}
    if draw:
        from figures import style
        for name, fn in FIGURES:
            made, why = _guard(name, lambda fn=fn: fn(inp), strict, skipped)
            if made is None:
                figs[name] = {"status": "skipped", "reason": why}
                continue
            fig, data = made
            files = style.save(fig, out / name)
            figs[name] = {"status": "written", "files": [str(p) for p in files], "data": data}
            print(f"wrote {out / name}.png/.pdf")
    else:
        for name, _ in FIGURES:
            png = out / f"{name}.png"
            figs[name] = ({"status": "written", "files": [str(png)]} if png.exists() else
                          {"status": "skipped", "reason": f"not drawn: no {png} (run figures/make_paper_figures.py)"})
    res = Result(inp, N, tables, figs, skipped, comp, readings(inp, N), out)
    if draw:
        write_outputs(res, paper_dir)
    return res


def _write_text(path: Path, text: str) -> None:
    runio.atomic_write_text(path, text)


def write_outputs(res: Result, paper_dir: Path | None) -> None:
    inp, N, out = res.inputs, res.numbers, res.out
    fl = flags(inp, N)
    tex = numbers_tex(inp, N, fl)
    payload = {
        "run_dir": str(inp.run_dir), "generated_by": "figures/make_paper_figures.py",
        "inputs": {name: ("present" if inp.has(name) else "missing")
                   for name in list(RUN_INPUTS) + list(STUDY_INPUTS) + [LEDGER_INPUT[0]]},
        "study_dirs": {k: str(v) for k, v in inp.study_dirs.items()},
        "ledger": None if inp.ledger_path is None else str(inp.ledger_path),
        "flags": fl,
        "numbers": {k: {"value": n.value, "text": n.text("md"), "tex": n.text("tex"), "macro": "\\" + macro_name(k),
                        "kind": n.kind, "source": n.source} for k, n in N.items()},
        "tables": {k: t.raw() for k, t in res.tables.items()},
        "figures": res.figures,
        "readings": res.readings,
        "skipped": res.skipped,
    }
    tdir = out / "tables"
    for key, t in res.tables.items():
        _write_text(tdir / f"{key}.md", t.to_md())
        _write_text(tdir / f"{key}.tex", t.to_tex())
    runio.atomic_write_json(out / "numbers.json", payload)
    _write_text(out / "numbers.tex", tex)
    print(f"wrote {len(res.tables)} tables to {tdir}, {len(N)} numbers to {out / 'numbers.json'} and numbers.tex")
    if paper_dir is not None:
        write_paper_dir(res, Path(paper_dir), tex, payload)


def write_paper_dir(res: Result, pdir: Path, tex: str, payload: dict) -> None:
    """The LaTeX side: numbers.tex, numbers.json, tables/*.tex and figures/*.pdf; stale generated files removed."""
    import shutil
    (pdir / "tables").mkdir(parents=True, exist_ok=True)
    (pdir / "figures").mkdir(parents=True, exist_ok=True)
    _write_text(pdir / "numbers.tex", tex)
    figures = {name: ({**f, "files": [f"figures/{name}.pdf"]} if f.get("status") == "written" else f)
               for name, f in payload["figures"].items()}
    runio.atomic_write_json(pdir / "numbers.json", {**payload, "figures": figures})
    known_tables = {name for name, _ in TABLES} | {"comparison"}
    for name in known_tables:
        path = pdir / "tables" / f"{name}.tex"
        if name in res.tables:
            _write_text(path, res.tables[name].to_tex())
        elif path.exists():
            path.unlink()
    for name, _ in FIGURES:
        dst = pdir / "figures" / f"{name}.pdf"
        src = res.out / f"{name}.pdf"
        if res.figures.get(name, {}).get("status") == "written":
            runio.atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
        elif dst.exists() and res.figures:
            dst.unlink()
    print(f"wrote the paper's numbers, tables and figures to {pdir}")
