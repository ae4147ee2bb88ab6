"""The modular-addition study end to end at the test size, its analysis scripts, and their bad-input errors."""
import json

import pytest

from conftest import run_inprocess


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tmp_path_factory.mktemp("modadd") / "study"


def test_study_end_to_end_and_rerun(study, capsys):
    code, out, err = run_inprocess(capsys, "experiments/modadd/run_study.py", "--preset", "test", "--out-dir", str(study))
    assert code == 0, err
    assert "wrote" in out and (study / "report.md").exists()
    res = json.loads((study / "analysis" / "modadd_study.json").read_text())
    assert set(res["runs"]) == {"attn", "attn_seed2", "mlp", "mlp_seed2", "strict", "curriculum", "curriculum_seed2",
                                "mul", "mul_seed2"}
    h = res["headline"]
    for key in ("collapse", "commutator", "bubbling", "mlp", "curriculum", "sae", "leak", "settling",
                "commutator_spikes", "sae_m", "commutator_cells", "mul"):
        assert "verdict" in h[key], key
    for key in ("commutator_spikes", "sae_m", "commutator_cells"):      # both attention-only seeds
        assert h[key]["n_seeds"] == 2, key
    series = res["runs"]["attn"]["commutator_series"]
    assert len(series["checkpoints"]) == 6 and series["cells"]["n_samples"] == 12
    assert sum(map(sum, series["cells"]["n"])) == 12 and len(series["cells"]["empty"]) >= 4   # 12 samples, 16 cells
    assert h["sae_m"]["n_live"][0] == res["runs"]["attn"]["sae_m"]["stages"][-1]["sae"]["n_live"]
    assert h["mlp"]["n_seeds"] == 2 and h["curriculum"]["n_seeds"] == 2 and h["mul"]["n_seeds_mul"] == 2
    assert h["mul"]["classes_mul"] == 7 and h["mul"]["chance_mul"] == pytest.approx(1 / 6)
    assert "2 seed(s)" in h["mlp"]["verdict"] and "2 multiplication and 2 addition" in h["mul"]["verdict"]
    mul_cfg = res["runs"]["mul"]["config"]
    assert mul_cfg["modadd_op"] == "mul" and mul_cfg["modadd_classes"] == 7
    assert res["runs"]["mul"]["linear_probes"]["chance"]["y"] == pytest.approx(1 / 6)
    assert res["runs"]["attn"]["linear_probes"]["chance"]["y"] == pytest.approx(1 / 8)
    assert h["mul"]["r90_mul_per_seed"] == [res["runs"][r]["spectra"]["summary"]["attention"]["r90_median"]
                                            for r in ("mul", "mul_seed2")]
    st = h["settling"]
    assert st["n_seeds"] == 2 and len(st["excess_per_seed"]) == 2
    sd = res["runs"]["attn"]["subspace_distance"]
    import numpy as np
    att = [b for b in sd["blocks"].values() if b["kind"] in ("WQ", "WK", "WV", "WO")]
    i = int(np.argmin([abs((s - sd["steps"][0]) / (sd["steps"][-1] - sd["steps"][0]) - 0.2) for s in sd["steps"][1:]]))
    assert st["excess_per_seed"][0] == pytest.approx(np.median([b["run"]["overlap"][i] - b["null"]["overlap"][i]
                                                                for b in att]))
    assert sd["trunk"]["run"]["overlap"][-1] == pytest.approx(1.0) and sd["trunk"]["null"]["overlap"][-1] == pytest.approx(1.0)
    report = (study / "report.md").read_text()
    assert "| claim (bubble-modadd README) |" in report and "figures/commutators_attn.png" in report
    assert "figures/subspace_distance.png" in report
    assert "## Linear probes (held-out accuracy)" in report and "figures/linear_probes_attn.png" in report
    from training.studies.modadd_study import run_specs
    for spec in run_specs(0):              # every run has its held-out probes, cached under the script's name
        lp = res["runs"][spec.role]["linear_probes"]
        assert lp["n_train"] == 128 and len(lp["y_test_acc"]) == 2
        assert (study / spec.name / "analysis" / "modadd_linear_probes.json").exists()
    for fig in ("training", "spectra_attn", "attention_attn", "commutators_attn", "sae_attn", "curriculum",
                "linear_probes_attn", "commutator_series_attn", "sae_m_attn"):
        assert (study / "figures" / f"{fig}.png").stat().st_size > 1000
    # the run directories are ordinary toolkit runs
    run = study / "attn_ref_s0"
    assert (run / "checkpoints" / "step_000000.safetensors").exists()
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    # a second invocation trains nothing and reuses the cached analyses
    code, out, err = run_inprocess(capsys, "experiments/modadd/run_study.py", "--preset", "test", "--out-dir", str(study))
    assert code == 0, err
    assert res["headline"] == json.loads((study / "analysis" / "modadd_study.json").read_text())["headline"]
    code, out, err = run_inprocess(capsys, "experiments/modadd/report.py", "--study-dir", str(study))
    assert code == 0 and "report.md" in out


def test_analysis_scripts_on_a_study_run(study, capsys):
    if not (study / "attn_ref_s0" / "status.json").exists():
        pytest.skip("needs the study of the previous test")
    run = str(study / "attn_ref_s0")
    for script, extra, name in (
            ("analysis/modadd/spectra.py", ["--null-samples", "3"], "modadd_spectra"),
            ("analysis/attention/bubbling.py", ["--probe-n", "16"], "modadd_attention"),
            ("analysis/commutator/commutators.py", ["--n-checkpoints", "1", "--samples", "2", "--mc", "2"],
             "modadd_commutators"),
            ("analysis/modadd/sae_ablation.py", ["--sae-steps", "20", "--steps", "4,24"], "modadd_sae"),
            ("analysis/modadd/subspace_alignment.py", ["--other-run", str(study / "attn_ref_s1")],
             "modadd_cross_subspaces"),
            ("analysis/modadd/subspace_distance.py", ["--k", "2"], "modadd_subspace_distance"),
            ("analysis/modadd/commutator_series.py", ["--n-checkpoints", "6", "--samples", "1", "--surrogates", "20"],
             "modadd_commutator_series"),
            ("analysis/modadd/sae_latents_m.py", ["--steps", "24", "--sequences", "32", "--sae-steps", "10",
                                                  "--permutations", "20"], "modadd_sae_m")):
        code, out, err = run_inprocess(capsys, script, "--run-dir", run, *extra)
        assert code == 0, (script, err)
        assert (study / "attn_ref_s0" / "analysis" / f"{name}.json").exists()
    code, out, err = run_inprocess(capsys, "analysis/modadd/curriculum.py", "--run-dir", str(study / "attn_curr_s0"))
    assert code == 0, err
    # one-line errors
    code, out, err = run_inprocess(capsys, "analysis/modadd/curriculum.py", "--run-dir", run)
    assert code == 2 and err.strip().startswith("error:") and "curriculum" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_inprocess(capsys, "analysis/modadd/sae_ablation.py", "--run-dir", run, "--steps", "7")
    assert code == 2 and "no checkpoint" in err
    code, out, err = run_inprocess(capsys, "analysis/modadd/subspace_distance.py", "--run-dir", run, "--k", "0")
    assert code == 2 and err.strip().startswith("error:") and "--k" in err
    code, out, err = run_inprocess(capsys, "analysis/modadd/commutator_series.py", "--run-dir", run, "--samples", "0")
    assert code == 2 and err.strip().startswith("error:") and "--samples" in err
    code, out, err = run_inprocess(capsys, "analysis/modadd/sae_latents_m.py", "--run-dir", run, "--layer", "9")
    assert code == 2 and "out of range" in err
    code, out, err = run_inprocess(capsys, "analysis/modadd/sae_ablation.py", "--run-dir", run, "--layer", "9")
    assert code == 2 and "out of range" in err
    code, out, err = run_inprocess(capsys, "experiments/modadd/run_study.py", "--preset", "big")
    assert code == 2 and "preset" in err
    code, out, err = run_inprocess(capsys, "experiments/modadd/run_study.py", "--preset", "test", "--set", "attn_only=0",
                                   "--out-dir", str(study))
    assert code == 2 and "sets this itself" in err
