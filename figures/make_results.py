"""docs/results.md: what the toolkit's own runs say about the paper's claims, written from the ledgers.

For every ledger given (claims.json of analysis/claims/claims.py: one run's, or a seed set's from
scripts/run_seeds.sh) a section with the runs and their regime, the verdicts grouped (confirmed, not
confirmed, inconclusive, not observed at this scale, decay-dominated, not measured, not judged yet), the ledger's
table, and a reading generated from the same numbers: per judged claim the observed mean beside its null, the
effect against the margin. Then the study tables (the Markdown the SGD-control and β2 studies write,
STUDY/analysis/table9.md and table_beta2.md), included verbatim with their headings nested. Nothing on the page is typed by hand except the fixed framing sentences of this script.

Examples:
  python figures/make_results.py                  # the ledgers of make demo-seeds and make demo, into docs/results.md
  python figures/make_results.py --ledger "cpu preset, seeds 42, 271, 314=runs/cpu_seeds/claims.json" \\
      --ledger "quick preset, seed 42=runs/quick/analysis/claims.json" --out docs/results.md
  python figures/make_results.py --ledger "cpu=runs/cpu_seeds/claims.json" \\
      --table "SGD controls (Table 9)=runs/sgd_controls_cpu_s42/analysis/table9.md" --out docs/results.md
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from training.core import runio
from training.core.cli import CommandParser, run_main
from training.core.errors import UserError
from training.studies import claims

DEFAULT_LEDGERS = (("`cpu` preset, seeds 42, 271, 314 (make demo-seeds)", "runs/cpu_seeds/claims.json"),
                   ("`quick` preset, seed 42 (make demo)", "runs/quick/analysis/claims.json"))
# the study tables of the cpu preset, found by the studies' default directories (scripts/run_studies.sh)
DEFAULT_TABLES = (("SGD-family controls (Table 9's decays), seed {seed}", "runs/sgd_controls_cpu_s*/analysis/table9.md"),
                  ("SGD-family controls (decays matched to AdamW's Λ_eff), seed {seed}",
                   "runs/sgd_controls_matched_cpu_s*/analysis/table9.md"),
                  ("SGD-family controls (learning rates at which SGD trains, decays matched), seed {seed}",
                   "runs/sgd_controls_trainable_cpu_s*/analysis/table9.md"),
                  ("AdamW β2 sweep, seed {seed}", "runs/beta_sweep_cpu_s*/analysis/table_beta2.md"))
GROUPS = ("confirmed", "not confirmed", "inconclusive", "inconclusive (single seed)", claims.NOT_OBSERVED,
          claims.DECAY_DOMINATED, "not measured")


def _labelled(text: str, flag: str) -> tuple[str, Path]:
    if "=" not in text:
        raise UserError(f"{flag} expects LABEL=PATH (got '{text}')")
    label, path = text.rsplit("=", 1)
    if not label.strip():
        raise UserError(f"{flag} '{text}' has an empty label")
    return label.strip(), Path(path)


def _f(x) -> str:
    return claims._f(x) if x is None or isinstance(x, (int, float)) else str(x)


def _claims(numbers) -> str:
    numbers = sorted(numbers, key=lambda k: claims.claim_order({"claim": k}))
    return ("claim " if len(numbers) == 1 else "claims ") + ", ".join(map(str, numbers))


def reading(led: dict) -> list[str]:
    """One sentence per claim with a verdict, from the ledger's numbers."""
    out = []
    for c in led["claims"]:
        v = c["verdict"]
        head = f"- Claim {c['claim']} ({c['text']}): **{v}**"
        if "effect" in c and isinstance(c.get("effect"), list):
            n = len(c["effect"])
            seeds = "one run" if n == 1 else f"{n} seeds"
            out.append(f"{head}. {c['statistic']}: observed {_f(c['observed_mean'])} against a null of "
                       f"{_f(sum(c['null']) / n)} over {seeds}; effect {_f(c['effect_mean'])} "
                       f"(per run {', '.join(_f(e) for e in c['effect'])}) against a margin of {_f(c['margin'])}"
                       + (f"; the rule alone, on this one run, leans {c['leaning']}" if n == 1 else "") + "."
                       + (f" {c['why'].rstrip('.')}." if c.get("why") else ""))
        else:
            out.append(f"{head}: {(c.get('why') or '').rstrip('.')}".rstrip(": ") + ".")
    return out


def section(label: str, path: Path, led: dict) -> list[str]:
    groups: dict[str, list[int]] = {}
    for c in led["claims"]:
        groups.setdefault(c["verdict"], []).append(c["claim"])
    out = [f"## {label}", "", f"Ledger: `{path}` over {led['n_runs']} run(s): "
           + ", ".join(f"`{r}`" for r in led["runs"]) + "."]
    if led.get("study_dirs"):
        out[-1] += " Studies: " + ", ".join(f"`{d}`" for d in led["study_dirs"]) + "."
    out += ["", ("Regime: outside the paper's in " + "; ".join(led["regime_flags"])
                 + ". A verdict from these runs neither confirms nor refutes the paper's number; it says what "
                   "holds at this configuration." if led["out_of_regime"]
                 else "Regime: the paper's (every dimensionless knob within tolerance)."), ""]
    for g in GROUPS:
        if g in groups:
            out.append(f"- {g}: {_claims(groups[g])}")
    if led.get("not_yet"):
        out.append(f"- not judged here (their studies were not given): {_claims([x['claim'] for x in led['not_yet']])}")
    table = claims.markdown(led).split("\n")
    start = next(i for i, line in enumerate(table) if line.startswith("| # |"))
    end = next(i for i in range(start, len(table)) if not table[i].startswith("|"))
    out += ["", *table[start:end], "", "Reading:", "", *reading(led), ""]
    return out


def demote(markdown: str, levels: int = 2) -> str:
    """The headings of an included page moved down by `levels`, so that they nest under this page's own."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.split("\n"))


def default_tables() -> list[str]:
    """LABEL=PATH of every study table of the cpu preset that exists, in seed order."""
    import re
    items = []
    for label, pattern in DEFAULT_TABLES:
        found = []
        for path in Path().glob(pattern):
            m = re.search(r"_s(\d+)$", path.parent.parent.name)
            if m:
                found.append((int(m.group(1)), path))
        items += [f"{label.format(seed=seed)}={path}" for seed, path in sorted(found)]
    return items


def page(ledgers: list[tuple[str, Path, dict]], tables: list[tuple[str, Path, str]]) -> str:
    out = ["# Results: the paper's claims on this toolkit's own runs", "",
           "Written by `figures/make_results.py` from the ledgers and tables named below; rerun it after new runs. "
           "The verdict rule and the nulls are those of docs/claims.md; a claim is confirmed only when it beats its "
           "null by the margin in every seed.", ""]
    for label, path, led in ledgers:
        out += section(label, path, led)
    for label, path, text in tables:
        out += [f"## {label}", "", f"From `{path}`.", "", demote(text).strip(), ""]
    return "\n".join(out) + "\n"


def main() -> int:
    first = __doc__.strip().split("\n\n")[0]
    p = CommandParser(description=first, epilog=__doc__.strip()[len(first):].strip())
    p.add_argument("--ledger", action="append", default=[], metavar="LABEL=PATH",
                   help="a claims.json and the heading of its section (repeat per configuration; default: those of "
                        "make demo-seeds and make demo that exist, " + ", ".join(path for _, path in DEFAULT_LEDGERS) + ")")
    p.add_argument("--table", action="append", default=[], metavar="LABEL=PATH",
                   help="a study's Markdown table to include verbatim (repeat; default, when neither --ledger nor "
                        "--table is given: the cpu preset's study tables that exist, "
                        + ", ".join(pattern for _, pattern in DEFAULT_TABLES) + ")")
    p.add_argument("--out", default="docs/results.md", help="the page to write (default docs/results.md)")
    p.add_argument("--no-progress", action="store_true", help="accepted for uniformity")
    args = p.parse_args()
    items = args.ledger or [f"{label}={path}" for label, path in DEFAULT_LEDGERS if Path(path).is_file()]
    if not items:
        raise UserError("no ledger: run make demo-seeds (or make demo) first, or name one with --ledger LABEL=PATH")
    ledgers = []
    for item in items:
        label, path = _labelled(item, "--ledger")
        led = runio.read_json(path, "claims ledger")
        if not isinstance(led, dict) or "claims" not in led:
            raise UserError(f"{path} is not a claims ledger (no 'claims'); write one with analysis/claims/claims.py")
        ledgers.append((label, path, led))
    tables = []
    for item in args.table or ([] if args.ledger else default_tables()):
        label, path = _labelled(item, "--table")
        if not path.is_file():
            raise UserError(f"table {path} does not exist")
        tables.append((label, path, path.read_text()))
    out = Path(args.out)
    runio.atomic_write_text(out, page(ledgers, tables))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
