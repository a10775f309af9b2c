"""Cases, peers and the timing loop shared by the benchmark files (bench/test_bench_*.py).

A *case* is (device, dtype, B, H, D, T, mode); mode is "fwd" (inference forward under ``torch.no_grad()``),
"fwd+bwd" (``y, _ = m(x); y.sum().backward()``, parameter grads set to None before each round, outside the
timed region) or "step" (decoding: ``y, hx = m(x, hx)`` under ``torch.no_grad()`` with T = 1, the state carried
from call to call). A *peer* is one implementation run on a case:

    nn.LSTM        torch.nn.LSTM (native CPU kernel / cuDNN)                       cell 2000
    LSTM2000       lstm_ext.LSTM2000(backend="fused")                              cell 2000
    ref2000        lstm_ext.LSTM2000(backend="reference"): the pure-PyTorch loop   cell 2000
    jit2000        the same loop under torch.jit.script (bench/jit_loop.py)        cell 2000
    LSTM1997       lstm_ext.LSTM1997(backend="fused")                              cell 1997
    ref1997        lstm_ext.LSTM1997(backend="reference")                          cell 1997
    jit1997        the 1997 loop under torch.jit.script                            cell 1997

pytest-benchmark groups are per (device, cell, dtype, B, H, D, T, mode); ``extra_info`` carries the same fields
plus the peer, so that bench/report.py can put both cells of a case side by side.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass

import pytest
import torch

PEERS = ("nn.LSTM", "nn.LSTM-fp32", "LSTM2000", "ref2000", "jit2000", "LSTM1997", "ref1997", "jit1997", "flashrnn")
# FlashRNN (PyPI flashrnn) compiles CUDA kernels: GPU cases only. nn.LSTM-fp32: cuDNN in float32 with TF32 off
# (torch.backends.cudnn.allow_tf32 = False), the arithmetic of our kernels, which use no TF32; nn.LSTM is torch's
# default, where cuDNN's float32 RNN uses TF32 tensor cores on sm_80+ (the targets are judged against it).
CUDA_ONLY_PEERS = ("flashrnn", "nn.LSTM-fp32")
PEER_CELL = {
    "flashrnn": "2000",
    "nn.LSTM-fp32": "2000",
    "nn.LSTM": "2000",
    "LSTM2000": "2000",
    "ref2000": "2000",
    "jit2000": "2000",
    "LSTM1997": "1997",
    "ref1997": "1997",
    "jit1997": "1997",
}
SLOW_PEERS = ("ref2000", "jit2000", "ref1997", "jit1997")  # per-step Python / interpreter loops

# The per-step loops are slow by nature (a Python or TorchScript step each); above this much T*T*B*G their
# fwd+bwd is skipped to keep the suite in budget (--bench-all-peers runs them anyway).
SLOW_PEER_MAX_BWD_WORK = 2e9

# The targets (all float32, CPU, forward+backward). ratio = time(peer) / time(ours), "x faster".
TARGETS = (
    # (id, ours, peer, (B, H, D, T), required speed-up)
    ("T1", "LSTM2000", "nn.LSTM", (32, 128, 32, 100), 1.0),
    ("T2", "LSTM2000", "nn.LSTM", (1, 8, 2, 100), 10.0),
    ("T3", "LSTM1997", "ref1997", (32, 128, 32, 100), 10.0),
    ("T4", "LSTM1997", "ref1997", (1, 8, 2, 100), 30.0),
)
TARGET_SIZES = {t[3] for t in TARGETS}

# (B, H, D) of the "step" cases: one step a call with the state carried (autoregressive decoding, RL policies), where
# a call's fixed costs are all of its time.
STEP_SIZES = ((1, 8, 2), (1, 128, 128), (16, 128, 128), (1, 512, 512), (16, 512, 512))


@dataclass(frozen=True)
class Case:
    device: str
    dtype: str  # "float32" | "float64" | ...
    B: int
    H: int
    D: int
    T: int
    mode: str  # "fwd" | "fwd+bwd" | "step"

    @property
    def size(self):
        return (self.B, self.H, self.D, self.T)

    @property
    def is_target(self) -> bool:
        return (
            self.device == "cpu" and self.dtype == "float32" and self.mode == "fwd+bwd" and self.size in TARGET_SIZES
        )

    def id(self) -> str:
        return f"{self.device}-{self.dtype}-B{self.B}-H{self.H}-D{self.D}-T{self.T}-{self.mode.replace('+', '')}"

    def group(self, cell: str) -> str:
        return f"{self.device} {cell} {self.dtype} B={self.B} H={self.H} D={self.D} T={self.T} {self.mode}"


def cpu_sizes():
    """(B, H, D, T) of the CPU grid, in run order (the four issue targets first)."""
    sizes = [
        (32, 128, 32, 100),  # issue target size 1
        (1, 8, 2, 100),  # issue target size 2 (paper tiny net)
        (1, 4, 2, 100),  # paper tiny net
    ]
    for B in (32, 128, 256):  # typical
        for H in (64, 128, 256):
            sizes.append((B, H, 32, 100))
    for H in (512, 1024):  # typical, wide
        sizes.append((32, H, 32, 100))
    for T in (10, 1000, 10000):  # T sweep, tiny net
        sizes.append((1, 8, 2, T))
    for T in (10, 1000):  # T sweep, typical net
        sizes.append((32, 128, 32, T))
    out = []
    for s in sizes:
        if s not in out:
            out.append(s)
    return out


def cpu_cases():
    cases = []
    for B, H, D, T in cpu_sizes():
        for mode in ("fwd+bwd", "fwd"):
            cases.append(Case("cpu", "float32", B, H, D, T, mode))
    for B, H, D, T in ((32, 128, 32, 100), (1, 8, 2, 100)):  # the target sizes in double precision too
        cases.append(Case("cpu", "float64", B, H, D, T, "fwd+bwd"))
    for B, H, D, T in ((32, 128, 32, 100), (1, 8, 2, 100)):  # and in bfloat16 (the fused peers: float32 inside)
        cases.append(Case("cpu", "bfloat16", B, H, D, T, "fwd+bwd"))
    for B, H, D in STEP_SIZES:  # decoding, a step a call
        cases.append(Case("cpu", "float32", B, H, D, 1, "step"))
    return cases


def cuda_cases():
    """The CUDA issue's grid (T = 1000, D = 32): float32 B in {1, 16, 64} x H in {32, 64, 128, 256} (fwd+bwd,
    and fwd for the per-step latency at H <= 128) and B=256 H=1024; bfloat16 B in {16, 64} x H in
    {256, 512, 1024}; float16 B=16 H=768; the paper's tiny net B=1 H=8 D=2 T=100."""
    cases = [Case("cuda", "float32", 1, 8, 2, 100, mode) for mode in ("fwd+bwd", "fwd")]
    for B in (1, 16, 64):
        for H in (32, 64, 128, 256):
            cases.append(Case("cuda", "float32", B, H, 32, 1000, "fwd+bwd"))
            if H <= 128:
                cases.append(Case("cuda", "float32", B, H, 32, 1000, "fwd"))
    cases.append(Case("cuda", "float32", 256, 1024, 32, 1000, "fwd+bwd"))
    for B in (16, 64):
        for H in (256, 512, 1024):
            cases.append(Case("cuda", "bfloat16", B, H, 32, 1000, "fwd+bwd"))
    cases.append(Case("cuda", "float16", 16, 768, 32, 1000, "fwd+bwd"))
    return cases


def params(cases):
    """pytest.param per (case, peer), peers of one case adjacent; target cases carry the ``quick`` mark."""
    out = []
    for case in cases:
        marks = [pytest.mark.quick] if case.is_target else []
        for peer in PEERS:
            if peer in CUDA_ONLY_PEERS and case.device != "cuda":
                continue
            out.append(pytest.param(case, peer, id=f"{case.id()}-{peer}", marks=marks))
    return out


# ---- building the peers ------------------------------------------------------------------------------------


def build_peer(peer: str, case: Case):
    """The module for one peer, on the case's device and dtype, or raises pytest.skip with the reason."""
    import lstm_ext

    device = torch.device(case.device)
    dtype = getattr(torch, case.dtype)
    D, H = case.D, case.H
    torch.manual_seed(0)
    if peer == "nn.LSTM":
        return torch.nn.LSTM(D, H, device=device, dtype=dtype)
    if peer == "nn.LSTM-fp32":
        if dtype != torch.float32:
            pytest.skip("TF32 applies to float32 only: nn.LSTM is this case's cuDNN peer")
        return torch.nn.LSTM(D, H, device=device, dtype=dtype)  # run() times it with TF32 off
    if peer == "flashrnn":
        return _flashrnn_peer(case, device, dtype)
    cell = PEER_CELL[peer]
    cls = lstm_ext.LSTM2000 if cell == "2000" else lstm_ext.LSTM1997
    if peer.startswith("LSTM"):
        # CPU float16/bfloat16 modules run the float32 kernels (lstm_ext.functional.lstm_layer)
        cpu_half = case.device == "cpu" and dtype in (torch.float16, torch.bfloat16)
        if not (cpu_half or lstm_ext.functional.fused_supports(device, dtype)):
            pytest.skip(f"the fused op has no {case.device}/{case.dtype} kernel in this build")
        return cls(D, H, device=device, dtype=dtype, backend="fused")
    if peer.startswith("ref"):
        return cls(D, H, device=device, dtype=dtype, backend="reference")
    # jit: the same loop, scripted; skip with the reason if TorchScript cannot compile it here.
    base = cls(D, H, device=device, dtype=dtype, backend="reference")
    try:
        import jit_loop

        scripted = jit_loop.scripted_from(base, forget_gate=cell == "2000")
    except Exception as e:  # noqa: BLE001  (any scripting failure is a reason to skip, not an error)
        pytest.skip(f"torch.jit.script failed on the reference loop: {type(e).__name__}: {e}")
    _check_same_as_reference(scripted, base, case)
    return scripted


class FlashRNNLSTM(torch.nn.Module):
    """FlashRNN's LSTM (one head of size H) behind nn.LSTM's call: x (T, B, D) -> (y (T, B, H), None).

    The input projection is a torch linear layer, as for every other peer; FlashRNN runs the recurrence."""

    def __init__(self, D, H, backend, device, dtype):
        super().__init__()
        self.H, self.backend = H, backend
        self.proj = torch.nn.Linear(D, 4 * H, bias=False, device=device, dtype=dtype)
        self.R = torch.nn.Parameter(torch.randn(4, 1, H, H, device=device, dtype=dtype) / H**0.5)
        self.b = torch.nn.Parameter(torch.zeros(4, 1, H, device=device, dtype=dtype))

    def forward(self, x):
        from flashrnn import flashrnn

        T, B, _ = x.shape
        Wx = self.proj(x).transpose(0, 1).reshape(B, T, 4, 1, self.H)  # [B, T, G, N, D]
        states = x.new_zeros(2, B, 1, 1, self.H)
        out, _ = flashrnn(Wx, self.R, self.b, states=states, function="lstm", backend=self.backend)
        return out[0].reshape(B, T, self.H).transpose(0, 1), None


class _NoWait:
    @staticmethod
    def random() -> float:
        return 0.0


def patch_flashrnn_builds(cuda_init=None) -> None:
    """Make FlashRNN's kernel builds findable again. FlashRNN names a build after its flags, cut to 64 characters:
    that drops the flags its autotuning varies, so every variant of a configuration is built in one directory,
    each replacing the last, in every process anew. Here each build is named after a hash of all its flags (a
    build made once, e.g. by bench/flashrnn_prebuild.py, is found again), and FlashRNN's random wait of up to
    10 s before each build or load (for processes building one name at once, which these names avoid) is gone.
    ``cuda_init``: flashrnn.flashrnn.cuda_init (by default, imported)."""
    if cuda_init is None:
        from flashrnn.flashrnn import cuda_init
    if getattr(cuda_init, "lstm_ext_patched", False):
        return
    torch_load = cuda_init._load

    def load(name, sources, **kwargs):
        flags = repr([kwargs.get(k) for k in ("extra_cflags", "extra_cuda_cflags", "extra_ldflags")])
        return torch_load(f"{name}_{hashlib.sha1(flags.encode()).hexdigest()[:12]}", sources, **kwargs)

    cuda_init._load = load
    cuda_init.random = _NoWait
    cuda_init.lstm_ext_patched = True


def flashrnn_module(case: Case, device, dtype) -> tuple[FlashRNNLSTM | None, list[str]]:
    """FlashRNN's fused CUDA kernel where it runs at this size and dtype, else its alternating CUDA kernel, after
    one small forward+backward (which builds the kernels on first use): (the module, []), or (None, each
    backend's error). FlashRNN builds a kernel per hidden size, batch size and dtype (bench/flashrnn_prebuild.py
    builds those of the grid in parallel beforehand)."""
    patch_flashrnn_builds()
    errors = []
    for backend in ("cuda_fused", "cuda"):
        m = FlashRNNLSTM(case.D, case.H, backend, device, dtype)
        try:
            x = torch.randn(3, case.B, case.D, device=device, dtype=dtype, requires_grad=True)
            y, _ = m(x)
            y.sum().backward()
            torch.cuda.synchronize()
            return m, []
        except Exception as e:  # noqa: BLE001  (FlashRNN refuses sizes and dtypes with assorted errors)
            errors.append(f"{backend}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    return None, errors


def _flashrnn_peer(case: Case, device, dtype):
    """flashrnn_module's module, or a skip with FlashRNN's own errors (its reasons are part of the result)."""
    try:
        import flashrnn  # noqa: F401
    except ImportError as e:
        pytest.skip(f"flashrnn is not installed ({e}); scripts/gpu_check.sh installs the wheels in bench/wheels")
    m, errors = flashrnn_module(case, device, dtype)
    if m is None:
        pytest.skip("FlashRNN does not run this case: " + "; ".join(errors))
    return m


def _check_same_as_reference(scripted, ref, case: Case):
    """The scripted loop must compute what the reference module computes (small input, cheap)."""
    x = torch.randn(5, 2, case.D, device=case.device, dtype=getattr(torch, case.dtype))
    with torch.no_grad():
        y_s, (h_s, c_s) = scripted(x)
        y_r, (h_r, c_r) = ref(x)
    tol = dict(rtol=2e-2, atol=2e-2) if case.dtype in ("float16", "bfloat16") else {}
    torch.testing.assert_close(y_s, y_r, **tol)
    torch.testing.assert_close(c_s, c_r, **tol)


# ---- timing ------------------------------------------------------------------------------------------------


@dataclass
class Options:
    target_s: float = 1.0  # measured time per benchmark (rounds = target_s / one call), within the bounds below
    min_rounds: int = 5
    max_rounds: int = 200
    slow_min_rounds: int = 3  # when one call takes more than a second
    warmup: int = 1  # untimed calls before the calibration call (one more for TorchScript's profiling executor)
    slow_peer_max_T: int = 10000  # the per-step loops run only up to this T (0 = no limit)
    slow_peer_max_bwd_work: float = SLOW_PEER_MAX_BWD_WORK  # ... and in fwd+bwd up to T*T*B*G elements (0 = no limit)
    threads: int = 0  # torch.set_num_threads (0 = torch's default)


def calibrate(fn, setup, opts: Options, warmup: int) -> int:
    """Untimed warm-up calls, then one untimed calibration call: the number of timed rounds for about
    ``opts.target_s`` of measurement, within the round bounds."""
    for _ in range(warmup):
        setup()
        fn()
    setup()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    min_rounds = opts.slow_min_rounds if one > 1.0 else opts.min_rounds
    return max(min_rounds, min(opts.max_rounds, math.ceil(opts.target_s / max(one, 1e-9))))


def run_limit(benchmark, name: str, fn, setup, opts: Options, **info):
    """Time one of the machine's limits (bench/test_bench_limits.py) the way the peers are timed."""
    rounds = calibrate(fn, setup, opts, warmup=opts.warmup)
    benchmark.group = f"cpu limits: {name}"
    benchmark.extra_info.update(limit=name, threads=torch.get_num_threads(),
                                loadavg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None, **info)  # fmt: skip
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)


def run(benchmark, case: Case, peer: str, opts: Options):
    if case.device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    if peer in SLOW_PEERS and opts.slow_peer_max_T and case.T > opts.slow_peer_max_T:
        pytest.skip(
            f"{peer}: the per-step loop is limited to T <= {opts.slow_peer_max_T} to keep the suite in budget "
            "(--bench-all-peers lifts it)"
        )
    G = (4 if PEER_CELL[peer] == "2000" else 3) * case.H
    work = case.T * case.T * case.B * G
    if (peer in SLOW_PEERS and case.device == "cpu" and case.mode == "fwd+bwd" and opts.slow_peer_max_bwd_work
            and work > opts.slow_peer_max_bwd_work):
        pytest.skip(
            f"{peer}: the per-step loop is slow at this size (T*T*B*G = {work:.2g} > "
            f"{opts.slow_peer_max_bwd_work:.2g}); skipped to keep the suite in budget (--bench-all-peers runs it)"
        )
    m = build_peer(peer, case)
    dtype = getattr(torch, case.dtype)
    torch.manual_seed(1)
    x = torch.randn(case.T, case.B, case.D, device=case.device, dtype=dtype)
    cuda = case.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    if case.mode == "fwd":
        m.eval()

        def setup():
            return None

        def fn():
            with torch.no_grad():
                m(x)
            sync()

    elif case.mode == "step":
        m.eval()
        state = [tuple(torch.zeros(1, case.B, case.H, device=case.device, dtype=dtype) for _ in range(2))]

        def setup():
            return None

        def fn():
            with torch.no_grad():
                _, state[0] = m(x, state[0])
            sync()

    else:
        m.train()
        ps = [p for p in m.parameters() if p.requires_grad]

        def setup():
            for p in ps:
                p.grad = None

        def fn():
            y, _ = m(x)
            y.sum().backward()
            sync()

    if peer == "nn.LSTM-fp32":  # forward and backward under cuDNN's TF32 switch, off
        timed = fn

        def fn():
            b = torch.backends.cudnn
            with b.flags(enabled=True, benchmark=b.benchmark, deterministic=b.deterministic, allow_tf32=False):
                timed()

    # Warm-up, not timed (also pays TorchScript's profiling runs and the first-call allocations); the calibration
    # call after it is not timed either.
    rounds = calibrate(fn, setup, opts, warmup=opts.warmup + (1 if peer.startswith("jit") else 0))
    cell = PEER_CELL[peer]
    benchmark.group = case.group(cell)
    benchmark.extra_info.update(
        device=case.device,
        cell=cell,
        dtype=case.dtype,
        B=case.B,
        H=case.H,
        D=case.D,
        T=case.T,
        mode=case.mode,
        peer=peer,
        threads=torch.get_num_threads(),
        loadavg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        target_case=case.is_target,
    )
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
