"""On-line training of the 1997 paper's nets (the reproduction's inner loop), against the same training in plain
PyTorch, measured in the same run (CPU, float32 as the experiments run it).

  paper_train    ``PaperNet.train`` on a chunk of sequences: each sequence trained inside
                 ``torch.ops.lstm_ext.paper_train`` (forward, the truncated gradient, one weight change)
  autograd loop  per sequence: ``lstm_ext.paper.forward_ref`` (one Python step at a time, r_{t-1} detached: the
                 same truncated gradient), ``backward()`` and the masked gradient step -- a plain Python
                 implementation of the paper's training

Rows whose error comes at the sequence end only, where one weight change per sequence is the paper's rule:
the adding net (4-T100: 2 dense inputs), 2c (q = p = 100: one-hot inputs) and 6b (one-hot, 8 outputs). The
report (bench/report.py) divides each call's time by its sequence steps: ns per sequence step.
"""

import numpy as np
import pytest
import torch

import benchlib
from lstm_ext.experiments.protocol import trial_net
from lstm_ext.experiments.rows import all_rows
from lstm_ext.paper import forward_ref

ROWS = ("4-T100", "2c-q100-p100", "6b")
SEQUENCES = {"paper_train": 64, "autograd loop": 1}  # sequences per timed call


def _autograd_loop(net, row, batch):
    """One call: the sequences of ``batch`` one after another, each a plain PyTorch gradient step."""
    spec, lr = row.spec, row.lr
    Mh, Mo = net.Mh, net.Mo
    targets = torch.as_tensor(batch.targets, dtype=net.dtype)
    mask = torch.as_tensor(batch.target_mask, dtype=net.dtype)

    def fn():
        for i in range(batch.n):
            Wh, Wo = net.Wh.requires_grad_(True), net.Wo.requires_grad_(True)
            y = forward_ref(spec, Wh, Wo, batch.take(np.arange(i, i + 1)), truncate=True)
            loss = 0.5 * (mask[i : i + 1, :, None] * (targets[i : i + 1] - y) ** 2).sum()
            gWh, gWo = torch.autograd.grad(loss, (Wh, Wo))
            with torch.no_grad():
                net.Wh = (Wh - lr * gWh * Mh).detach()
                net.Wo = (Wo - lr * gWo * Mo).detach()

    return fn


@pytest.mark.parametrize("peer", list(SEQUENCES))
@pytest.mark.parametrize("key", ROWS)
def test_paper_train(benchmark, bench_opts, key, peer):
    row = {r.key: r for r in all_rows()}[key]
    assert row.rule.on == "last", "one weight change per sequence is the paper's rule only with error at the end"
    net, rng, _, _ = trial_net(row, 0, seed=0)
    batch = row.generate(SEQUENCES[peer], rng)
    if peer == "paper_train":
        fn = lambda: net.train(batch, row.lr, update="sequence")  # noqa: E731
    else:
        fn = _autograd_loop(net, row, batch)
    rounds = benchlib.calibrate(fn, lambda: None, bench_opts, warmup=bench_opts.warmup)
    benchmark.group = f"cpu paper_train: {key}"
    benchmark.extra_info.update(paper_row=key, peer=peer, sequences=int(batch.n), steps=int(batch.lengths.sum()),
                                threads=torch.get_num_threads())  # fmt: skip
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
