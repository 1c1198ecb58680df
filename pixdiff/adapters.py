"""Adapters between pixdiff's denoiser interface and two peer conventions.

pixdiff's one interface is ``D(z, logsnr, cond=None) -> x̂`` on the VP state
z = α x + σ ε with α² = sigmoid(λ), σ² = sigmoid(−λ) (``pixdiff.process``). The peers:

* diffusers (DDPM family; Ho et al. 2020, Song et al. 2021a): a network ``unet(z, t)`` of the same
  VP state z_t = sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) ε at an integer training timestep t ∈ {0, …, T−1},
  with ᾱ_t = Π_{s≤t} (1 − β_s) from the scheduler's β table (``scheduler.alphas_cumprod``). So
  timestep t is the logSNR λ_t = log(ᾱ_t / (1 − ᾱ_t)), decreasing in t. ``from_diffusers`` maps a
  continuous λ to a fractional t by inverting that table (linear interpolation in λ between
  entries) and converts the network's ε / x / v output to x̂ at the same λ.
* k-diffusion / EDM (Karras et al. 2022, §2): the variance-exploding state x_σ = x + σ n with a
  denoiser ``D(x_σ, σ)``. A VP state at λ is x_σ = z/α with σ = σ_VP/α = exp(−λ/2); back,
  z = α x_σ with α = 1/sqrt(1 + σ²) and λ = −2 log σ (``process.to_sigma_space`` /
  ``from_sigma_space``). ``from_sigma_denoiser`` and ``to_sigma_denoiser`` convert both ways, and
  are each other's inverse.

diffusers is imported by nothing here: ``from_diffusers`` only reads attributes of the objects it
is given (``unet.config``, ``scheduler.config``, ``scheduler.alphas_cumprod``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pixdiff import process
from pixdiff.errors import PixdiffError

__all__ = ["from_diffusers", "from_sigma_denoiser", "to_sigma_denoiser", "to_diffusers_model", "diffusers_logsnr",
           "diffusers_timestep", "load_diffusers"]

# diffusers' prediction_type → pixdiff's prediction kind (v = α ε − σ x in both: Salimans & Ho 2022;
# diffusers' ``get_velocity`` is sqrt(ᾱ) ε − sqrt(1 − ᾱ) x).
_PREDICTIONS = {"epsilon": "eps", "sample": "x", "v_prediction": "v"}
_LEARNED_VARIANCE = ("learned", "learned_range")


def _config(obj) -> dict:
    cfg = getattr(obj, "config", None)
    if cfg is None:
        return {}
    return dict(cfg) if not isinstance(cfg, dict) else cfg


def diffusers_logsnr(scheduler) -> torch.Tensor:
    """The scheduler's training table as logSNR, λ_t = log ᾱ_t − log(1 − ᾱ_t) for t = 0 … T−1
    (float64, decreasing), from its own ``alphas_cumprod`` (so every ``beta_schedule`` it knows,
    linear / scaled_linear / squaredcos_cap_v2 / given betas, comes out as it trains)."""
    ab = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(ab, torch.Tensor) or ab.dim() != 1 or ab.numel() < 2:
        raise PixdiffError(f"{type(scheduler).__name__} has no alphas_cumprod table; from_diffusers supports "
                           "DDPM-family schedulers (DDPM, DDIM, PNDM, DPMSolver…) only")
    ab = ab.detach().to(device="cpu", dtype=torch.float64)
    return torch.log(ab) - torch.log1p(-ab)


def diffusers_timestep(table: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """The fractional diffusers timestep t(λ) for logSNR values ``logsnr`` (float64 [B]), inverting
    the decreasing table λ_t (``diffusers_logsnr``) by linear interpolation in λ between the entries;
    a table λ gives its integer t exactly. Outside the table the timestep is clamped: λ above
    λ_0 (including +∞) → t = 0, λ below the last finite entry → that entry's t (a zero-terminal-SNR
    table's λ_{T−1} = −∞ is never interpolated towards). The caller still converts the network's
    output at the true λ; only the network's time input is clamped."""
    finite = torch.isfinite(table)
    n = int(finite.sum())
    if n < 2 or not bool(finite[:n].all()):
        raise PixdiffError("the scheduler's alphas_cumprod gives fewer than 2 finite logSNR values at its start")
    inc = table[:n].flip(0)  # increasing: inc[j] = λ_{n−1−j}
    if bool((inc[1:] <= inc[:-1]).any()):
        raise PixdiffError("the scheduler's logSNR table is not strictly decreasing in t; cannot invert it")
    lam = logsnr.to(dtype=torch.float64, device="cpu").clamp(float(inc[0]), float(inc[-1]))
    hi = torch.searchsorted(inc, lam, right=True).clamp(1, n - 1)
    lo = hi - 1
    w = (lam - inc[lo]) / (inc[hi] - inc[lo])
    return (n - 1) - (lo.to(torch.float64) + w)


def from_diffusers(unet, scheduler, clip_sample: bool = False, null_label: int | None = None) -> Callable[..., torch.Tensor]:
    """A pixdiff denoiser ``D(z, logsnr, cond=None) -> x̂`` for a diffusers ``UNet2DModel`` trained
    with a DDPM-family scheduler (Ho et al. 2020's discrete chain; diffusers' convention above).

    The scheduler supplies the training table and the output kind: ``scheduler.alphas_cumprod``
    (whatever its ``beta_schedule``), ``config.num_train_timesteps`` and ``config.prediction_type``
    (``epsilon`` → ε, ``sample`` → x, ``v_prediction`` → v, converted with ``pixdiff.process.to_x``
    at the same λ). λ is mapped to the network's (float) timestep by ``diffusers_timestep``: exact at
    table entries, linear in λ between them, clamped outside the table. The network sees the VP
    state z unchanged (DDPM-family schedulers' ``scale_model_input`` is the identity).

    ``cond`` (int labels [B]) is passed as ``class_labels`` to a class-conditional UNet
    (``num_class_embeds``); an unconditional one refuses labels and a conditional one needs them.
    With a learned-variance scheduler (``variance_type`` learned / learned_range, IDDPM) the UNet
    outputs 2C channels; x̂ uses the first C (the mean prediction) and the variance half is dropped.
    A UNet with a learned timestep embedding (``time_embedding_type='learned'``) takes the nearest
    integer timestep. ``clip_sample`` clamps x̂ to [−1, 1] (diffusers' option of that name).
    ``null_label``: for a class-conditional UNet trained with label dropout (Ho & Salimans 2022,
    Alg. 1) into an extra class embedding, that label; ``cond=None`` then means it, and
    classifier-free guidance works (diffusers' UNet2DModel has no null class of its own).

    Not supported (PixdiffError): schedulers without ``alphas_cumprod`` (score-SDE VE, flow
    matching), ``timestep_type='continuous'`` schedulers, other prediction types, Fourier-embedded
    (NCSN++ / VE) UNets, and output channel counts that are neither C nor 2C (learned variance).
    """
    scfg, ucfg = _config(scheduler), _config(unet)
    table = diffusers_logsnr(scheduler)
    kind = _PREDICTIONS.get(scfg.get("prediction_type", "epsilon"))
    if kind is None:
        raise PixdiffError(f"prediction_type {scfg.get('prediction_type')!r} is not supported; "
                           f"from_diffusers takes {', '.join(_PREDICTIONS)}")
    if scfg.get("timestep_type", "discrete") != "discrete":
        raise PixdiffError(f"timestep_type {scfg.get('timestep_type')!r} is not supported; from_diffusers "
                           "maps logSNR to the discrete training timesteps only")
    T = scfg.get("num_train_timesteps", table.numel())
    if T != table.numel():
        raise PixdiffError(f"num_train_timesteps={T} but alphas_cumprod has {table.numel()} entries")
    emb = ucfg.get("time_embedding_type", "positional")
    if emb not in ("positional", "learned"):
        raise PixdiffError(f"time_embedding_type {emb!r} is not supported; from_diffusers takes DDPM-family "
                           "UNets (positional or learned timestep embedding)")
    learned_var = scfg.get("variance_type") in _LEARNED_VARIANCE
    conditional = ucfg.get("num_class_embeds") is not None or ucfg.get("class_embed_type") is not None
    if null_label is not None:
        n_emb = ucfg.get("num_class_embeds")
        if not conditional or isinstance(null_label, bool) or not isinstance(null_label, int) \
                or not (n_emb is None or 0 <= null_label < n_emb):
            raise PixdiffError(f"null_label={null_label!r} needs a class-conditional UNet with that class "
                               f"embedding (num_class_embeds={n_emb})")
    dtype = getattr(unet, "dtype", None)

    def denoise(z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        lam = torch.as_tensor(logsnr, dtype=torch.float64).flatten().cpu()
        lam = lam.expand(z.shape[0]) if lam.numel() == 1 else lam
        if lam.numel() != z.shape[0]:
            raise PixdiffError(f"logsnr has {lam.numel()} entries for a batch of {z.shape[0]}")
        if torch.isnan(lam).any():
            raise PixdiffError("logsnr contains NaN")
        if cond is not None and not conditional:
            raise PixdiffError("this UNet has no class embedding; pass cond=None")
        if cond is None and conditional:
            if null_label is None:
                raise PixdiffError("this UNet is class-conditional (num_class_embeds); pass cond = class labels "
                                   "(or give null_label if it was trained with one)")
            cond = torch.full((z.shape[0],), null_label, dtype=torch.long)
        t = diffusers_timestep(table, lam)
        if emb == "learned":
            t = t.round().long()
        x_in = z if dtype is None else z.to(dtype)
        kwargs = {} if cond is None else {"class_labels": torch.as_tensor(cond, device=z.device)}
        out = unet(x_in, t.to(z.device), **kwargs)
        out = out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
        C = z.shape[1]
        if out.shape[1] == 2 * C and learned_var:
            out = out[:, :C]
        elif out.shape[1] != C:
            raise PixdiffError(f"the UNet outputs {out.shape[1]} channels for a {C}-channel input "
                               f"(2C only with a learned-variance scheduler)")
        x_hat = process.to_x(out.to(z.dtype), kind, z, lam)
        return x_hat.clamp(-1.0, 1.0) if clip_sample else x_hat

    denoise.logsnr_table = table  # type: ignore[attr-defined]
    denoise.null_label = null_label  # type: ignore[attr-defined]
    return denoise


def _per_sample(v, x: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar or [B] noise level as float64 [B] on x's device."""
    v = torch.as_tensor(v, dtype=torch.float64, device=x.device).flatten()
    v = v.expand(x.shape[0]) if v.numel() == 1 else v
    if v.numel() != x.shape[0]:
        raise PixdiffError(f"{name} has {v.numel()} entries for a batch of {x.shape[0]}")
    return v


def from_sigma_denoiser(fn, sigma_data: float | None = None) -> Callable[..., torch.Tensor]:
    """A pixdiff denoiser from a k-diffusion / EDM denoiser ``fn(x_σ, σ, class_labels=None) -> x̂``
    (Karras et al. 2022, §2: x_σ = x + σ n). At (z, λ) it calls fn at x_σ = z/α and σ = exp(−λ/2)
    ([B], in z's dtype); ``class_labels`` is passed only when cond is given.

    With ``sigma_data`` set, ``fn`` is instead EDM's raw network F(c_in x_σ, c_noise, class_labels)
    and D = c_skip x_σ + c_out F (Karras et al. 2022, Table 1; ``process.edm_preconditioning``)."""
    if not callable(fn):
        raise PixdiffError(f"fn must be callable as fn(x_sigma, sigma) (got {type(fn).__name__})")
    if sigma_data is not None and not (isinstance(sigma_data, (int, float)) and sigma_data > 0
                                       and math.isfinite(sigma_data)):
        raise PixdiffError(f"sigma_data must be a positive number or None (got {sigma_data!r})")

    def denoise(z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        lam = _per_sample(logsnr, z, "logsnr")
        x_sigma, s = process.to_sigma_space(z, lam)
        kwargs = {} if cond is None else {"class_labels": cond}
        if sigma_data is None:
            return fn(x_sigma, s.to(z.dtype), **kwargs)
        c_skip, c_out, c_in, c_noise = (c.to(device=z.device) for c in process.edm_preconditioning(s, sigma_data))
        shape = (-1,) + (1,) * (z.dim() - 1)
        F = fn(c_in.reshape(shape).to(z.dtype) * x_sigma, c_noise.to(z.dtype), **kwargs)
        return c_skip.reshape(shape).to(z.dtype) * x_sigma + c_out.reshape(shape).to(z.dtype) * F

    return denoise


def to_sigma_denoiser(denoiser) -> Callable[..., torch.Tensor]:
    """A k-diffusion / EDM denoiser ``f(x_σ, sigma, class_labels=None) -> x̂`` from a pixdiff
    denoiser, so that sigma-space samplers (k-diffusion's ``sample_*``) can drive it: z = α x_σ with
    α = 1/sqrt(1 + σ²) and λ = −2 log σ (Karras et al. 2022, §2; ``process.from_sigma_space``).
    ``sigma`` is a tensor [B] or a scalar; λ reaches the denoiser as float64 [B]. The inverse of
    ``from_sigma_denoiser`` (without ``sigma_data``)."""
    if not callable(denoiser):
        raise PixdiffError(f"denoiser must be callable as denoiser(z, logsnr, cond) (got {type(denoiser).__name__})")

    def f(x_sigma: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        z, lam = process.from_sigma_space(x_sigma, _per_sample(sigma, x_sigma, "sigma"))
        return denoiser(z, lam, class_labels)

    return f


def to_diffusers_model(denoiser, scheduler, prediction_type: str | None = None) -> Callable[..., torch.Tensor]:
    """A diffusers-style model ``model(x_t, t, class_labels=None) -> output`` from a pixdiff denoiser,
    so that a diffusers scheduler loop (``out = model(x, t); x = scheduler.step(out, t, x)``) can
    drive a pixdiff network: timestep t (integer or fractional) is the scheduler's λ_t
    (``diffusers_logsnr``, linear in t between entries), and x̂ = D(x_t, λ_t) is returned as the
    scheduler's ``prediction_type`` (ε = (z − α x̂)/σ, v = α ε − σ x̂, or x̂ itself; Salimans & Ho
    2022, §4 for v). ``prediction_type`` defaults to the scheduler's own."""
    if not callable(denoiser):
        raise PixdiffError(f"denoiser must be callable as denoiser(z, logsnr, cond) (got {type(denoiser).__name__})")
    table = diffusers_logsnr(scheduler)
    kind = prediction_type or _config(scheduler).get("prediction_type", "epsilon")
    if kind not in _PREDICTIONS:
        raise PixdiffError(f"prediction_type {kind!r} is not supported; to_diffusers_model gives {', '.join(_PREDICTIONS)}")

    def model(x_t: torch.Tensor, t, class_labels=None) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64).flatten().cpu()
        tt = tt.expand(x_t.shape[0]) if tt.numel() == 1 else tt
        lo = tt.floor().clamp(0, table.numel() - 1).long()
        hi = (lo + 1).clamp(max=table.numel() - 1)
        w = tt - lo.to(torch.float64)
        lam = table[lo] + w * (table[hi] - table[lo])
        x_hat = denoiser(x_t, lam.to(x_t.device), class_labels)
        if kind == "sample":
            return x_hat
        a, s = process.alpha_sigma(lam.to(x_t.device))
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        a, s = a.reshape(shape).to(x_t.dtype), s.reshape(shape).to(x_t.dtype)
        eps = (x_t - a * x_hat) / s
        return eps if kind == "epsilon" else a * eps - s * x_hat

    return model


def load_diffusers(path, device=None, null_label: int | None = None, clip_sample: bool = False):
    """A ``pixdiff.generate.Pipeline`` for a diffusers model saved on disk (nothing is downloaded):
    a pipeline folder (``model_index.json`` with ``unet/`` and ``scheduler/``), or a folder with
    ``unet/`` and ``scheduler/`` written by their ``save_pretrained``, or a UNet folder
    (``config.json``) with its ``scheduler_config.json`` beside it. The UNet must be a
    ``UNet2DModel`` and the scheduler a DDPM-family one (see ``from_diffusers``); every pixdiff
    sampler and guidance option then applies (``pipe.sample(...)``)."""
    from pathlib import Path

    from pixdiff.config import TrainConfig
    from pixdiff.generate import Pipeline, resolve_device

    try:
        import diffusers
    except ImportError:
        raise PixdiffError("reading a diffusers model needs diffusers: pip install 'pixdiff[diffusers]'") from None
    root = Path(path)
    if not root.is_dir():
        raise PixdiffError(f"{root} is not a folder (a diffusers save_pretrained folder is expected)")
    if (root / "unet" / "config.json").is_file():
        unet_dir = root / "unet"
    elif (root / "config.json").is_file():
        unet_dir = root
    else:
        raise PixdiffError(f"{root} has no unet/config.json (nor config.json): not a diffusers model folder")
    sched_dir = next((d for d in (root / "scheduler", unet_dir / "scheduler", root)
                      if (d / "scheduler_config.json").is_file()), None)
    if sched_dir is None:
        raise PixdiffError(f"{root} has no scheduler/scheduler_config.json: pixdiff needs the noise schedule the "
                           "UNet was trained with")
    import json

    ucfg = json.loads((unet_dir / "config.json").read_text())
    if ucfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise PixdiffError(f"{unet_dir} holds a {ucfg.get('_class_name')}; pixdiff reads UNet2DModel only")
    scfg = json.loads((sched_dir / "scheduler_config.json").read_text())
    sched_cls = getattr(diffusers, scfg.get("_class_name", "DDPMScheduler"), None)
    if sched_cls is None or not hasattr(sched_cls, "from_pretrained"):
        raise PixdiffError(f"unknown scheduler class {scfg.get('_class_name')!r} in {sched_dir}")
    dev = resolve_device(device)
    unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir)).eval().to(dev)
    scheduler = sched_cls.from_pretrained(str(sched_dir))
    den = from_diffusers(unet, scheduler, clip_sample=clip_sample, null_label=null_label)
    n_emb = unet.config.get("num_class_embeds") or 0
    num_classes = 0 if not n_emb else (null_label if null_label is not None else n_emb)
    size = unet.config.get("sample_size")
    size = size if isinstance(size, int) else size[0]
    shape = (unet.config["in_channels"], size, size)
    cfg = TrainConfig()
    cfg.data.channels, cfg.data.resolution = shape[0], size
    meta = {"num_classes": num_classes, "data_shape": list(shape), "source": "diffusers", "path": str(root)}
    if n_emb and null_label is None:
        meta["no_guidance"] = ("classifier-free guidance needs the unconditional model: give the class embedding "
                               "this UNet was trained to use for 'no class' (--null-class K / null_label=K)")
    return Pipeline(den, cfg, root, "diffusers", dev, meta)
