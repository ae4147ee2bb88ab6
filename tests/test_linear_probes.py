"""Linear probes (training/geometry/linear_probe.py): known answers for the logistic-regression probe, the disjoint seeded
probe sets of the modular-addition task, and analysis/modadd/linear_probes.py on a tiny modadd run."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import run_inprocess
from training.geometry.linear_probe import L2_GRID, fit_logistic, probe_report


def _planted(n, d=12, k=4, margin=3.0, seed=0):
    """Points whose label is argmax(W x) for a fixed random W, kept only where the best class wins by
    ``margin``: linearly separable with room to spare."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((k, d))
    X, y = [], []
    while sum(len(a) for a in X) < n:
        x = rng.standard_normal((4 * n, d))
        s = np.sort(x @ W.T, axis=1)
        ok = s[:, -1] - s[:, -2] >= margin
        X.append(x[ok])
        y.append((x @ W.T).argmax(1)[ok])
    return np.concatenate(X)[:n], np.concatenate(y)[:n]


def _sigma(p, n):
    return math.sqrt(p * (1 - p) / n)


def test_planted_linearly_separable_labels_are_recovered_exactly():
    X, y = _planted(1200)
    r = probe_report(X[:600], y[:600], X[600:], y[600:], n_classes=4)
    assert r["test_acc"] == 1.0 and r["train_acc"] == 1.0
    assert r["l2"] in L2_GRID and r["n_train"] == 600 and r["n_test"] == 600
    assert r["chance_uniform"] == 0.25


def test_shuffled_labels_give_chance_on_held_out_data():
    # balanced labels, permuted independently of X: a probe fitted on other data is right on a held-out
    # point with probability exactly 1/K, so its held-out accuracy is within a few binomial sigmas of 1/K
    K, n_tr, n_te = 8, 800, 2000
    X, _ = _planted(n_tr + n_te, d=16, seed=1)
    rng = np.random.default_rng(2)
    y_tr, y_te = rng.permutation(np.arange(n_tr) % K), rng.permutation(np.arange(n_te) % K)
    r = probe_report(X[:n_tr], y_tr, X[n_tr:], y_te, n_classes=K)
    assert abs(r["test_acc"] - 1 / K) < 4 * _sigma(1 / K, n_te)          # 4 sigma = 0.030
    assert abs(r["chance_majority"] - 1 / K) < 1e-12                      # balanced held-out labels


def test_training_accuracy_is_perfect_on_noise_when_points_are_few():
    # the reference's flaw: with fewer training points than features every labelling is separable, so the
    # training accuracy is 1 while the held-out accuracy is at chance
    K, d, n_te = 8, 48, 2000
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40 + n_te, d))
    y = rng.integers(0, K, size=40 + n_te)
    r = probe_report(X[:40], y[:40], X[40:], y[40:], n_classes=K, l2=1e-4)
    assert r["train_acc"] == 1.0
    assert abs(r["test_acc"] - 1 / K) < 4 * _sigma(1 / K, n_te)


def test_fit_is_deterministic_and_constant_features_give_the_majority_class():
    X, y = _planted(300, seed=4)
    a, b = fit_logistic(X, y, 4, 1e-2), fit_logistic(X, y, 4, 1e-2)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    const = np.ones((50, 6)) * 0.3
    labels = np.array([2] * 30 + [0] * 20)
    p = fit_logistic(const, labels, 3, 1e-2)
    assert p.W.shape == (3, 0)                       # a constant feature carries no direction
    assert torch.all(p.predict(const) == 2)
    with pytest.raises(ValueError):
        fit_logistic(X, y, 3, 1e-2)                  # labels out of range


def test_probe_does_not_depend_on_the_feature_basis():
    # whitening: an invertible linear map of the features (scales over 3 decades, within REL_VAR_FLOOR) gives
    # the same scores
    rng = np.random.default_rng(5)
    X = rng.standard_normal((500, 10))
    y = (X @ rng.standard_normal((10, 3))).argmax(1)
    flip = rng.random(500) < 0.2                     # label noise: not separable, the penalty matters
    y[flip] = rng.integers(0, 3, size=int(flip.sum()))
    A = rng.standard_normal((10, 10)) @ np.diag(10.0 ** rng.uniform(-1.5, 1.5, size=10))
    p, q = fit_logistic(X, y, 3, 1e-2), fit_logistic(X @ A, y, 3, 1e-2)
    Xt = rng.standard_normal((200, 10))
    assert torch.allclose(p.scores(Xt), q.scores(Xt @ A), atol=1e-4)


def test_probe_sets_are_seeded_balanced_and_disjoint():
    from training.core.modadd import ModAddTask
    from training.studies.modadd_analysis import probe_sets
    from training.studies.modadd_study import run_configs
    cfg = run_configs("test", 0)["attn_ref_s0"][1]
    task = ModAddTask(cfg)
    s = probe_sets(task, 256, 128, seed=0)
    tr, te = s["train"], s["test"]
    assert len(tr["x"]) == 256 and len(te["x"]) + s["n_dropped"] == 128
    assert not {bytes(r.numpy()) for r in tr["x"]} & {bytes(r.numpy()) for r in te["x"]}
    for part in (tr, te):
        counts = np.bincount(part["m"].numpy(), minlength=5)[1:]
        assert counts.min() == counts.max()                               # m cycles over 1..4 per chunk of 32
        assert torch.all(part["x"][:, -1] == task.spec.sep)               # the readout slot is the separator
    again = probe_sets(task, 256, 128, seed=0)
    assert torch.equal(again["train"]["x"], tr["x"]) and torch.equal(again["test"]["x"], te["x"])
    assert not torch.equal(probe_sets(task, 256, 128, seed=1)["train"]["x"], tr["x"])


@pytest.fixture(scope="module")
def modadd_run(tmp_path_factory):
    from training.studies.modadd_study import run_configs
    from training.studies.common import ensure_run
    run = tmp_path_factory.mktemp("lp") / "attn_ref_s0"
    assert ensure_run(run_configs("test", 0)["attn_ref_s0"][1], run) == "completed"
    return run


def test_script_end_to_end_on_a_tiny_modadd_run(modadd_run, capsys):
    from training.studies import modadd_analysis as ma
    code, out, err = run_inprocess(capsys, "analysis/modadd/linear_probes.py", "--run-dir", str(modadd_run),
                                   "--n-train", "128", "--n-test", "64", "--seed", "3")
    assert code == 0, err
    assert "held-out" in out and "wrote" in out
    res = json.loads((modadd_run / "analysis" / "modadd_linear_probes.json").read_text())
    assert (modadd_run / "analysis" / "modadd_linear_probes.png").stat().st_size > 1000
    assert res["step"] == 24 and res["n_train"] == 128 and res["n_test"] + res["n_test_dropped"] == 64
    assert res["chance"]["y"] == 1 / 8 and res["chance"]["m"] == 1 / 4 and res["ms"] == [1, 2, 3, 4]
    assert res["layer_names"] == ["embedding", "block 1"] and len(res["layers"]) == 2
    for row in res["layers"]:
        for t in ("y", "m"):
            assert {"test_acc", "train_acc", "chance_uniform", "chance_majority", "l2"} <= set(row[t])
            assert 0.0 <= row[t]["test_acc"] <= 1.0 and 0.0 <= row[t]["train_acc"] <= 1.0
    for key in ("y_test_acc", "y_train_acc", "m_test_acc", "m_train_acc"):
        assert len(res[key]) == 2
    # after the embedding the readout slot is the same vector in every sequence: the majority-class rate
    emb = res["layers"][0]
    assert emb["y"]["test_acc"] == emb["y"]["chance_majority"] and emb["m"]["test_acc"] == emb["m"]["chance_majority"]
    assert 0.0 <= res["model_answer_acc_test"] <= 1.0
    # seeded and deterministic: the library call gives the same numbers
    again = ma.linear_probes(modadd_run, n_train=128, n_test=64, seed=3)
    assert again["y_test_acc"] == res["y_test_acc"] and again["m_train_acc"] == res["m_train_acc"]
    code, out, err = run_inprocess(capsys, "analysis/modadd/linear_probes.py", "--help")
    assert code == 0 and "--n-train" in out and "--step" in out


def test_script_one_line_errors(modadd_run, tmp_path, capsys):
    def fails(run_dir, *extra, says):
        code, out, err = run_inprocess(capsys, "analysis/modadd/linear_probes.py", "--run-dir", str(run_dir), *extra)
        assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert says in err, err
    fails(tmp_path / "nowhere", says="does not exist")
    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    shutil.copy(modadd_run / "config.json", empty / "config.json")
    fails(empty, says="no checkpoints")
    fails(modadd_run, "--step", "5", says="no checkpoint at step 5")
    lm = tmp_path / "lm_run"
    shutil.copytree(modadd_run, lm, ignore=shutil.ignore_patterns("analysis"))
    d = json.loads((lm / "config.json").read_text())
    d["config"]["task"] = "lm_probe"
    (lm / "config.json").write_text(json.dumps(d))
    fails(lm, says="not a modular-addition run")
