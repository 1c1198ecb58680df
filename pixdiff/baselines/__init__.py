"""The other generative families, as baselines on pixdiff's data and metrics (issue 17).

One module per family, all class-conditional (``--unconditional``: not), all trained by the same
loop (``pixdiff.baselines.common.train``: pixdiff's data pipeline, per-step seeded generators,
checkpoints, bit-exact resume, EMA, log.jsonl) and sampled through ``pixdiff.load`` (so
``pixdiff sample`` and ``pixdiff eval`` work unchanged):

- ``vae``       convolutional VAE, discretised-Gaussian decoder, ELBO in bits/dim (Kingma & Welling 2014)
- ``gan``       DCGAN-style G/D, hinge loss, spectral norm, projection discriminator, EMA of G
- ``pixelcnn``  gated PixelCNN, 256-way softmax, exact NLL in bits/dim (van den Oord et al. 2016)
- ``vqvae``     VQ-VAE (straight-through, commitment loss, EMA codebook) + causal-transformer prior
- ``maskgit``   bidirectional transformer over the VQ-VAE's codes, cosine schedule (Chang et al. 2022)

A run's family is its config's ``model.preset`` and its checkpoints' ``state["kind"]``. This
module imports nothing heavy: the CLI reads ``FAMILIES`` from it.
"""

FAMILIES = ("vae", "gan", "pixelcnn", "vqvae", "maskgit")

__all__ = ["FAMILIES"]
