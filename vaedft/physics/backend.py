"""Where the batched solver runs: a torch device, chosen by a backend name.

The solver is written once in torch, so the CPU build and a CUDA GPU run the same
code.  CuPy is not needed for it (the optional ``gpu`` extra brings CuPy only for the
``cupyx`` eigensolver baseline of the GPU benchmark).
"""

from __future__ import annotations

import torch

__all__ = ["BACKEND_NAMES", "resolve_device"]

BACKEND_NAMES = ("auto", "cpu", "numpy", "cuda", "gpu")


def resolve_device(backend: str | torch.device = "auto") -> torch.device:
    """Turn a backend name into a torch device.

    Args:
        backend: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` (alias ``"numpy"``),
            ``"cuda"`` (alias ``"gpu"``), ``"cuda:N"``, or a :class:`torch.device`.

    Raises:
        ValueError: unknown name, or a GPU asked for where torch sees no CUDA device.
    """
    if isinstance(backend, torch.device):
        name = str(backend)
    elif isinstance(backend, str):
        name = backend.strip().lower()
    else:
        raise ValueError(f"backend must be a string such as 'auto', 'cpu' or 'cuda', got {backend!r}")
    if name == "cupy":
        raise ValueError(
            "backend 'cupy' is not a solver backend: the batched solver runs on torch; "
            "use backend='cuda' for the GPU (CuPy serves only the cupyx baseline benchmark)"
        )
    base = name.split(":", 1)[0]
    if base not in BACKEND_NAMES or (":" in name and base != "cuda"):
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKEND_NAMES)} or 'cuda:N'")
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base in ("cpu", "numpy"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"backend {backend!r} needs a CUDA GPU, but torch sees none "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use backend='cpu'"
        )
    device = torch.device("cuda" if base == "gpu" else name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"backend {backend!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device
