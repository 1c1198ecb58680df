"""VQ-VAE with an EMA codebook, and a class-conditional causal-transformer prior over its codes.

van den Oord et al. 2017 ("Neural Discrete Representation Learning"):

- the encoder output z_e(x) is replaced by its nearest codebook vector e_k (§3.1, eq. 1–2);
- straight-through gradient: the decoder's gradient is copied to z_e (§3.2): z_q = z_e + sg[e_k − z_e];
- loss (§3.2, eq. 3) = reconstruction + β ‖z_e − sg[e]‖² (the commitment loss, β = 0.25), the
  codebook term ‖sg[z_e] − e‖² replaced by exponential moving averages (appendix A.1, eqs. 6–8):
      N_i ← γ N_i + (1 − γ) n_i,   m_i ← γ m_i + (1 − γ) Σ_{j: k_j = i} z_e,j,   e_i = m_i / N_i
  (γ = 0.99; N_i Laplace-smoothed as in Sonnet's VectorQuantizerEMA; ``ema_codebook_update``);
- the prior over the codes is learned after the autoencoder (§3.3; they use a PixelCNN, we use a
  small causal transformer, as VQGAN does, Esser et al. 2021 §3.2), here conditioned on the class
  through its first token.

One run trains both stages: the autoencoder for ``vq_images`` images, then the prior on the
frozen autoencoder's codes for the rest (each stage with its own warm-up and cosine decay).
Samples: codes drawn token by token from the prior (inverse CDF at uniforms drawn up front from
the image's own generator), decoded.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NET_DEFAULTS", "TRAIN_DEFAULTS", "build", "VectorQuantizerEMA", "commitment_loss", "ema_codebook_update",
           "VQAutoencoder", "Transformer", "TwoStage", "VQVAE", "TOKENIZER_FIELDS", "inverse_cdf", "cosine_lr"]

TOKENIZER_FIELDS = ("channels", "code_dim", "codebook", "decay", "beta")
NET_DEFAULTS = {"channels": 32, "code_dim": 32, "codebook": 64, "decay": 0.99, "beta": 0.25, "vq_images": 40_000,
                "width": 128, "depth": 4, "heads": 4, "dropout": 0.1}
TRAIN_DEFAULTS = {"optim": {"lr": 1e-3, "batch": 64, "warmup_images": 2_000, "ema_halflife_images": 10_000.0},
                  "run": {"images": 100_000, "ckpt_every_images": 20_000, "log_every_images": 3_200}}


def commitment_loss(z_e: torch.Tensor, e: torch.Tensor, beta: float) -> torch.Tensor:
    """β ‖z_e − sg[e]‖² (van den Oord et al. 2017, eq. 3, third term), the mean over elements:
    its gradient reaches the encoder only, never the codebook."""
    return beta * F.mse_loss(z_e, e.detach())


@torch.no_grad()
def ema_codebook_update(cluster_size: torch.Tensor, embed_sum: torch.Tensor, z: torch.Tensor, codes: torch.Tensor,
                        decay: float, eps: float = 1e-5) -> torch.Tensor:
    """One EMA codebook step (van den Oord et al. 2017, appendix A.1, eqs. 6–8), in place on
    ``cluster_size`` N [K] and ``embed_sum`` m [K, D]; returns the new codebook e = m / Ñ, with
    Ñ_i = (N_i + ε) / (Σ N + K ε) · Σ N (Laplace smoothing; ε = 0: e = m / N)."""
    k = cluster_size.shape[0]
    onehot = F.one_hot(codes, k).to(z.dtype)  # [n, K]
    cluster_size.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
    embed_sum.mul_(decay).add_(onehot.t() @ z, alpha=1 - decay)
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + k * eps) * total
    return embed_sum / smoothed[:, None]


class VectorQuantizerEMA(nn.Module):
    def __init__(self, codebook: int, dim: int, decay: float, beta: float):
        super().__init__()
        self.decay, self.beta = decay, beta
        embed = torch.randn(codebook, dim)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(codebook))  # as if each code had one vector: itself
        self.register_buffer("embed_sum", embed.clone())

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code of each row of z [n, D] (eq. 1)."""
        d = (z * z).sum(1, keepdim=True) - 2 * z @ self.embed.t() + (self.embed * self.embed).sum(1)[None]
        return d.argmin(1)

    def forward(self, z_e: torch.Tensor, update: bool):
        """z_e [n, D, h, w] → (straight-through z_q, codes [n, h, w], commitment loss)."""
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.codes(flat)
        if update:
            self.embed.copy_(ema_codebook_update(self.cluster_size, self.embed_sum, flat.detach(), codes, self.decay))
        e = self.embed[codes]
        loss = commitment_loss(flat, e, self.beta)
        zq = flat + (e - flat).detach()  # straight-through (§3.2)
        return zq.view(n, h, w, d).permute(0, 3, 1, 2), codes.view(n, h, w), loss

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return self.embed[codes].permute(0, 3, 1, 2)


class VQAutoencoder(nn.Module):
    """16×16 images ↔ 4×4 codes (two stride-2 convolutions each way)."""

    def __init__(self, net: dict, shape):
        super().__init__()
        c, h, w = shape
        if h % 4 or w % 4:
            raise ValueError(f"the VQ-VAE halves the image twice: sides must be multiples of 4 (got {h}×{w})")
        ch, d = net["channels"], net["code_dim"]
        self.grid = (h // 4, w // 4)
        self.enc = nn.Sequential(nn.Conv2d(c, ch, 3, 1, 1), nn.SiLU(), nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(2 * ch, 2 * ch, 4, 2, 1), nn.SiLU(), nn.Conv2d(2 * ch, d, 1))
        self.quant = VectorQuantizerEMA(net["codebook"], d, net["decay"], net["beta"])
        self.dec = nn.Sequential(nn.Conv2d(d, 2 * ch, 3, 1, 1), nn.SiLU(), nn.ConvTranspose2d(2 * ch, 2 * ch, 4, 2, 1),
                                 nn.SiLU(), nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1), nn.SiLU(), nn.Conv2d(ch, c, 3, 1, 1))

    def forward(self, x, update: bool):
        zq, codes, commit = self.quant(self.enc(x), update)
        return self.dec(zq), codes, commit

    @torch.no_grad()
    def encode(self, x) -> torch.Tensor:
        return self.forward(x, update=False)[1]

    def decode(self, codes) -> torch.Tensor:
        return self.dec(self.quant.lookup(codes))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.n1, self.n2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout))

    def forward(self, x, causal: bool):
        b, t, c = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, t, c)), self.dropout, self.training)
        return x + self.mlp(self.n2(x))


class Transformer(nn.Module):
    """Pre-LN transformer over [class token, t_1 .. t_L] (Vaswani et al. 2017; GPT-2's pre-LN
    blocks); ``causal``: each position attends to itself and those before it."""

    def __init__(self, vocab: int, length: int, num_classes: int, net: dict, causal: bool):
        super().__init__()
        w = net["width"]
        self.causal = causal
        self.tok = nn.Embedding(vocab, w)
        self.cls = nn.Embedding(num_classes + 1, w)  # the last entry: no class (unconditional)
        self.pos = nn.Parameter(torch.randn(length + 1, w) * 0.02)
        self.blocks = nn.ModuleList([Block(w, net["heads"], net["dropout"]) for _ in range(net["depth"])])
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, net["codebook"])

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """tokens [n, L'] (L' ≤ L), cls [n] → logits [n, L' + 1, codebook] (position 0: the class token)."""
        x = torch.cat([self.cls(cls)[:, None], self.tok(tokens)], 1) + self.pos[: tokens.shape[1] + 1]
        for b in self.blocks:
            x = b(x, self.causal)
        return self.head(self.norm(x))


def cosine_lr(peak: float, images: int, start: int, end: int, warmup: int, batch: int) -> float:
    """Linear warm-up over ``warmup`` images from ``start``, then a cosine decay to 0 at ``end``
    (pixdiff.train's schedule on the interval [start, end): each stage its own)."""
    t = images - start
    warm = min(1.0, (t + batch) / warmup) if warmup > 0 else 1.0
    if t < warmup:
        return peak * warm
    progress = min(1.0, (t - warmup) / max(1, end - start - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical draws: the first index whose cumulative probability exceeds u (probs [n, K], u [n])."""
    cdf = probs.double().cumsum(1)
    return torch.searchsorted(cdf, u.double().reshape(-1, 1).contiguous()).clamp(max=probs.shape[1] - 1).squeeze(1)


class TwoStage(nn.Module):
    """An autoencoder trained first (``vq_images``), then a transformer over its codes."""

    causal = True

    def __init__(self, net: dict, shape, num_classes: int):
        super().__init__()
        self.net, self.shape, self.num_classes = dict(net), tuple(shape), num_classes
        self.vq = VQAutoencoder(net, shape)
        self.length = self.vq.grid[0] * self.vq.grid[1]
        self.prior = Transformer(net["codebook"] + 1, self.length, num_classes, net, self.causal)

    def _cls(self, y, n, dev):
        return y if y is not None else torch.full((n,), self.num_classes, dtype=torch.long, device=dev)

    def lr_at(self, cfg, images: int) -> float:
        o, v = cfg.optim, self.net["vq_images"]
        if images < v:
            return cosine_lr(o.lr, images, 0, v, o.warmup_images, o.batch)
        return cosine_lr(o.lr, images, v, max(o.decay_images or cfg.run.images, v + 1), o.warmup_images, o.batch)

    def train_step(self, x, y, g, opt, ctx) -> dict:
        if ctx.images < self.net["vq_images"]:  # stage 1: the autoencoder
            rec, codes, commit = self.vq(x, update=True)
            mse = F.mse_loss(rec, x)
            loss = mse + commit
            ctx.optimize(opt, loss, self.vq.parameters())
            used = torch.bincount(codes.flatten(), minlength=self.net["codebook"]).float()
            p = used / used.sum()
            perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
            return {"loss": loss.item(), "mse": mse.item(), "commit": commit.item(), "perplexity": perplexity.item()}
        self.vq.eval()  # stage 2: frozen autoencoder, the prior on its codes
        codes = self.vq.encode(x).flatten(1)
        loss = self.prior_loss(codes, self._cls(y, x.shape[0], x.device), g)
        ctx.optimize(opt, loss, self.prior.parameters())
        return {"loss": loss.item(), "prior_nats": loss.item()}

    def prior_loss(self, codes, cls, g) -> torch.Tensor:
        """−log p(codes | class) per token (nats), the next-token cross-entropy."""
        logits = self.prior(codes[:, :-1], cls)  # position i predicts token i
        return F.cross_entropy(logits.transpose(1, 2), codes)

    def ema_key(self, name: str) -> bool:
        return name.startswith("prior.")

    def load_tokenizer(self, run) -> str:
        """Copy a trained vqvae run's autoencoder (its EMA checkpoint) into this model; returns its path."""
        from pixdiff import checkpoint as ckpt_io
        from pixdiff.errors import PixdiffError

        ck = ckpt_io.load(run)
        if ck.state.get("kind") != "vqvae":
            raise PixdiffError(f"--vqvae {run}: a {ck.state.get('kind', 'diffusion')} run, not a vqvae run")
        sd = {k[3:]: v for k, v in ck.ema.items() if k.startswith("vq.")}
        try:
            self.vq.load_state_dict(sd)
        except RuntimeError as e:
            raise PixdiffError(f"--vqvae {run}: its autoencoder does not fit ({str(e).splitlines()[0]})") from None
        return str(ck.path)

    @torch.no_grad()
    def generate(self, labels, gens, steps=None):
        dev = next(self.parameters()).device
        n = len(gens)
        u = torch.stack([torch.rand(self.length, generator=gi, dtype=torch.float64) for gi in gens]).to(dev)
        cls = self._cls(labels, n, dev)
        codes = torch.zeros(n, 0, dtype=torch.long, device=dev)
        for i in range(self.length):
            p = self.prior(codes, cls)[:, -1].float().softmax(1)
            codes = torch.cat([codes, inverse_cdf(p, u[:, i])[:, None]], 1)
        return self.vq.decode(codes.view(n, *self.vq.grid)).clamp(-1, 1)


class VQVAE(TwoStage):
    pass


def build(net: dict, shape, num_classes: int) -> VQVAE:
    return VQVAE(net, shape, num_classes)

