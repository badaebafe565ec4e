"""Building blocks shared by the beta-VAE and the DL functional.

* :func:`fourier_resample` -- band-limited (trigonometric) resampling of periodic fields.
  It changes the number of grid points per axis without changing the represented
  function: a field whose Fourier modes all fit on both grids is interpolated exactly.
  For an even source size the Nyquist mode ``cos(pi j)`` is split symmetrically into the
  ``+N/2`` and ``-N/2`` modes of the finer grid (so the result stays real and is the
  interpolant of least oscillation); going down to an even size, the ``+M/2`` and ``-M/2``
  modes are merged into the new Nyquist mode.  Hence resampling up and back down is the
  identity to rounding, and resampling down drops only modes that do not fit.
* :func:`zero_insert_upsample` -- exact x2 upsampling by zero insertion (``u[2i] = x[i]``,
  ``u[2i+1] = 0`` per axis).
* :class:`DownBlock` -- conv (same size) -> Softplus -> AvgPool(2) [-> BatchNorm]: the encoder
  block of the VAE (with batch norm) and the block of the functional (without).
* :class:`UpBlock` -- zero insertion -> conv (same size) [-> Softplus] [-> BatchNorm]: the
  decoder block.  Zero insertion followed by a same-size convolution *is* a stride-2
  transposed convolution (``ConvTranspose(k, stride=2, padding=k//2, output_padding=1)`` with
  the kernel flipped and its in/out channel axes swapped; same parameter count), and it
  takes the config's padding mode, so with ``"circular"`` it is the periodic transposed
  convolution that PyTorch lacks.  It is evaluated without materialising the zeros (pad,
  native transposed convolution, exact window; see :class:`UpBlock`).
* :func:`linear_upsample` -- x2 linear interpolation per axis (the samples of the piecewise
  linear interpolant at the centres of the halved cells: ``u[2i] = (x[i-1] + 3 x[i]) / 4``,
  ``u[2i+1] = (3 x[i] + x[i+1]) / 4``), periodic or with the edge value repeated.
* :class:`ResizeUpBlock` -- linear x2 upsampling -> conv (same size) [-> Softplus]
  [-> BatchNorm]: the block of the ``"smooth"`` decoder.  Resize-then-convolve has no
  checkerboard: zero insertion puts a mirror image of the input spectrum at the Nyquist end
  (the ``(-1)**i`` pattern), which a learned kernel removes only approximately, whereas
  linear interpolation is zero insertion followed by the fixed kernel ``(1, 3, 3, 1) / 4``,
  of response ``2 cos^3(w / 2)`` on the fine grid: the image of a smooth input, near
  ``w = pi``, is suppressed to third order before any learned weight sees it.
* :func:`check_densities` -- the input validation every model runs before computing.
* :func:`count_parameters`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "fourier_resample",
    "FourierResample",
    "zero_insert_upsample",
    "linear_upsample",
    "DownBlock",
    "UpBlock",
    "ResizeUpBlock",
    "dense_stack",
    "check_densities",
    "check_input_dtype",
    "count_parameters",
]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _check_ndim(ndim: int) -> None:
    if ndim not in _CONV:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")


# ----------------------------------------------------------------------------- resampling


def _resample_axis(x: torch.Tensor, m: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if m == n:
        return x
    spec = torch.fft.rfft(x, dim=dim).movedim(dim, -1)  # bins 0 .. n//2
    keep = min(n, m) // 2 + 1
    spec = spec[..., :keep]
    if m > n and n % 2 == 0:
        # split the source Nyquist mode evenly between +n/2 and -n/2 on the finer grid
        spec = torch.cat([spec[..., :-1], 0.5 * spec[..., -1:]], dim=-1)
    elif m < n and m % 2 == 0:
        # merge the +m/2 and -m/2 modes of the source into the new (real) Nyquist mode
        spec = torch.cat([spec[..., :-1], (2.0 * spec[..., -1:].real).to(spec.dtype)], dim=-1)
    out = torch.fft.irfft(spec, n=m, dim=-1) * (m / n)
    return out.movedim(-1, dim)


def fourier_resample(x: torch.Tensor, new_n: int, ndim: int) -> torch.Tensor:
    """Band-limited resampling of periodic real fields on the last ``ndim`` axes.

    Args:
        x: real tensor ``(..., n_1, ..., n_ndim)``, samples ``f(j L / n)`` of periodic fields.
        new_n: points per axis of the result.
        ndim: number of trailing (spatial) axes to resample.

    Returns:
        ``(..., new_n, ..., new_n)``, the trigonometric interpolant sampled at ``j L / new_n``
        (same dtype).  Exact for fields whose modes fit on both grids; the mean is preserved.
        Axes are resampled one after the other (the operation is separable).  Differentiable.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("fourier_resample needs a real floating-point tensor")
    if isinstance(new_n, bool) or not isinstance(new_n, int) or new_n < 1:
        raise ValueError(f"new_n must be a positive integer, got {new_n!r}")
    if isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= x.dim():
        raise ValueError(f"ndim must be an integer in 1..{x.dim()} for a tensor of shape {tuple(x.shape)}")
    for dim in range(x.dim() - ndim, x.dim()):
        x = _resample_axis(x, new_n, dim)
    return x


class FourierResample(nn.Module):
    """Module form of :func:`fourier_resample` (no parameters)."""

    def __init__(self, new_n: int, ndim: int) -> None:
        super().__init__()
        self.new_n = int(new_n)
        self.ndim = int(ndim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fourier_resample(x, self.new_n, self.ndim)

    def extra_repr(self) -> str:
        return f"new_n={self.new_n}, ndim={self.ndim}"


def zero_insert_upsample(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Double the last ``ndim`` axes by zero insertion: ``u[..., 2i] = x[..., i]``, ``u[..., 2i+1] = 0``."""
    _check_ndim(ndim)
    shape = list(x.shape)
    for dim in range(x.dim() - ndim, x.dim()):
        shape[dim] *= 2
    out = x.new_zeros(shape)
    out[(Ellipsis,) + (slice(None, None, 2),) * ndim] = x
    return out


def linear_upsample(x: torch.Tensor, ndim: int, periodic: bool) -> torch.Tensor:
    """Double the last ``ndim`` axes by linear interpolation (separable: bilinear, trilinear).

    Per axis ``u[2i] = (x[i-1] + 3 x[i]) / 4`` and ``u[2i+1] = (3 x[i] + x[i+1]) / 4``: the
    fine points sit at the centres of the halved coarse cells.  ``periodic=True`` wraps
    ``x[-1]`` and ``x[n]`` around (a shift of the input by one point shifts the output by
    two); otherwise the edge value is repeated, which is ``F.interpolate(mode="linear",
    align_corners=False)``.  Preserves the mean of periodic fields.  Differentiable.
    """
    _check_ndim(ndim)
    mode = "circular" if periodic else "replicate"
    for dim in range(x.dim() - ndim, x.dim()):
        n = x.shape[dim]
        moved = x.movedim(dim, -1)
        flat = moved.reshape(-1, 1, n)
        pad = F.pad(flat, (1, 1), mode=mode)
        left, mid, right = pad[..., :-2], pad[..., 1:-1], pad[..., 2:]
        even = 0.25 * left + 0.75 * mid
        odd = 0.75 * mid + 0.25 * right
        up = torch.stack([even, odd], dim=-1).reshape(*moved.shape[:-1], 2 * n)
        x = up.movedim(-1, dim)
    return x


# ----------------------------------------------------------------------------- blocks


class HalvingAvgPool1d(nn.Module):
    """``nn.AvgPool1d(2)`` for even lengths, computed as a mean over adjacent pairs of a view:
    the same numbers (forward and gradient, bit for bit: each output is ``(a + b) / 2`` either way)
    at about half the CPU time of the pooling kernel for the 1D presets' (100, 60, 256) maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (x.shape[-1] // 2, 2)).mean(-1)


class DownBlock(nn.Module):
    """conv (kernel ``k``, same size, ``padding_mode``) -> Softplus -> AvgPool(2) [-> BatchNorm].

    Maps ``(B, c_in, n, ...)`` to ``(B, c_out, n/2, ...)``.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, ndim: int, padding_mode: str, batch_norm: bool = True
    ) -> None:
        super().__init__()
        _check_ndim(ndim)
        self.conv = _CONV[ndim](c_in, c_out, kernel, padding=kernel // 2, padding_mode=padding_mode)
        self.act = nn.Softplus()
        self.pool = HalvingAvgPool1d() if ndim == 1 else _POOL[ndim](2)
        self.norm = _NORM[ndim](c_out) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pool(self.act(self.conv(x))))


class _UpBlockBase(nn.Module):
    """What both decoder blocks hold: a same-size ``conv`` with the config padding, ``act``
    (Softplus or identity) and ``norm`` (batch norm or identity); the upsampling is the subclass's."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        ndim: int,
        padding_mode: str,
        activation: bool = True,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_ndim(ndim)
        self.ndim = ndim
        self.conv = _CONV[ndim](c_in, c_out, kernel, padding=kernel // 2, padding_mode=padding_mode)
        self.act = nn.Softplus() if activation else nn.Identity()
        self.norm = _NORM[ndim](c_out) if batch_norm else nn.Identity()


class UpBlock(_UpBlockBase):
    """Stride-2 transposed convolution [-> Softplus] [-> BatchNorm], periodic with circular padding.

    Maps ``(B, c_in, n, ...)`` to ``(B, c_out, 2n, ...)``.  ``activation=False`` and
    ``batch_norm=False`` give the decoder's last (identity) block.

    Definition (:meth:`forward_reference`): zero insertion (:func:`zero_insert_upsample`)
    followed by the same-size convolution ``self.conv`` with the config padding mode; the
    parameters are those of that ``Conv`` (same count as a ``ConvTranspose``).
    :meth:`forward` computes exactly the same function without the inserted zeros: the input
    is padded by ``ceil(p/2)`` points (``p = k//2``; circularly, or with zeros), passed through
    the native stride-2 transposed convolution with the flipped, channel-swapped kernel, and
    the window that the same-size convolution produces is cut out.  This skips the
    ``1 - 2**-ndim`` of the multiply-adds that hit inserted zeros (10x faster for the 3D
    60 -> 1 output layer on CPU); the test suite checks both paths agree to rounding.
    """

    def upsample_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed convolution alone (zero insertion + ``self.conv``, computed without the zeros)."""
        nd = self.ndim
        w = self.conv.weight
        p = w.shape[-1] // 2
        q = (p + 1) // 2
        if q:
            mode = "circular" if self.conv.padding_mode == "circular" else "constant"
            x_pad = F.pad(x, (q, q) * nd, mode=mode)
        else:
            x_pad = x
        w_t = w.transpose(0, 1).flip(dims=tuple(range(2, 2 + nd)))
        y = _CONV_T[nd](x_pad, w_t, self.conv.bias, stride=2, output_padding=1)
        off = p + 2 * q
        return y[(Ellipsis, *(slice(off, off + 2 * s) for s in x.shape[-nd:]))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.upsample_conv(x)))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward`, literally: zero insertion, then ``self.conv``."""
        return self.norm(self.act(self.conv(zero_insert_upsample(x, self.ndim))))


class ResizeUpBlock(_UpBlockBase):
    """Linear x2 upsampling -> conv (same size) [-> Softplus] [-> BatchNorm]: the ``"smooth"`` decoder's block.

    Maps ``(B, c_in, n, ...)`` to ``(B, c_out, 2n, ...)`` with :func:`linear_upsample`
    (periodic when ``padding_mode == "circular"``, edge value repeated otherwise) followed by
    a same-size convolution with ``padding_mode``.  Same parameters as :class:`UpBlock`
    (``c_in c_out k^d + c_out`` for the conv, ``2 c_out`` for the batch norm).
    """

    @property
    def periodic(self) -> bool:
        """Whether the upsampling wraps around (circular padding: a periodic grid)."""
        return self.conv.padding_mode == "circular"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(linear_upsample(x, self.ndim, self.periodic))))


def dense_stack(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """Linear layers ``n_in -> hidden... -> n_out`` with Softplus between them (not after the last)."""
    sizes = (n_in, *hidden, n_out)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.Softplus())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- validation


def check_densities(n, config, *, values: bool = True, norm_tol: float = 1e-6) -> None:
    """Refuse a density batch the models cannot take, before any compute.

    Args:
        n: tensor ``(B, *config.grid_shape)``.
        config: a :class:`~vaedft.models.config.VAEConfig` or ``FunctionalConfig``.
        values: also check the values (finite, ``n >= 0``, ``dx^d sum n = 1`` within
            ``norm_tol``, summed in float64).  This synchronises with the device once; a
            training loop that validated its dataset up front can skip it.
        norm_tol: allowed ``|dx^d sum n - 1|``.

    Raises:
        ValueError: naming the problem and the first offending instance.
    """
    if not isinstance(n, torch.Tensor):
        raise ValueError(f"densities must be a torch.Tensor of shape (B, *{config.grid_shape}), got {type(n).__name__}")
    if not n.is_floating_point():
        raise ValueError(f"densities must be floating point, got dtype {n.dtype}")
    want = config.grid_shape
    if n.dim() != len(want) + 1 or tuple(n.shape[1:]) != want or n.shape[0] < 1:
        raise ValueError(
            f"densities must have shape (B, {', '.join(map(str, want))}) with B >= 1 "
            f"(the {config.boundary} grid of this model), got {tuple(n.shape)}"
        )
    if not values:
        return
    flat = n.detach().reshape(n.shape[0], -1).to(torch.float64)
    finite = torch.isfinite(flat).all(dim=1)
    nonneg = (flat >= 0).all(dim=1) | ~finite
    norm = config.cell_volume * torch.where(torch.isfinite(flat), flat, 0.0).sum(dim=1)
    stats = torch.stack([finite.to(torch.float64), nonneg.to(torch.float64), norm]).cpu()
    finite, nonneg, norm = stats[0].bool(), stats[1].bool(), stats[2]
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise ValueError(f"densities contain NaN or inf (first in instance {i})")
    if not bool(nonneg.all()):
        i = int((~nonneg).nonzero()[0])
        raise ValueError(f"densities must be >= 0; instance {i} has negative values")
    off = (norm - 1.0).abs()
    worst = int(off.argmax())
    if not float(off[worst]) <= norm_tol:
        raise ValueError(
            f"densities must be normalised, dx^{config.ndim} * sum(n) = 1 within {norm_tol:g}; "
            f"instance {worst} integrates to {float(norm[worst]):.9g}"
        )


def check_input_dtype(x: torch.Tensor, module: nn.Module) -> None:
    """Refuse an input whose dtype differs from the module's parameters (clear message, no silent cast)."""
    p = next(module.parameters(), None)
    if p is not None and x.dtype != p.dtype:
        raise ValueError(
            f"input dtype {x.dtype} differs from the model's {p.dtype}; convert the input "
            f"(x.to({p.dtype})) or the model (model.to({x.dtype}))"
        )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
