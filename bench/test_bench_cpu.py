"""CPU benchmarks: every peer (bench/benchlib.py) on the CPU grid; the issue's four targets are marked ``quick``.

Grid (float32 unless noted; D = 32 for the typical nets, 2 for the paper's tiny nets):
  paper tiny nets   B=1, H in {4, 8}, D=2, T=100
  typical           B in {32, 128, 256}, H in {64, 128, 256}, T=100; B=32, H in {512, 1024}, T=100
  T sweep           B=1, H=8: T in {10, 100, 1000, 10000};  B=32, H=128: T in {10, 100, 1000}
  float64           the two target sizes, forward+backward
  bfloat16          the two target sizes, forward+backward (LSTM2000/LSTM1997 compute in float32 on the CPU and
                    return bfloat16; nn.LSTM and the loops compute in bfloat16)
each in "fwd+bwd" and "fwd" (float64, bfloat16: fwd+bwd only). The per-step loops (reference, TorchScript) skip
fwd+bwd where their per-step loops would take minutes (B=32/H=128/T=1000 and T=10000; see
benchlib.SLOW_PEER_MAX_BWD_WORK).
"""

import pytest

import benchlib


@pytest.mark.parametrize("case, peer", benchlib.params(benchlib.cpu_cases()))
def test_lstm(benchmark, bench_opts, case, peer):
    benchlib.run(benchmark, case, peer, bench_opts)
