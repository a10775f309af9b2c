"""bench/flashrnn_prebuild.py: which FlashRNN builds the CUDA grid needs, and what it does without FlashRNN."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "flashrnn_prebuild", Path(__file__).resolve().parent.parent / "bench" / "flashrnn_prebuild.py"
)
prebuild = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prebuild)
benchlib = prebuild.benchlib


def test_one_build_per_dtype_batch_and_hidden_size_of_the_cuda_grid():
    cases = benchlib.cuda_cases()
    keys = prebuild.build_keys(cases + benchlib.cpu_cases())  # CPU cases need no build
    assert [(c.dtype, c.B, c.H) for c in keys] == list(dict.fromkeys((c.dtype, c.B, c.H) for c in cases))
    assert len(keys) == 21  # float32: B=1 H=8, 3 x 4 of the grid, B=256 H=1024; bfloat16: 2 x 3; float16: 1
    assert all(c.device == "cuda" for c in keys)


def test_without_flashrnn_it_builds_nothing_and_says_so(capsys):
    if importlib.util.find_spec("flashrnn") is not None:
        pytest.skip("flashrnn is installed here (the GPU check's machine)")
    assert prebuild.main(["--jobs", "1"]) == 0
    assert "flashrnn is not installed" in capsys.readouterr().out


def test_jobs_must_be_positive():
    with pytest.raises(SystemExit) as e:
        prebuild.main(["--jobs", "0"])
    assert e.value.code == 2


def test_builds_are_named_after_all_their_flags_and_loaded_without_waiting():
    """patch_flashrnn_builds on a stand-in for flashrnn.flashrnn.cuda_init: two variants whose names FlashRNN
    would cut to the same 64 characters get their own builds; the same flags, the same build; no random wait."""
    import types

    calls = []
    cuda_init = types.SimpleNamespace(_load=lambda name, sources, **kw: calls.append(name) or name, random=None)
    benchlib.patch_flashrnn_builds(cuda_init)
    benchlib.patch_flashrnn_builds(cuda_init)  # idempotent: not wrapped twice
    cut = "flashrnn_fused_" + "x" * 64
    a = cuda_init._load(cut, ["k.cu"], extra_cflags=["-DA=1", "-DWARP=2"], extra_cuda_cflags=[], extra_ldflags=[])
    b = cuda_init._load(cut, ["k.cu"], extra_cflags=["-DA=1", "-DWARP=4"], extra_cuda_cflags=[], extra_ldflags=[])
    c = cuda_init._load(cut, ["k.cu"], extra_cflags=["-DA=1", "-DWARP=2"], extra_cuda_cflags=[], extra_ldflags=[])
    assert a != b and a == c and a.startswith(cut + "_") and a.isidentifier()
    assert calls == [a, b, c]
    assert cuda_init.random.random() == 0.0
