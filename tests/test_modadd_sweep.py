"""The (m_max, C) difficulty sweep: end to end at the test size (resume skips finished runs), its per-cell
statistics against closed forms, and its one-line errors."""
import json
import math

import pytest

from conftest import run_inprocess
from training.studies import modadd_sweep as sw


def _wilson(k, n, z=1.959963984540054):
    """The Wilson score interval from its closed form."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_heldout_accuracy_against_closed_forms():
    final = {"acc_m1": 0.75, "acc_m2": 0.25}          # 24 + 8 of 64 correct on 32 sequences per m
    r = sw.heldout_accuracy(final, [1, 2], 32, 1 / 8)
    assert (r["k"], r["n"]) == (32, 64) and r["acc"] == 0.5
    assert r["ci95"] == pytest.approx(_wilson(32, 64), abs=1e-9)
    tail = sum(math.comb(64, j) * (1 / 8) ** j * (7 / 8) ** (64 - j) for j in range(32, 65))
    assert r["p_above_chance"] == pytest.approx(tail, rel=1e-9)
    assert r["learned"]                                # 0.5 >= 1/8 + 0.2
    at_chance = sw.heldout_accuracy({"acc_m1": 10 / 64}, [1], 64, 1 / 8)
    assert not at_chance["learned"] and at_chance["p_above_chance"] > 0.2


def test_sweep_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, so, err = run_inprocess(capsys, "experiments/modadd/difficulty_sweep.py", "--preset", "test", "--jobs", "1",
                                  "--out-dir", str(out))
    assert code == 0, err
    res = json.loads((out / "analysis" / "modadd_sweep.json").read_text())
    cells = {(c["m_max"], c["classes"]): c for c in res["cells"]}
    assert set(cells) == {(1, 5), (1, 8), (2, 5), (2, 8)}
    for (mm, C), c in cells.items():
        assert c["chance"] == pytest.approx(1 / C) and c["n"] == 32 * mm
        final = [json.loads(l) for l in (out / c["run"] / "metrics.jsonl").read_text().splitlines()][-1]
        assert c["acc"] == pytest.approx(sum(final[f"acc_m{m}"] for m in range(1, mm + 1)) / mm)
        sp = json.loads((out / c["run"] / "analysis" / "modadd_spectra.json").read_text())
        assert c["r90_median"] == sp["summary"]["attention"]["r90_median"]
        assert c["null_r90_median"] == sp["summary"]["attention"]["null_r90_median"]
        assert c["below_null"] == (c["r90_median"] <= c["null_r90_median"] - 1)
        assert c["learned"] == (c["acc"] >= 1 / C + 0.2)
        cfg = json.loads((out / c["run"] / "config.json").read_text())["config"]
        assert (cfg["modadd_m_max"], cfg["modadd_classes"], cfg["attn_only"]) == (mm, C, True)
    table = (out / "sweep.md").read_text()
    assert table.count("\n| ") == 1 + 4 and "| 2 | 8 | 0.125 |" in table and "One seed per cell" in table
    assert res["summary"]["n_cells"] == 4 and res["summary"]["n_seeds"] == 1
    # resume: the finished runs are skipped, nothing retrains, the result is the same
    stamp = {c["run"]: (out / c["run"] / "status.json").stat().st_mtime_ns for c in res["cells"]}
    code, so, err = run_inprocess(capsys, "experiments/modadd/difficulty_sweep.py", "--preset", "test", "--jobs", "1",
                                  "--out-dir", str(out))
    assert code == 0, err
    assert so.count("skip ") == 4 and "train m" not in so
    assert stamp == {r: (out / r / "status.json").stat().st_mtime_ns for r in stamp}
    assert json.loads((out / "analysis" / "modadd_sweep.json").read_text())["cells"] == res["cells"]


@pytest.mark.parametrize("args, message", [(["--preset", "big"], "unknown --preset 'big'"),
                                           (["--preset", "test", "--set", "modadd_classes=7"], "sets this itself")])
def test_sweep_bad_input(tmp_path, capsys, args, message):
    code, so, err = run_inprocess(capsys, "experiments/modadd/difficulty_sweep.py", *args, "--out-dir", str(tmp_path))
    assert code == 2 and err.strip().startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_sweep_out_dir_is_a_file(tmp_path, capsys):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    code, so, err = run_inprocess(capsys, "experiments/modadd/difficulty_sweep.py", "--preset", "test", "--out-dir", str(f))
    assert code == 2 and err.strip().splitlines()[-1].startswith("error:") and str(f) in err
    assert f.read_text() == "x"
