"""What every sampler shares: NFE counting, noise drawn from explicit generators (per sample if
asked), the sigma-space view of a denoiser, and x̂ thresholding.

Per-sample seeding (DESIGN "noise for sampling is drawn per sample from its own seed", as NVlabs/edm's
StackedRandomGenerator): ``generator`` may be one ``torch.Generator`` for the batch, or a list of
one generator per sample; with a list, sample i is the same whether drawn alone or in a batch.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import math
from typing import Callable, Sequence

import torch

from pixdiff.process import alpha_sigma

__all__ = ["CountingDenoiser", "Generators", "randn", "generators", "static_threshold",
           "dynamic_threshold", "threshold", "sigma_space", "check_eta", "check_fraction", "coef"]

Generators = torch.Generator | Sequence[torch.Generator] | None
Denoise = Callable[..., torch.Tensor]


class CountingDenoiser:
    """Calls ``denoiser(z, logsnr, cond)`` with logsnr expanded to a float64 [B] tensor, and counts
    the calls (NFE). ``predict`` forwards to the wrapped denoiser's ``predict`` (IDDPM learned
    variance) when it has one, counting it too."""

    def __init__(self, denoiser: Denoise, cond=None):
        if not callable(denoiser):
            raise PixdiffError(f"denoiser must be callable as denoiser(z, logsnr, cond) (got {type(denoiser).__name__})")
        self.denoiser, self.cond, self.nfe = denoiser, cond, 0
        # IDDPM's learned variance (seed 000): ``ddpm`` uses it by default when the network has it.
        self.learn_sigma = bool(getattr(denoiser, "learn_sigma", False))

    def _lam(self, z, logsnr):
        return torch.as_tensor(logsnr, dtype=torch.float64, device=z.device).expand(z.shape[0])

    def __call__(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        self.nfe += 1
        return self.denoiser(z, self._lam(z, logsnr), self.cond if cond is None else cond).to(z.dtype)

    @property
    def has_predict(self) -> bool:
        d = self.denoiser
        return d.has_predict if isinstance(d, CountingDenoiser) else callable(getattr(d, "predict", None))

    def predict(self, z: torch.Tensor, logsnr, cond=None):
        """(x̂, var_interp or None)."""
        self.nfe += 1
        out = self.denoiser.predict(z, self._lam(z, logsnr), self.cond if cond is None else cond)
        if isinstance(out, tuple):
            return out[0].to(z.dtype), out[1]
        return out.x_hat.to(z.dtype), out.var_interp


def generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded by ``seeds`` (pass as ``generator=`` for per-sample noise)."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generator: Generators, dtype=torch.float32, device=None) -> torch.Tensor:
    """Standard normal noise of ``shape``; with a list of generators, row i comes from generator i."""
    shape = tuple(shape)
    # Draw on the generator's device, then move: a CPU seed gives the same noise on any accelerator.
    if generator is None or isinstance(generator, torch.Generator):
        gdev = device if generator is None else generator.device
        return torch.randn(shape, generator=generator, dtype=dtype, device=gdev).to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise PixdiffError(f"got {len(gens)} generators for a batch of {shape[0]}; pass one per sample")
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype, device=g.device) for g in gens]).to(device)


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    return randn(x.shape, generator, x.dtype, x.device)


# --- thresholding of x̂ (Imagen: Saharia et al. 2022; SiD2 'static' clipping, seed 004 §1.1) -------------


def static_threshold(x_hat: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Clip x̂ to [−limit, limit]: the data lie in [−1, 1] (SiD2's ``clip_x = 'static'``, seed 004)."""
    return x_hat.clamp(-limit, limit)


def dynamic_threshold(x_hat: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Imagen's dynamic thresholding: s = max(1, the ``percentile`` of |x̂| per sample); x̂ ← clip(x̂, ±s)/s.
    Saturated pixels are pushed inwards instead of piling up at ±1."""
    flat = x_hat.reshape(x_hat.shape[0], -1)
    s = torch.quantile(flat.abs().float(), percentile, dim=1).clamp(min=1.0).to(x_hat.dtype)
    s = s.reshape(-1, *([1] * (x_hat.dim() - 1)))
    return torch.maximum(torch.minimum(x_hat, s), -s) / s


def threshold(kind: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The x̂ post-processing called ``kind``: None, 'static' or 'dynamic'."""
    if kind is None:
        return lambda x: x
    if kind == "static":
        return static_threshold
    if kind == "dynamic":
        return dynamic_threshold
    raise PixdiffError(f"clip_x must be None, 'static' or 'dynamic' (got {kind!r})")


# --- sigma-space and coefficients ---------------------------------------------------------------------


def sigma_space(denoiser: Callable[[torch.Tensor, float], torch.Tensor]):
    """D(x_σ; s) = denoiser(x_σ/sqrt(1 + s²), λ = −2 log s): the EDM view (seed 003, EDM) of a VP
    denoiser, with x_σ = z/α = x + s ε."""
    def D(x_sigma: torch.Tensor, s: float) -> torch.Tensor:
        return denoiser(x_sigma / math.sqrt(1.0 + s * s), -2.0 * math.log(s))
    return D


def coef(logsnr: float) -> tuple[float, float]:
    """(α, σ) at a scalar λ as Python floats (float64 arithmetic, cast once at use)."""
    a, s = alpha_sigma(torch.tensor(float(logsnr), dtype=torch.float64))
    return float(a), float(s)


def check_eta(eta: float) -> float:
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise PixdiffError(f"eta must be a number in [0, 1] (got {eta!r}); 0 is DDIM, 1 is DDPM's β̃ variance")
    return float(eta)


def check_fraction(value, name: str) -> float:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise PixdiffError(f"{name} must be a number in [0, 1] (got {value!r})")
    return float(value)


def check_grid(logsnr) -> torch.Tensor:
    lam = torch.as_tensor(logsnr, dtype=torch.float64).flatten()
    if lam.numel() < 2:
        raise PixdiffError("a sampling grid needs at least 2 logsnr values (1 step)")
    if torch.isnan(lam).any() or (lam[1:] <= lam[:-1]).any() or not math.isfinite(float(lam[0])):
        raise PixdiffError("the logsnr grid must be finite at its start and strictly increasing "
                         "(noise → data); only its last entry may be +inf")
    return lam


def start(noise: torch.Tensor, logsnr0: float) -> torch.Tensor:
    """The VP start z = σ_0 ε: the EDM start x_σ = s_max ε seen in VP, dropping α_0 x (≈ 0)."""
    return noise * coef(logsnr0)[1]


def to_data(z: torch.Tensor, logsnr_last: float) -> torch.Tensor:
    """The returned sample: z/α at the grid's end (= x when that end is λ = +∞)."""
    return z if logsnr_last == math.inf else z / coef(logsnr_last)[0]
