"""pixdiff: pixel-space diffusion models, from DDPM to SiD2, in one language (logSNR).

See README.md and docs/ for a tour. The modules (one concept each):

- ``pixdiff.schedules``  logSNR schedules λ(t), their inverses and discrete β tables
- ``pixdiff.process``    the VP forward process, posteriors and parameterisation conversions
- ``pixdiff.analytic``   the exact Gaussian-mixture denoiser (the test oracle)
- ``pixdiff.denoiser``   backbone + parameterisation -> ``denoiser(z, logsnr, cond) -> x_hat``
"""

__version__ = "0.1.0"

from pixdiff import analytic, process, schedules  # noqa: E402
from pixdiff.analytic import GaussianMixture  # noqa: E402

__all__ = ["schedules", "process", "analytic", "GaussianMixture", "__version__"]
