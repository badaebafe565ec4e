"""The paper's experiments E1-E10: one function each, ``fn(ctx, params) -> Output``.

``params`` comes from the experiment's TOML file (``benchmark/experiments/``) merged with the
profile's section; ``ctx`` (:class:`~vaedft.bench.context.Context`) gives the profile's artifacts.
Each function asks for every artifact of its sweep at once (``ctx.ensure``), so a Dask executor
builds them in parallel and the cache shares them between experiments; then it only reads,
measures and plots.  Energies in E0 (kcal/mol only in figures and tables where marked);
density and reconstruction errors are ``int |n - n'| d^dx`` (dimensionless).

Metric names: ``<testbed>/ld<l_d>/beta<beta>/<quantity>`` (see :func:`~vaedft.bench.context.metric_name`).

Every experiment that minimizes also reports the error budget of each minimization
(:func:`budget_metrics`: ``budget_<term>_mean_kcal_per_mol`` and the mean |.| or min, in kcal/mol;
``budget_<term>_kcal_per_mol`` for a single shown instance); the report renders them as one budget
table per testbed (:mod:`vaedft.report.markdown`).  These metrics are not in the committed
references; ``vaedft-bench check`` ignores metrics a reference does not list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..metrics import KCAL_PER_MOL
from .artifacts import stage_seconds
from .context import Context, Output, beta_tag, metric_name

__all__ = ["EXPERIMENTS", "energy_metrics", "budget_metrics"]

CA = KCAL_PER_MOL


# ----------------------------------------------------------------------------- shared helpers


def _load(ctx: Context, artifact, dtype: str | None = None):
    from ..train import load_run

    return load_run(ctx.path(artifact), device=ctx.device, dtype=dtype)[0]


def _test_arrays(ctx: Context, artifact) -> dict:
    from ..data.store import read_arrays, read_attrs

    path = ctx.path(artifact)
    out = read_arrays(path, names=("potential", "density", "energy"))
    out["attrs"] = read_attrs(path)
    return out


def _result(ctx: Context, artifact) -> dict:
    from ..results import read_result

    return read_result(ctx.path(artifact))


def energy_metrics(result: Mapping) -> dict[str, float]:
    """The benchmark's energy and density metrics of a minimization result (``read_result`` output).

    ``mean_abs_energy_error`` and the other statistics cover the finite rows; ``..._all`` counts a
    diverged row as an infinite error, so a method that blew up never looks better than one that did not.
    """
    m = result["metrics"]
    n_div = int(m["n_diverged"])
    mean_abs = float(m["mean_abs_error"])
    return {
        "mean_abs_energy_error": mean_abs,
        "max_abs_energy_error": float(m["max_abs_error"]),
        "mean_signed_energy_error": float(m["mean_signed_error"]),
        "mean_abs_energy_error_all": math.inf if (n_div or int(m["n_nonfinite"])) else mean_abs,
        "frac_within_ca": float(m["fraction_within_ca"]),
        "n_violations": float(m["n_violations"]),
        "n_diverged": float(n_div),
        "density_error": float(m["density_error_mean"]),
    }


#: budgets computed here for cached results written before budgets existed, by artifact key (once per process)
_BUDGETS: dict[str, Any] = {}


def _budget(ctx: Context, artifact, result: Mapping) -> dict | None:
    """The stored error budget of a minimization result (``read_result``'s ``"budget"``).

    A result cached before budgets existed has none: its budget is computed from the artifact's own
    runs and test set (:func:`vaedft.pipeline.result_budget`, memoised per process) and not written
    back (a cached artifact is never changed).  None (and a note) if that fails.
    """
    if result.get("budget") is not None:
        return result["budget"]
    if artifact.key not in _BUDGETS:
        from ..metrics import budget_summary
        from ..pipeline import result_budget
        from .artifacts import Artifact

        spec = artifact.data
        try:
            b = result_budget(
                ctx.path(artifact), functional_dir=ctx.path(Artifact.make("functional", spec["functional"])),
                vae_dir=None if spec.get("vae") is None else ctx.path(Artifact.make("vae", spec["vae"])),
                test_data=ctx.path(Artifact.make("dataset", spec["test"])), device=ctx.device,
            )
            _BUDGETS[artifact.key] = {"terms": b.terms, "summary": budget_summary(b)}
        except (OSError, ValueError, RuntimeError) as exc:
            _BUDGETS[artifact.key] = {"error": str(exc)}
    got = _BUDGETS[artifact.key]
    return None if "error" in got else got


def budget_metrics(budget: Mapping | None, instance: int | None = None) -> dict[str, float]:
    """Benchmark metrics of an error budget (``read_result(...)["budget"]``), in kcal/mol.

    ``budget_<term>_mean_kcal_per_mol`` and ``budget_<term>_mean_abs_kcal_per_mol`` (signed terms) or
    ``budget_<term>_min_kcal_per_mol`` (variational terms) of every stored term; with ``instance``, that
    instance's ``budget_<term>_kcal_per_mol``.  Empty for None.
    """
    from ..metrics import KCAL_PER_MOL

    if budget is None:
        return {}
    if instance is not None:
        return {f"budget_{name}_kcal_per_mol": float(values[instance]) / KCAL_PER_MOL
                for name, values in budget["terms"].items()}
    stats = ("_mean_kcal_per_mol", "_mean_abs_kcal_per_mol", "_min_kcal_per_mol")
    return {f"budget_{key}": float(value) for key, value in budget["summary"].items()
            if key.endswith(stats)}


def _put(out: Output, testbed: str, ld, beta, values: Mapping[str, float], *extra: str) -> None:
    for q, v in values.items():
        out.metrics[metric_name(testbed, ld, beta, q, *extra)] = float(v)


def _kcal(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x / CA:.3g}"


def _ca_sentence(rows: list[tuple[str, dict]]) -> str:
    """One sentence per case (a markdown list when several): mean |error|, share within chemical accuracy."""
    parts = []
    for label, m in rows:
        within = m["frac_within_ca"]
        verdict = "within" if m["mean_abs_energy_error"] <= CA and m["n_diverged"] == 0 else "NOT within"
        parts.append(f"{label}: mean |e_min - e_gs| = {_kcal(m['mean_abs_energy_error'])} kcal/mol ({verdict} "
                     f"chemical accuracy), {within:.0%} of instances within 1 kcal/mol, "
                     f"{int(m['n_violations'])} violations beyond CA, {int(m['n_diverged'])} diverged")
    return parts[0] + "." if len(parts) == 1 else "\n" + "\n".join(f"- {p}" for p in parts)


def _energy_row(label: list, m: dict) -> list:
    return [*label, _kcal(m["mean_abs_energy_error"]), _kcal(m["max_abs_energy_error"]),
            _kcal(m["mean_signed_energy_error"]), f"{m['frac_within_ca']:.2f}", int(m["n_violations"]),
            int(m["n_diverged"]), f"{m['density_error']:.4g}"]


_ENERGY_HEADERS = ["mean abs (kcal/mol)", "max abs (kcal/mol)", "mean signed (kcal/mol)", "within CA",
                   "violations", "diverged", "density error"]


def _grid_x(attrs: Mapping) -> np.ndarray:
    """Grid coordinates (a0) of a 1D dataset, placed as in :class:`vaedft.physics.grid.Grid`."""
    n, dx = int(np.ravel(attrs["grid_shape"])[0]), float(attrs["dx"])
    return dx * (np.arange(n) + (1.0 if attrs["boundary"] == "hard_wall" else 0.0))


# ----------------------------------------------------------------------------- E1, E2: reconstruction


def reconstruction_vs_beta(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E1 (Fig. 2): mean reconstruction error ``int |D(mu(n)) - n| dx`` on the test set vs beta."""
    from ..metrics import reconstruction_error
    from ..report.figures import plot_sweep

    out = Output()
    cases, betas = params["cases"], [float(b) for b in params["betas"]]
    vaes = {(c["testbed"], b): ctx.vae(c["testbed"], c["latent_dim"], b) for c in cases for b in betas}
    tests = {c["testbed"]: ctx.dataset(c["testbed"], "test") for c in cases}
    ctx.ensure([*vaes.values(), *tests.values()])
    series, rows = {}, []
    for c in cases:
        tb, ld = c["testbed"], c["latent_dim"]
        dens = _test_arrays(ctx, tests[tb])["density"]
        mean, std = [], []
        for b in betas:
            r = reconstruction_error(_load(ctx, vaes[(tb, b)]), dens)
            _put(out, tb, ld, b, {"reconstruction_error": r["mean"], "reconstruction_error_std": r["std"]})
            mean.append(r["mean"])
            std.append(r["std"])
            rows.append([tb, ld, beta_tag(b), f"{r['mean']:.4g}", f"{r['std']:.3g}", f"{r['max']:.3g}"])
        series[f"{tb} (l_d = {ld})"] = (np.array(betas), np.array(mean), np.array(std))
    out.table("Reconstruction error on the test set", ["testbed", "l_d", "beta", "mean", "std", "max"], rows)
    path = plot_sweep(ctx.figure_path("reconstruction_vs_beta"), [
        {"title": "Reconstruction error vs beta", "xlabel": "beta", "ylabel": "|n_hat - n|", "series": series}])
    out.figures.append({"file": ctx.relative(path), "caption": "Mean reconstruction error (error bars: std) vs beta"})
    return out


def example_reconstructions(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E2 (Fig. 3): one test instance per 1D testbed reconstructed by VAEs of several beta."""
    import torch

    from ..metrics import density_l1
    from ..report.figures import plot_profiles

    out = Output()
    betas = [float(b) for b in params["betas"]]
    cases = params["cases"]
    vaes = {(c["testbed"], b): ctx.vae(c["testbed"], c["latent_dim"], b) for c in cases for b in betas}
    tests = {c["testbed"]: ctx.dataset(c["testbed"], "test") for c in cases}
    ctx.ensure([*vaes.values(), *tests.values()])
    panels, rows = [], []
    for c in cases:
        tb, ld, i = c["testbed"], c["latent_dim"], int(c.get("instance", 0))
        test = _test_arrays(ctx, tests[tb])
        n = test["density"][i : i + 1]
        curves = {"exact": n[0]}
        for b in betas:
            vae = _load(ctx, vaes[(tb, b)])
            with torch.no_grad():
                p = next(vae.parameters())
                x = torch.as_tensor(n, dtype=p.dtype, device=p.device)
                rec = vae.decode(vae.encode(x)[0]).double().cpu().numpy()
            err = float(density_l1(rec, n, vae.config.cell_volume)[0])
            curves[f"beta = {beta_tag(b)}"] = rec[0]
            _put(out, tb, ld, b, {"reconstruction_error": err}, f"instance{i}")
            rows.append([tb, i, beta_tag(b), f"{err:.4g}"])
        panels.append({"title": f"{tb}, test instance {i} (l_d = {ld})", "x": _grid_x(test["attrs"]),
                       "curves": curves, "potential": test["potential"][i],
                       "styles": {"exact": {"color": "goldenrod", "linewidth": 4, "alpha": 0.6}}})
    out.table("Reconstruction error of the shown instances", ["testbed", "instance", "beta", "|n_hat - n|"], rows)
    path = plot_profiles(ctx.figure_path("reconstructions"), panels)
    out.figures.append({"file": ctx.relative(path), "caption": "Exact density (thick) and VAE reconstructions; "
                        "potential on the right axis"})
    return out


# ----------------------------------------------------------------------------- E3, E4, E5: 1D minimization


def _minimizations(ctx: Context, cases: list[tuple[str, int, float]]):
    arts = {c: ctx.minimization(c[0], latent_dim=c[1], beta=c[2]) for c in cases}
    ctx.ensure(arts.values())
    return arts


def error_histograms(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E3 (Fig. 4): histograms of ``e_min - e_gs`` after latent-space descent, chemical accuracy marked."""
    from ..report.figures import plot_error_histograms

    out = Output()
    cases = [(p["testbed"], int(c["latent_dim"]), float(c["beta"])) for p in params["panels"] for c in p["cases"]]
    arts = _minimizations(ctx, cases)
    panels, rows, ca_rows = [], [], []
    for p in params["panels"]:
        errors = {}
        for c in p["cases"]:
            key = (p["testbed"], int(c["latent_dim"]), float(c["beta"]))
            res = _result(ctx, arts[key])
            m = energy_metrics(res)
            _put(out, *key, {**m, **budget_metrics(_budget(ctx, arts[key], res))})
            label = f"l_d = {key[1]}, beta = {beta_tag(key[2])}"
            errors[label] = res["metrics"]["signed_error"]
            rows.append(_energy_row([p["testbed"], key[1], beta_tag(key[2])], m))
            ca_rows.append((f"{p['testbed']} {label}", m))
        panels.append({"title": p["testbed"], "errors": errors})
    out.table("Energy errors after latent-space minimization", ["testbed", "l_d", "beta", *_ENERGY_HEADERS], rows)
    path = plot_error_histograms(ctx.figure_path("error_histograms"), panels)
    out.figures.append({"file": ctx.relative(path), "caption": "e_min - e_gs after minimization; dashed: +-1 kcal/mol"})
    out.ca_verdict = _ca_sentence(ca_rows)
    return out


def errors_vs_beta(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E4 (Fig. 5): mean |energy error| and mean density error after minimization vs beta, per l_d."""
    from ..report.figures import plot_sweep

    out = Output()
    betas = [float(b) for b in params["betas"]]
    cases = [(t["testbed"], int(ld), b) for t in params["testbeds"] for ld in t["latent_dims"] for b in betas]
    arts = _minimizations(ctx, cases)
    panels, rows, ca_rows = [], [], []
    for t in params["testbeds"]:
        tb = t["testbed"]
        e_series, d_series = {}, {}
        for ld in t["latent_dims"]:
            es, ds = [], []
            for b in betas:
                res = _result(ctx, arts[(tb, int(ld), b)])
                m = energy_metrics(res)
                _put(out, tb, ld, b, {**m, **budget_metrics(_budget(ctx, arts[(tb, int(ld), b)], res))})
                es.append(m["mean_abs_energy_error"] / CA)
                ds.append(m["density_error"])
                rows.append(_energy_row([tb, ld, beta_tag(b)], m))
                ca_rows.append((f"{tb} l_d = {ld}, beta = {beta_tag(b)}", m))
            e_series[f"l_d = {ld}"] = (np.array(betas), np.array(es))
            d_series[f"l_d = {ld}"] = (np.array(betas), np.array(ds))
        panels += [{"title": f"{tb}: energy", "xlabel": "beta", "ylabel": "mean |e_min - e_gs| (kcal/mol)",
                    "series": e_series, "hlines": [(1.0, "chemical accuracy")]},
                   {"title": f"{tb}: density", "xlabel": "beta", "ylabel": "mean |n_min - n_gs|",
                    "series": d_series}]
    out.table("Errors after minimization vs beta", ["testbed", "l_d", "beta", *_ENERGY_HEADERS], rows)
    path = plot_sweep(ctx.figure_path("errors_vs_beta"), panels)
    out.figures.append({"file": ctx.relative(path), "caption": "Mean energy error (kcal/mol) and density error after "
                        "minimization vs beta, one curve per latent dimension"})
    best = min(ca_rows, key=lambda r: r[1]["mean_abs_energy_error"] if r[1]["n_diverged"] == 0 else math.inf)
    out.ca_verdict = f"best case: {_ca_sentence([best])}"
    return out


def minimized_densities(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E5 (Fig. 6): minimized densities of one test instance per 1D testbed for several beta, vs exact."""
    from ..report.figures import plot_profiles

    out = Output()
    betas = [float(b) for b in params["betas"]]
    cases = [(c["testbed"], int(c["latent_dim"]), b) for c in params["cases"] for b in betas]
    arts = _minimizations(ctx, cases)
    panels, rows, verdicts = [], [], []
    for c in params["cases"]:
        tb, ld, i = c["testbed"], int(c["latent_dim"]), int(c.get("instance", 0))
        test = _test_arrays(ctx, ctx.dataset(tb, "test"))
        curves = {"exact": test["density"][i]}
        for b in betas:
            res = _result(ctx, arts[(tb, ld, b)])
            err = float(res["metrics"]["density_error"][i])
            de = float(res["e_min"][i] - res["e_gs"][i])
            curves[f"beta = {beta_tag(b)}"] = res["n_min"][i]
            budget = budget_metrics(_budget(ctx, arts[(tb, ld, b)], res), instance=i)
            _put(out, tb, ld, b, {"density_error": err, "energy_error": de, **budget}, f"instance{i}")
            rows.append([tb, i, beta_tag(b), f"{err:.4g}", _kcal(de)])
            verdicts.append(f"{tb} beta = {beta_tag(b)}: {_kcal(de)} kcal/mol "
                            f"({'within' if abs(de) <= CA else 'NOT within'} chemical accuracy)")
        panels.append({"title": f"{tb}, test instance {i} (l_d = {ld})", "x": _grid_x(test["attrs"]),
                       "curves": curves, "potential": test["potential"][i],
                       "styles": {"exact": {"color": "goldenrod", "linewidth": 4, "alpha": 0.6}}})
    out.ca_verdict = "Shown instances, e_min - e_gs: " + "; ".join(verdicts) + "."
    out.table("Minimized densities of the shown instances",
              ["testbed", "instance", "beta", "|n_min - n_gs|", "e_min - e_gs (kcal/mol)"], rows)
    path = plot_profiles(ctx.figure_path("minimized_densities"), panels)
    out.figures.append({"file": ctx.relative(path), "caption": "Exact ground-state density (thick) and minimized "
                        "densities; potential on the right axis"})
    return out


# ----------------------------------------------------------------------------- E6, E7: 3D


def gaussian3d(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E6 (Fig. 7, Sec. IV C): the 3D testbed at (beta, l_d): reconstruction, functional and energy errors."""
    from ..data.store import read_arrays
    from ..metrics import functional_errors, reconstruction_error
    from ..report.figures import plot_error_histograms

    out = Output()
    tb, ld, b = params["testbed"], int(params["latent_dim"]), float(params["beta"])
    vae_a, f_a, test_a = ctx.vae(tb, ld, b), ctx.functional(tb), ctx.dataset(tb, "test")
    min_a = ctx.minimization(tb, latent_dim=ld, beta=b)
    ctx.ensure([vae_a, f_a, test_a, min_a])
    test = _test_arrays(ctx, test_a)
    F = read_arrays(ctx.path(test_a), names=("F",))["F"]
    rec = reconstruction_error(_load(ctx, vae_a), test["density"])
    ferr = functional_errors(_load(ctx, f_a), test["density"], F)
    res = _result(ctx, min_a)
    m = energy_metrics(res)
    _put(out, tb, ld, b, {**m, "reconstruction_error": rec["mean"], "functional_mae": ferr["mae"],
                          **budget_metrics(_budget(ctx, min_a, res))})
    out.table("3D Gaussian scatterers", ["quantity", "ours", "paper"], [
        ["reconstruction error", f"{rec['mean']:.4g} +- {rec['std']:.2g}", "0.003(1)"],
        ["mean |e_min - e_gs| (E0)", f"{m['mean_abs_energy_error']:.3g}", "0.0002(2)"],
        ["density error", f"{m['density_error']:.4g}", "0.004(1)"],
        ["DL-functional MAE on the test set (kcal/mol)", _kcal(ferr["mae"]), "-"],
        ["within chemical accuracy", f"{m['frac_within_ca']:.2f}", "-"],
        ["diverged", int(m["n_diverged"]), "-"],
    ])
    path = plot_error_histograms(ctx.figure_path("error_histogram"), [
        {"title": f"{tb}, l_d = {ld}, beta = {beta_tag(b)}", "errors": {"latent GD": res["metrics"]["signed_error"]}}])
    out.figures.append({"file": ctx.relative(path), "caption": "e_min - e_gs on the 3D test set"})
    out.ca_verdict = _ca_sentence([(f"{tb} l_d = {ld}, beta = {beta_tag(b)}", m)])
    return out


def density_slices(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E7 (Fig. 8): slices at three z of the exact and minimized 3D densities and of the potential."""
    from ..report.figures import plot_slices

    out = Output()
    tb, ld, b, i = params["testbed"], int(params["latent_dim"]), float(params["beta"]), int(params["instance"])
    min_a = ctx.minimization(tb, latent_dim=ld, beta=b)
    ctx.ensure([min_a])
    res = _result(ctx, min_a)
    test = _test_arrays(ctx, ctx.dataset(tb, "test"))
    n = res["n_min"].shape[1]
    zs = [min(n - 1, int(round(f * n))) for f in params["z_fractions"]]
    L = float(test["attrs"]["box_length"])
    rows = [("exact n_gs", test["density"][i]), ("minimized n_min", res["n_min"][i]), ("V (E0)", test["potential"][i])]
    path = plot_slices(ctx.figure_path("slices"), rows, zs, box_length=L, shared_scale_rows=(0, 1))
    err = float(res["metrics"]["density_error"][i])
    _put(out, tb, ld, b, {"density_error": err, "energy_error": float(res["e_min"][i] - res["e_gs"][i]),
                          **budget_metrics(_budget(ctx, min_a, res), instance=i)}, f"instance{i}")
    de = float(res["e_min"][i] - res["e_gs"][i])
    out.ca_verdict = (f"instance {i}: e_min - e_gs = {_kcal(de)} kcal/mol "
                      f"({'within' if abs(de) <= CA else 'NOT within'} chemical accuracy).")
    out.table("Shown instance", ["instance", "|n_min - n_gs|", "e_min - e_gs (kcal/mol)"],
              [[i, f"{err:.4g}", _kcal(float(res["e_min"][i] - res["e_gs"][i]))]])
    out.figures.append({"file": ctx.relative(path), "caption": "Exact and minimized densities (same color scale) and "
                        "the potential at three z slices"})
    return out


# ----------------------------------------------------------------------------- E8: baselines


def baselines(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E8: latent-space descent vs descent on the density itself (eq. 10) and PCA-projected descent."""
    from ..report.figures import plot_bars, plot_error_histograms

    out = Output()
    methods = list(params["methods"])
    arts = {}
    for c in params["cases"]:
        tb, ld, b = c["testbed"], int(c["latent_dim"]), float(c["beta"])
        arts[(tb, "latent")] = ctx.minimization(tb, latent_dim=ld, beta=b)
        for meth in methods:
            extra = {"n_components": ld} if meth == "pca-gd" else {}
            arts[(tb, meth)] = ctx.minimization(tb, method=meth, **extra)
    ctx.ensure(arts.values())
    rows, panels, bars, ca_rows = [], [], {m: [] for m in ["latent", *methods]}, []
    for c in params["cases"]:
        tb, ld, b = c["testbed"], int(c["latent_dim"]), float(c["beta"])
        errors = {}
        for meth in ["latent", *methods]:
            res = _result(ctx, arts[(tb, meth)])
            m = energy_metrics(res)
            _put(out, tb, None, None, {**m, **budget_metrics(_budget(ctx, arts[(tb, meth)], res))}, meth)
            name = f"latent ({res['config'].method}, l_d = {ld}, beta = {beta_tag(b)})" if meth == "latent" else meth
            rows.append(_energy_row([tb, name, res["config"].steps], m))
            errors[name] = res["metrics"]["signed_error"]
            bars[meth].append(m["mean_abs_energy_error"] / CA if m["n_diverged"] == 0 else math.nan)
            ca_rows.append((f"{tb} {meth}", m))
        panels.append({"title": tb, "errors": errors})
    out.table("Latent-space descent vs the baselines (same functional, same test set)",
              ["testbed", "method", "steps", *_ENERGY_HEADERS], rows)
    p1 = plot_bars(ctx.figure_path("baselines_bars"), [c["testbed"] for c in params["cases"]], bars,
                   ylabel="mean |e_min - e_gs| (kcal/mol)", title="Mean energy error (n/a: diverged rows)",
                   hlines=[(1.0, "chemical accuracy")])
    p2 = plot_error_histograms(ctx.figure_path("baselines_histograms"), panels)
    out.figures += [{"file": ctx.relative(p1), "caption": "Mean |energy error| per method and testbed"},
                    {"file": ctx.relative(p2), "caption": "Energy-error histograms per method"}]
    out.ca_verdict = _ca_sentence(ca_rows)
    return out


# ----------------------------------------------------------------------------- E9: transfer


def transfer(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E9: models trained on one potential family minimise potentials of another (a changed generator parameter)."""
    from ..physics.testbeds import get_testbed
    from ..report.figures import plot_error_histograms

    out = Output()
    arts = {}
    for c in params["cases"]:
        tb, ld, b, fld = c["testbed"], int(c["latent_dim"]), float(c["beta"]), c["field"]
        arts[(tb, "trained")] = ctx.minimization(tb, latent_dim=ld, beta=b)
        for v in c["values"]:
            test = ctx.dataset(tb, "test", overrides={fld: v})
            arts[(tb, v)] = ctx.minimization(tb, latent_dim=ld, beta=b, test=test)
    ctx.ensure(arts.values())
    rows, panels, ca_rows = [], [], []
    for c in params["cases"]:
        tb, ld, b, fld = c["testbed"], int(c["latent_dim"]), float(c["beta"]), c["field"]
        trained_value = getattr(get_testbed(tb), fld)
        errors = {}
        for v in ["trained", *c["values"]]:
            res = _result(ctx, arts[(tb, v)])
            m = energy_metrics(res)
            value = trained_value if v == "trained" else v
            tag = f"{fld}={value:g}"
            _put(out, tb, ld, b, {**m, **budget_metrics(_budget(ctx, arts[(tb, v)], res))}, tag)
            label = f"{fld} = {value:g}" + (" (training family)" if v == "trained" else "")
            rows.append(_energy_row([tb, label], m))
            ca_rows.append((f"{tb} {label}", m))
            errors[label] = res["metrics"]["signed_error"]
        panels.append({"title": f"{tb}, trained at {fld} = {trained_value:g}", "errors": errors})
    out.table("Transfer to other potential families", ["testbed", "test family", *_ENERGY_HEADERS], rows)
    path = plot_error_histograms(ctx.figure_path("transfer"), panels)
    out.figures.append({"file": ctx.relative(path), "caption": "Energy errors on the training family and on others"})
    out.ca_verdict = _ca_sentence(ca_rows)
    return out


# ----------------------------------------------------------------------------- E10: timings


def timings(ctx: Context, params: Mapping[str, Any]) -> Output:
    """E10: wall time of data generation, training and minimization per testbed on this run's device.

    Times are those recorded when each artifact was built (``done.json``); a cached artifact keeps
    the time of its original build (and its device is shown).
    """
    from ..data.store import read_attrs

    out = Output()
    rows = []
    for c in params["cases"]:
        tb, ld, b = c["testbed"], int(c["latent_dim"]), float(c["beta"])
        arts = {"data": ctx.dataset(tb), "vae": ctx.vae(tb, ld, b), "functional": ctx.functional(tb),
                "minimize": ctx.minimization(tb, latent_dim=ld, beta=b)}
        ctx.ensure(arts.values())
        rec = {k: ctx.store.record(a) for k, a in arts.items()}
        n_train = int(read_attrs(ctx.path(arts["data"]))["n_instances"])
        n_test = int(_result(ctx, arts["minimize"])["e_min"].shape[0])
        t = {f"{stage}_s": stage_seconds(rec[k]) for stage, k in
             (("generate", "data"), ("train_vae", "vae"), ("train_functional", "functional"), ("minimize", "minimize"))}
        _put(out, tb, None, None, t, "time")
        vae_cfg = arts["vae"].data["train"]
        steps = arts["minimize"].data["config"]["steps"]
        rows.append([tb, rec["data"]["device"], f"{t['generate_s']:.1f} ({n_train})",
                     f"{t['train_vae_s']:.1f} ({vae_cfg['epochs']} epochs)", f"{t['train_functional_s']:.1f}",
                     f"{t['minimize_s']:.1f} ({n_test} x {steps} steps)"])
    out.table("Wall time (s) per stage, as built", ["testbed", "device", "generate (instances)", "train VAE",
                                                    "train functional", "minimize"], rows)
    out.notes.append("Timings are not regression-checked: they depend on the machine.")
    return out


EXPERIMENTS: dict[str, Callable[[Context, Mapping[str, Any]], Output]] = {
    "reconstruction_vs_beta": reconstruction_vs_beta,
    "example_reconstructions": example_reconstructions,
    "error_histograms": error_histograms,
    "errors_vs_beta": errors_vs_beta,
    "minimized_densities": minimized_densities,
    "gaussian3d": gaussian3d,
    "density_slices": density_slices,
    "baselines": baselines,
    "transfer": transfer,
    "timings": timings,
}
