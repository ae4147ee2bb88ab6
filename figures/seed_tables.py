"""The paper's per-seed tables over several seeds: Tables 2, 4, 6/7 and the reheating table, one column per seed
and the mean ± sd over seeds (training.geometry.stats.mean_sd, the ledger's aggregation), each beside its null.

From the runs' own analysis files only (nothing recomputed):

- Table 2: raw PC1 of the trunk and of every block (analysis/trajectory_pca.json), beside the trunk's random-walk
  null (its ``null_profile``);
- Table 4: the sign-flip step t* of C(t) for the trunk and block 0 (analysis/update_alignment.json), beside the
  random walk's and the weight-decayed walk's t* (trajectory_pca.json ``null_profile.sign_flip``);
- Tables 6/7: q(v_b) and the anisotropy α at each analysed checkpoint (analysis/rayleigh_quotients.json; the seeds
  of one configuration share their checkpoint steps), and α = 1 as the isotropic value;
- the reheating table: per learning rate the peak p_ood and the re-entry gain G (analysis/reheating.json).

A table whose file is missing in a run is listed under "not built" with the command that writes it.

Output: OUT/seed_tables.md and OUT/seed_tables.json (written atomically).

Example:  python figures/seed_tables.py --run-dir runs/cpu_seeds/s42 --run-dir runs/cpu_seeds/s271 --out-dir runs/cpu_seeds
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from figures.paperlib.formatting import fmt
from training.core import runio
from training.core.cli import CommandParser, run_main
from training.core.errors import UserError
from training.geometry.stats import mean_sd

SOURCES = {"table2": ("trajectory_pca", "analysis/backbone/trajectory_pca.py"),
           "table4": ("update_alignment", "analysis/backbone/update_alignment.py"),
           "table6": ("rayleigh_quotients", "analysis/fisher/rayleigh_quotients.py"),
           "reheating": ("reheating", "experiments/reheating/reheat.py")}


def _read(run: Path, name: str) -> dict | None:
    path = runio.analysis_dir(run) / f"{name}.json"
    return runio.read_json(path, f"{name} result") if path.exists() else None


def _row(label: str, values: list, kind: str, null: str = "") -> dict:
    return {"label": label, "values": values, **mean_sd(values), "kind": kind, "null": null}


def table2(runs: list[Path], data: list[dict]) -> list[dict]:
    rows = [_row("trunk", [d["trunk"]["raw"]["pc1"] for d in data], "pct",
                 "random walk " + ", ".join(fmt((d["trunk"].get("null_profile") or {}).get("random_walk", {}).get("pc1"),
                                                "pct") for d in data))]
    for b in range(len(data[0]["blocks"])):
        rows.append(_row(f"block {b}", [d["blocks"][b]["raw"]["pc1"] if b < len(d["blocks"]) else None for d in data],
                         "pct"))
    return rows


def table4(runs: list[Path], data: list[dict]) -> list[dict]:
    walks = [(_read(r, "trajectory_pca") or {}).get("trunk", {}).get("null_profile", {}).get("sign_flip") or {} for r in runs]
    null = "random walk " + ", ".join(fmt(w.get("t_star_random_walk"), "step") for w in walks) + \
        "; weight-decayed walk " + ", ".join(fmt(w.get("t_star_weight_decayed_walk"), "step") for w in walks)
    return [_row("trunk t*", [d["trunk"].get("sign_flip_step") for d in data], "step", null),
            _row("block 0 t*", [d["blocks"][0].get("sign_flip_step") if d.get("blocks") else None for d in data],
                 "step")]


def table6(runs: list[Path], data: list[dict]) -> list[dict]:
    steps = sorted({c["step"] for d in data for c in d["checkpoints"]})
    by = [{c["step"]: c for c in d["checkpoints"]} for d in data]
    rows = []
    for s in steps:
        rows.append(_row(f"step {s}: q(v_b)", [(b.get(s) or {}).get("q_backbone") for b in by], "sci"))
        rows.append(_row(f"step {s}: α", [(b.get(s) or {}).get("anisotropy") for b in by], "x", "isotropic 1×"))
    return rows


def reheating(runs: list[Path], data: list[dict]) -> list[dict]:
    lrs = sorted({t["lr"] for d in data for t in d["table"]}, reverse=True)
    rows = []
    for lr in lrs:
        pick = [next((t for t in d["table"] if t["lr"] == lr), {}) for d in data]
        rows.append(_row(f"lr {fmt(lr, 'lr')}: peak p_ood", [t.get("peak_p_ood") for t in pick], "num3",
                         "start p_ood " + ", ".join(fmt(t.get("p0"), "num3") for t in pick)))
        rows.append(_row(f"lr {fmt(lr, 'lr')}: G", [t.get("G") for t in pick], "num3"))
    return rows


BUILDERS = {"table2": (table2, "Table 2 over seeds: raw PC1 of the drift (%)"),
            "table4": (table4, "Table 4 over seeds: sign-flip step t* of C(t)"),
            "table6": (table6, "Tables 6/7 over seeds: Fisher Rayleigh quotient along v_b and anisotropy α"),
            "reheating": (reheating, "Reheating table over seeds: peak p_ood and re-entry gain G per learning rate")}


def build(runs: list[Path]) -> dict:
    seeds = [runio.read_run_config(r).seed for r in runs]
    out = {"runs": [str(r) for r in runs], "seeds": seeds, "tables": {}, "not_built": {}}
    for key, (fn, title) in BUILDERS.items():
        name, script = SOURCES[key]
        data = [_read(r, name) for r in runs]
        missing = [str(r) for r, d in zip(runs, data) if d is None]
        if missing:
            out["not_built"][key] = f"no analysis/{name}.json in {', '.join(missing)} (run {script} --run-dir RUN)"
            continue
        out["tables"][key] = {"title": title, "rows": fn(runs, data)}
    return out


def markdown(res: dict) -> str:
    seeds = res["seeds"]
    lines = ["# The paper's tables over seeds", "",
             f"Seeds {', '.join(map(str, seeds))}; mean ± sd over seeds (sd with n − 1). Runs: "
             + ", ".join(f"`{r}`" for r in res["runs"]) + ". Generated by `figures/seed_tables.py` from the runs' "
             "analysis files.", ""]
    for t in res["tables"].values():
        lines += [f"## {t['title']}", "",
                  "| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | null |",
                  "|:---|" + "---:|" * len(seeds) + "---:|:---|"]
        for r in t["rows"]:
            k = r["kind"]
            ms = "—" if r["mean"] is None else fmt(r["mean"], k) + ("" if r["sd"] is None else " ± " + fmt(r["sd"], k))
            lines.append(f"| {r['label']} | " + " | ".join(fmt(v, k) for v in r["values"]) + f" | {ms} | {r['null']} |")
        lines.append("")
    if res["not_built"]:
        lines += ["## Not built", ""] + [f"- {k}: {v}" for k, v in res["not_built"].items()] + [""]
    return "\n".join(lines)


def main() -> int:
    first = __doc__.strip().split("\n\n")[0]
    ap = CommandParser(description=first, epilog=__doc__.strip()[len(first):].strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", action="append", required=True, help="a run of the configuration (repeat per seed)")
    ap.add_argument("--out-dir", required=True, help="where seed_tables.md and seed_tables.json go")
    args = ap.parse_args()
    runs = [Path(r) for r in args.run_dir]
    for r in runs:
        if not (r / "config.json").is_file():
            raise UserError(f"{r} is not a run directory (no config.json)")
    out = runio.check_out_dir(args.out_dir)
    res = build(runs)
    out.mkdir(parents=True, exist_ok=True)
    runio.atomic_write_json(out / "seed_tables.json", res)
    runio.atomic_write_text(out / "seed_tables.md", markdown(res))
    print(f"wrote {out / 'seed_tables.md'} ({len(res['tables'])} tables; not built: {', '.join(res['not_built']) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
