"""Turn pytest-benchmark JSON into a Markdown speed-up table and PNG plots.

    python -m bench.report bench/results/cpu.json [more.json ...] [--out bench/results] [--name cpu]

Writes ``<out>/<name>.md`` (name: the first JSON's file stem) and ``<out>/<name>_speedup_vs_H_*.png``,
``<out>/<name>_time_vs_T_*.png``. Times are the median over the timed rounds (warm-up excluded); a speed-up is
``time(peer) / time(ours)``, i.e. "how many times faster" LSTM2000 / LSTM1997 is than that peer (> 1: faster).

Needs only the standard library and matplotlib (the plots are skipped, with a note, if it is missing); it does not
import torch or lstm_ext, so it runs anywhere the JSON is.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from collections import defaultdict

PEERS = ("nn.LSTM", "nn.LSTM-fp32", "LSTM2000", "ref2000", "jit2000", "LSTM1997", "ref1997", "jit1997", "flashrnn")
PEER_TITLES = {
    "nn.LSTM": "nn.LSTM",
    "nn.LSTM-fp32": "nn.LSTM (TF32 off)",
    "LSTM2000": "LSTM2000 (fused)",
    "ref2000": "reference 2000",
    "jit2000": "jit.script 2000",
    "LSTM1997": "LSTM1997 (fused)",
    "ref1997": "reference 1997",
    "jit1997": "jit.script 1997",
    "flashrnn": "FlashRNN",
}
# (ours, peer) pairs reported as speed-ups; the last is across cells (for orientation only).
RATIOS = (
    ("LSTM2000", "nn.LSTM"),
    ("LSTM2000", "nn.LSTM-fp32"),
    ("LSTM2000", "ref2000"),
    ("LSTM2000", "jit2000"),
    ("LSTM2000", "flashrnn"),
    ("LSTM1997", "ref1997"),
    ("LSTM1997", "jit1997"),
    ("LSTM1997", "nn.LSTM"),
)
SHORT = {"LSTM2000": "2000", "LSTM1997": "1997", "nn.LSTM": "nn", "nn.LSTM-fp32": "nn fp32", "ref2000": "ref", "ref1997": "ref",
         "jit2000": "jit", "jit1997": "jit", "flashrnn": "flash"}
# The targets: (id, ours, peer, (B, H, D, T), required speed-up), float32, CPU, forward+backward.
TARGETS = (
    ("T1", "LSTM2000", "nn.LSTM", (32, 128, 32, 100), 1.0, "LSTM2000 time <= 1.0x nn.LSTM time"),
    ("T2", "LSTM2000", "nn.LSTM", (1, 8, 2, 100), 10.0, "LSTM2000 >= 10x faster than nn.LSTM"),
    ("T3", "LSTM1997", "ref1997", (32, 128, 32, 100), 10.0, "LSTM1997 >= 10x faster than the reference loop"),
    ("T4", "LSTM1997", "ref1997", (1, 8, 2, 100), 30.0, "LSTM1997 >= 30x faster than the reference loop"),
)
# The CUDA issue's targets (#5), T = 1000, D = 32: (id, dtype, mode, ours, peer, [(B, H)], need, text). need is a
# speed-up (time(peer) / time(ours)), except for the latency target "L", whose need is microseconds per step.
_FP32_GRID = [(B, H) for B in (1, 16, 64) for H in (32, 64, 128, 256)]
CUDA_TARGETS = (
    ("C1", "float32", "fwd+bwd", "LSTM2000", "nn.LSTM", _FP32_GRID, 2.0, ">= 2x faster than cuDNN"),
    ("C2", "float32", "fwd+bwd", "LSTM2000", "nn.LSTM", [(256, 1024)], 1.0, ">= 1x cuDNN"),
    ("C3", "bfloat16", "fwd+bwd", "LSTM2000", "nn.LSTM", [(B, H) for B in (16, 64) for H in (256, 512, 1024)], 2.0,
     ">= 2x faster than cuDNN"),
    ("C4", "float16", "fwd+bwd", "LSTM2000", "nn.LSTM", [(16, 768)], 1.0, ">= 1x cuDNN"),
    ("L", "float32", "fwd", "LSTM2000", None, [(B, H) for B in (1, 16, 64) for H in (32, 64, 128)], 1.0,
     "forward <= 1 us per step"),
    ("C5", "float32", "fwd+bwd", "LSTM1997", "ref1997", [(64, 256)], 30.0, ">= 30x faster than the reference loop"),
)
MODES = ("fwd+bwd", "fwd", "step")


# ---- loading -----------------------------------------------------------------------------------------------


def load(paths):
    """{case_key: {peer: stats}}, machine_info of the first file, and the files' dates."""
    results: dict = defaultdict(dict)
    machine, dates, loads, threads, limits, paper = None, [], [], set(), {}, defaultdict(dict)
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"bench.report: cannot read {path} as pytest-benchmark JSON: {e}") from None
        if not isinstance(data, dict):
            raise SystemExit(f"bench.report: {path} is not pytest-benchmark JSON (a {type(data).__name__} at the top)")
        machine = machine or data.get("machine_info", {})
        if data.get("datetime"):
            dates.append(data["datetime"])
        for b in data.get("benchmarks", []):
            e = b.get("extra_info") or {}
            if "limit" in e:  # bench/test_bench_limits.py
                limits[e["limit"]] = {"median": b["stats"]["median"], "min": b["stats"]["min"], "flop": e.get("flop"),
                                  "size": tuple(e[k] for k in ("B", "H", "T")) if "H" in e else None}
                continue
            if "paper_row" in e:  # bench/test_bench_paper.py
                paper[e["paper_row"]][e["peer"]] = {"median": b["stats"]["median"], "steps": int(e["steps"])}
                continue
            if "peer" not in e:
                continue
            key = (e["device"], e["dtype"], e["mode"], int(e["B"]), int(e["H"]), int(e["D"]), int(e["T"]))
            if e.get("loadavg_1min") is not None:
                loads.append(float(e["loadavg_1min"]))
            if e.get("threads"):
                threads.add(int(e["threads"]))
            s = b["stats"]
            results[key][e["peer"]] = {"median": s["median"], "min": s["min"], "rounds": s["rounds"],
                                       "iqr": s.get("iqr", float("nan")), "load": e.get("loadavg_1min")}
    machine = dict(machine or {})
    machine["_loads"], machine["_threads"], machine["_limits"], machine["_paper"] = loads, sorted(threads), limits, paper
    return results, machine, dates


# ---- formatting --------------------------------------------------------------------------------------------


def fmt_time(sec):
    if sec is None:
        return "—"
    if sec >= 1.0:
        return f"{sec:.3g} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.3g} ms"
    return f"{sec * 1e6:.3g} µs"


def fmt_ratio(r):
    if r is None:
        return "—"
    return f"{r:.3g}×" if r < 100 else f"{r:.0f}×"


def ratio(peers, ours, peer, stat="median"):
    if ours not in peers or peer not in peers:
        return None
    return peers[peer][stat] / peers[ours][stat]


def local_hardware():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model or platform.processor() or platform.machine(), "logical_cores": os.cpu_count()}


def hardware_lines(machine):
    ext = machine.get("lstm_ext_bench") or {}
    local = local_hardware()
    cpu = machine.get("cpu") or {}
    model = ext.get("cpu_model") or cpu.get("brand_raw") or local["cpu_model"]
    cores = ext.get("logical_cores") or cpu.get("count") or local["logical_cores"]
    lines = [
        f"- CPU: **{model}**, {cores} logical cores; torch threads: "
        + (", ".join(map(str, machine.get("_threads") or [])) or str(ext.get("torch_threads", "?")))
        + " (pytest option `--bench-threads`; default: torch's own)",
        f"- torch {ext.get('torch_version', '?')}, lstm_ext {ext.get('lstm_ext_version', '?')}"
        f" (CPU kernel AVX2: {ext.get('lstm_ext_cpu_avx2', '?')}, float32 step products:"
        f" {ext.get('lstm_ext_cpu_panel_kernel', '?')}, on torch's OpenMP threads:"
        f" {ext.get('lstm_ext_cpu_openmp', '?')}, CUDA build: {ext.get('lstm_ext_with_cuda', '?')})",
        f"- Python {machine.get('python_version', '?')} on {machine.get('system', '?')} {machine.get('release', '')}",
    ]
    loads = machine.get("_loads") or []
    if loads:
        loads = sorted(loads)
        lines.append(f"- 1-minute load average sampled at each benchmark: min {loads[0]:.1f}, "
                     f"median {loads[len(loads) // 2]:.1f}, max {loads[-1]:.1f} (other work on the machine makes "
                     "timings noisy; the peers of one row ran back to back)")
    if ext.get("cuda_device"):
        lines.append(f"- GPU: {ext['cuda_device']}")
    return lines


def target_table(results):
    rows = [
        "| target | case (float32, CPU, fwd+bwd) | LSTM | time | peer | time | speed-up (median) | speed-up (min) "
        "| required | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {}
    for tid, ours, peer, (B, H, D, T), need, text in TARGETS:
        peers = results.get(("cpu", "float32", "fwd+bwd", B, H, D, T), {})
        r, rmin = ratio(peers, ours, peer), ratio(peers, ours, peer, "min")
        verdict = "n/a" if r is None else ("**PASS**" if r >= need else "**MISS**")
        verdicts[tid] = verdict
        t_ours = peers.get(ours, {}).get("median")
        t_peer = peers.get(peer, {}).get("median")
        rows.append(
            f"| {tid} | B={B} H={H} D={D} T={T} | {ours} | {fmt_time(t_ours)} | {PEER_TITLES[peer]} "
            f"| {fmt_time(t_peer)} | {fmt_ratio(r)} | {fmt_ratio(rmin)} | ≥ {need:g}× ({text}) | {verdict} |"
        )
    return rows, verdicts


def cuda_target_table(results):
    """One row per case of the CUDA issue's targets (CUDA_TARGETS), or [] without CUDA results."""
    if not any(k[0] == "cuda" for k in results):
        return [], {}
    rows = [
        "| target | dtype | case (cuda, T=1000, D=32) | mode | LSTM | time | peer | time | measured | required | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {}
    for tid, dtype, mode, ours, peer, sizes, need, text in CUDA_TARGETS:
        for B, H in sizes:
            peers = results.get(("cuda", dtype, mode, B, H, 32, 1000), {})
            t_ours = peers.get(ours, {}).get("median")
            if peer is None:  # latency: microseconds per step
                got = None if t_ours is None else t_ours / 1000 * 1e6
                ok = got is not None and got <= need
                measured, t_peer, peer_title = ("—" if got is None else f"{got:.2f} µs/step"), None, "—"
            else:
                got = ratio(peers, ours, peer)
                ok = got is not None and got >= need
                measured, t_peer, peer_title = fmt_ratio(got), peers.get(peer, {}).get("median"), PEER_TITLES[peer]
            verdict = "n/a" if got is None else ("**PASS**" if ok else "**MISS**")
            verdicts[f"{tid} {dtype} B={B} H={H}"] = verdict
            rows.append(f"| {tid} | {dtype} | B={B} H={H} | {mode} | {ours} | {fmt_time(t_ours)} | {peer_title} "
                        f"| {fmt_time(t_peer)} | {measured} | {text} | {verdict} |")  # fmt: skip
    return rows, verdicts


def layer_flop(cell: str, B: int, H: int, D: int, T: int) -> float:
    """Floating-point operations of one layer's forward+backward: the forward's input and recurrent products
    (2·T·B·G·(D+H), G = 4H or 3H gate rows) and, in the backward, twice as many (gradients on the inputs and
    on the weights); the elementwise cell math is left out."""
    G = (4 if cell == "2000" else 3) * H
    return 3 * 2 * T * B * G * (D + H)


def paper_lines(paper):
    """The reproduction's inner loop (bench/test_bench_paper.py): per row, the median time of a call over its
    sequence steps for paper_train and the plain-PyTorch loop, and their ratio."""
    if not paper:
        return []
    def per_step(sec):
        return f"{sec * 1e9:.0f} ns" if sec is not None and sec < 1e-6 else fmt_time(sec)

    lines = ["| row | paper_train | autograd loop | speed-up |", "|---|---:|---:|---:|"]
    for row, peers in paper.items():
        sec = {peer: v["median"] / v["steps"] for peer, v in peers.items()}
        ours, loop = sec.get("paper_train"), sec.get("autograd loop")
        speedup = fmt_ratio(loop / ours) if ours and loop else "—"
        lines.append(f"| {row} | {per_step(ours)} | {per_step(loop)} | {speedup} |")
    return lines


def limit_lines(results, limits):
    """What the machine allows the targets that miss: T2 against the autograd floor, T3 against the arithmetic
    rate (bench/test_bench_limits.py, measured in the same run)."""
    out = []
    floor = limits.get("autograd_floor")
    peers = results.get(("cpu", "float32", "fwd+bwd", 1, 8, 2, 100), {})
    if floor and "nn.LSTM" in peers:
        allowed = peers["nn.LSTM"]["median"] / 10
        out.append(f"- T2 allows LSTM2000 {fmt_time(allowed)} for its whole forward+backward (a tenth of nn.LSTM's "
                   f"{fmt_time(peers['nn.LSTM']['median'])}). The autograd floor, `a.sum().backward()` of a 4-element "
                   f"tensor, takes {fmt_time(floor['median'])} here: that much of every module's fwd+bwd is the "
                   "autograd engine and its Python before any work, and LSTM2000's forward (module call, input "
                   "projection, recurrence) comes on top.")  # fmt: skip
        linear = limits.get("linear_layer")
        if linear:
            left = allowed - linear["median"]
            verdict = (f"a tenth of nn.LSTM's time leaves LSTM2000 {fmt_time(left)} beyond that for two more "
                       "parameters and 100 sequential steps" if left > 0 else
                       f"that is already {fmt_time(-left)} more than a tenth of nn.LSTM's time")  # fmt: skip
            out.append(f"  For scale, torch's own `nn.Linear(2, 32)` on the same input (LSTM2000's input projection "
                       f"alone: one product, two parameters, no recurrence) takes {fmt_time(linear['median'])} "
                       f"forward+backward in the same harness; {verdict}.")  # fmt: skip
        fixed = fixed_cost(results, ("cpu", "float32", "fwd+bwd", 1, 8, 2), "LSTM2000")
        if fixed is not None:
            T0, per_call, per_step = fixed
            out.append(f"  LSTM2000's time there is nearly all per call, not per step: at {fmt_time(per_step)} per "
                       f"step (the slope in Time vs T) the recurrence's 100 steps are {fmt_time(100 * per_step)} of "
                       f"its {fmt_time(peers['LSTM2000']['median'])}. The rest is the cost of a call (module, op "
                       f"dispatch, autograd), which its time at T={T0} puts at {fmt_time(per_call)}.")  # fmt: skip
    mm = limits.get("matmul_rate")
    peers = results.get(("cpu", "float32", "fwd+bwd", 32, 128, 32, 100), {})
    if mm and mm.get("flop") and "ref1997" in peers and "LSTM1997" in peers:
        flop = layer_flop("1997", 32, 128, 32, 100)
        need = flop / (peers["ref1997"]["median"] / 10)
        ours = flop / peers["LSTM1997"]["median"]
        rate = mm["flop"] / mm["median"]
        out.append(f"- T3: LSTM1997's forward+backward at B=32 H=128 D=32 T=100 is {flop / 1e9:.2f} GFLOP of products "
                   f"(`layer_flop`). Ten times the reference loop's speed ({fmt_time(peers['ref1997']['median'])}) needs "
                   f"{need / 1e9:.0f} GFLOP/s; LSTM1997 runs at {ours / 1e9:.0f} GFLOP/s, and one large float32 product "
                   f"(`torch.mm`, 1024 x 1024) reaches {rate / 1e9:.0f} GFLOP/s on this machine.")  # fmt: skip
    step = limits.get("step_products")
    if step and step.get("size") and step.get("flop"):
        B, H, T = step["size"]
        peers = results.get(("cpu", "float32", "fwd", B, H, 32, T), {})
        if "nn.LSTM" in peers and "LSTM2000" in peers and ratio(peers, "LSTM2000", "nn.LSTM") < 1:
            rec = 2 * T * B * 4 * H * H  # the forward's recurrent products
            out.append(f"- Wide layers, where nn.LSTM is faster: at B={B} H={H} T={T} LSTM2000's forward takes "
                       f"{fmt_time(peers['LSTM2000']['median'])}, nn.LSTM's {fmt_time(peers['nn.LSTM']['median'])} "
                       f"({rec / peers['nn.LSTM']['median'] / 1e9:.0f} GFLOP/s of recurrent products alone; "
                       f"LSTM2000 {rec / peers['LSTM2000']['median'] / 1e9:.0f} GFLOP/s, cell math included). "
                       f"On the CPU nn.LSTM is oneDNN's fused LSTM primitive (`aten::mkldnn_rnn_layer` in the "
                       f"profiler), not a loop of ATen products. "
                       f"At this width (U: {4 * H * H * 4 / 2**20:.0f} MB in float32) LSTM2000's threads split the "
                       f"cells, each running all rows against its cells' rows of U in its panel kernel, with a barrier "
                       f"after each step (csrc/cpu/recurrence_cpu.cpp, forward_cell_split); its half of U still "
                       f"streams from the shared cache, not from L2, every step. For "
                       f"scale, the same products through MKL, `torch.addmm` ({B} x {H} by {H} x {4 * H}, {T} times, "
                       f"no cell math), take {fmt_time(step['median'])} "
                       f"({step['flop'] / step['median'] / 1e9:.0f} GFLOP/s).")  # fmt: skip
    slower = {}  # direction -> the float32 CPU cases where LSTM2000 is slower than nn.LSTM
    for (device, dtype, direction, B, H, _D, T), peers in sorted(results.items()):
        r = ratio(peers, "LSTM2000", "nn.LSTM")
        if device == "cpu" and dtype == "float32" and r is not None and r < 1:
            slower.setdefault(direction, []).append(f"B={B} H={H} T={T} {fmt_ratio(r)}")
    if slower:
        out.append("- Every case of this run where nn.LSTM is faster than LSTM2000 (float32; LSTM2000's speed-up): "
                   + "; ".join(f"{direction}: {', '.join(cases)}" for direction, cases in slower.items()) + ".")
    return out


def linear_fit(points):
    """Least squares time = a + b T over (T, seconds) points: (a, b, r2). b is the per-step cost; r2 (1 = all points
    on the line) says how linear in T the time is."""
    n = len(points)
    Ts = [t for t, _ in points]
    ys = [y for _, y in points]
    mt, my = sum(Ts) / n, sum(ys) / n
    stt = sum((t - mt) ** 2 for t in Ts)
    b = sum((t - mt) * (y - my) for t, y in points) / stt
    a = my - b * mt
    syy = sum((y - my) ** 2 for y in ys)
    r2 = 1 - sum((y - a - b * t) ** 2 for t, y in points) / syy if syy > 0 else 1.0
    return a, b, r2


def fixed_cost(results, size, peer):
    """(T0, per_call, per_step) for a T sweep of ``size`` (dev, dtype, mode, B, H, D): the per-step cost is the slope
    of linear_fit, the cost per call is the time at the shortest T0 less T0 steps. None without 3+ lengths."""
    pts = sorted((k[6], v[peer]["median"]) for k, v in results.items() if k[:6] == size and peer in v)
    if len(pts) < 3:
        return None
    _, per_step, _ = linear_fit(pts)
    T0, t0 = pts[0]
    return T0, t0 - T0 * per_step, per_step


def time_vs_T_lines(results):
    """Per T sweep (a size timed at 3+ lengths): each peer's per-step cost from a least-squares line through its
    times, with the fit's R^2 and its time at every T."""
    out = []
    sweeps = defaultdict(set)
    for k in results:
        sweeps[k[:6]].add(k[6])
    for key in sorted((k for k, Ts in sweeps.items() if len(Ts) >= 3), key=lambda k: (k[0] != "cpu", k)):
        dev, dtype, mode, B, H, D = key
        Ts = sorted(sweeps[key])
        out += [f"{dev}, {dtype}, {mode}, B={B} H={H} D={D}:", "",
                "| peer | per-step cost (fit) | R² | " + " | ".join(f"T={t:,}" for t in Ts) + " |",
                "|---|---:|---:|" + "---:|" * len(Ts)]  # fmt: skip
        for peer in PEERS:
            pts = [(t, results[key + (t,)][peer]["median"]) for t in Ts if peer in results.get(key + (t,), {})]
            if len(pts) < 3:
                continue
            _, b, r2 = linear_fit(pts)
            times = {t: y for t, y in pts}
            out.append(f"| {PEER_TITLES[peer]} | {fmt_time(b)} | {r2:.4f} | "
                       + " | ".join(fmt_time(times.get(t)) for t in Ts) + " |")  # fmt: skip
        out.append("")
    return out


def case_tables(results):
    out = []
    targets_at = defaultdict(list)
    for tid, _ours, _peer, size, _need, _text in TARGETS:
        targets_at[("cpu", "float32", "fwd+bwd") + size].append(tid)
    sections = sorted({k[:3] for k in results}, key=lambda k: (k[0] != "cpu", k[0], k[1], MODES.index(k[2])))
    for dev, dtype, mode in sections:
        keys = sorted((k for k in results if k[:3] == (dev, dtype, mode)), key=lambda k: (k[3], k[4], k[6], k[5]))
        present = [p for p in PEERS if any(p in results[k] for k in keys)]
        ratios = [(o, p) for o, p in RATIOS if o in present and p in present]
        out.append(f"### {dev}, {dtype}, {mode}")
        out.append("")
        head = ["B", "H", "D", "T"] + [PEER_TITLES[p] for p in present]
        head += [f"{SHORT[o]} vs {PEER_TITLES[p]}" for o, p in ratios] + ["target", "load"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---:|" * (len(head) - 1) + "---|")
        for k in keys:
            peers = results[k]
            cells = [str(v) for v in k[3:]]
            cells += [fmt_time(peers.get(p, {}).get("median")) for p in present]
            cells += [fmt_ratio(ratio(peers, o, p)) for o, p in ratios]
            cells.append(", ".join(targets_at.get(k, [])) or "")
            loads = [v["load"] for v in peers.values() if v.get("load") is not None]
            cells.append(f"{max(loads):.1f}" if loads else "")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


# ---- plots -------------------------------------------------------------------------------------------------


def plots(results, out_dir, name):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install matplotlib): no plots"
    written = []
    for dev, dtype in sorted({k[:2] for k in results}):
        # Speed-up vs H, one line per batch size (T = 100; D = 32 for B > 1, the tiny nets have D = 2).
        comparisons = [("LSTM2000", "nn.LSTM"), ("LSTM2000", "ref2000"), ("LSTM1997", "ref1997")]
        modes = [m for m in MODES if any(k[:3] == (dev, dtype, m) and k[6] == 100 for k in results)]
        if modes:
            fig, axes = plt.subplots(len(modes), len(comparisons), figsize=(4.6 * len(comparisons), 3.6 * len(modes)),
                                     squeeze=False)
            for i, mode in enumerate(modes):
                for j, (ours, peer) in enumerate(comparisons):
                    ax = axes[i][j]
                    by_b = defaultdict(list)
                    for k, peers in results.items():
                        if k[:3] != (dev, dtype, mode) or k[6] != 100:
                            continue
                        r = ratio(peers, ours, peer)
                        if r is not None:
                            by_b[(k[3], k[5])].append((k[4], r))
                    for (B, D), pts in sorted(by_b.items()):
                        pts.sort()
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"B={B} (D={D})")
                    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
                    ax.set_xscale("log", base=2)
                    ax.set_yscale("log")
                    ax.set_xlabel("hidden size H")
                    ax.set_ylabel(f"speed-up of {ours} (×)")
                    ax.set_title(f"{ours} vs {PEER_TITLES[peer]}, {mode}", fontsize=10)
                    ax.grid(True, which="both", alpha=0.3)
                    if by_b:
                        ax.legend(fontsize=8)
            fig.suptitle(f"Speed-up vs H per batch size ({dev}, {dtype}, T=100; >1 = faster than the peer)")
            fig.tight_layout()
            path = os.path.join(out_dir, f"{name}_speedup_vs_H_{dev}_{dtype}.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
        # Time vs T (and per-step cost) for each T sweep.
        sweeps = defaultdict(set)
        for k in results:
            if k[:2] == (dev, dtype):
                sweeps[(k[3], k[4], k[5])].add(k[6])
        sweeps = {s: Ts for s, Ts in sweeps.items() if len(Ts) >= 3}
        for mode in MODES:
            cols = [s for s in sorted(sweeps) if any(k[:3] == (dev, dtype, mode) and k[3:6] == s for k in results)]
            if not cols:
                continue
            fig, axes = plt.subplots(2, len(cols), figsize=(5.2 * len(cols), 7.2), squeeze=False)
            for j, (B, H, D) in enumerate(cols):
                for peer in PEERS:
                    pts = sorted(
                        (k[6], results[k][peer]["median"])
                        for k in results
                        if k[:3] == (dev, dtype, mode) and k[3:6] == (B, H, D) and peer in results[k]
                    )
                    if not pts:
                        continue
                    style = "-" if peer in ("nn.LSTM", "LSTM2000", "LSTM1997") else ":"
                    Ts = [p[0] for p in pts]
                    axes[0][j].plot(Ts, [p[1] for p in pts], "o" + style, label=PEER_TITLES[peer])
                    axes[1][j].plot(Ts, [p[1] / p[0] * 1e6 for p in pts], "o" + style, label=PEER_TITLES[peer])
                for i, ylabel in enumerate(("time per call (s)", "per-step cost (µs / step)")):
                    ax = axes[i][j]
                    ax.set_xscale("log")
                    ax.set_yscale("log")
                    ax.set_xlabel("sequence length T")
                    ax.set_ylabel(ylabel)
                    ax.grid(True, which="both", alpha=0.3)
                    ax.set_title(f"B={B} H={H} D={D}, {mode}", fontsize=10)
                axes[0][j].legend(fontsize=7)
            fig.suptitle(f"Time vs T ({dev}, {dtype}); dotted: per-step loops")
            fig.tight_layout()
            path = os.path.join(out_dir, f"{name}_time_vs_T_{dev}_{dtype}_{mode.replace('+', '')}.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written, None


# ---- main --------------------------------------------------------------------------------------------------


def render(results, machine, dates, sources, plot_paths, plot_note, out_dir):
    lines = ["# lstm_ext benchmarks", ""]
    lines.append(f"Source: {', '.join(os.path.basename(s) for s in sources)}"
                 + (f" (run {dates[0]})" if dates else "")
                 + f"; report written {_dt.datetime.now().isoformat(timespec='seconds')}.")
    lines.append("")
    lines.append("## Hardware and software")
    lines.append("")
    lines += hardware_lines(machine)
    lines.append("")
    lines.append("## Method")
    lines.append("")
    lines += [
        "- pytest-benchmark, `benchmark.pedantic`: untimed warm-up calls first (2, or 3 for TorchScript), then a",
        "  number of timed rounds of one call each (about 1 s of measurement, 5 to 200 rounds; 3 for calls over 1 s).",
        "  Times below are the **median** round. CUDA callables end with `torch.cuda.synchronize()`.",
        "- fwd+bwd: `y, _ = m(x); y.sum().backward()`, parameter grads set to None before each round (untimed);",
        "  fwd: `m(x)` under `torch.no_grad()`. x is `(T, B, D)`, time-major, no initial state, one layer.",
        "- step (decoding): `y, hx = m(x, hx)` under `torch.no_grad()`, x one step `(1, B, D)`, the state carried",
        "  from round to round.",
        "- speed-up = time(peer) / time(LSTM2000 or LSTM1997): > 1 means lstm_ext is faster.",
        "- peers: nn.LSTM (torch's native kernel; 2000 cell), LSTM2000 / LSTM1997 with `backend=\"fused\"`, the",
        "  reference per-step loop (`backend=\"reference\"`, `lstm_ext.reference.recurrence_ref`) and the same loop",
        "  written for and compiled by `torch.jit.script` (bench/jit_loop.py). On CUDA, nn.LSTM runs with torch's",
        "  defaults, where cuDNN's float32 RNN uses TF32 tensor cores (sm_80+); `nn.LSTM (TF32 off)` runs it with",
        "  `torch.backends.cudnn.allow_tf32 = False`, the float32 arithmetic of our kernels (which use no TF32).",
        "  The targets are judged against the default.",
        "- limits (— in the tables): in fwd+bwd the per-step loops (reference, jit.script) run only where",
        "  T·T·B·G ≤ 2e9 (G = gate rows = 4H or 3H), to keep the suite in budget: at B=32, H=128, T=1000 and at",
        "  B=1, H=8, T=10000 they are timed in fwd only (`pytest bench/ --bench-all-peers` runs them everywhere).",
    ]
    lines.append("")
    lines.append("## The issue's targets")
    lines.append("")
    if any(k[0] == "cpu" for k in results):
        rows, _ = target_table(results)
        lines += rows
        lines.append("")
    cuda_rows, cuda_verdicts = cuda_target_table(results)
    if cuda_rows:
        passed = sum(v == "**PASS**" for v in cuda_verdicts.values())
        measured = sum(v != "n/a" for v in cuda_verdicts.values())
        lines += ["The CUDA issue's targets (forward+backward against cuDNN's `nn.LSTM` in the same dtype and run, "
                  "unless the row says otherwise): "
                  f"{passed} of {measured} measured cases pass, {len(cuda_verdicts) - measured} not measured (n/a). "
                  "L: the module's whole forward call (input projection included) over T.",
                  ""]  # fmt: skip
        lines += cuda_rows
        lines.append("")
    limits = limit_lines(results, machine.get("_limits") or {})
    if limits:
        lines += ["What this machine allows the targets that miss, and where nn.LSTM is faster "
                  "(bench/test_bench_limits.py, same run):", ""]
        lines += limits
        lines.append("")
    lines.append("## All cases")
    lines.append("")
    lines.append("Median time per call; speed-ups of LSTM2000 (`2000 vs …`) and LSTM1997 (`1997 vs …`). "
                 "`1997 vs nn.LSTM` compares different cells (3 vs 4 gates) and is for orientation only. "
                 "`load`: the highest 1-minute load average seen when the row's peers started (the machine has "
                 f"{(machine.get('lstm_ext_bench') or {}).get('logical_cores', '?')} logical cores; far above that, "
                 "the row is noisy).")
    lines.append("")
    lines += case_tables(results)
    sweeps = time_vs_T_lines(results)
    if sweeps:
        lines += ["## Time vs T", "",
                  "Time grows linearly in T: the per-step cost is the slope of a least-squares line through each "
                  "peer's median times (R² = 1: every point on it); T values without a time (—) are not in the fit.",
                  ""]  # fmt: skip
        lines += sweeps
    paper = paper_lines(machine.get("_paper") or {})
    if paper:
        lines += ["## On-line training of the paper nets", "",
                  "The reproduction's inner loop (`lstm-ext reproduce`, bench/test_bench_paper.py): time per sequence "
                  "step, one weight change per sequence, float32. `paper_train`: a chunk of 64 sequences in the op; "
                  "`autograd loop`: one sequence at a time through `lstm_ext.paper.forward_ref` (a Python step loop), "
                  "`backward()` and the gradient step. Rows: HS97's adding net (4-T100), 2c (q = p = 100) and 6b.",
                  ""]  # fmt: skip
        lines += paper
        lines.append("")
    lines.append("## Plots")
    lines.append("")
    if plot_note:
        lines.append(plot_note)
    for p in plot_paths:
        rel = os.path.relpath(p, out_dir)
        lines.append(f"![{rel}]({rel})")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="pytest-benchmark JSON file(s) (--benchmark-json)")
    ap.add_argument("--out", default="bench/results", help="output folder [bench/results]")
    ap.add_argument("--name", default=None, help="output file stem [the first JSON's stem]")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    results, machine, dates = load(args.json)
    if not results:
        print(f"no lstm_ext benchmark results in {args.json}", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    name = args.name or os.path.splitext(os.path.basename(args.json[0]))[0]
    plot_paths, note = ([], "plots disabled (--no-plots)") if args.no_plots else plots(results, args.out, name)
    md = render(results, machine, dates, args.json, plot_paths, note, args.out)
    md_path = os.path.join(args.out, f"{name}.md")
    with open(md_path, "w") as f:
        f.write(md)
    _, verdicts = target_table(results)
    print(f"wrote {md_path}" + "".join(f"\nwrote {p}" for p in plot_paths))
    print("targets: " + ", ".join(f"{t} {v.strip('*')}" for t, v in verdicts.items()))
    _, cuda_verdicts = cuda_target_table(results)
    if cuda_verdicts:
        counts = defaultdict(int)
        for v in cuda_verdicts.values():
            counts[v.strip("*")] += 1
        print("CUDA targets: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
