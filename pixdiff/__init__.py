"""pixdiff: pixel-space diffusion models, from DDPM to SiD2, in one language (logSNR).

See README.md and docs/ for a tour. The modules (one concept each):

- ``pixdiff.schedules``  logSNR schedules λ(t), their inverses and discrete β tables
- ``pixdiff.process``    the VP forward process, posteriors and parameterisation conversions
- ``pixdiff.analytic``   the exact Gaussian-mixture denoiser (the test oracle)
- ``pixdiff.denoiser``   backbone + parameterisation -> ``denoiser(z, logsnr, cond) -> x_hat``
- ``pixdiff.losses``     every weighting on one λ-weighted loss; ``pixdiff.vlb`` IDDPM's L_vlb
- ``pixdiff.samplers``   every sampler as a short function; ``pixdiff.sample`` is the front door
- ``pixdiff.guidance``   classifier-free, classifier and autoguidance as denoiser wrappers
- ``pixdiff.nets``       ADM U-Net, SiD2 Residual U-ViT, noisy classifier, presets, FLOPs
- ``pixdiff.metrics``    Fréchet distance, KID, precision/recall, IS, accuracy, memorisation
- ``pixdiff.train``      the training loop; ``pixdiff.checkpoint`` safetensors + JSON checkpoints
- ``pixdiff.generate``   ``pixdiff.load(run).sample(n)``: a trained run, ready to sample
- ``pixdiff.adapters``   diffusers UNets and k-diffusion / EDM denoisers in pixdiff's interface, and back
- ``pixdiff.export``     a run as one safetensors weights file, its chain as a diffusers scheduler config
- ``pixdiff.errors``     ``PixdiffError``, the one exception for user mistakes
"""

__version__ = "0.1.0"

from pixdiff import analytic, process, schedules  # noqa: E402
from pixdiff.analytic import GaussianMixture  # noqa: E402
from pixdiff.denoiser import Denoiser  # noqa: E402
from pixdiff.errors import PixdiffError  # noqa: E402
from pixdiff.generate import Pipeline, load  # noqa: E402
from pixdiff.samplers import sample  # noqa: E402

__all__ = ["schedules", "process", "analytic", "GaussianMixture", "Denoiser", "sample", "load", "Pipeline",
           "PixdiffError", "__version__"]
