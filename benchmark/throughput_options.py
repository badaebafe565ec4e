"""Does torch.compile, channels-last or bfloat16 autocast speed up a CPU training step? (issue: accuracy per CPU-minute)

Times the training step of the paper's gaussian1d functional and VAE (l_d = 4), batch 100, float32, on one
thread, in one process: eager (the baseline), ``torch.compile`` (inductor), bfloat16 autocast, and
channels-last (1D convolutions have no channels-last layout in torch: reported as not applicable).  Rounds
alternate between the variants so that load changes on the machine hit all of them alike; the median of the
rounds is reported as a ratio to eager.  The accuracy side: the loss of a bf16 forward against float32 on the
same batch (relative difference).

    python benchmark/throughput_options.py [--rounds 5] [--steps 5] [--threads 1]

With ``--batches 16,32,64,100`` it instead times eager steps at each batch size and prints samples per
second as a ratio to batch 100 (alternating rounds, medians): on a CPU a smaller batch gives more updates
per epoch, and what it costs per sample decides whether that pays.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vaedft.models import VAE, Functional, functional_preset, vae_preset
from vaedft.train import train_step


def _step_fn(kind, model, x, y, variant):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    noise = torch.Generator().manual_seed(0)
    sums = torch.zeros(3, dtype=torch.float64)
    run = model
    if variant == "compile":
        run = torch.compile(model)

    def step():
        if variant == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                train_step(kind, run, opt, x, y, 1e-3, noise, sums)
        else:
            train_step(kind, run, opt, x, y, 1e-3, noise, sums)

    return step


def _batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 256, generator=gen) + 0.1
    return x / (x.sum(1, keepdim=True) / 257), torch.rand(n, generator=gen)


def batch_table(batches: list[int], rounds: int, steps: int) -> None:
    """Samples per second of eager training steps at each batch size, as a ratio to batch 100."""
    gen = torch.Generator().manual_seed(0)
    for kind in ("functional", "vae"):
        step, times = {}, {}
        for b in batches:
            torch.manual_seed(0)
            model = Functional(functional_preset("gaussian1d")) if kind == "functional" else VAE(
                vae_preset("gaussian1d", 4))
            x, y = _batch(b, gen)
            step[b] = _step_fn(kind, model, x, None if kind == "vae" else y, "eager")
            step[b]()
            times[b] = []
        for _ in range(rounds):
            for b in batches:
                t0 = time.perf_counter()
                for _ in range(steps):
                    step[b]()
                times[b].append((time.perf_counter() - t0) / steps)
        rate = {b: b / float(np.median(ts)) for b, ts in times.items()}
        base = rate.get(100)
        for b in batches:
            ratio = f"{rate[b] / base:5.2f}x batch 100" if base else ""
            print(f"{kind:10s} batch {b:4d} {1e3 * b / rate[b]:8.1f} ms/step {rate[b]:7.0f} samples/s  {ratio}",
                  flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", help="comma-separated batch sizes: time these instead of the options")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
        print(f"torch {torch.__version__}, {args.threads} thread(s), float32, eager, median of {args.rounds} "
              f"alternating rounds of {args.steps} steps")
        batch_table(batches, args.rounds, args.steps)
        return 0
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(100, 256, generator=gen) + 0.1
    x = x / (x.sum(1, keepdim=True) / 257)
    y = torch.rand(100, generator=gen)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 100, float32, median of {args.rounds} "
          f"alternating rounds of {args.steps} steps")
    for kind in ("functional", "vae"):
        times = {}
        steps = {}
        for variant in ("eager", "compile", "bf16"):
            torch.manual_seed(0)
            model = Functional(functional_preset("gaussian1d")) if kind == "functional" else VAE(
                vae_preset("gaussian1d", 4))
            steps[variant] = _step_fn(kind, model, x, None if kind == "vae" else y, variant)
            t0 = time.perf_counter()
            steps[variant]()  # warm-up (compilation happens here)
            print(f"  {kind} {variant}: first step {time.perf_counter() - t0:.1f} s", flush=True)
            times[variant] = []
        for _ in range(args.rounds):
            for variant, step in steps.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[variant].append((time.perf_counter() - t0) / args.steps)
        base = float(np.median(times["eager"]))
        for variant, ts in times.items():
            med = float(np.median(ts))
            print(f"{kind:10s} {variant:8s} {med * 1e3:8.1f} ms/step  {base / med:5.2f}x eager", flush=True)
        print(f"{kind:10s} channels-last: not applicable (1D convolutions have no channels-last memory format)")
        if kind == "functional":
            torch.manual_seed(0)
            f = Functional(functional_preset("gaussian1d"))
            with torch.no_grad():
                ref = f(x, validate=False)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    low = f(x, validate=False).float()
            print(f"functional bf16 forward: max relative difference of F {((low - ref).abs() / ref.abs()).max():.1e}"
                  " (chemical accuracy relative to a typical F of ~3 E0: 5e-4)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
