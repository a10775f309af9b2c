"""The paper nets' training op on a GPU (torch.ops.lstm_ext.paper_train's CUDA kernel) and ``--device cuda``.

Oracle: the CPU kernel (itself tested against autograd on ``lstm_ext.paper.forward_ref`` in test_paper.py). The
GPU tests skip without a GPU or a CUDA build of lstm_ext (with ``LSTM_EXT_REQUIRE_CUDA=1``, scripts/gpu_check.sh,
they must run: test_cuda.py::test_cuda_build_present fails otherwise). The last tests run everywhere: what a
machine without a GPU says when asked for one.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from lstm_ext.cli import main
from lstm_ext.experiments import runner, select_rows
from lstm_ext.experiments.protocol import run_trial
from lstm_ext.paper import PaperNet

from test_paper import SPECS, make_batch, new_net

HAS_GPU = torch.cuda.is_available()
HAS_KERNEL = torch._C._dispatch_has_kernel_for_dispatch_key("lstm_ext::paper_train", "CUDA")
requires_cuda = pytest.mark.skipif(
    not (HAS_GPU and HAS_KERNEL),
    reason="no GPU" if not HAS_GPU else "lstm_ext was built without its CUDA kernels",
)
# float64: the same arithmetic up to the order of sums and the C library's tanh; float32: the CPU's rational tanh
# against CUDA's tanhf, over a chunk of training
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def _on(net: PaperNet, device) -> PaperNet:
    """A copy of ``net`` on ``device`` (same weights)."""
    other = copy.copy(net)
    other.Mh, other.Mo = net.Mh.to(device), net.Mo.to(device)
    other.Wh, other.Wo = net.Wh.to(device).contiguous(), net.Wo.to(device).contiguous()
    return other


def _close(got, want, dtype, what):
    tol = TOL[dtype]
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


@requires_cuda
@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("onehot", [False, True])
@pytest.mark.parametrize("final_only", [False, True])
@pytest.mark.parametrize("update", ["sequence", "step"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_training_matches_the_cpu_kernel(name, onehot, final_only, update, dtype):
    spec = SPECS[name]
    cpu = new_net(spec, dtype)
    gpu = _on(cpu, "cuda")
    batch = make_batch(spec, 6, 9, onehot=onehot, final_only=final_only, seed=3)
    want = cpu.train(batch, 0.3, update=update, return_outputs=True)
    got = gpu.train(batch, 0.3, update=update, return_outputs=True)
    for field in ("loss", "err_max", "err_last", "y_last", "y_all"):
        _close(getattr(got, field), getattr(want, field), dtype, field)
    _close(gpu.Wh, cpu.Wh, dtype, "Wh")
    _close(gpu.Wo, cpu.Wo, dtype, "Wo")


@requires_cuda
@pytest.mark.parametrize("name", ["adding", "reber3x2", "exp2c"])
def test_evaluation_leaves_the_weights_and_matches_the_cpu(name):
    spec = SPECS[name]
    cpu = new_net(spec)
    gpu = _on(cpu, "cuda")
    before = gpu.Wh.clone(), gpu.Wo.clone()
    batch = make_batch(spec, 5, 8, onehot=name != "adding", final_only=True, seed=4)
    want, got = cpu.evaluate(batch, return_outputs=True), gpu.evaluate(batch, return_outputs=True)
    _close(got.y_all, want.y_all, torch.float64, "y_all")
    assert torch.equal(gpu.Wh, before[0]) and torch.equal(gpu.Wo, before[1])


@requires_cuda
def test_zero_length_sequences_and_an_empty_chunk():
    spec = SPECS["adding"]
    cpu = new_net(spec)
    gpu = _on(cpu, "cuda")
    batch = make_batch(spec, 4, 6, onehot=False, final_only=True, seed=5)
    batch.lengths[1] = 0
    batch.target_mask[1] = 0
    want, got = cpu.train(batch, 0.5, return_outputs=True), gpu.train(batch, 0.5, return_outputs=True)
    _close(got.y_all, want.y_all, torch.float64, "y_all")
    _close(gpu.Wh, cpu.Wh, torch.float64, "Wh")
    empty = make_batch(spec, 1, 6, onehot=False, final_only=True)
    empty = type(empty)(**{k: None if v is None else v[:0] for k, v in vars(empty).items()})
    before = gpu.Wh.clone()
    assert gpu.train(empty, 0.5).loss.shape == (0,)
    assert torch.equal(gpu.Wh, before)


@requires_cuda
def test_deterministic():
    spec = SPECS["reber3x2"]
    a, b = _on(new_net(spec, torch.float32), "cuda"), _on(new_net(spec, torch.float32), "cuda")
    batch = make_batch(spec, 8, 12, onehot=True, final_only=False, seed=6)
    sa, sb = a.train(batch, 0.5, update="step"), b.train(batch, 0.5, update="step")
    assert torch.equal(a.Wh, b.Wh) and torch.equal(sa.loss, sb.loss)


@requires_cuda
def test_full_gradient_and_mixed_devices_are_clear_errors():
    spec = SPECS["adding"]
    gpu = _on(new_net(spec), "cuda")
    batch = make_batch(spec, 2, 5, onehot=False, final_only=True)
    with pytest.raises(RuntimeError, match="full gradient .* no CUDA kernel"):
        gpu.train(batch, 0.5, gradient="full")
    s = spec
    args = [torch.as_tensor(v) for v in (batch.x, batch.lengths, batch.targets, batch.target_mask)]
    x, lengths, targets, mask = args[0].cuda(), args[1].long(), args[2].cuda(), args[3].cuda()  # lengths on the CPU
    with pytest.raises(RuntimeError, match="lengths must be a 1-D int64 tensor on Wh's device"):
        torch.ops.lstm_ext.paper_train(gpu.Wh, gpu.Wo, gpu.Mh, gpu.Mo, x, None, lengths, targets, mask,
                                       s.n_blocks, s.block_size, s.forget_gate, s.output_gate, s.squash,
                                       0.5, True, False, False)  # fmt: skip


@requires_cuda
def test_a_trial_on_the_gpu_follows_the_cpu_trial():
    """The adding row's trial 0 with a small budget, float64: the GPU's record is the CPU's (same data, same
    initial net, the same training up to rounding)."""
    row = select_rows("adding", (100,))[0]
    want = run_trial(row, 0, budget=3000, dtype=torch.float64, prefetch=False)
    with torch.cuda.stream(torch.cuda.Stream()):
        got = run_trial(row, 0, budget=3000, dtype=torch.float64, prefetch=False, device="cuda")
    assert got["device"] == "cuda" and want["device"] == "cpu"
    assert (got["success"], got["sequences"]) == (want["success"], want["sequences"])
    np.testing.assert_allclose([p[1] for p in got["curve"]], [p[1] for p in want["curve"]], rtol=1e-6)


@requires_cuda
def test_cli_reproduce_on_the_gpu_side_by_side(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "4-T100,6a", "--quick", "--trials", "3", "--device", "cuda",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all('"device": "cuda"' in ln for ln in lines)
    summary = json.loads((out / "results.json").read_text())
    assert summary["device"] == "cuda" and "trained on" in summary["hardware"]


# ---- everywhere: asking for a GPU that is not there ------------------------------------------------------------


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_without_a_gpu_the_cli_says_so(tmp_path, capsys):
    assert main(["reproduce", "adding", "--quick", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device cuda, but torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "trials.jsonl").exists()


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_without_a_gpu_a_cuda_net_is_a_clear_error():
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        PaperNet(SPECS["adding"], device="cuda")
    with pytest.raises(ValueError, match="CPU or CUDA device"):
        PaperNet(SPECS["adding"], device="meta")


def test_the_full_gradient_is_refused_on_the_gpu_before_anything_runs(tmp_path):
    row = select_rows("adding", (100,))[0].with_(gradient="full")
    with pytest.raises(ValueError, match="full gradient trains on the CPU only"):
        runner.run_rows([row], tmp_path, trials=1, quick=True, progress=False, device="cuda")
    assert not (tmp_path / "trials.jsonl").exists()


def test_side_by_side_threads_give_the_records_of_the_processes():
    """The GPU's runner path (trials as threads of one process), here with the CPU worker: every trial comes back
    once, with the record a trial in its own process gives."""
    row = select_rows("adding", (100,))[0]
    todo = [(row, t, 0, 600) for t in range(3)]
    got = {task[1]: rec for task, rec in runner._side_by_side(todo, 2, runner._worker)}
    assert sorted(got) == [0, 1, 2]
    want = run_trial(row, 1, seed=0, budget=600, prefetch=False)
    assert {k: v for k, v in got[1].items() if k not in ("wall_s", "ns_per_step")} == {
        k: v for k, v in want.items() if k not in ("wall_s", "ns_per_step")
    }


def test_the_simulation_of_side_by_side_trials_runs_and_stays_below_its_ideal():
    """scripts/simulate_gpu_trials.py (the README's ceiling of --device cuda): it runs, and no rate it reports beats
    its ideal (every simulated step waits --gpu-ns with the GIL released, so only Python can make it slower)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "simulate_gpu_trials.py"
    proc = subprocess.run([sys.executable, str(script), "--row", "4-T100", "--budget", "600", "--threads", "1,2",
                           "--gpu-ns", "200"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| (\d+)% \|$", proc.stdout, re.M)
    assert [int(r[0]) for r in rows] == [1, 2], proc.stdout
    for _, rate, ideal, _ in rows:
        assert 0 < float(rate) <= float(ideal), proc.stdout
    assert re.search(r"one core of --device cpu\): [\d.]+ M steps/s", proc.stdout), proc.stdout
