"""``vaedft-bench``: run the paper's experiments and check results against references.

    vaedft-bench                                   # the quick profile, every experiment (2-core CPU, < 15 min)
    vaedft-bench --profile cpu                     # the paper's 1D networks on a 2-core CPU (~2 hours)
    vaedft-bench --profile paper --device cuda     # the paper's sizes
    vaedft-bench --experiments E3,E6 --seed 1 --out reports --cache .vaedft-cache
    vaedft-bench check reports/quick/results.json --against benchmark/reference/quick.toml
    vaedft-bench check reports/cpu/results.json --against benchmark/reference/cpu.toml   # the cpu goals
    vaedft-bench list                              # experiments and profiles
    vaedft-bench reference reports/quick/results.json --out benchmark/reference/quick.toml
    vaedft-bench report reports/quick/results.json     # re-render report.md (and the index) from results.json

Exit status: 0 success; 1 ``check`` found metrics outside tolerance, or an experiment failed (the others
still run and are reported); 2 bad input (unknown profile or
experiment, malformed TOML or results file) -- with a message saying what to change.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("run", "check", "list", "reference", "report")


def _experiment_list(text: str) -> list[str]:
    ids = [t.strip().upper() for t in text.split(",") if t.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("give experiment ids like E3,E6")
    return ids


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaedft-bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the paper's experiments and check results against references. Without a subcommand, "
                    "`run` is meant (its options: vaedft-bench run --help).",
        epilog="examples:\n" + __doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a profile (the default subcommand)")
    run.add_argument("--profile", default="quick", help="profile name (quick, cpu, paper) or a profile TOML path")
    run.add_argument("--experiments", type=_experiment_list, default=None, help="comma-separated ids, e.g. E3,E6")
    run.add_argument("--out", default="reports", help="reports directory; writes OUT/<profile>/ (default reports)")
    run.add_argument("--cache", default=None,
                     help="artifact cache directory (default $VAEDFT_CACHE, else ~/.cache/vaedft/bench)")
    run.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: the profile's)")
    run.add_argument("--seed", type=_seed, default=None, help="seed of every random draw (default: the profile's)")
    run.add_argument("--executor", default=None,
                     help="where sweep jobs run: inprocess (default), dask (local cluster), dask:tcp://HOST:PORT "
                          "or dask:/path/scheduler.json (needs vaedft[dist])")
    run.add_argument("--suite", default=None, help="suite directory with profiles/, experiments/, reference/ "
                                                   "(default ./benchmark)")
    run.add_argument("--data", choices=("generated", "zenodo"), default="generated",
                     help="generated (default): datasets made by our solver; zenodo: the authors' records for the "
                          "testbeds that have one (speckle1d, gaussian3d; fetched with pooch, needs their files "
                          "pinned in datasets/zenodo_registry.toml), reported under OUT/<profile>_zenodo")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    chk = sub.add_parser("check", help="compare a results.json with a reference TOML")
    chk.add_argument("results", help="results.json of a run")
    chk.add_argument("--against", required=True, help="reference TOML, e.g. benchmark/reference/quick.toml")
    chk.add_argument("--experiments", type=_experiment_list, default=None, help="check only these experiments")
    chk.add_argument("--verbose", "-v", action="store_true", help="list passing metrics too")

    lst = sub.add_parser("list", help="list the experiments and profiles")
    lst.add_argument("--profile", default="quick")
    lst.add_argument("--suite", default=None)

    ref = sub.add_parser("reference", help="write a regression reference TOML from a results.json")
    ref.add_argument("results")
    ref.add_argument("--out", required=True, help="the reference TOML to write")
    ref.add_argument("--rtol", type=float, default=0.25, help="relative tolerance of every metric (default 0.25)")
    ref.add_argument("--atol-energy", type=float, default=3e-4,
                     help="absolute tolerance (E0) added for energy metrics (default 3e-4, ~0.2 kcal/mol)")
    ref.add_argument("--experiments", type=_experiment_list, default=None)
    rep = sub.add_parser("report", help="re-render report.md next to a results.json (no computation)")
    rep.add_argument("results")
    return parser


def _cmd_report(args) -> int:
    from ..report.markdown import render_report, update_index
    from .check import load_results

    path = Path(args.results)
    results = load_results(path)
    out = path.parent / "report.md"
    out.write_text(render_report(results, path.parent))
    update_index(path.parent.parent)
    print(f"wrote {out}")
    return 0


def _cmd_run(args) -> int:
    from .runner import report_name, run_suite

    results = run_suite(args.profile, experiments=args.experiments, out=args.out, cache=args.cache,
                        device=args.device, seed=args.seed, executor=args.executor, suite_dir=args.suite,
                        progress=not args.no_progress, command="vaedft-bench " + shlex.join(sys.argv[1:]),
                        data=args.data)
    report = Path(args.out) / report_name(results["profile"], args.data) / "report.md"
    fails = [f"{eid}: {c['claim']}" for eid, e in results["experiments"].items()
             for c in e.get("comparisons", []) if c["verdict"] == "FAIL"]
    print(f"report: {report}")
    print(f"paper-vs-ours: {len(fails)} FAIL" + ("".join(f"\n  {f}" for f in fails)))
    errors = [f"{eid}: {results['experiments'][eid]['error']}" for eid in results["last_run_experiments"]
              if results["experiments"][eid].get("error")]
    if errors:
        print("experiments that failed (rerun to retry; finished artifacts are kept):"
              + "".join(f"\n  {e}" for e in errors), file=sys.stderr)
        return 1
    return 0


def _cmd_check(args) -> int:
    from .check import run_check

    return run_check(args.results, args.against, experiments=args.experiments, verbose=args.verbose)


def _cmd_list(args) -> int:
    from tabulate import tabulate

    from .experiments import EXPERIMENTS
    from .suite import default_suite_dir, load_experiments, load_profile

    suite = Path(args.suite) if args.suite else default_suite_dir()
    prof = load_profile(args.profile, suite)
    rows = [[e.id, e.title, e.figure, e.path.name] for e in load_experiments(prof, suite, functions=EXPERIMENTS)]
    print(tabulate(rows, headers=["id", "title", "figure", "file"], tablefmt="github"))
    print("\nprofiles: " + ", ".join(sorted(p.stem for p in (suite / "profiles").glob("*.toml"))))
    return 0


def _cmd_reference(args) -> int:
    from .check import load_results, write_reference

    results = load_results(args.results)
    exps = args.experiments or [e for e in results["experiments"] if e != "E10"]
    write_reference(results, args.out, rtol=args.rtol, experiments=exps,
                    atol_by_suffix={"energy_error": args.atol_energy, "energy_error_all": args.atol_energy,
                                    "frac_within_ca": 0.05, "n_violations": 2.0, "n_diverged": 1.0,
                                    "density_error": 2e-3, "reconstruction_error": 2e-3,
                                    "reconstruction_error_std": 2e-3, "functional_mae": 3e-4},
                    header=f"Regression reference written by `vaedft-bench reference {args.results}` "
                           f"(rtol {args.rtol}); E10 timings are machine-dependent and not checked.")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .check import ReferenceError, ResultsError
    from .suite import SuiteError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    handlers = {"run": _cmd_run, "check": _cmd_check, "list": _cmd_list, "reference": _cmd_reference,
                "report": _cmd_report}
    try:
        return handlers[args.command](args)
    except (SuiteError, ReferenceError, ResultsError, ValueError, FileNotFoundError) as exc:
        print(f"vaedft-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaedft-bench: interrupted; rerun the same command to continue (finished artifacts are cached)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
