"""The batched descent loop and :func:`minimize`, the public entry point.

:func:`minimize` checks the models and inputs, draws the starting points, builds the problem
(:mod:`vaedft.minimize.problems`) and runs :func:`_descend`, which advances all rows with the
method's optimizer (:mod:`vaedft.minimize.optimizers`); then it keeps the best start of every
instance.

Batching: all N instances x K starts are the rows of one ``(R, P)`` tensor advanced together
(``P = l_d`` in latent space, the number of grid points in density space); no Python loop over
instances.  Row ``r = i * K + k`` is start ``k`` of instance ``i``.  Each step evaluates the
energy and gradient of the *active* rows only; rows that converge or diverge are dropped from
the active set and never change again.

Per-row rules (no row ever looks at another):

* converged: after a step, ``|E_t - E_{t-1}| < tol_energy`` (``|E_t - E_{t-w}|`` with
  ``settle_window = w``: the energy has settled over the row's last ``w`` steps) and ``||grad|| < tol_grad``
  (``tol = 0`` disables convergence, so every row runs ``steps`` steps as in the paper).
  ``||grad||`` is the Euclidean norm of ``dE/dz`` in latent space and the function-space norm
  ``sqrt(dx^d sum d^2)`` of the step direction ``d`` in density space.
* diverged (GD, Adam, density methods): the new energy or gradient is NaN/inf, or the energy
  exceeds the row's starting energy by more than ``divergence_threshold`` (E0).  The row is
  frozen at its last finite state and flagged.  L-BFGS never accepts a rise, so it can only
  be flagged at its start.  A row whose *starting* energy is not finite is flagged at step 0.

Randomness: starting points are pure functions of ``(seed, instance index, start)``, drawn from
``instance_rng(seed, i).spawn(K)[k]`` (:func:`vaedft.rng.instance_rng`).  Together with per-row
convergence this makes an instance's result independent of which other instances share its
batch (up to floating-point reassociation in batched kernels, ~1e-15 in float64).

Starting points (:attr:`~vaedft.minimize.MinimizeConfig.init`), start 0 of each instance:

* ``mean`` -- the encoder mean ``mu`` of the average training density (paper); density methods
  start from the average training density itself.
* ``sample`` -- ``mu`` of one training density drawn per instance (paper); density methods start
  from that density.
* ``prior`` -- ``z ~ N(0, 1)`` (latent methods only).
* ``nearest`` -- the training density whose potential is nearest to the instance's (least
  ``dx^d sum (V - V_train)^2``): the ground state of the most similar training Hamiltonian, encoded
  (latent methods) or as it is (density methods).  Needs ``train_potentials`` beside
  ``train_densities``.  Not in the paper; it starts each instance close to its answer, which
  keeps the descent on the part of the manifold the networks were trained on.

Trust region (:attr:`~vaedft.minimize.MinimizeConfig.latent_box` ``= k > 0``): the training
densities are encoded (encoder means ``mu``) and every latent coordinate is clipped to
``mean(mu) +- k std(mu)`` after each step (and at the start), the same box for every row.

Starts ``k >= 1`` draw a prior point when ``init == "prior"`` and a random training density
otherwise.  The result of each instance is its start of lowest final energy among the starts that
did not diverge (``best_start``); an instance is flagged diverged only if all its starts diverged.

Energy history: the energy of each row's current point at steps ``0, h, 2h, ...``
(``h = history_every``), ``T_sub = steps // h + 1`` columns.  A frozen row's point no longer
changes, so its history *holds its last value* (for a diverged row: the last finite energy);
``steps`` says when it froze.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..progress import progress_bar
from ..rng import instance_rng
from .config import MinimizeConfig, MinimizeResult
from .optimizers import _OPTIMIZERS
from .problems import GridSpec, _DensityProblem, _LatentProblem, _Problem, _same_grid, grid_spec, principal_components

__all__ = ["minimize"]

_ENCODE_BATCH = 1024


# ----------------------------------------------------------------------------- the loop


def _where_rows(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def _descend(problem: _Problem, x0: torch.Tensor, cfg: MinimizeConfig, progress: bool) -> dict:
    """Advance all rows of ``x0`` ``(R, P)`` together; returns per-row tensors.

    The working set holds the active rows only (compact tensors); a row that converges or
    diverges is written back to the full result tensors and dropped from it.
    """
    opt = _OPTIMIZERS[cfg.method](cfg)
    dev = x0.device
    n_rows = x0.shape[0]
    x = problem.constrain(x0.clone())
    E, G, gnorm = problem.evaluate(x, problem.V)
    finite = torch.isfinite(E) & torch.isfinite(G).all(1)
    diverged = ~finite
    converged = torch.zeros(n_rows, dtype=torch.bool, device=dev)
    steps = torch.zeros(n_rows, dtype=torch.long, device=dev)
    history = torch.empty(n_rows, len(cfg.history_steps), dtype=E.dtype, device=dev)
    history[:, 0] = E
    col = 1
    thr = cfg.divergence_threshold

    # the working set: active rows only
    active = torch.nonzero(finite).squeeze(1)
    xa, Ea, Ga, gna, Va = x[active], E[active], G[active], gnorm[active], problem.V[active]
    E_start = Ea.clone()
    w = cfg.settle_window
    past = Ea[:, None].repeat(1, w) if w else None  # past[:, t % w]: the row's energy w steps ago
    st = opt.init_state(xa)
    steps_a = torch.zeros_like(active)

    def write_back(sel: torch.Tensor, div: torch.Tensor, conv: torch.Tensor) -> None:
        rows = active[sel]
        x[rows], E[rows], G[rows], gnorm[rows], steps[rows] = xa[sel], Ea[sel], Ga[sel], gna[sel], steps_a[sel]
        diverged[rows], converged[rows] = div[sel], conv[sel]

    bar = progress_bar(total=cfg.steps, desc=cfg.method, unit="step", disable=not progress)
    try:
        for t in range(1, cfg.steps + 1):
            if active.numel() == 0:
                break
            x_new, st_new = opt.propose(xa, Ga, st)
            x_new = problem.constrain(x_new)
            E_new, G_new, gn_new = problem.evaluate(x_new, Va)
            ok = torch.isfinite(E_new) & torch.isfinite(G_new).all(1)
            if opt.accepts_rises:  # GD, Adam, density methods
                div = ~ok | (E_new > E_start + thr)
                move = ~div
                # a row's optimizer state advances only with the row
                st = {k: _where_rows(move, v, st[k]) for k, v in st_new.items()}
            else:  # L-BFGS: per-row acceptance, never a rise
                div = torch.zeros_like(ok)
                move = ok & opt.acceptable(E_new, Ea)
                st = opt.after(xa, Ga, x_new, G_new, move, st_new)
            if w:
                conv = torch.zeros_like(move)
            else:
                conv = move & ((E_new - Ea).abs() < cfg.tol_energy) & (gn_new < cfg.tol_grad)
            xa = _where_rows(move, x_new, xa)
            Ea = torch.where(move, E_new, Ea)
            if w:
                if t >= w:
                    conv = ~div & ((Ea - past[:, t % w]).abs() < cfg.tol_energy) & (gna < cfg.tol_grad)
                past[:, t % w] = Ea
            Ga = _where_rows(move, G_new, Ga)
            gna = torch.where(move, gn_new, gna)
            steps_a = steps_a + (~div).long()
            frozen = div | conv
            if bool(frozen.any()):
                write_back(frozen, div, conv)
                keep = ~frozen
                active, xa, Ea, Ga, gna, Va, E_start, steps_a = (
                    t_[keep] for t_ in (active, xa, Ea, Ga, gna, Va, E_start, steps_a)
                )
                if w:
                    past = past[keep]
                st = {k: v[keep] for k, v in st.items()}
            if t % cfg.history_every == 0:
                E[active] = Ea
                history[:, col] = E
                col += 1
            bar.update(1)
    finally:
        bar.close()
    if active.numel():
        none = torch.zeros_like(active, dtype=torch.bool)
        write_back(~none, none, none)
    if col < history.shape[1]:
        history[:, col:] = E[:, None]
    return {"x": x, "E": E, "gnorm": gnorm, "steps": steps, "converged": converged, "diverged": diverged,
            "history": history}


def _encoder_means(vae: nn.Module, densities: torch.Tensor) -> torch.Tensor:
    """Encoder means ``mu`` ``(N, l_d)`` of ``densities`` ``(N, *grid)``, in chunks of ``_ENCODE_BATCH``."""
    return torch.cat([vae.encode(densities[lo : lo + _ENCODE_BATCH])[0]
                      for lo in range(0, densities.shape[0], _ENCODE_BATCH)])


def latent_bounds(vae: nn.Module, densities: torch.Tensor, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` ``(l_d,)``: the mean of the encoder means of ``densities`` ``(N, *grid)`` -+ ``k`` std.

    Needs at least two densities (a spread); the mean training density alone has none.
    """
    if densities.shape[0] < 2:
        raise ValueError("latent_box needs the training densities (at least two), not only their mean")
    mu = _encoder_means(vae, densities)
    center, spread = mu.mean(0), mu.std(0)
    return center - k * spread, center + k * spread


# ----------------------------------------------------------------------------- inputs


def _model_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.float64, torch.device("cpu")


def _has_tensors(module: nn.Module) -> bool:
    """True if ``module`` has floating-point parameters or buffers (its dtype/device are then fixed)."""
    return any(t.is_floating_point() for t in (*module.parameters(), *module.buffers()))


def _as_tensor(name: str, a, spec: GridSpec, dtype, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        arr = np.asarray(a)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    want = spec.grid_shape
    if t.dim() != len(want) + 1 or tuple(t.shape[1:]) != want or t.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, want))}) with B >= 1 for the models' "
            f"{spec.boundary} grid (grid_n={spec.grid_n}, dx={spec.dx:.6g}), got {tuple(t.shape)}"
        )
    t = t.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(t).flatten(1).all(1)
    if bool(bad.any()):
        raise ValueError(f"{name} contain NaN or inf in instance(s) {torch.nonzero(bad).flatten()[:10].tolist()}")
    return t


def _check_indices(indices, n: int) -> np.ndarray:
    if indices is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu" or idx.shape != (n,):
        raise ValueError(f"indices must be {n} non-negative integers (one per potential), got {indices!r}")
    if (idx < 0).any():
        raise ValueError("indices must be non-negative")
    return idx.astype(np.int64)


def _draws(cfg: MinimizeConfig, indices: np.ndarray, n_train: int, latent_dim: int, given_first: bool = False,
           nearest: np.ndarray | None = None):
    """Per (instance, start): a training index (-1 = the mean density) or a prior vector.

    ``given_first``: start 0 is given by the caller (``z0``); it is marked a prior point and left at 0
    here.  The other starts draw from their own streams, so they do not change.
    """
    k_starts = cfg.starts
    which = np.full((len(indices), k_starts), -1, dtype=np.int64)
    prior = np.zeros((len(indices), k_starts, latent_dim))
    is_prior = np.zeros((len(indices), k_starts), dtype=bool)
    for row, i in enumerate(indices):
        rngs = instance_rng(cfg.seed, int(i)).spawn(k_starts)
        for k, rng in enumerate(rngs):
            if k == 0 and given_first:
                is_prior[row, k] = True
                continue
            kind = cfg.init if k == 0 else ("prior" if cfg.init == "prior" else "sample")
            if kind == "prior":
                prior[row, k] = rng.standard_normal(latent_dim)
                is_prior[row, k] = True
            elif kind == "sample":
                which[row, k] = rng.integers(n_train)
            elif kind == "nearest":
                which[row, k] = nearest[row]
    return which, prior, is_prior


def nearest_potentials(potentials: torch.Tensor, train_potentials: torch.Tensor, *, chunk: int = 4096) -> np.ndarray:
    """``(N,)`` index of the training potential nearest (Euclidean, on the grid) to each potential.

    ``potentials`` ``(N, *grid)`` and ``train_potentials`` ``(N_train, *grid)``, same grid.  Ties
    go to the lowest index.  Memory: ``N x chunk`` distances at a time.
    """
    a = potentials.flatten(1)
    best = torch.full((a.shape[0],), float("inf"), dtype=a.dtype, device=a.device)
    arg = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
    for lo in range(0, train_potentials.shape[0], chunk):
        b = train_potentials[lo : lo + chunk].flatten(1).to(a)
        d = torch.cdist(a, b)
        m, i = d.min(dim=1)
        better = m < best
        best, arg = torch.where(better, m, best), torch.where(better, i + lo, arg)
    return arg.cpu().numpy()


def _start_densities(train: torch.Tensor, which: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique starting densities and, per (instance, start), the row of each in that set."""
    mean = train.mean(0, keepdim=True)
    uniq, inverse = np.unique(which.ravel(), return_inverse=True)
    rows = [mean[0] if u < 0 else train[int(u)] for u in uniq]
    return torch.stack(rows), torch.as_tensor(inverse.reshape(which.shape), device=train.device)


# ----------------------------------------------------------------------------- public entry point


def minimize(
    potentials,
    functional: nn.Module,
    vae: nn.Module | None = None,
    *,
    config: MinimizeConfig = MinimizeConfig(),  # noqa: B008 -- frozen dataclass, immutable
    train_densities=None,
    indices: Sequence[int] | np.ndarray | None = None,
    progress: bool = False,
    z0=None,
    train_potentials=None,
) -> MinimizeResult:
    """Minimise the energy of every potential of a batch with one method (see :mod:`vaedft.minimize`).

    Args:
        potentials: ``(N, *grid)`` array or tensor, in E0, on the models' grid.
        functional: the DL functional (or :class:`~vaedft.physics.kinetic.ExactKineticFunctional`); used in
            eval mode.
        vae: the VAE (latent methods only; must be on the functional's grid, device and dtype).
        config: a :class:`MinimizeConfig`.
        train_densities: ``(N_train, *grid)`` training densities: needed for ``init`` ``"mean"``
            and ``"sample"`` (and every extra start unless ``init == "prior"``) and for ``pca-gd``.
            With ``init="mean"``, ``starts=1`` the mean density alone (a batch of one) suffices.
        indices: ``(N,)`` instance indices that seed the per-instance draws (default
            ``0..N-1``).  Pass the global indices when minimising a subset, so that the subset's
            results equal the corresponding rows of the full run.
        progress: show a progress bar over the steps.
        z0: ``(N, l_d)`` explicit starting latents (latent methods only), e.g. the encoder means of
            known densities: start 0 of instance ``i`` is ``z0[i]`` instead of the ``config.init``
            point (further starts are drawn as usual), so ``train_densities`` are then needed only
            for extra starts that are not prior draws.
        train_potentials: ``(N_train, *grid)`` potentials of ``train_densities`` (same order), for
            ``init="nearest"``.

    Computation happens on the models' device and in their dtype (use float64 models for
    tight checks).  Both modules are put in eval mode and restored afterwards.

    Returns:
        :class:`MinimizeResult`.

    Raises:
        ValueError: unknown method, missing or mismatched models (different grids or testbeds,
            dtypes, devices), potentials or training densities of the wrong shape.
    """
    if not isinstance(config, MinimizeConfig):
        raise ValueError(f"config must be a MinimizeConfig, got {type(config).__name__}")
    cfg = config
    if not isinstance(functional, nn.Module):
        raise ValueError(f"functional must be a torch module, got {type(functional).__name__}")
    spec = grid_spec(functional)
    dtype, device = _model_dtype_device(functional)
    if cfg.is_latent:
        if vae is None:
            raise ValueError(f"{cfg.method} needs a VAE (vae=...)")
        vspec = grid_spec(vae)
        if not _same_grid(vspec, spec):
            raise ValueError(
                f"the VAE and the functional were built for different grids/testbeds: VAE {vspec}, functional {spec}"
            )
        vdtype, vdevice = _model_dtype_device(vae)
        if _has_tensors(functional) and (vdtype, vdevice) != (dtype, device):
            raise ValueError(f"the VAE ({vdtype}, {vdevice}) and the functional ({dtype}, {device}) differ in "
                             "dtype or device; move one with .to(...)")
        dtype, device = vdtype, vdevice
    V = _as_tensor("potentials", potentials, spec, dtype, device)
    n_inst = V.shape[0]
    idx = _check_indices(indices, n_inst)
    latent_dim = int(vae.config.latent_dim) if cfg.is_latent else 0
    if z0 is not None:
        if not cfg.is_latent:
            raise ValueError(f"z0 gives starting latents; {cfg.method} is not a latent method")
        z0 = torch.as_tensor(z0).detach()
        if tuple(z0.shape) != (n_inst, latent_dim) or not bool(torch.isfinite(z0).all()):
            raise ValueError(f"z0 must be finite with shape ({n_inst}, {latent_dim}), got {tuple(z0.shape)}")
    needs_train = cfg.needs_training_densities if z0 is None else (
        (cfg.starts > 1 and cfg.init != "prior") or cfg.latent_box > 0)
    train = None
    if needs_train:
        if train_densities is None:
            raise ValueError(f"method {cfg.method} with init {cfg.init!r} needs train_densities")
        train = _as_tensor("train_densities", train_densities, spec, dtype, device)
        if bool((train < 0).any()):
            raise ValueError("train_densities must be non-negative")
    nearest = None
    if cfg.init == "nearest" and z0 is None:
        if train_potentials is None:
            raise ValueError("init 'nearest' needs train_potentials (the potentials of train_densities)")
        train_V = _as_tensor("train_potentials", train_potentials, spec, dtype, device)
        if train_V.shape[0] != train.shape[0]:
            raise ValueError(f"train_potentials has {train_V.shape[0]} rows, train_densities {train.shape[0]}")
        nearest = nearest_potentials(V, train_V)
    k_starts = cfg.starts
    which, prior, is_prior = _draws(cfg, idx, 0 if train is None else train.shape[0], latent_dim,
                                    given_first=z0 is not None, nearest=nearest)
    if z0 is not None:
        prior[:, 0] = z0.to(torch.float64).cpu().numpy()
    V_rows = V.repeat_interleave(k_starts, dim=0)

    modes = [(m, m.training) for m in (functional, vae) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        with torch.no_grad():
            if cfg.is_latent:
                z0 = torch.as_tensor(prior.reshape(-1, latent_dim), dtype=dtype, device=device)
                if train is not None and not is_prior.all():
                    dens, inv = _start_densities(train, np.where(is_prior, 0, which))
                    z_enc = _encoder_means(vae, dens)[inv.reshape(-1)]
                    z0 = torch.where(torch.as_tensor(is_prior.reshape(-1, 1), device=device), z0, z_enc)
                bounds = None if cfg.latent_box == 0 else latent_bounds(vae, train, cfg.latent_box)
                problem: _Problem = _LatentProblem(spec, V_rows, vae, functional, bounds)
            else:
                dens, inv = _start_densities(train, which)
                x0 = dens.flatten(1)[inv.reshape(-1)]
                basis = None
                if cfg.method == "pca-gd":
                    mean, basis = principal_components(train.flatten(1), cfg.n_components)
                    x0 = mean + ((x0 - mean) @ basis) @ basis.T
                problem = _DensityProblem(spec, V_rows, functional, pca_basis=basis, precondition=cfg.precondition,
                                          shift=cfg.precondition_shift)
            t0 = time.perf_counter()
            out = _descend(problem, z0 if cfg.is_latent else x0, cfg, progress)
            wall = time.perf_counter() - t0
            n_rows_final = problem.densities(out["x"])
    finally:
        for m, was_training in modes:
            m.train(was_training)

    # keep, per instance, the start of lowest final energy among those that did not diverge
    E = out["E"].view(n_inst, k_starts)
    div = out["diverged"].view(n_inst, k_starts)
    e_starts = torch.where(div, torch.nan, E)
    rank = torch.where(div | ~torch.isfinite(E), torch.inf, E)
    best = torch.argmin(rank, dim=1)
    all_div = div.all(1)
    # an instance whose starts all diverged: report the lowest finite last state (still flagged)
    fallback = torch.argmin(torch.where(torch.isfinite(E), E, torch.inf), dim=1)
    best = torch.where(all_div, fallback, best)
    rows = torch.arange(n_inst, device=device) * k_starts + best

    def pick(t):
        return t[rows].detach().cpu().numpy()

    e_last = pick(out["E"]).astype(np.float64)
    diverged = pick(out["diverged"]).astype(bool)
    e_min = np.where(diverged, np.nan, e_last)
    return MinimizeResult(
        e_min=e_min,
        e_last=e_last,
        n_min=pick(n_rows_final).astype(np.float64),
        z_min=pick(out["x"]).astype(np.float64) if cfg.is_latent else None,
        steps=pick(out["steps"]).astype(np.int64),
        converged=pick(out["converged"]).astype(bool),
        diverged=diverged,
        grad_norm=pick(out["gnorm"]).astype(np.float64),
        energy_history=pick(out["history"]).astype(np.float64),
        history_steps=cfg.history_steps,
        best_start=best.cpu().numpy().astype(np.int64),
        e_starts=e_starts.cpu().numpy().astype(np.float64),
        indices=idx,
        config=cfg,
        wall_time_s=wall,
    )
