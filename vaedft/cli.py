"""``vaedft`` command line: parses arguments and calls the library, nothing else.

Subcommands:
    generate          exact ground-state datasets (HDF5)
    validate          check a dataset file against the schema and its physics (--resolve N: and our solver)
    fetch             the authors' Zenodo datasets (pooch, hash-checked), optionally converted
    convert           an authors' .npz file into vaedft's HDF5 schema, units detected from the data
    train-vae         train the beta-VAE on a dataset's densities
    train-functional  train the DL functional F[n] on a dataset
    minimize          minimise the energies of a test set with a trained VAE and functional
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``, with a message that says so."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _float_parser(*, positive: bool, allow_inf: bool = False):
    """argparse type: a number > 0 (``positive``) or >= 0, finite unless ``allow_inf``."""
    what = ("a positive" if positive else "a non-negative") + (" number or inf" if allow_inf else " finite number")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        ok = value > 0 if positive else value >= 0  # also rejects NaN
        if not ok or (value == float("inf") and not allow_inf):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_float = _float_parser(positive=True)
_nonneg_float = _float_parser(positive=False)
_positive_float_or_inf = _float_parser(positive=True, allow_inf=True)
_nonneg_float_or_inf = _float_parser(positive=False, allow_inf=True)


def _add_generate(sub) -> None:
    from .data.generate import TEST_SETS
    from .physics.testbeds import TESTBEDS

    p = sub.add_parser(
        "generate",
        help="solve random (or the paper's test) instances of a testbed exactly and write an HDF5 dataset",
        description="Exact ground states by batched finite differences. Interrupted runs resume when the "
        "same command is run again; only a complete file gets the final name.",
    )
    p.add_argument("testbed", choices=sorted(TESTBEDS), help="which testbed")
    p.add_argument("--n", type=_positive_int, help="number of random instances")
    p.add_argument("--seed", type=_nonneg_int, help="seed: instance i is a pure function of (seed, i)")
    p.add_argument("--test-set", choices=TEST_SETS, help="a fixed test set instead of random instances")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--backend", default="auto", help="solver backend: auto (default), cpu or cuda")
    p.add_argument("--chunk", type=_positive_int, help="instances per resumable part (does not change results)")
    p.add_argument("--field-dtype", default="float64", choices=("float64", "float32"),
                   help="dtype of the potential and density datasets (default float64)")
    p.add_argument("--sign", type=int, choices=(1, -1),
                   help="gaussian1d only: +1 barriers (paper default) or -1 wells")
    p.add_argument("--maxiter", type=_positive_int, help="solver iteration cap per instance")
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads for the solver (default: torch's; use 1 on a busy shared machine)")
    p.add_argument("--overwrite", action="store_true", help="replace an output made with other settings")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_generate(args) -> int:
    from .data.generate import generate_dataset
    from .physics.eigensolver import DEFAULT_MAXITER
    from .physics.testbeds import get_testbed

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    testbed = get_testbed(args.testbed)
    if args.sign is not None:
        if testbed.name != "gaussian1d":
            raise ValueError("--sign applies to gaussian1d only")
        testbed = testbed.replace(sign=args.sign)
    if args.test_set is None and (args.n is None or args.seed is None):
        raise ValueError("give --n and --seed for random instances, or --test-set")
    out = generate_dataset(
        testbed,
        args.out,
        n=args.n,
        seed=args.seed,
        test_set=args.test_set,
        backend=args.backend,
        chunk=args.chunk,
        field_dtype=args.field_dtype,
        maxiter=args.maxiter or DEFAULT_MAXITER,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(out)
    return 0


def _run_validate(args) -> int:
    from .data.generate import describe
    from .data.store import resolve_check, validate_dataset

    for path in args.files:
        validate_dataset(path)
        print(f"{path}: OK")
        print(describe(path))
        if args.resolve:
            got = resolve_check(path, args.resolve, tol=args.tol)
            print(f"{path}: {len(got['indices'])} instances re-solved with our solver agree within {args.tol:g} E0 "
                  f"(largest difference {got['max_abs_diff']:.3g} E0)")
    return 0


def _print_conventions(path) -> None:
    from .data.store import read_attrs

    a = read_attrs(path)
    print(f"{path}: converted from {a['source_file']} (layout {a['source_layout']}, sha256 "
          f"{a['source_sha256'][:12]}...); energies were in {a['energy_unit']}, lengths "
          f"{a['length_scale']:.4g} x ours: {a['conversion']}")


def _run_convert(args) -> int:
    from .data.convert import convert_npz

    out = convert_npz(args.source, args.testbed, args.out, overwrite=args.overwrite)
    _print_conventions(out)
    return 0


def _run_fetch(args) -> int:
    from .data.convert import convert_npz
    from .data.zenodo import RECORDS, fetch, registry_lines

    if args.print_registry:
        print(registry_lines(args.testbed, registry=args.registry))
        return 0
    got = fetch(args.testbed, files=args.file or None, cache=args.cache, registry=args.registry,
                progress=not args.no_progress)
    for name, path in got.items():
        print(f"{name}: {path}")
    if args.convert:
        if len(got) != 1:
            raise ValueError(f"--convert needs one file; the record has {sorted(got)}: choose it with --file NAME")
        (path,) = got.values()
        out = convert_npz(path, args.testbed, args.convert, overwrite=args.overwrite,
                          record={"source_doi": RECORDS[args.testbed][0]})
        _print_conventions(out)
    return 0


def _add_data(sub) -> None:
    from .data.zenodo import RECORDS
    from .physics.testbeds import TESTBEDS

    f = sub.add_parser(
        "fetch", help="download the authors' Zenodo dataset of a testbed (hash-checked, cached)",
        description="Files go to --cache, $VAEDFT_DATA_DIR or the OS cache (~/.cache/vaedft/zenodo/TESTBED); "
        "$VAEDFT_DATA_URL serves a mirror instead of Zenodo. A second call downloads nothing.")
    f.add_argument("testbed", choices=sorted(RECORDS), help="which record")
    f.add_argument("--file", action="append", metavar="NAME", help="fetch only this file (repeatable)")
    f.add_argument("--cache", help="download directory (default $VAEDFT_DATA_DIR or the OS cache)")
    f.add_argument("--convert", metavar="OUT.h5", help="convert the fetched file into vaedft's HDF5 schema")
    f.add_argument("--registry", help="registry TOML (default $VAEDFT_DATA_REGISTRY or datasets/zenodo_registry.toml)")
    f.add_argument("--print-registry", action="store_true",
                   help="print the record's files and checksums as Zenodo lists them (for pinning), download nothing")
    f.add_argument("--overwrite", action="store_true", help="replace an existing --convert output")
    f.add_argument("--no-progress", action="store_true", help="hide the download progress bar")
    c = sub.add_parser(
        "convert", help="convert an authors' .npz file into vaedft's HDF5 schema",
        description="Layouts: keys density, potential, energy, F; or dens, speckle (the potential), ene. The "
        "length and energy units are found from the data (normalisation, F + int V n = energy, the kinetic "
        "energy of sqrt(n)); a file that does not reconcile is refused and nothing is written.")
    c.add_argument("source", help="the authors' .npz file")
    c.add_argument("--testbed", required=True, choices=sorted(TESTBEDS), help="the testbed whose grid it uses")
    c.add_argument("--out", required=True, help="output HDF5 file")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _input_scale(text: str) -> float | str:
    if text == "volume":
        return text
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'volume', got {text!r}") from None


def _add_train(sub, kind: str) -> None:
    from .models import preset_names

    name = "train-vae" if kind == "vae" else "train-functional"
    what = "the beta-VAE" if kind == "vae" else "the DL functional F[n] (target: the dataset's F)"
    p = sub.add_parser(
        name,
        help=f"train {what}",
        description=f"Train {what} with Adam (paper defaults: lr 1e-4, batch 100, 1200 epochs, 80/20 split). "
        "Interrupted runs resume when the same command is run again.",
    )
    p.add_argument("--data", required=True, help="training dataset (HDF5 from `vaedft generate`)")
    p.add_argument("--out", required=True, help="run directory: config.json, checkpoints, history.csv")
    if kind == "vae":
        p.add_argument("--latent", type=_positive_int, help="latent dimension l_d (default: the paper's)")
        p.add_argument("--beta", type=float, default=1.0, help="KL weight beta (default 1)")
    p.add_argument("--preset", choices=preset_names(),
                   help="architecture of the paper's table for this testbed (default: the dataset's own)")
    if kind == "vae":
        p.add_argument("--decoder", choices=("paper", "smooth"), default="paper",
                       help="decoder: the paper's transposed convolutions + sigmoid, or 'smooth' (resize-convolve "
                       "upsampling, n = psi^2 vanishing at hard walls); default paper")
    p.add_argument("--input-scale", type=_input_scale, default=1.0,
                   help="factor on the network's input density: a number, or 'volume' for the dimensionless "
                   "n * L^d (default 1, the paper)")
    p.add_argument("--epochs", type=_positive_int, default=1200)
    p.add_argument("--lr", type=_positive_float, default=1e-4)
    p.add_argument("--batch", type=_positive_int, default=100)
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning-rate schedule per epoch (default constant, the paper's)")
    p.add_argument("--lr-min", type=_nonneg_float, default=0.0,
                   help="final learning rate of the cosine schedule (default 0)")
    p.add_argument("--warmup", type=_nonneg_int, default=0, help="epochs of linear warm-up from lr/10 (default 0)")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999); checkpoints serve it")
    if kind == "vae":
        p.add_argument("--kinetic-weight", type=_nonneg_float, default=0.0,
                       help="weight of the reconstruction error in the kinetic-energy norm, <dpsi|T|dpsi> with "
                       "dpsi = sqrt(n_hat) - sqrt(n) (default 0: off, the paper)")
    if kind == "functional":
        p.add_argument("--derivative-weight", type=_nonneg_float, default=0.0,
                       help="weight of the functional-derivative (Sobolev) loss, dF/dn = e - V (default 0: off)")
        p.add_argument("--head-ridge", type=_nonneg_float, metavar="PENALTY",
                       help="after the last epoch, refit the linear head by ridge regression on the trained features "
                       "(e.g. 1e-6; default off, the paper)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--patience", type=_positive_int, help="early stopping: epochs without a better validation loss")
    p.add_argument("--n-limit", type=_positive_int, help="use only the first N instances of the file")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--threads", type=_positive_int, help="CPU threads for torch (1 on a busy shared machine)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_train(args, kind: str) -> int:
    import json

    from .models import functional_preset, vae_preset
    from .train import TrainConfig, train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model_config = None
    latent = getattr(args, "latent", None)
    options = {"input_scale": args.input_scale}
    if kind == "vae":
        options["decoder"] = args.decoder
    if args.preset:
        model_config = vae_preset(args.preset, latent, **options) if kind == "vae" else functional_preset(
            args.preset, **options)
        latent = None
    elif args.input_scale != 1.0 or options.get("decoder", "paper") != "paper":
        from .data.store import validate_dataset
        from .models import from_testbed, functional_from_testbed

        attrs = validate_dataset(args.data)
        model_config = from_testbed(attrs, latent, **options) if kind == "vae" else functional_from_testbed(
            attrs, **options)
        latent = None
    config = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch,
        val_fraction=args.val_fraction,
        seed=args.seed,
        dtype=args.dtype,
        beta=getattr(args, "beta", 1.0),
        patience=args.patience,
        n_limit=args.n_limit,
        schedule=args.schedule,
        lr_min=args.lr_min,
        warmup_epochs=args.warmup,
        ema_decay=args.ema,
        derivative_weight=getattr(args, "derivative_weight", 0.0),
        head_ridge=getattr(args, "head_ridge", None),
        kinetic_weight=getattr(args, "kinetic_weight", 0.0),
    )
    state = train(kind, args.data, args.out, model_config=model_config, latent_dim=latent, config=config,
                  device=args.device, progress=not args.no_progress)
    print(json.dumps(state, indent=2))
    return 0


def _add_minimize(sub) -> None:
    from .metrics import DEFAULT_GAP_STEPS
    from .minimize import INITS, METHODS, MinimizeConfig

    d = MinimizeConfig()
    p = sub.add_parser(
        "minimize",
        help="minimise the energies of a test set with a trained VAE and DL functional (or a density-space baseline)",
        description="Batched energy minimisation (paper eqs. 10-14) of every potential of a test set; writes an "
        "HDF5 result file (energies, densities, convergence, metrics, error budget, provenance) and prints a "
        "summary and the error budget (mean per term, kcal/mol; see the README, 'Reading the error budget'). "
        "The test set must come from the testbed and grid the runs were trained on.",
    )
    p.add_argument("--vae", help="VAE run directory (`vaedft train-vae`); needed by the latent methods")
    p.add_argument("--functional", required=True, help="DL functional run directory (`vaedft train-functional`)")
    p.add_argument("--data", required=True, help="test dataset (HDF5); its energy and density are the exact answers")
    p.add_argument("--out", required=True, help="result file (HDF5)")
    p.add_argument("--method", choices=METHODS, default=d.method,
                   help=f"optimiser (default {d.method}); density-gd and pca-gd are the density-space baselines")
    p.add_argument("--steps", type=_positive_int, help=f"step budget t_max per instance (default {d.steps})")
    p.add_argument("--lr", type=_positive_float, help=f"step size eta (default {d.lr:g})")
    p.add_argument("--init", choices=INITS,
                   help="starting point: encoded mean or random training density, a prior draw, or the training "
                   f"density whose potential is nearest (default {d.init})")
    p.add_argument("--starts", type=_positive_int, help=f"starting points per instance, lowest energy kept "
                   f"(default {d.starts})")
    p.add_argument("--seed", type=_nonneg_int, help=f"seed of the random starting points (default {d.seed})")
    p.add_argument("--tol-energy", type=_nonneg_float,
                   help=f"convergence: |E_t - E_t-1| below this (E0, default {d.tol_energy:g}; 0: run all steps)")
    p.add_argument("--tol-grad", type=_nonneg_float_or_inf,
                   help=f"convergence: gradient norm below this (default {d.tol_grad:g}; 0: run all steps; inf: "
                   "the energy test alone)")
    p.add_argument("--settle-window", type=_nonneg_int,
                   help="convergence: a row stops when its energy moved less than --tol-energy over its last this "
                   "many steps (default 0: the per-step test)")
    p.add_argument("--latent-box", type=_nonneg_float,
                   help="latent methods: keep every latent coordinate within the training codes' mean +- this many "
                   "standard deviations (a trust region around the data; default 0: unbounded, the paper)")
    p.add_argument("--n-components", type=_positive_int,
                   help=f"principal components of pca-gd (default {d.n_components})")
    p.add_argument("--history-every", type=_positive_int,
                   help=f"keep the energy every this many steps (default {d.history_every})")
    p.add_argument("--divergence-threshold", type=_positive_float_or_inf,
                   help=f"flag a row diverged when its energy rises this much above its start (E0, default "
                   f"{d.divergence_threshold:g}; inf: NaN/inf only)")
    p.add_argument("--precondition", choices=("kinetic",),
                   help="density-gd only: kinetic preconditioner (not in the paper; default: plain eq. 10)")
    p.add_argument("--train-data", help="training dataset for the mean/sample starts and the PCA basis (default: the "
                   "file recorded in the VAE's run, or the functional's for density methods; its sha256 must match)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="dtype the models are evaluated in (default float64)")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for torch (1 on a busy shared machine)")
    p.add_argument("--no-gap", action="store_true",
                   help="skip the manifold gap of the error budget (a latent L-BFGS minimization with the exact "
                   "functional from mu(n_gs), the budget's one expensive term); the other terms are still computed")
    p.add_argument("--gap-steps", type=_positive_int,
                   help=f"step budget of the manifold-gap minimization (default: {DEFAULT_GAP_STEPS} or --steps, "
                   "whichever is smaller)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_minimize(args) -> int:
    from .minimize import DENSITY_METHODS, MinimizeConfig
    from .pipeline import minimize_files
    from .results import budget_table, summary_table

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    given = {
        "steps": args.steps, "lr": args.lr, "init": args.init, "starts": args.starts, "seed": args.seed,
        "tol_energy": args.tol_energy, "tol_grad": args.tol_grad, "n_components": args.n_components,
        "history_every": args.history_every, "divergence_threshold": args.divergence_threshold,
        "precondition": args.precondition, "settle_window": args.settle_window, "latent_box": args.latent_box,
    }
    config = MinimizeConfig(method=args.method, **{k: v for k, v in given.items() if v is not None})
    if args.vae is not None and args.method in DENSITY_METHODS:
        print(f"vaedft minimize: note: --vae is not used by {args.method}", file=sys.stderr)
    out = minimize_files(
        vae_dir=args.vae,
        functional_dir=args.functional,
        test_data=args.data,
        out=args.out,
        config=config,
        train_data=args.train_data,
        device=args.device,
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        gap=not args.no_gap,
        gap_steps=args.gap_steps,
    )
    result, metrics = out["result"], out["metrics"]
    print(f"{out['testbed']}: {args.data} -> {out['path']}")
    print(summary_table(metrics["attrs"], method=config.method, steps=config.steps, wall_time_s=result.wall_time_s,
                        violation_indices=metrics["arrays"]["violation_indices"]))
    print()
    print(budget_table(metrics["budget"]))
    if out["budget"] is not None:
        print(f"(budget computed in {out['budget'].wall_time_s:.3g} s; total = functional_error_at_min + "
              "exact_energy_at_min)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaedft", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vaedft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_generate(sub)
    v = sub.add_parser("validate", help="check dataset files against the schema and their physics")
    v.add_argument("files", nargs="+", help="HDF5 dataset files")
    v.add_argument("--resolve", type=_positive_int, metavar="N",
                   help="also re-solve N evenly spaced instances with our solver and compare the energies")
    v.add_argument("--tol", type=_positive_float, default=1e-6, help="tolerance of --resolve in E0 (default 1e-6)")
    _add_data(sub)
    _add_train(sub, "vae")
    _add_train(sub, "functional")
    _add_minimize(sub)
    return parser


_RUNNERS = {
    "generate": _run_generate,
    "validate": _run_validate,
    "fetch": _run_fetch,
    "convert": _run_convert,
    "train-vae": lambda args: _run_train(args, "vae"),
    "train-functional": lambda args: _run_train(args, "functional"),
    "minimize": _run_minimize,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _RUNNERS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, RuntimeError, OSError, FloatingPointError) as exc:  # FetchError too
        print(f"vaedft {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
