"""What every sampler shares: NFE counting, noise drawn from explicit generators (per sample if
asked), the sigma-space view of a denoiser, and x̂ thresholding. The coefficients (α, σ, s) come
from ``pixdiff.process`` (its unchecked one-λ ``*_at`` forms: the grid was checked by ``sample``).

Per-sample seeding (DESIGN "noise for sampling is drawn per sample from its own seed", as NVlabs/edm's
StackedRandomGenerator): ``generator`` may be one ``torch.Generator`` for the batch, or a list of
one generator per sample; with a list, sample i is the same whether drawn alone or in a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from pixdiff import process
from pixdiff.errors import PixdiffError

__all__ = ["CountingDenoiser", "Generators", "randn", "generators", "static_threshold",
           "dynamic_threshold", "threshold", "sigma_space", "coef", "counting"]

Generators = torch.Generator | Sequence[torch.Generator] | None
Denoise = Callable[..., torch.Tensor]


class CountingDenoiser:
    """Calls ``denoiser(z, logsnr, cond)`` with logsnr expanded to a float64 [B] tensor, and counts
    the calls (NFE). ``predict`` forwards to the wrapped denoiser's ``predict`` (IDDPM learned
    variance) when it has one, counting it too."""

    def __init__(self, denoiser: Denoise, cond=None):
        self.denoiser, self.cond, self.nfe = denoiser, cond, 0
        # IDDPM's learned variance (Nichol & Dhariwal 2021, §3.1): ``ddpm`` uses it by default when
        # the network (or the guidance wrapper around it) has it.
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
        return unpack(self.denoiser.predict(z, self._lam(z, logsnr), self.cond if cond is None else cond), z)


def unpack(out, z: torch.Tensor):
    """(x̂, var_interp) from what a ``predict`` returns: a ``DenoiserOutput`` or a pair."""
    if isinstance(out, tuple):
        return out[0].to(z.dtype), out[1]
    return out.x_hat.to(z.dtype), out.var_interp


def counting(denoiser, cond=None) -> CountingDenoiser:
    """``denoiser`` as a CountingDenoiser with ``cond`` bound; one that ``sample`` already wrapped
    (and bound) is used as it is, so the NFE are counted once."""
    if isinstance(denoiser, CountingDenoiser) and cond is None:
        return denoiser
    return CountingDenoiser(denoiser, cond)


def generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded by ``seeds`` (pass as ``generator=`` for per-sample noise)."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generator: Generators, dtype=torch.float32, device=None) -> torch.Tensor:
    """Standard normal noise of ``shape``; with a list of generators, row i comes from generator i."""
    shape = tuple(shape)
    if not (generator is None or isinstance(generator, torch.Generator)):
        check_generators(generator, shape[0])
    return _randn(shape, generator, dtype, device)


def check_generators(generator: Generators, batch: int) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    n = len(list(generator))
    if n != batch:
        raise PixdiffError(f"got {n} generators for a batch of {batch}; pass one per sample")


def _randn(shape, generator: Generators, dtype, device) -> torch.Tensor:
    # Draw on the generator's device, then move: a CPU seed gives the same noise on any accelerator.
    if generator is None or isinstance(generator, torch.Generator):
        gdev = device if generator is None else generator.device
        return torch.randn(shape, generator=generator, dtype=dtype, device=gdev).to(device)
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype, device=g.device)
                      for g in generator]).to(device)


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Noise like x (no checks: the samplers' inner loops; ``sample`` checked the generators)."""
    return _randn(tuple(x.shape), generator, x.dtype, x.device)


# --- thresholding of x̂ (Saharia et al. 2022; SiD2's 'static' clipping, Hoogeboom et al. 2025 App. A.4) ---


def static_threshold(x_hat: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Clip x̂ to [−limit, limit]: the data lie in [−1, 1] (SiD2's ``clip_x = 'static'``,
    Hoogeboom et al. 2025 App. A.4)."""
    return x_hat.clamp(-limit, limit)


def dynamic_threshold(x_hat: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022, §2.3): s = max(1, the ``percentile`` of |x̂| per
    sample); x̂ ← clip(x̂, ±s)/s.
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
    """D(x_σ; s) = denoiser(α x_σ, λ(s)): the EDM view (Karras et al. 2022, §2) of a VP denoiser, with
    x_σ = z/α = x + s ε, λ = −2 log s and α = α(λ) (``process``)."""
    def D(x_sigma: torch.Tensor, s: float) -> torch.Tensor:
        lam = process.logsnr_at(s)
        return denoiser(x_sigma * process.alpha_sigma_at(lam)[0], lam)
    return D


def coef(logsnr: float) -> tuple[float, float]:
    """(α, σ) at a scalar λ as Python floats (``process.alpha_sigma_at``)."""
    return process.alpha_sigma_at(float(logsnr))


def as_grid(logsnr) -> torch.Tensor:
    """The grid as a float64 vector (no checks: ``sample`` made or checked it)."""
    return torch.as_tensor(logsnr, dtype=torch.float64).flatten()


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
    return noise * process.alpha_sigma_at(logsnr0)[1]


def to_data(z: torch.Tensor, logsnr_last: float) -> torch.Tensor:
    """The returned sample: z/α at the grid's end (= x when that end is λ = +∞)."""
    return z if logsnr_last == math.inf else z / process.alpha_sigma_at(logsnr_last)[0]
