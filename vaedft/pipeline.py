"""File-level pipelines: trained runs + dataset files in, result files out.

:func:`minimize_files` is what ``vaedft minimize`` calls: it checks that the trained runs and the
test file belong together, runs :func:`vaedft.minimize.minimize` on the test potentials, computes
the error budget (:func:`vaedft.metrics.error_budget`) and writes the result with
:func:`vaedft.results.write_result`.  :func:`result_budget` computes the budget of an existing
result file (e.g. one written before budgets existed) from the runs and test file it records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .results import write_result

__all__ = ["minimize_files", "result_budget", "default_gap_steps"]


def _read_run(run_dir, kind: str, flag: str) -> tuple[Path, dict]:
    """A run directory's config.json, after checking it is a finished run of ``kind``."""
    from .runs import CheckpointError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{flag} {run_dir}: no such run directory")
    cfg_path, best = run_dir / "config.json", run_dir / "best.pt"
    if not cfg_path.is_file() or not best.is_file():
        raise CheckpointError(f"{flag} {run_dir} is not a finished training run (needs config.json and best.pt)")
    try:
        run = json.loads(cfg_path.read_text())
        recorded_kind, data, model = run["kind"], run["data"], run["model"]
        absent = [k for k in ("testbed", "path", "sha256") if k not in data]
        absent += [f"model.{k}" for k in ("ndim", "grid_n", "dx", "boundary") if k not in model]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{cfg_path} is not a vaedft run config ({exc})") from None
    if absent:
        raise CheckpointError(f"{cfg_path} is not a vaedft run config (lacks {absent})")
    if recorded_kind != kind:
        raise CheckpointError(f"{flag} {run_dir} holds a {recorded_kind} run; {flag} needs a {kind} run")
    return run_dir, run


def _same_testbed(vae_dir: Path, vae_run: dict, f_dir: Path, f_run: dict) -> None:
    from .runs import CheckpointError

    tv, tf = vae_run["data"]["testbed"], f_run["data"]["testbed"]
    grid_v = {k: vae_run["model"].get(k) for k in ("ndim", "grid_n", "boundary")}
    grid_f = {k: f_run["model"].get(k) for k in ("ndim", "grid_n", "boundary")}
    same_dx = np.isclose(float(vae_run["model"]["dx"]), float(f_run["model"]["dx"]), rtol=1e-12, atol=0)
    if tv != tf or grid_v != grid_f or not same_dx:
        raise CheckpointError(
            f"the VAE ({vae_dir}, trained on {tv} data, grid {grid_v}, dx {vae_run['model']['dx']}) and the "
            f"functional ({f_dir}, trained on {tf} data, grid {grid_f}, dx {f_run['model']['dx']}) come from "
            "different testbeds or grids; both models must be trained on the same testbed"
        )


def _training_densities(run_dir: Path, run: dict, flag: str, override, potentials: bool = False):
    """``(path, sha256, densities, potentials or None)``: what a run was trained on (its first
    ``n_instances``), after checking the file's sha256; the potentials only if asked for."""
    from .data.store import read_arrays
    from .runs import CheckpointError, file_sha256

    recorded = run["data"]
    path = Path(override) if override is not None else Path(recorded["path"])
    if not path.is_file():
        if override is None:
            raise CheckpointError(
                f"the training data recorded in {run_dir / 'config.json'} ({path}) is not there; "
                "give its current location with --train-data"
            )
        raise CheckpointError(f"--train-data {path}: no such file")
    sha = file_sha256(path)
    if sha != recorded["sha256"]:
        raise CheckpointError(
            f"{path} is not the file the {flag} run {run_dir} was trained on: its sha256 is {sha}, the run "
            f"recorded {recorded['sha256']} ({recorded['path']}); give that file with --train-data"
        )
    n = int(recorded.get("n_instances") or 0) or None
    arrays = read_arrays(path, names=("density", "potential") if potentials else ("density",), sl=slice(0, n))
    pot = np.asarray(arrays["potential"], dtype=np.float64) if potentials else None
    return path, sha, np.asarray(arrays["density"], dtype=np.float64), pot


def minimize_files(
    *,
    functional_dir: str | Path,
    test_data: str | Path,
    out: str | Path,
    config,
    vae_dir: str | Path | None = None,
    train_data: str | Path | None = None,
    device: str = "auto",
    dtype: str = "float64",
    overwrite: bool = False,
    progress: bool = True,
    budget: bool = True,
    gap: bool = True,
    gap_steps: int | None = None,
) -> dict:
    """Minimise the energies of a test file with trained runs and write the result file.

    Refuses (``ValueError`` / ``CheckpointError`` / ``FileExistsError``, with a message saying
    what to change): missing run directories or runs of the wrong kind, a latent method without
    a VAE run, a VAE and a functional from different testbeds or grids, a test file that fails
    :func:`~vaedft.data.store.validate_dataset` or belongs to another testbed or grid than the
    runs, training data whose sha256 differs from the run's record, an existing ``out`` unless
    ``overwrite``.

    Args:
        functional_dir: run directory of the DL functional (``vaedft train-functional``).
        test_data: the test dataset; its ``potential`` are minimised, its ``energy`` and
            ``density`` are the exact references ``e_gs`` and ``n_gs``.
        out: the result file.
        config: a :class:`~vaedft.minimize.MinimizeConfig`.
        vae_dir: run directory of the VAE (latent methods; not used by density methods).
        train_data: the training densities for ``init`` mean/sample and ``pca-gd`` (default: the
            file recorded in the VAE's run, for density methods the functional's); its sha256 must
            equal the run's record.
        device: ``auto``, ``cpu``, ``cuda``.
        dtype: ``float64`` (default) or ``float32``: the models are evaluated in this dtype.
        overwrite: replace an existing ``out``.
        progress: show a progress bar over the steps.
        budget: compute the error budget (:func:`~vaedft.metrics.error_budget`, in float64) and
            store it in the result file's ``budget`` group.
        gap: include its manifold gap (a latent L-BFGS minimization with the exact functional,
            the one expensive term; latent methods only).
        gap_steps: step budget of that minimization (default: :func:`default_gap_steps` of ``config``,
            no more steps than the minimization itself had).

    Returns:
        ``{"path", "result" (MinimizeResult), "metrics" (as write_result returns them, the budget
        summary under ``"budget"``), "budget" (the ErrorBudget or None), "testbed", "vae_used" (bool)}``.
    """
    from .data.store import read_arrays, validate_dataset
    from .minimize import MinimizeConfig, minimize
    from .runs import CheckpointError, check_run_fits_data, file_sha256, load_run

    if not isinstance(config, MinimizeConfig):
        raise ValueError(f"config must be a MinimizeConfig, got {type(config).__name__}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite")
    if config.is_latent and vae_dir is None:
        raise ValueError(f"{config.method} minimises in the VAE's latent space: give the VAE run with --vae RUN_DIR")
    f_dir, f_run = _read_run(functional_dir, "functional", "--functional")
    vae_used = config.is_latent
    v_dir = v_run = None
    if vae_used:
        v_dir, v_run = _read_run(vae_dir, "vae", "--vae")
        _same_testbed(v_dir, v_run, f_dir, f_run)
    test_data = Path(test_data)
    attrs = validate_dataset(test_data)
    for flag, run_dir, run in (("--functional", f_dir, f_run), ("--vae", v_dir, v_run)):
        if run is not None:
            try:
                check_run_fits_data(run, test_data)
            except CheckpointError as exc:
                raise CheckpointError(f"--data {test_data} does not fit the {flag} run {run_dir}: {exc}") from None
    train_path = train_sha = None
    train = train_V = None
    if config.needs_training_densities:
        src_dir, src_run, flag = (v_dir, v_run, "--vae") if vae_used else (f_dir, f_run, "--functional")
        train_path, train_sha, train, train_V = _training_densities(src_dir, src_run, flag, train_data,
                                                                    potentials=config.init == "nearest")

    functional, _ = load_run(f_dir, device=device, dtype=dtype)
    vae = load_run(v_dir, device=device, dtype=dtype)[0] if vae_used else None
    test = read_arrays(test_data, names=("potential", "density", "energy", "F"))
    result = minimize(
        np.asarray(test["potential"], dtype=np.float64), functional, vae, config=config,
        train_densities=train, train_potentials=train_V, progress=progress,
    )
    err_budget = None
    if budget:
        err_budget = _budget(functional, vae, test, attrs, z_min=result.z_min,
                             n_min=None if vae_used else result.n_min, diverged=result.diverged, gap=gap,
                             gap_steps=default_gap_steps(config) if gap_steps is None else gap_steps)
    cell_volume = float(attrs["dx"]) ** len(attrs["grid_shape"])
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = write_result(
        out, result, e_gs=test["energy"], n_gs=test["density"], cell_volume=cell_volume, testbed=attrs["testbed"],
        functional_run=f_run, functional_checkpoint_sha256=file_sha256(f_dir / "best.pt"),
        functional_run_dir=f_dir.resolve(),
        vae_run=v_run, vae_checkpoint_sha256=file_sha256(v_dir / "best.pt") if vae_used else "",
        vae_run_dir=v_dir.resolve() if vae_used else "",
        test_data_path=test_data.resolve(), test_data_sha256=file_sha256(test_data),
        train_data_path=None if train_path is None else train_path.resolve(), train_data_sha256=train_sha or "",
        device=str(next(functional.parameters()).device), dtype=dtype, budget=err_budget,
    )
    return {"path": out, "result": result, "metrics": metrics, "budget": err_budget, "testbed": attrs["testbed"],
            "vae_used": vae_used}


def default_gap_steps(config) -> int:
    """Step budget of the manifold-gap minimization for a minimization run with ``config``:
    :data:`~vaedft.metrics.DEFAULT_GAP_STEPS`, but no more than ``config.steps`` (a short run gets a
    cheap budget)."""
    from .metrics import DEFAULT_GAP_STEPS

    return min(DEFAULT_GAP_STEPS, int(config.steps))


def _budget(functional, vae, test: dict, attrs: dict, *, z_min, n_min, diverged, gap: bool, gap_steps: int):
    """:func:`~vaedft.metrics.error_budget` of a minimization on a test file (arrays and attributes)."""
    from .data.store import testbed_from_attrs
    from .metrics import error_budget

    return error_budget(
        vae, functional, test["potential"], test["density"], test["energy"], test["F"], z_min,
        grid=testbed_from_attrs(attrs).grid, n_min=n_min, diverged=diverged, gap=gap, gap_steps=gap_steps,
    )


def result_budget(
    result_path: str | Path,
    *,
    functional_dir: str | Path | None = None,
    vae_dir: str | Path | None = None,
    test_data: str | Path | None = None,
    device: str = "auto",
    gap: bool = True,
    gap_steps: int | None = None,
):
    """The error budget of an existing result file (the file is not changed; ``gap_steps`` defaults to
    :func:`default_gap_steps` of the result's config).

    The runs and the test file default to those the result records (``functional_run_dir``,
    ``vae_run_dir``, ``test_data_path``); given ones must be the same files: the sha256 of each
    run's ``best.pt`` and of the test file must equal the result's record.

    Returns:
        the :class:`~vaedft.metrics.ErrorBudget` (float64).

    Raises:
        ResultError / CheckpointError: an unreadable result, or runs and test file that are missing or
            are not the ones the result was computed with.
    """
    from .data.store import read_arrays, read_attrs
    from .results import read_result
    from .runs import CheckpointError, file_sha256, load_run

    res = read_result(result_path)
    a = res["attrs"]
    latent = res["config"].is_latent
    checks = [("functional", functional_dir or a["functional_run_dir"], "best.pt", a["functional_checkpoint_sha256"])]
    if latent:
        checks.append(("vae", vae_dir or a["vae_run_dir"], "best.pt", a["vae_checkpoint_sha256"]))
    checks.append(("test data", test_data or a["test_data_path"], None, a["test_data_sha256"]))
    paths = {}
    for what, where, inner, sha in checks:
        path = Path(where) / inner if inner else Path(where)
        if not path.is_file():
            raise CheckpointError(f"the {what} of {result_path} ({path}) is not there; give its location")
        if file_sha256(path) != sha:
            raise CheckpointError(f"{path} is not the {what} {result_path} was computed with (sha256 differs)")
        paths[what] = Path(where)
    functional = load_run(paths["functional"], device=device, dtype="float64")[0]
    vae = load_run(paths["vae"], device=device, dtype="float64")[0] if latent else None
    test = read_arrays(paths["test data"], names=("potential", "density", "energy", "F"))
    return _budget(functional, vae, test, read_attrs(paths["test data"]), z_min=res["z_min"],
                   n_min=None if latent else res["n_min"], diverged=res["diverged"], gap=gap,
                   gap_steps=default_gap_steps(res["config"]) if gap_steps is None else gap_steps)


# ----------------------------------------------------------------------------- the summary
