"""What the installed build says about itself (lstm_ext.build_info, `lstm-ext info`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import lstm_ext


def test_cpu_kernels_run_on_torchs_openmp_pool_when_torch_has_one():
    """With an OpenMP torch the kernels must be built with OpenMP too: their own threads would compete with
    the pool's spinning workers after every torch op (the forward at B=32 H=128 ran 2x slower). A build
    directory configured without it (e.g. -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON) fails here."""
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        assert lstm_ext.build_info.CPU_OPENMP in (True, False)
        return
    assert lstm_ext.build_info.CPU_OPENMP, (
        "lstm_ext was built without OpenMP although torch uses it: delete build/ and reinstall with "
        "pip install --no-build-isolation --force-reinstall --no-deps ."
    )


def test_info_names_the_build():
    out = subprocess.run([sys.executable, "-m", "lstm_ext", "info"], capture_output=True, text=True, check=True,
                         cwd="/")  # fmt: skip
    assert f"built for torch {lstm_ext.build_info.TORCH_VERSION}" in out.stdout
    assert "CPU kernel threads: " + ("torch OpenMP pool" if lstm_ext.build_info.CPU_OPENMP else "own") in out.stdout


def test_the_package_is_marked_typed():
    """PEP 561: type checkers read the annotations of the installed package (lstm_ext/py.typed is in the wheel)."""
    from importlib.resources import files

    assert files("lstm_ext").joinpath("py.typed").is_file()


def elf_needed(path: str) -> list[str]:
    """The DT_NEEDED entries (shared libraries a 64-bit little-endian ELF file links) of `path`."""
    import struct

    data = open(path, "rb").read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not a 64-bit little-endian ELF file"
    shoff, shentsize, shnum = struct.unpack_from("<Q", data, 0x28)[0], *struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    dynamic = next(s for s in sections if s[1] == 6)  # SHT_DYNAMIC; its sh_link is the string table
    strtab_offset = sections[dynamic[6]][4]
    needed = []
    for off in range(dynamic[4], dynamic[4] + dynamic[5], 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            end = data.index(b"\0", strtab_offset + val)
            needed.append(data[strtab_offset + val : end].decode())
    return needed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF and libstdc++: Linux builds")
def test_the_extension_links_the_shared_libstdcxx():
    """A compiler that links libstdc++ statically (gcc 13 at /opt/gcc on our lent GPU machines) gave _C a private
    copy whose iostreams were never set up: every error message with a number in it crashed the process.
    CMakeLists.txt links torch's libstdc++.so.6; an error message with numbers must come back as an error."""
    import lstm_ext._C as ext

    assert "libstdc++.so.6" in elf_needed(ext.__file__), elf_needed(ext.__file__)
    with pytest.raises(RuntimeError, match=r"the number of cells \(4\) must be a multiple of block_size \(3\)"):
        torch.ops.lstm_ext.recurrence(*(torch.zeros(s, dtype=torch.float64) for s in ((1, 1, 16), (16, 4), (1, 4), (1, 4))),
                                      None, False, 3, "cells", "tanh", False)  # fmt: skip
