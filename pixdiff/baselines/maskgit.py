"""MaskGIT: a bidirectional transformer over the VQ-VAE's codes, cosine mask schedule, iterative
parallel decoding (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer").

- Training (§3.1, eq. 1): draw r ~ U(0, 1), mask ⌈γ(r) · L⌉ of the L tokens (at least one) at
  random positions, replace them by the [MASK] token, and minimise the cross-entropy of the
  masked tokens given the rest and the class; γ(r) = cos(π r / 2) (§3.3, the cosine schedule,
  ``cosine_schedule``).
- Decoding (§3.2): start from all [MASK]; at iteration t = 0 .. T−1 predict every masked token,
  draw each from its softmax, and keep the most confident ones: after iteration t,
  n_t = ⌊γ((t + 1) / T) · L⌋ tokens stay masked (``tokens_masked_after``; clamped to
  [1, masked − 1] before the last iteration, as the reference code does), those with the lowest
  confidence log p(drawn token) + τ_t · Gumbel, τ_t = τ (1 − (t + 1) / T) annealed to 0 (the
  reference code's ``mask_by_random_topk``, choice temperature τ = 4.5). Tokens once kept are
  never re-masked. ``steps`` = T (default 8).

The tokeniser is a VQ-VAE (``pixdiff.baselines.vqvae``): from ``--vqvae RUN`` (frozen) or trained
first in the same run, as the vqvae family does. All randomness of one image (the uniforms of the
token draws, the Gumbel noise) comes from its own generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pixdiff.baselines.vqvae import NET_DEFAULTS as _VQ_DEFAULTS
from pixdiff.baselines.vqvae import TwoStage, inverse_cdf

__all__ = ["NET_DEFAULTS", "TRAIN_DEFAULTS", "build", "MaskGIT", "cosine_schedule", "tokens_masked_after"]

NET_DEFAULTS = {**_VQ_DEFAULTS, "steps": 8, "choice_temperature": 4.5}
TRAIN_DEFAULTS = {"optim": {"lr": 1e-3, "batch": 64, "warmup_images": 2_000, "ema_halflife_images": 10_000.0},
                  "run": {"images": 100_000, "ckpt_every_images": 20_000, "log_every_images": 3_200}}


def cosine_schedule(r):
    """γ(r) = cos(π r / 2): the fraction of tokens masked at progress r ∈ [0, 1] (§3.3)."""
    return torch.cos(torch.as_tensor(r, dtype=torch.float64) * math.pi / 2)


def tokens_masked_after(t: int, steps: int, length: int) -> int:
    """⌊γ((t + 1) / T) · L⌋: how many tokens stay masked after decoding iteration t (0-based)."""
    return int(math.floor(length * float(cosine_schedule((t + 1) / steps)) + 1e-9))


class MaskGIT(TwoStage):
    causal = False

    @property
    def mask_id(self) -> int:
        return self.net["codebook"]

    @property
    def takes_steps(self) -> bool:
        return True

    def prior_loss(self, codes, cls, g) -> torch.Tensor:
        n, L = codes.shape
        r = torch.rand(n, generator=g, dtype=torch.float64)
        n_mask = torch.ceil(cosine_schedule(r) * L).long().clamp(1, L)  # ⌈γ(r) L⌉ masked, at least one
        scores = torch.rand(n, L, generator=g)
        rank = scores.argsort(1).argsort(1)  # a random permutation's rank of each position
        masked = (rank < n_mask[:, None]).to(codes.device)
        inp = torch.where(masked, torch.full_like(codes, self.mask_id), codes)
        logits = self.prior(inp, cls)[:, 1:]  # position 0 is the class token
        ce = F.cross_entropy(logits.transpose(1, 2), codes, reduction="none")
        return (ce * masked).sum() / masked.sum()

    @torch.no_grad()
    def generate(self, labels, gens, steps=None):
        T = int(steps or self.net["steps"])
        if T < 1:
            from pixdiff.errors import PixdiffError

            raise PixdiffError(f"maskgit decodes in at least 1 step (got {T})")
        dev = next(self.parameters()).device
        n, L = len(gens), self.length
        draws = torch.stack([torch.rand(T, 2, L, generator=gi, dtype=torch.float64) for gi in gens]).to(dev)
        cls = self._cls(labels, n, dev)
        tokens = torch.full((n, L), self.mask_id, dtype=torch.long, device=dev)
        for t in range(T):
            unknown = tokens == self.mask_id
            probs = self.prior(tokens, cls)[:, 1:].float().softmax(-1)  # [n, L, K]
            u = draws[:, t, 0]
            drawn = inverse_cdf(probs.reshape(n * L, -1), u.reshape(-1)).view(n, L)
            drawn = torch.where(unknown, drawn, tokens)
            if t == T - 1:
                tokens = drawn
                break
            p = probs.gather(2, drawn[..., None]).squeeze(2).double()
            gumbel = -torch.log(-torch.log(draws[:, t, 1].clamp(1e-20, 1 - 1e-12)))
            tau = self.net["choice_temperature"] * (1.0 - (t + 1) / T)
            conf = torch.log(p.clamp(min=1e-30)) + tau * gumbel
            conf = torch.where(unknown, conf, torch.full_like(conf, math.inf))  # kept tokens stay
            k = tokens_masked_after(t, T, L)
            k = torch.minimum(torch.full((n,), max(k, 1), device=dev), unknown.sum(1) - 1).clamp(min=0)
            order = conf.argsort(1).argsort(1)  # rank of each position by confidence, lowest first
            tokens = torch.where(order < k[:, None], torch.full_like(drawn, self.mask_id), drawn)
        return self.vq.decode(tokens.view(n, *self.vq.grid)).clamp(-1, 1)


def build(net: dict, shape, num_classes: int) -> MaskGIT:
    return MaskGIT(net, shape, num_classes)
