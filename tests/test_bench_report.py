"""bench/report.py: the arithmetic behind the report's limits section (the module needs no torch)."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).resolve().parent.parent / "bench" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_layer_flop_counts_forward_products_and_twice_that_backward():
    # 1997 cell: G = 3H; forward 2*T*B*G*(D+H), backward twice that
    assert report.layer_flop("1997", 32, 128, 32, 100) == 3 * 2 * 100 * 32 * 384 * 160
    assert report.layer_flop("2000", 1, 8, 2, 100) == 3 * 2 * 100 * 1 * 32 * 10


def test_limit_lines_compare_the_targets_with_the_measured_limits():
    t = lambda s: {"median": s, "min": s}  # noqa: E731
    results = {("cpu", "float32", "fwd+bwd", 1, 8, 2, 100): {"nn.LSTM": t(600e-6), "LSTM2000": t(300e-6)},
               ("cpu", "float32", "fwd+bwd", 32, 128, 32, 100): {"ref1997": t(40e-3), "LSTM1997": t(16e-3)}}  # fmt: skip
    limits = {"autograd_floor": {"median": 50e-6, "min": 50e-6, "flop": None},
              "matmul_rate": {"median": 0.02, "min": 0.02, "flop": 2 * 1024**3}}  # fmt: skip
    lines = report.limit_lines(results, limits)
    assert "T2 allows LSTM2000 60 µs" in lines[0] and "takes 50 µs" in lines[0]
    flop = report.layer_flop("1997", 32, 128, 32, 100)
    assert f"needs {flop / 4e-3 / 1e9:.0f} GFLOP/s" in lines[1] and "reaches 107 GFLOP/s" in lines[1]
    assert report.limit_lines(results, {}) == []  # an older JSON without the limit benchmarks: no section
    limits["linear_layer"] = {"median": 40e-6, "min": 40e-6, "flop": None}
    line = report.limit_lines(results, limits)[1]
    assert "`nn.Linear(2, 32)`" in line and "takes 40 µs" in line and "leaves LSTM2000 20 µs beyond that" in line
    limits["linear_layer"] = {"median": 70e-6, "min": 70e-6, "flop": None}
    line = report.limit_lines(results, limits)[1]
    assert "takes 70 µs" in line and "that is already 10 µs more than a tenth of nn.LSTM's time" in line


def test_limit_lines_explain_wide_layers_only_where_nn_lstm_is_faster():
    t = lambda s: {"median": s, "min": s}  # noqa: E731
    step = {"step_products": {"median": 0.4, "min": 0.4, "flop": 2 * 100 * 32 * 4096 * 1024, "size": (32, 1024, 100)}}
    slower = {("cpu", "float32", "fwd", 32, 1024, 32, 100): {"nn.LSTM": t(0.2), "LSTM2000": t(0.45)}}
    lines = report.limit_lines(slower, step)
    assert len(lines) == 2 and "B=32 H=1024 T=100" in lines[0] and "take 400 ms (67 GFLOP/s)" in lines[0]
    assert "nn.LSTM's 200 ms (134 GFLOP/s" in lines[0] and "LSTM2000 60 GFLOP/s" in lines[0] and "(U: 16 MB" in lines[0] and "forward_cell_split" in lines[0]
    assert lines[1].endswith("faster than LSTM2000 (float32; LSTM2000's speed-up): fwd: B=32 H=1024 T=100 0.444×.")
    faster = {("cpu", "float32", "fwd", 32, 1024, 32, 100): {"nn.LSTM": t(0.5), "LSTM2000": t(0.45)}}
    assert report.limit_lines(faster, step) == []


def test_limit_lines_list_every_case_where_nn_lstm_is_faster():
    t = lambda s: {"median": s, "min": s}  # noqa: E731
    results = {
        ("cpu", "float32", "fwd", 32, 128, 32, 100): {"nn.LSTM": t(3.0), "LSTM2000": t(4.0)},
        ("cpu", "float32", "fwd+bwd", 32, 128, 32, 100): {"nn.LSTM": t(9.0), "LSTM2000": t(10.0)},
        ("cpu", "float32", "fwd+bwd", 1, 8, 2, 100): {"nn.LSTM": t(9.0), "LSTM2000": t(1.0)},  # faster: not listed
        ("cpu", "float64", "fwd", 32, 128, 32, 100): {"nn.LSTM": t(1.0), "LSTM2000": t(2.0)},  # float32 only
    }
    assert report.limit_lines(results, {}) == [
        "- Every case of this run where nn.LSTM is faster than LSTM2000 (float32; LSTM2000's speed-up): "
        "fwd: B=32 H=128 T=100 0.75×; fwd+bwd: B=32 H=128 T=100 0.9×."
    ]


def test_time_vs_T_fits_the_per_step_cost():
    a, b, r2 = report.linear_fit([(10, 0.1 + 10 * 2e-6), (100, 0.1 + 100 * 2e-6), (1000, 0.1 + 1000 * 2e-6)])
    assert abs(a - 0.1) < 1e-12 and abs(b - 2e-6) < 1e-15 and abs(r2 - 1) < 1e-12
    assert report.linear_fit([(10, 1.0), (100, 0.0), (1000, 1.0)])[2] < 0.5  # not a line
    t = lambda s: {"median": s, "min": s}  # noqa: E731
    results = {("cpu", "float32", "fwd", 1, 8, 2, T): {"LSTM2000": t(50e-6 + T * 0.1e-6), "nn.LSTM": t(T * 2e-6)}
               for T in (10, 100, 1000)}  # fmt: skip
    results[("cpu", "float32", "fwd", 32, 128, 32, 100)] = {"LSTM2000": t(0.01)}  # one T only: no sweep
    lines = report.time_vs_T_lines(results)
    assert lines[0] == "cpu, float32, fwd, B=1 H=8 D=2:"
    assert "| LSTM2000 (fused) | 0.1 µs | 1.0000 |" in "\n".join(lines)
    assert sum("B=32" in line for line in lines) == 0


def test_fixed_cost_per_call_from_the_shortest_T():
    t = lambda s: {"median": s, "min": s}  # noqa: E731
    size = ("cpu", "float32", "fwd+bwd", 1, 8, 2)
    results = {size + (T,): {"LSTM2000": t(300e-6 + T * 0.2e-6)} for T in (10, 100, 1000)}
    T0, per_call, per_step = report.fixed_cost(results, size, "LSTM2000")
    assert T0 == 10 and abs(per_call - 300e-6) < 1e-12 and abs(per_step - 0.2e-6) < 1e-15
    assert report.fixed_cost({size + (100,): {"LSTM2000": t(1e-3)}}, size, "LSTM2000") is None  # one T: no sweep


def test_paper_lines_give_time_per_sequence_step_and_the_speed_up():
    paper = {"4-T100": {"paper_train": {"median": 6400 * 80e-9, "steps": 6400},
                        "autograd loop": {"median": 105 * 200e-6, "steps": 105}},
             "6b": {"paper_train": {"median": 1e-3, "steps": 10_000}}}  # fmt: skip
    lines = report.paper_lines(paper)
    assert lines[2] == "| 4-T100 | 80 ns | 200 µs | 2500× |"
    assert lines[3] == "| 6b | 100 ns | — | — |"  # a peer missing from the run
    assert report.paper_lines({}) == []  # an older JSON without bench/test_bench_paper.py: no section


def test_a_file_that_is_not_benchmark_json_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(SystemExit, match="cannot read .*bad.json as pytest-benchmark JSON"):
        report.load([str(bad)])
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="is not pytest-benchmark JSON"):
        report.load([str(bad)])


def test_small_call_costs_script_runs(tmp_path):
    """scripts/small_call_costs.py (the T2 breakdown of the session notes): it runs and prints one positive time
    per case."""
    import re
    import subprocess
    import sys

    path = Path(__file__).resolve().parents[1] / "scripts" / "small_call_costs.py"
    proc = subprocess.run([sys.executable, str(path), "--calls", "20", "--T", "5"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    times = re.findall(r"^  (.+?)\s+([0-9.]+) us$", proc.stdout, flags=re.M)
    assert len(times) == 7 and all(float(t) > 0 for _, t in times), proc.stdout


def test_cuda_target_table_gives_a_verdict_per_case():
    results = {
        ("cuda", "float32", "fwd+bwd", 1, 32, 32, 1000): {"LSTM2000": {"median": 1e-3}, "nn.LSTM": {"median": 3e-3}},
        ("cuda", "float32", "fwd+bwd", 1, 64, 32, 1000): {"LSTM2000": {"median": 2e-3}, "nn.LSTM": {"median": 3e-3}},
        ("cuda", "float32", "fwd", 1, 32, 32, 1000): {"LSTM2000": {"median": 0.9e-3}},
        ("cuda", "float32", "fwd", 1, 64, 32, 1000): {"LSTM2000": {"median": 1.1e-3}},
    }
    rows, verdicts = report.cuda_target_table(results)
    assert verdicts["C1 float32 B=1 H=32"] == "**PASS**"  # 3x faster, 2x needed
    assert verdicts["C1 float32 B=1 H=64"] == "**MISS**"  # 1.5x
    assert verdicts["L float32 B=1 H=32"] == "**PASS**"  # 0.9 us per step
    assert verdicts["L float32 B=1 H=64"] == "**MISS**"  # 1.1 us per step
    assert verdicts["C2 float32 B=256 H=1024"] == "n/a"
    assert len(rows) == 2 + len(verdicts)
    assert report.cuda_target_table({("cpu", "float32", "fwd", 1, 8, 2, 100): {}}) == ([], {})


@pytest.mark.parametrize(
    "options, message",
    [
        (["--bench-target-s", "0"], "--bench-target-s must be a finite number > 0, got 0.0"),
        (["--bench-target-s", "nan"], "--bench-target-s must be a finite number > 0, got nan"),
        (["--bench-min-rounds", "0"], "--bench-min-rounds must be >= 1, got 0"),
        (["--bench-max-rounds", "2"], "--bench-max-rounds (2) must be >= --bench-min-rounds (5)"),
        (["--bench-slow-peer-max-T", "-1"], "--bench-slow-peer-max-T must be >= 0"),
        (["--bench-threads", "-3"], "--bench-threads must be >= 0"),
    ],
)
def test_bench_options_no_benchmark_can_run_with_are_a_usage_error(tmp_path, options, message):
    """bench/conftest.py: before any benchmark runs (pytest's exit status 4), not an INTERNALERROR from
    torch.set_num_threads, a failed benchmark or a silent run with nonsense settings."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(bench), "--co", "-q", "-p", "no:cacheprovider",
                           *options], capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"ERROR: {message}" in proc.stderr and "INTERNALERROR" not in proc.stdout + proc.stderr
