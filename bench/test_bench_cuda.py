"""CUDA benchmarks (skipped without CUDA): the same peers on a smaller grid; nn.LSTM runs cuDNN here.

The timed callable ends with torch.cuda.synchronize(). The fused peers skip where this build has no CUDA kernel.
"""

import pytest

import benchlib


@pytest.mark.parametrize("case, peer", benchlib.params(benchlib.cuda_cases()))
def test_lstm_cuda(benchmark, bench_opts, case, peer):
    benchlib.run(benchmark, case, peer, bench_opts)
