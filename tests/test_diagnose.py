"""lstm-ext diagnose: the probes behind the reproduction's explanations of its misses."""

import json
import subprocess
import sys

import numpy as np

from lstm_ext.experiments import diagnose, select_rows
from lstm_ext.experiments.protocol import reber_sets, run_trial, trial_net
from lstm_ext.paper.net import forward_ref


def test_adding_probe_bins_every_test_sequence():
    a = diagnose.adding_extremes(sequences=2_000, test=500, every=1_000)
    assert [p["sequences"] for p in a["progress"]] == [1_000, 2_000]
    assert sum(b["n"] for b in a["bins"]) == 500
    assert sum(b["wrong"] for b in a["bins"]) == a["progress"][-1]["wrong"]
    assert a["progress"][-1]["extreme_wrong"] <= a["progress"][-1]["wrong"]
    assert np.isclose(a["p_streak_2000"], (1 - a["progress"][-1]["wrong"] / 500) ** 2000)


def test_long_lag_probe_compares_the_papers_net_with_one_without_gate_feedback():
    c = diagnose.long_lag_gate_feedback(sequences=2_000, trials=1, every=1_000)
    f, cells = c["variants"]["F"][0], c["variants"]["cells"][0]
    assert f["weights"] == 664 and cells["weights"] == 640  # the paper's 6p + 64, and 24 gate weights fewer
    for run in (f, cells):
        assert len(run["points"]) == 2 and all(0 <= p["correct"] <= 1 for p in run["points"])
        for probe in (run["start"], run["end"]):
            assert probe["abs_s_end"] >= 0 and 0 < probe["h_factor"] <= 1 and probe["separation"] >= 0
    md = diagnose.markdown({"2c": c}, "lstm-ext diagnose --probe 2c")
    assert "| F | 0 | 664 |" in md and "| cells | 0 | 640 |" in md


def test_initial_drift_probe_measures_each_trials_untrained_net():
    d = diagnose.long_lag_initial_drift(n=4, trials=2, keys={"2c-q50-p50", "2c-q200-p200"})
    assert [r["row"] for r in d["rows"]] == ["2c-q50-p50", "2c-q200-p200"]
    for r in d["rows"]:
        assert r["paper_success_pct"] == 100 and [t["trial"] for t in r["trials"]] == [0, 1]
        for t in r["trials"]:
            assert t["abs_s_end"] > 0 and 0 < t["h_factor"] <= 1
    again = diagnose.long_lag_initial_drift(n=4, trials=2, keys={"2c-q50-p50", "2c-q200-p200"})
    assert again["rows"] == d["rows"]  # the row's seeds: the same initial nets and sequences
    md = diagnose.markdown({"2c-drift": d}, "lstm-ext diagnose --probe 2c-drift")
    assert "## Table 3 (2c, every row): the drift before training" in md
    assert "| q = 50, p = 50 | 2 |" in md and "## Table 1" not in md


def test_small_init_probe_follows_a_trial_from_weights_within_the_range():
    si = diagnose.long_lag_small_init(init=0.02, runs=(("2c-q50-p50", 2_000, 1_000),))
    (r,) = si["rows"]
    assert r["row"] == "2c-q50-p50" and r["paper_mean_sequences"] == 30_000
    assert [p["sequences"] for p in r["points"]] == [0, 1_000, 2_000] and r["points"][0]["right"] is None
    assert 0 < r["points"][0]["max_abs_w"] <= 0.02  # the untrained net: every weight within [-0.02, 0.02]
    for p in r["points"]:
        assert p["abs_s_end"] >= 0 and 0 < p["h_factor"] <= 1 and p["separation"] >= 0
        assert p["right"] is None or 0 <= p["right"] <= 1
    md = diagnose.markdown({"2c-init": si}, "lstm-ext diagnose --probe 2c-init")
    assert "## Table 3 (2c): a start without drift" in md and "[-0.02, 0.02]" in md
    assert "| q = 50, p = 50 | 0 | - |" in md and "| q = 50, p = 50 | 2,000 |" in md


def test_temporal_order_probe_follows_each_trial_and_its_classes():
    o = diagnose.temporal_order_classes(sequences=512, every=256, test=40, trials=2)
    assert o["classes"] == ["XXX", "XXY", "XYX", "XYY", "YXX", "YXY", "YYX", "YYY"]  # HS97's Q, R, S, U, V, A, B, C
    for run in o["trials"]:
        assert [p["sequences"] for p in run["points"]] == [256, 512]  # chunks of CHUNK = 256, as in a run
        assert all(0 <= p["right"] <= 1 for p in run["points"])
        assert 0 <= run["longest_right_run"] <= run["longest_right_run_end"] <= 512
        assert sum(map(sum, run["confusion"])) == 40
    # the cell states at the sequence end, here recomputed for trial 0 after its first chunk
    row = select_rows("6b")[0]
    net, data_rng, _, _ = trial_net(row, 0, 0)
    net.train(row.generate(256, data_rng), row.lr)
    probe = row.generate(40, np.random.default_rng([0, 6, 2]))
    _, states = forward_ref(net.spec, net.Wh.double(), net.Wo.double(), probe, return_states=True)
    end = states[np.arange(40), probe.lengths - 1].abs().mean(0)
    np.testing.assert_allclose(o["trials"][0]["points"][0]["abs_s_end_cells"], end.numpy(), rtol=1e-9)
    md = diagnose.markdown({"6b": o}, "lstm-ext diagnose --probe 6b")
    assert "## Table 9 (6b): the classes of the trials that do not learn" in md and "| 1 | " in md


def test_cli_writes_json_and_markdown(tmp_path):
    out = tmp_path / "d"
    subprocess.run([sys.executable, "-m", "lstm_ext", "diagnose", "--probe", "adding", "--out", str(out)],
                   cwd=tmp_path, check=True, capture_output=True)  # fmt: skip
    results = json.loads((out / "diagnosis.json").read_text())
    assert list(results) == ["adding"]
    md = (out / "diagnosis.md").read_text()
    assert "## Table 7 (adding, T = 100)" in md and "## Table 3" not in md


def test_reber_failures_probe_follows_the_reproductions_trials():
    """The trials are the reproduction's (run_trial: the same record), and each that has not learned is probed on
    its training set as the trial left it."""
    f = diagnose.reber_failures(budget=300, trials=2)
    row = next(r for r in select_rows("reber") if r.key == "1-3x2-lr0.5")
    for t in f["trials"]:
        rec, net = run_trial(row, t["trial"], 0, 300, prefetch=False, return_net=True)
        assert rec["sequences"] == t["sequences"] and not t["success"]  # 300 strings: too few to learn
        assert t["strings_right"] <= t["recall_right"] <= 1 and 0 <= t["other_steps_wrong"] <= 1
        probe = diagnose._recall_probe(net, reber_sets(0, t["trial"])[0])
        assert t["recall_right"] == probe["recall_right"] and t["worst_step"] == probe["worst_step"]
        assert 0 < t["worst_step"]["wrong"] <= t["worst_step"]["of"]  # 300 strings: local steps still wrong
    md = diagnose.markdown({"reber-failures": f}, "lstm-ext diagnose --probe reber-failures")
    assert "## Table 1 (Reber, 3 blocks x 2, lr 0.5): the trials that do not learn" in md
    assert "0 learn." in md and "| 1 | " in md and "Of the 2 that do not learn" in md


def test_reber_probe_runs_both_rules_on_the_same_seeds():
    r = diagnose.reber_recall(sequences=600, trials=2, every=300)
    assert list(r["gradients"]) == ["truncated", "full"]
    for runs in r["gradients"].values():
        assert [run["trial"] for run in runs] == [0, 1]
        for run in runs:
            assert [p["sequences"] for p in run["points"]] == [300, 600]
            for p in run["points"]:
                assert 0 <= p["strings_right"] <= p["recall_right"] <= 1  # a right string is right at the recall step
                assert p["abs_s_recall_max_cell"] >= 0 and 0 < p["h_factor_recall"] <= 1
    md = diagnose.markdown({"reber": r}, "lstm-ext diagnose --probe reber")
    assert "| truncated | 0 |" in md and "| full | 1 |" in md and "## Table 7" not in md


def test_two_sequence_probe_follows_the_cell_joining():
    t = diagnose.two_sequence_abuse(sequences=2_048, trials=1, every=512)
    run = t["trials"][0]
    assert [q["sequences"] for q in run["points"]] == [512, 1_024, 1_536, 2_048]
    for q in run["points"]:
        assert 0 <= q["local_right"] <= 1 and 0 <= q["final_right"] <= 1 and q["s_final"] >= 0
        assert q["w_cell_min"] <= q["w_cell_max"]
        joined = run["cell_joined_after"]
        if joined is None or q["sequences"] < joined:  # before the cell joins, it has no weights to the outputs
            assert q["w_cell_min"] == q["w_cell_max"] == 0
    md = diagnose.markdown({"2a": t}, "lstm-ext diagnose --probe 2a")
    assert "## Table 2 (2a, p = 100)" in md and "| 0 | 512" in md


def test_worst_step_names_the_context_most_often_wrong():
    from lstm_ext import tasks

    batch = tasks.reber_batch(["BTBTXSETE", "BPBPVPSEPE"])
    steps = batch.target_mask > 0
    ok = np.ones_like(steps)
    ok[1, 5] = False  # input P after V (successor S)
    ok[0, 0] = ok[1, 0] = False  # the first step, after the string's start
    ok[0, 1] = False  # T after B
    assert diagnose._worst_step(ok, steps, batch.x_index) == {"after": "^B", "wrong": 2, "of": 2}
    ok[0, 0] = ok[1, 0] = True
    assert diagnose._worst_step(ok, steps, batch.x_index)["after"] in ("BT", "VP")
    ok[0, 1] = True
    assert diagnose._worst_step(ok, steps, batch.x_index) == {"after": "VP", "wrong": 1, "of": 1}
    assert diagnose._worst_step(np.ones_like(steps), steps, batch.x_index) == {"after": None, "wrong": 0, "of": 0}


def test_gsc00_standard_lstm_is_gsc00s_reber_net_without_forget_gates():
    import dataclasses

    row = next(r for r in select_rows("reber") if r.key == "1-3x2-lr0.5")
    gsc = diagnose.gsc00_standard_lstm(row)
    assert gsc.spec.num_weights == 360 and gsc.lr == 0.5
    assert dataclasses.replace(gsc.spec, forget_gate=True).num_weights == 424  # GSC00's stated count
    assert gsc.seeds_from == row.seeds_from and gsc.reber_sets and gsc.update == "step"


def test_reber_topology_probe_runs_the_rows_trials_on_each_net():
    t = diagnose.reber_topology(budget=300, trials=2, keys=("1-3x2-lr0.5",))
    assert [(n["net"], n["weights"]) for n in t["nets"]] == [
        ("paper", 276), ("outputs see inputs", 276 + 7 * 7), ("GSC00 standard LSTM", 360)]  # fmt: skip
    row = next(r for r in select_rows("reber") if r.key == "1-3x2-lr0.5")
    for n, net_row in zip(t["nets"], [row, None, diagnose.gsc00_standard_lstm(row)]):
        for r in n["trials"]:
            assert not r["success"] and r["sequences"] == 300 and 0 <= r["recall_right"] <= 1
            if net_row is not None:  # the same record as run_trial gives for that net
                rec, net = run_trial(net_row, r["trial"], 0, 300, prefetch=False, return_net=True)
                assert rec["sequences"] == r["sequences"]
                assert r["worst_step"] == diagnose._recall_probe(net, reber_sets(0, r["trial"])[0])["worst_step"]
    md = diagnose.markdown({"reber-topology": t}, "lstm-ext diagnose --probe reber-topology")
    assert "## Table 1 (Reber): the paper's net against nets whose outputs also see the inputs" in md
    assert "| LSTM 3 blocks x 2, lr 0.5 | GSC00 standard LSTM | 360 | 0.5 | 0 of 2 (100) | - (8,440) |" in md


def test_adding_plateau_probe_follows_each_blocks_weights():
    p = diagnose.adding_plateau(T=100, sequences=2_000, every=1_000)
    assert p["row"] == "4-T100" and p["input_gate_bias"] == [-3.0, -6.0] and np.isclose(p["chance_mse"], 1 / 24)
    assert [q["sequences"] for q in p["points"]] == [0, 1_000, 2_000]
    net, _, _, _ = trial_net(select_rows("adding", 100)[0], 0, 0)
    first = p["points"][0]["blocks"]
    assert len(first) == net.spec.n_blocks == 2
    for b, block in enumerate(first):  # the untrained net's weights, read from the rows they live in
        iota = net.spec.iota_rows.start + b
        assert np.isclose(block["w_gate_marker"], float(net.Wh[iota, 1])) and np.isclose(block["w_gate_value"], float(net.Wh[iota, 0]))
        assert np.isclose(block["w_out"], float(net.Wo[:, 2 * b : 2 * b + 2].abs().max()))
    for q in p["points"]:
        assert q["mse"] >= 0 and all(0 < b["h_factor"] <= 1 and b["w_cell_value"] >= 0 for b in q["blocks"])
    md = diagnose.markdown({"adding-plateau": [p]}, "lstm-ext diagnose --probe adding-plateau")
    assert "## Table 7 (adding, T = 100): the plateau at chance" in md and "| 2,000 |" in md
    left = dict(p, points=[p["points"][0], dict(p["points"][1], mse=0.001)])
    assert "leaves chance (MSE below half of it) between 0 and 1,000 sequences" in diagnose.markdown({"adding-plateau": [left]}, "x")
