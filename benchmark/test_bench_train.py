"""Training throughput (samples/s) of the inner step of :func:`vaedft.train.train`, per preset.

Cases: the paper's VAE (Table I) for gaussian1d (l_d = 8), speckle1d (l_d = 16) and
gaussian3d (l_d = 32), and the DL functional (Table II) for the three testbeds, each in
float32 and float64, on the CPU and (skipped without one) on a CUDA GPU.

What is timed is one round of ``STEPS`` optimisation steps exactly as the training loop
does them: pick a batch of a device-resident training set through a random permutation,
forward with ``validate=False`` (the VAE with a seeded noise generator), loss, ``zero_grad``,
``backward``, Adam ``step``, and the per-epoch loss sums accumulated on the device; the round
ends with the loop's one host read of those sums (which also waits for a GPU).  Not timed:
validation, checkpoint writing (once per epoch, outside the step).

The densities are synthetic (softmax of a Gaussian random field divided by ``dx**d``: positive
and normalised like the data, no HDF5 file needed); the cost of a step does not depend on
their values.  Batches: 100 (the paper's) for the 1D presets; on the CPU the 3D presets use a
batch of 20 and a single step per round, since one forward + backward of the 3D VAE on 100
instances takes about 7 s on one core (samples/s is per instance, so the figures remain
comparable, up to the better use of the cores by larger batches).

The summary at the end of the run prints samples/s for both dtypes and their ratio
(float32 / float64).  Timings depend on the machine and on its load (the 1-minute load
average is recorded); nothing here asserts a speed.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from vaedft.models import (
    VAE,
    Functional,
    count_parameters,
    functional_preset,
    vae_preset,
)
from vaedft.train import train_step

pytestmark = pytest.mark.benchmark

SEED = 20240917
LR = 1e-4  # the paper's; irrelevant for the cost
BETA = 1.0
#: name -> (kind, testbed, latent_dim or None)
CASES = {
    "vae-gaussian1d-ld8": ("vae", "gaussian1d", 8),
    "vae-speckle1d-ld16": ("vae", "speckle1d", 16),
    "vae-gaussian3d-ld32": ("vae", "gaussian3d", 32),
    "functional-gaussian1d": ("functional", "gaussian1d", None),
    "functional-speckle1d": ("functional", "speckle1d", None),
    "functional-gaussian3d": ("functional", "gaussian3d", None),
}
DTYPES = ("float32", "float64")
#: (device, ndim) -> (batch, steps per round, timed rounds); one warm-up round comes first.
SETTINGS = {
    ("cpu", 1): (100, 4, 3),
    ("cpu", 3): (20, 1, 2),
    ("cuda", 1): (100, 20, 5),
    ("cuda", 3): (100, 10, 5),
}

_RESULTS = pytest.StashKey[dict]()
_PLUGIN = "vaedft-train-throughput-summary"


class _Summary:
    """Terminal summary of the throughput results (registered by the first benchmark that runs)."""

    def __init__(self, results: dict) -> None:
        self.results = results

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        if not self.results:
            return
        header = ("device", "case", "batch", "steps", "f32 samples/s", "f64 samples/s", "f32/f64", "f32 ms/step")
        rows = []
        for (device, case), rec in self.results.items():
            f32, f64 = rec.get("float32"), rec.get("float64")
            rows.append(
                (
                    device,
                    case,
                    str(rec["batch"]),
                    f"{rec['steps']}x{rec['rounds']}",
                    f"{f32['samples_per_s']:.1f}" if f32 else "-",
                    f"{f64['samples_per_s']:.1f}" if f64 else "-",
                    f"{f32['samples_per_s'] / f64['samples_per_s']:.2f}" if f32 and f64 else "-",
                    f"{f32['ms_per_step']:.1f}" if f32 else "-",
                )
            )
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        tr = terminalreporter
        tr.write_sep("-", "vaedft training throughput: samples/s of the training step (median round)")
        tr.write_line("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            tr.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        gpu = f", GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
        tr.write_line(
            f"(steps: per round x timed rounds; {os.cpu_count()} CPU core(s), "
            f"torch threads: {torch.get_num_threads()}, load average now: {os.getloadavg()[0]:.2f}{gpu}; "
            "reported only, no threshold is asserted)"
        )


@pytest.fixture(scope="session")
def throughput_results(request: pytest.FixtureRequest) -> dict:
    """``{(device, case): {"batch", "steps", "rounds", dtype: {"samples_per_s", "ms_per_step"}}}``."""
    config = request.config
    results = config.stash.setdefault(_RESULTS, {})
    if not config.pluginmanager.has_plugin(_PLUGIN):
        config.pluginmanager.register(_Summary(results), _PLUGIN)
    return results


def synthetic_densities(n: int, shape: tuple[int, ...], cell_volume: float, dtype, device) -> torch.Tensor:
    """Positive densities with ``cell_volume * sum = 1`` (softmax of a random field)."""
    gen = torch.Generator().manual_seed(SEED)
    logits = torch.randn((n, math.prod(shape)), generator=gen, dtype=torch.float64)
    dens = torch.softmax(logits, dim=1) / cell_volume
    return dens.reshape(n, *shape).to(device=device, dtype=dtype)


class Trainer:
    """A model, its optimizer and a device-resident training set; :meth:`round` runs ``steps`` steps."""

    def __init__(self, case: str, dtype: str, device: str) -> None:
        kind, testbed, latent = CASES[case]
        config = vae_preset(testbed, latent) if kind == "vae" else functional_preset(testbed)
        self.kind, self.config = kind, config
        self.batch, self.steps, self.rounds = SETTINGS[(device, config.ndim)]
        self.device = torch.device(device)
        tdtype = getattr(torch, dtype)
        torch.manual_seed(SEED)
        model = VAE(config) if kind == "vae" else Functional(config)
        n = self.batch * self.steps
        self.x = synthetic_densities(n, config.grid_shape, config.cell_volume, tdtype, self.device)
        self.y = None
        if kind == "functional":
            self.y = (5.0 + 0.3 * torch.randn(n, generator=torch.Generator().manual_seed(SEED + 1))).to(
                device=self.device, dtype=tdtype
            )
            model.set_target_scaling(5.0, 0.3)
        self.model = model.to(device=self.device, dtype=tdtype).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.noise = torch.Generator(device=self.device)
        self.order_gen = torch.Generator().manual_seed(SEED + 2)
        self.n_parameters = count_parameters(model)
        self.last_loss = float("nan")

    def round(self) -> list[float]:
        """``steps`` training steps as in :func:`vaedft.train.train`; one host sync at the end."""
        model, opt, bs = self.model, self.opt, self.batch
        order = torch.randperm(self.x.shape[0], generator=self.order_gen).to(self.device)
        self.noise.manual_seed(SEED + 3)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        for lo in range(0, self.x.shape[0], bs):
            idx = order[lo : lo + bs]
            y = None if self.kind == "vae" else self.y[idx]
            train_step(self.kind, model, opt, self.x[idx], y, BETA, self.noise, sums)
        out = (sums / self.x.shape[0]).tolist()  # the loop's one host read per epoch
        self.last_loss = out[0]
        return out


def _require(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip(
            f"GPU benchmark: torch sees no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda})"
        )


PARAMS = [
    pytest.param(device, case, dtype, id=f"{device}-{case}-{dtype}")
    for device in ("cpu", "cuda")
    for case in CASES
    for dtype in DTYPES  # float32 first, so the float64 case can report the ratio
]


@pytest.mark.parametrize("device, case, dtype", PARAMS)
def test_train_throughput(benchmark, throughput_results: dict, device: str, case: str, dtype: str) -> None:
    """samples/s of the training step of one preset, dtype and device."""
    _require(device)
    trainer = Trainer(case, dtype, device)
    benchmark.group = f"train-{device}-{case}"
    benchmark.pedantic(trainer.round, rounds=trainer.rounds, warmup_rounds=1, iterations=1)
    assert math.isfinite(trainer.last_loss)
    samples = trainer.batch * trainer.steps
    info = benchmark.extra_info
    info.update(
        kind=trainer.kind,
        preset=CASES[case][1],
        latent_dim=CASES[case][2],
        parameters=trainer.n_parameters,
        dtype=dtype,
        device=device,
        batch=trainer.batch,
        steps_per_round=trainer.steps,
        samples_per_round=samples,
        torch_threads=torch.get_num_threads(),
        load_average_1min=os.getloadavg()[0],
    )
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    stats = benchmark.stats.stats
    rate = samples / stats.median
    info.update(
        samples_per_s=rate, samples_per_s_best=samples / stats.min, ms_per_step=stats.median / trainer.steps * 1e3
    )
    entry = throughput_results.setdefault(
        (device, case), {"batch": trainer.batch, "steps": trainer.steps, "rounds": trainer.rounds}
    )
    entry[dtype] = {"samples_per_s": rate, "ms_per_step": info["ms_per_step"]}
    if dtype == "float64" and "float32" in entry:
        info["float32_over_float64"] = entry["float32"]["samples_per_s"] / rate
