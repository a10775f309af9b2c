"""Our figures beside the paper's: per-row summaries, the Markdown report and the learning curves."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np

from .misses import MISS_IN_SHORT, MISS_NOTES
from .rows import Row

FIDELITY = "success rate at least the paper's and mean sequences to success within 2x of the paper's"


def _stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def _one_line(row: Row, recs: list[dict], paper: dict, sequences_of=lambda r: r["sequences"], extra=None) -> dict:
    ok = [r for r in recs if r["success"]]
    line = {
        "trials": len(recs),
        "paper_trials": row.trials,
        "success_pct": 100.0 * len(ok) / len(recs) if recs else None,
        "sequences": _stats([sequences_of(r) for r in ok]),
        "wall_s": float(sum(r["wall_s"] for r in recs)),
        "ns_per_step": float(np.mean([r["ns_per_step"] for r in recs])) if recs else None,
        "paper": paper,
        "budget": max(r["budget"] for r in recs) if recs else None,
    }
    for key in ("test_wrong", "fraction_wrong", "test_mse", "test_mae", "st1_sequences"):
        vals = [r[key] for r in ok if key in r]
        if vals:
            line[key] = float(np.mean(vals))
    if extra:
        line |= extra
    line["verdict"] = verdict(line)
    return line


def chance_of_so_few_successes(k: int, n: int, k_paper: int, n_paper: int) -> float:
    """One-sided Fisher exact test: if our n trials and the paper's n_paper shared one success rate, the
    probability that k or fewer of the k + k_paper successes fall among ours (hypergeometric)."""
    total = k + k_paper
    lo = max(0, total - n_paper)
    hits = sum(comb(n, x) * comb(n_paper, total - x) for x in range(lo, k + 1))
    return hits / comb(n + n_paper, total)


def _chance(line: dict) -> str:
    """', p = ...' after a lower success rate than the paper's, where both trial counts are known."""
    n, n_paper = line.get("trials"), line.get("paper_trials")
    if not n or not n_paper:
        return ""
    k = round(line["success_pct"] * n / 100)
    k_paper = round(line["paper"].get("success_pct", 100) * n_paper / 100)
    p = chance_of_so_few_successes(k, n, k_paper, n_paper)
    return ", p < 0.001" if p < 0.001 else f", p = {p:.2g}"


def verdict(line: dict) -> str:
    """'meets' the fidelity target, or 'misses (...)' with the reason, or 'no paper figure'. A lower success
    rate than the paper's carries p, the chance of so few successes if ours and the paper's were alike."""
    p = line["paper"]
    if "mean_sequences" not in p or line["success_pct"] is None:
        return "no paper figure"
    reasons = []
    if line["success_pct"] < p.get("success_pct", 100):
        reasons.append(f"success {line['success_pct']:.0f}% < {p.get('success_pct', 100)}%{_chance(line)}")
    if line["sequences"] is None:
        reasons.append("no successful trial")
    elif line["sequences"]["mean"] > 2 * p["mean_sequences"]:
        reasons.append(f"{line['sequences']['mean'] / p['mean_sequences']:.1f}x the paper's sequences")
    budget = line.get("budget")
    if reasons and budget is not None and line["success_pct"] < 100 and budget < 2 * p["mean_sequences"]:
        reasons.append(f"undecided: the budget of {budget:,} sequences per trial is below 2x the paper's mean; "
                       f"--budget {2 * p['mean_sequences']:,} or more decides")
    return "meets" if not reasons else "misses (" + "; ".join(reasons) + ")"


def _decided_miss(line: dict) -> bool:
    """A line that misses the fidelity target with a budget large enough to tell (not 'undecided')."""
    return line["verdict"].startswith("misses") and "undecided" not in line["verdict"]


def summarize_row(row: Row, recs: list[dict]) -> dict:
    """One record per table line (Exp 5's row gives one line per n_seq threshold)."""
    base = {"row": row.key, "experiment": row.experiment, "table": row.table, "label": row.label,
            "weights": row.spec.num_weights, "lr": row.lr, "update": row.update, "choices": list(row.choices)}  # fmt: skip
    if row.rule.kind == "nseq":
        lines = []
        for n_seq in row.rule.n_seq:
            paper = row.paper.get("n_seq", {}).get(n_seq, {}) | {"success_pct": 100}
            sub = []
            for r in recs:
                cp = r.get("n_seq", {}).get(str(n_seq))
                sub.append({**r, "success": cp is not None, **(cp or {})})
            line = _one_line(row, sub, paper)
            lines.append(base | {"label": f"{row.label.split(',')[0]}, n_seq = {n_seq}"} | line)
        return base | {"lines": lines}
    return base | {"lines": [base | _one_line(row, recs, row.paper)]}


def _fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:.{digits}f}"
    return f"{v:,.0f}"


def _at_a_glance(summary: dict) -> list[str]:
    """A run of many rows: every row's verdict on one screen, then one sentence per experiment that misses."""
    lines = [(row, ln) for row in summary["rows"] for ln in row["lines"]]
    met = sum(ln["verdict"] == "meets" for _, ln in lines)
    undecided = sum("undecided" in ln["verdict"] for _, ln in lines)
    undecided_note = f" ({undecided} undecided: their cap was below twice the paper's mean)" if undecided else ""
    out = ["", "## At a glance", "",
           f"{met} of {len(lines)} rows meet the fidelity target{undecided_note}. Sequences: our mean over the successful "
           "trials divided by the paper's mean (the target: at most 2x). The tables below have the figures, the "
           "choices made where the paper is silent, and under each table what we measured about why a row misses.",
           "", "| table | row | success %: ours (paper) | sequences: ours / paper | verdict |", "|---|---|---|---|---|"]  # fmt: skip
    for row, ln in lines:
        p, seq = ln["paper"], ln["sequences"]
        ratio = "–" if seq is None or not p.get("mean_sequences") else f"{seq['mean'] / p['mean_sequences']:.2f}x"
        word = "undecided" if "undecided" in ln["verdict"] else ln["verdict"].split(" (")[0]
        out.append(f"| {row['table']} | {ln['label']} | {_fmt(ln['success_pct'])} ({_fmt(p.get('success_pct'))}) "
                   f"| {ratio} | {word} |")  # fmt: skip
    tables_of: dict[str, list[str]] = {}  # one sentence per experiment that misses, with its tables
    for row in summary["rows"]:
        short = MISS_IN_SHORT.get(row["experiment"])
        if short and any(map(_decided_miss, row["lines"])) and row["table"] not in tables_of.get(short, []):
            tables_of.setdefault(short, []).append(row["table"])
    if tables_of:
        out += ["", "Why, in short (what we measured with the paper's settings; the figures and commands are under "
                "each table):", ""]  # fmt: skip
        out += [f"- **{', '.join(tables)}**: {short}" for short, tables in tables_of.items()]
    return out


def markdown(summary: dict) -> str:
    """The report: one table per paper table, our figure first and the paper's in parentheses."""
    out = ["# HS97 reproduction: our runs beside the paper's tables", ""]
    out.append(f"- command: `{summary['command']}`")
    out.append(f"- hardware: {summary['hardware']}")
    out.append(f"- time: {summary.get('trial_s', summary['wall_s']):.0f} s of trials (the sum over trials, which ran "
               f"in parallel, one per core; resumed runs count their earlier trials too); this invocation "
               f"{summary['wall_s']:.0f} s wall; date: {summary['date']}")  # fmt: skip
    if summary["quick"]:
        out.append("- **--quick smoke run**: tiny budgets, one trial per row; not comparable with the paper.")
    out.append(f"- fidelity target per row: {FIDELITY}.")
    out.append("- p after a lower success rate than the paper's: if our trials and the paper's shared one success "
               "rate, the chance that so few of all their successes fall among ours (one-sided Fisher exact test "
               "on the two trial counts). A small p means the gap is more than the luck of the draw.")  # fmt: skip
    out.append("")
    out.append("Each cell: ours (paper). Sequences: training sequences until success, mean over successful "
               "trials [min–max] (the paper's range where it gives one).")  # fmt: skip
    tables: dict[str, list[dict]] = {}
    for row in summary["rows"]:
        for line in row["lines"]:
            tables.setdefault(row["table"], []).append(line)
    if not summary["quick"] and len(tables) > 1 and sum(map(len, tables.values())) >= 10:
        out += _at_a_glance(summary)
    for table, lines in tables.items():
        out += ["", f"## {table}", ""]
        out.append("| row | # weights | trials | success % | sequences to success | test | verdict |")
        out.append("|---|---|---|---|---|---|---|")
        for ln in lines:
            p = ln["paper"]
            seq = ln["sequences"]
            seq_s = "–" if seq is None else f"{seq['mean']:,.0f} [{seq['min']:,.0f}–{seq['max']:,.0f}]"
            paper_range = f" [{p['min_sequences']:,}–{p['max_sequences']:,}]" if "min_sequences" in p else ""
            seq_s += f" ({_fmt(p.get('mean_sequences'))}{paper_range})"
            test = []
            if "st1_sequences" in ln or "st1_sequences" in p:
                test.append(f"ST1 after {_fmt(ln.get('st1_sequences'))} ({_fmt(p.get('st1_sequences'))})")
            if "test_wrong" in ln or "test_wrong" in p:
                test.append(f"wrong {_fmt(ln.get('test_wrong'), 1)} ({_fmt(p.get('test_wrong'))}) of 2560")
            if "fraction_wrong" in ln or "fraction_wrong" in p:
                test.append(f"fraction wrong {_fmt(ln.get('fraction_wrong'), 5)} ({_fmt(p.get('fraction_wrong'), 5)})")
            if "mse" in p:
                test.append(f"MSE {_fmt(ln.get('test_mse'), 4)}, MAE {_fmt(ln.get('test_mae'), 4)} (\"MSE\" {p['mse']})")
            elif "mean_abs_error" in p:
                test.append(f"mean abs {_fmt(ln.get('test_mae'), 4)} ({p['mean_abs_error']})")
            out.append(
                f"| {ln['label']} | {ln['weights']:,} ({_fmt(p.get('weights'))}) | {ln['trials']} ({ln['paper_trials']}) "
                f"| {_fmt(ln['success_pct'])} ({_fmt(p.get('success_pct'))}) | {seq_s} | {'; '.join(test) or '–'} "
                f"| {ln['verdict']} |"
            )
        choices = []
        for row in summary["rows"]:
            if row["table"] == table:
                choices += [c for c in row["choices"] if c not in choices]
        if choices:
            out += [""] + [f"- {c}" for c in choices]
        if not summary["quick"]:
            notes = []
            for row in summary["rows"]:
                note = MISS_NOTES.get(row["experiment"])
                if note and row["table"] == table and note not in notes and any(map(_decided_miss, row["lines"])):
                    notes.append(note)
            out += [f"- **Why it misses** (what we measured with the paper's settings): {n}" for n in notes]
    out += ["", "## Speed", "", "| row | trials | budget (sequences per trial) | wall s (sum over trials) | ns per sequence step |",
            "|---|---|---|---|---|"]  # fmt: skip
    for row in summary["rows"]:
        for ln in row["lines"][:1]:
            out.append(f"| {row['row']} | {ln['trials']} | {_fmt(ln.get('budget'))} | {ln['wall_s']:.1f} "
                       f"| {_fmt(ln['ns_per_step'])} |")  # fmt: skip
    return "\n".join(out) + "\n"


def plot_curves(rows: list[Row], records: list[dict], out: Path) -> list[Path]:
    """One PNG per experiment: mean squared error at the end of the training sequences against
    training sequences, one line per trial, one panel per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_exp: dict[str, list[Row]] = {}
    for row in rows:
        by_exp.setdefault(row.experiment, []).append(row)
    for exp, exp_rows in by_exp.items():
        cols = min(3, len(exp_rows))
        nrows = (len(exp_rows) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
        for ax, row in zip(axes.flat, exp_rows):
            for rec in (r for r in records if r["row"] == row.key):
                pts = np.asarray(rec["curve"], dtype=float)
                if len(pts):
                    ax.plot(pts[:, 0], np.maximum(pts[:, 1], 1e-8), lw=0.8, alpha=0.8)
            if "mean_sequences" in row.paper:
                ax.axvline(row.paper["mean_sequences"], color="k", ls="--", lw=0.8, label="paper: mean success")
                ax.legend(fontsize=7)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{row.table}: {row.label}", fontsize=8)
            ax.set_xlabel("training sequences", fontsize=7)
            ax.set_ylabel("MSE at the sequence end", fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in list(axes.flat)[len(exp_rows) :]:
            ax.axis("off")
        fig.tight_layout()
        path = out / f"curves_{exp}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_outputs(summary: dict, rows: list[Row], records: list[dict], out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "report.md").write_text(markdown(summary))
    pngs = plot_curves(rows, records, out)
    return {"json": out / "results.json", "markdown": out / "report.md", "plots": pngs}


def rewrite_report(out: Path) -> Path:
    """Write ``out``/report.md again from ``out``/results.json, with the verdicts and notes as this version
    gives them (the verdicts in results.json are brought up to date as well)."""
    summary = _load_summary(out / "results.json")
    for row in summary["rows"]:
        for line in row["lines"]:
            line["verdict"] = verdict(line)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "report.md").write_text(markdown(summary))
    return out / "report.md"


def _load_summary(path: Path) -> dict:
    """A run's results.json; a ValueError that names the file where it is not one (broken JSON, another file)."""
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e})") from None
    rows = summary.get("rows") if isinstance(summary, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("lines"), list) for r in rows):
        raise ValueError(f"{path} is not the results.json of an lstm-ext reproduce run (no list of rows with lines)")
    return summary


def main(argv: list[str] | None = None) -> int:
    """python -m lstm_ext.experiments.report DIR...: each finished run's report.md written again (rewrite_report)."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m lstm_ext.experiments.report",
        description="Write the report.md of finished lstm-ext reproduce runs again from their results.json, with the "
        "verdicts and notes of this version.",
    )
    p.add_argument("runs", nargs="+", metavar="DIR", help="the --out directory of a finished lstm-ext reproduce run")
    args = p.parse_args(argv)
    for arg in args.runs:
        if not (Path(arg) / "results.json").is_file():
            p.exit(2, f"{p.prog}: {arg} holds no results.json (the --out of a finished run)\n")
        try:
            print(rewrite_report(Path(arg)))
        except ValueError as e:
            p.exit(2, f"{p.prog}: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
