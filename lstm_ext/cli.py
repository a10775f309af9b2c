"""The command line: ``lstm-ext`` (or ``python -m lstm_ext``).

    lstm-ext reproduce <experiment[,...]|all>   the 1997 paper's experiments, our results beside its tables
    lstm-ext diagnose  measured probes of why rows of the reproduction miss the paper
    lstm-ext demo      train LSTM1997 and LSTM2000 briefly on a long-lag task; print what they learned
    lstm-ext info      the build: torch version, CUDA, CPU kernel flags
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch


def _long_lag_batch(batch: int, lag: int, generator: torch.Generator):
    """The 'remember the first bit' task: channel 0 carries a random bit (+-1) at step 0 and nothing after;
    channel 1 is Gaussian noise at every step. The target, read after `lag` steps, is the bit."""
    bits = torch.randint(0, 2, (batch,), generator=generator).float() * 2 - 1
    x = torch.zeros(lag, batch, 2)
    x[0, :, 0] = bits
    x[:, :, 1] = torch.randn(lag, batch, generator=generator)
    return x, (bits > 0).float()


def demo(args) -> int:
    from lstm_ext import LSTM1997, LSTM2000

    torch.manual_seed(args.seed)
    print(f"Task: remember a bit seen at step 0 through {args.lag} steps of noise "
          f"(batch {args.batch}, {args.updates} Adam updates, hidden {args.hidden}). LSTM2000's forget gates start "
          "open (bias +3); at nn.LSTM's bias 0 they forget the bit before the question comes.")
    test_x, test_y = _long_lag_batch(2000, args.lag, torch.Generator().manual_seed(args.seed + 1))
    for cls in (LSTM1997, LSTM2000):
        net = cls(2, args.hidden)
        if cls is LSTM2000:  # forget gates start open (bias +3): they must hold the bit for the whole lag
            with torch.no_grad():
                net.bias_ih_l0[args.hidden : 2 * args.hidden].fill_(3.0)
        head = torch.nn.Linear(args.hidden, 1)
        opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=args.lr)
        gen = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        for _ in range(args.updates):
            x, y = _long_lag_batch(args.batch, args.lag, gen)
            out, _ = net(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(out[-1]).squeeze(-1), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            out, _ = net(test_x)
            acc = ((head(out[-1]).squeeze(-1) > 0).float() == test_y).float().mean().item()
        steps = args.updates * args.lag
        print(f"  {cls.__name__}: test accuracy {acc:6.1%} (chance 50%), final loss {loss.item():.4f}; "
              f"{seconds:.2f} s for {args.updates} updates = {seconds / steps * 1e6:.1f} us per batched "
              f"step (forward + backward + update)")
    return 0


def _positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _int_at_least(low: int):
    """An argparse type: an integer >= low (a clear usage error, not a traceback from deep inside a run)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _writable_dir(command: str, text: str):
    """The --out directory ``text`` (created if missing), or None after a message when it cannot be written (a
    file there, no permission): a run fails before its first trial, not after its last."""
    import os
    from pathlib import Path

    out = Path(text)
    if out.exists() and not out.is_dir():
        print(f"lstm-ext {command}: --out {text}: that is a file, not a directory", file=sys.stderr)
        return None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"lstm-ext {command}: --out {text}: cannot make that directory ({e.strerror or e})", file=sys.stderr)
        return None
    if not os.access(out, os.W_OK | os.X_OK):
        print(f"lstm-ext {command}: --out {text}: the directory is not writable", file=sys.stderr)
        return None
    return out


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or integers separated by commas, got {text!r}") from None


def reproduce(args) -> int:
    from dataclasses import replace

    from lstm_ext.experiments import report, runner, select_rows

    if args.device == "cuda":
        from lstm_ext import build_info

        problem = None
        if not torch.cuda.is_available():
            problem = "--device cuda, but torch sees no CUDA device"
        elif not build_info.WITH_CUDA:
            problem = ("--device cuda, but lstm_ext was built without its CUDA kernels (reinstall with a CUDA torch "
                       "and nvcc: pip install --no-build-isolation .)")  # fmt: skip
        elif args.gradient == "full":
            problem = "the full gradient trains on the CPU only (--device cpu)"
        if problem:
            print(f"lstm-ext reproduce: {problem}", file=sys.stderr)
            return 2
    try:
        rows = select_rows(args.experiment, args.T)
    except ValueError as e:
        print(f"lstm-ext reproduce: {e}", file=sys.stderr)
        return 2
    if args.budget is not None and args.budget_factor is not None:
        print("lstm-ext reproduce: give --budget or --budget-factor, not both", file=sys.stderr)
        return 2
    if args.budget_factor is not None:
        rows = [r.with_budget_factor(args.budget_factor) for r in rows]
    if args.update:
        rows = [r.with_(update=args.update) for r in rows]
    if args.gradient != "truncated":
        rows = [r.variant("-full", "Gradient: the full gradient (back-propagation through time, one weight change "
                          "per sequence; --gradient full), not the 1997 truncated rule.", gradient=args.gradient)
                for r in rows]  # fmt: skip
    if args.output != "logistic":
        rows = [r.variant("-linear", "Output units: linear (y = net input; --output linear), not the paper's "
                          "logistic units.", spec=replace(r.spec, output=args.output))
                for r in rows]  # fmt: skip
    if args.init_range is not None:
        rows = [r.variant(f"-init{args.init_range:g}", f"Initial weights: uniform in [-{args.init_range:g}, "
                          f"{args.init_range:g}] (--init-range), not the paper's [-{r.init_range:g}, {r.init_range:g}]; "
                          "the gate-bias schedules as in the paper.", init_range=args.init_range)
                for r in rows]  # fmt: skip
    if args.output_shortcut:
        rows = [r.variant("-shortcut", "Output units: they also see the inputs (--output-shortcut; GSC00's shortcut "
                          "connections, I x O weights beyond the paper's count, which rules them out).",
                          spec=replace(r.spec, output_shortcut=True))
                if not r.spec.output_shortcut else r  # (2a/2b's outputs see the inputs in the paper already)
                for r in rows]  # fmt: skip
    out = _writable_dir("reproduce", args.out)
    if out is None:
        return 2
    command = args.command_line
    start = time.perf_counter()
    try:
        records = runner.run_rows(rows, out, trials=args.trials, seed=args.seed, jobs=args.jobs, budget=args.budget,
                                  quick=args.quick, progress=not args.no_progress, device=args.device)  # fmt: skip
    except runner.CheckpointError as e:
        print(f"lstm-ext reproduce: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    summary = runner.summary_record(rows, records, command=command, wall_s=wall, quick=args.quick,
                                    device=args.device)  # fmt: skip
    files = report.write_outputs(summary, rows, records, out)
    for row in summary["rows"]:
        for ln in row["lines"]:
            seq = ln["sequences"]
            seq_s = "-" if seq is None else f"{seq['mean']:,.0f}"
            paper = ln["paper"].get("mean_sequences")
            print(f"{row['row']:>16} {ln['label']:<28} success {ln['success_pct']:5.1f}% "
                  f"(paper {ln['paper'].get('success_pct', '-')}%), sequences {seq_s} "
                  f"(paper {paper if paper is None else f'{paper:,}'}): {ln['verdict']}")  # fmt: skip
    print(f"wall {wall:.1f} s; wrote {files['json']}, {files['markdown']} and {len(files['plots'])} plot(s)")
    return 0


def diagnose(args) -> int:
    import json

    from lstm_ext.experiments import diagnose as probes

    out = _writable_dir("diagnose", args.out)
    if out is None:
        return 2
    start = time.perf_counter()
    results = probes.run(args.probe or probes.PROBES, seed=args.seed)
    (out / "diagnosis.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "diagnosis.md").write_text(probes.markdown(results, args.command_line) + "\n")
    print(f"wall {time.perf_counter() - start:.1f} s; wrote {out / 'diagnosis.json'} and {out / 'diagnosis.md'}")
    return 0


def info(args) -> int:
    import lstm_ext

    b = lstm_ext.build_info
    print(f"lstm_ext {lstm_ext.__version__} built for torch {b.TORCH_VERSION}; CUDA kernels: "
          f"{'yes (' + b.CUDA_ARCHS + ')' if b.WITH_CUDA else 'no'}; CPU kernel AVX2+FMA: {b.CPU_AVX2}; "
          f"CPU kernel threads: {'torch OpenMP pool' if b.CPU_OPENMP else 'own std::threads'}; "
          f"float32 step products on this CPU: {torch.ops.lstm_ext.cpu_panel_kernel()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lstm-ext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train LSTM1997 and LSTM2000 briefly on a long-lag task")
    p.add_argument("--lag", type=_int_at_least(1), default=50, help="steps between the bit and the question")
    p.add_argument("--updates", type=_int_at_least(1), default=300)
    p.add_argument("--batch", type=_int_at_least(1), default=32)
    p.add_argument("--hidden", type=_int_at_least(1), default=16)
    p.add_argument("--lr", type=_positive_float, default=1e-2)
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seeds the weights and the data")
    p.set_defaults(func=demo)
    p = sub.add_parser("reproduce", help="the 1997 paper's experiments beside its tables")
    p.add_argument("experiment", help="reber (1), 2a, 2b, 2c, 3a, 3b, 3c, adding (4), multiplication (5), 6a, 6b, "
                   "several of them separated by commas (6a,6b), a row by its key in the reports (2c-q50-p50), or all")
    p.add_argument("--T", type=_int_list, default=None,
                   help="only the rows of this sequence length, or of several separated by commas (3a-3c, adding, "
                        "multiplication)")
    p.add_argument("--trials", type=_int_at_least(1), default=None, help="trials per row (default: the paper's)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seeds every trial's data, initial weights and test set, with the trial's number and the row "
                        "(the same seed gives the same figures)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the nets train: cpu (one trial per core) or cuda (trials side by side, one per SM; "
                        "the truncated gradient only)")
    p.add_argument("--out", default="runs/reproduce", help="directory for the checkpoint, JSON, report and plots")
    p.add_argument("--jobs", type=_int_at_least(1), default=None,
                   help="trials run in parallel (default: one per CPU core; with --device cuda one per SM)")
    p.add_argument("--budget", type=_int_at_least(1), default=None, help="training sequences before a trial counts as failed")
    p.add_argument("--budget-factor", type=_positive_float, default=None,
                   help="instead of --budget: each row's budget is this many times the paper's mean sequences "
                        "(2 bounds the whole run; a trial needing more counts as failed)")
    p.add_argument("--update", choices=["sequence", "step"], default=None,
                   help="when weights change in Exps 1, 2a, 2b (default: after every step)")
    p.add_argument("--gradient", choices=["truncated", "full"], default="truncated",
                   help="the 1997 truncated gradient (RTRL), or the full gradient (back-propagation through "
                        "time, one weight change per sequence); both run in the fused training op")
    p.add_argument("--output", choices=["logistic", "linear"], default="logistic",
                   help="the output units: the paper's logistic sigmoid, or linear (not in the paper)")
    p.add_argument("--output-shortcut", action="store_true",
                   help="the output units also see the inputs (GSC00's shortcut connections; not the paper's "
                        "weight counts)")
    p.add_argument("--init-range", type=_positive_float, default=None, metavar="R",
                   help="initial weights uniform in [-R, R] (default: the paper's, 0.2 in Exps 1-2 and 0.1 in "
                        "Exps 3-6); the gate-bias schedules stay the paper's")
    p.add_argument("--quick", action="store_true", help="smoke run: one trial per row, tiny budgets")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=reproduce)
    p = sub.add_parser("diagnose", help="measured probes of why rows of the reproduction miss the paper")
    from lstm_ext.experiments.diagnose import PROBES

    p.add_argument("--probe", action="append", choices=PROBES, help="run only this probe (repeatable)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="the seed of the reproduction's trials probed")
    p.add_argument("--out", default="runs/diagnose", help="directory for diagnosis.json and diagnosis.md")
    p.set_defaults(func=diagnose)
    p = sub.add_parser("info", help="how lstm_ext was built")
    p.set_defaults(func=info)
    args = parser.parse_args(argv)
    args.command_line = "lstm-ext " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\nlstm-ext {args.command}: interrupted{_what_is_kept(args)}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it


def _what_is_kept(args) -> str:
    """After an interruption: what a run keeps (reproduce: the checkpoint, which the same command resumes)."""
    if args.command != "reproduce":
        return "; nothing was written"
    from pathlib import Path

    from lstm_ext.experiments import runner

    ckpt = Path(args.out) / "trials.jsonl"
    n = len(runner.load_checkpoint(ckpt)) if ckpt.is_file() else 0
    return f"; {ckpt} keeps the {n} finished trial(s), and the same command resumes the run"


if __name__ == "__main__":
    sys.exit(main())
