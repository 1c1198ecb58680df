"""Guidance: wrappers that turn denoisers into denoisers.

Every wrapper here takes one or more denoisers ``denoiser(z, logsnr, cond=None) -> x̂`` and
returns another with the same interface, so every sampler can use every guidance method.
``cond=None`` on a guided denoiser is the unguided unconditional (null-label) prediction.

Learned variance (Nichol & Dhariwal 2021, §3.1): every wrapper has ``learn_sigma`` (that of the
model it guides) and ``predict(z, logsnr, cond) -> DenoiserOutput(x̃, var_interp)``, the guided x̃
beside the variance fraction of the conditional (good) model: guidance moves the mean and keeps
the model's variance, as Dhariwal & Nichol 2021 do (Alg. 1 uses Σ_θ unchanged). So ``ddpm`` with a
guided learned-variance model samples with the learned variance.

The one sampler that knows a method: the ancestral samplers (``ddpm``, ``sid2_ddpm``) recognise
``ClassifierGuidance`` and apply Dhariwal & Nichol 2021 Algorithm 1 (mean shift s Σ ∇ log p_φ,
via ``model_x`` / ``model_predict`` and ``score_shift``) instead of the x̂ shift that every other
sampler gets by calling the wrapper.

Why guidance can live in x-space. At a fixed (z, λ) the parameterisations are affine in x̂
(Hoogeboom et al. 2025 eq. 1, ``pixdiff.process``):

    ε̂ = (z − α x̂)/σ,   v̂ = (α z − x̂)/σ,   score = (α x̂ − z)/σ²   (Tweedie)

An affine map f(x̂) = a + b x̂ commutes with every combination whose weights sum to one:
f((1+w) x̂_c − w x̂_u) = (1+w) f(x̂_c) − w f(x̂_u), because the constant a enters with weight
(1+w) − w = 1. So Ho & Salimans 2022's ε̃ = (1+w) ε_c − w ε_u is exactly x̃ = (1+w) x̂_c − w x̂_u,
and the same holds for v and the score. Adding a term to the score is adding σ²/α times it to x̂.

Methods (the formulas are derived below each heading):

- ``classifier_free`` (Ho & Salimans 2022, Alg. 2 line 3), optionally only on a logSNR interval
  (Kynkäänniemi et al. 2024; SiD2's intervals, Hoogeboom et al. 2025 App. A.4);
- ``classifier``: classifier guidance with a noisy classifier (Dhariwal & Nichol 2021, §4.2, the
  DDIM form of Alg. 2) and ``classifier_mean_shift``, Alg. 1 for ancestral samplers;
- ``autoguidance``: a model guided by a weaker version of itself (Karras et al. 2024,
  autoguidance; Hoogeboom et al. 2025 App. A.3).

Label dropout (p_uncond, Ho & Salimans 2022 Alg. 1) is a training-time matter and lives in the trainer.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Literal

import torch

from pixdiff.denoiser import DenoiserOutput
from pixdiff.errors import PixdiffError
from pixdiff.process import alpha_sigma

__all__ = [
    "GUIDANCE_INTERVALS",
    "guidance_interval",
    "classifier_free",
    "classifier",
    "classifier_gradient",
    "classifier_mean_shift",
    "autoguidance",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "AutoGuidance",
]

DenoiserFn = Callable[..., torch.Tensor]  # (z, logsnr, cond=None) -> x̂
Interval = tuple[float, float]

# Hoogeboom et al. 2025, App. A.4 ("The important sampling settings"): the logSNR interval in which
# SiD2 applies guidance (Kynkäänniemi et al. 2024), per image side length. The lower bound moves by
# 1.5 per 2× resolution (§4.1, "Bias over resolutions"), the upper bound stays at 5. The paper
# gives no other resolutions; for those ``guidance_interval`` returns None (= guide at every λ).
# SiD2 pairs these intervals with "guidance = 1.0", which we read as w = 1 in Ho & Salimans 2022's
# convention (scale 1 + w = 2); the paper does not say which convention it uses.
GUIDANCE_INTERVALS: dict[int, Interval] = {
    128: (0.0, 5.0),
    256: (-1.5, 5.0),
    512: (-3.0, 5.0),
}


def guidance_interval(resolution: int) -> Interval | None:
    """SiD2's guidance interval (λ_lo, λ_hi) for square images of side ``resolution`` (Hoogeboom et
    al. 2025, App. A.4), or None (guide everywhere) where the paper gives none."""
    return GUIDANCE_INTERVALS.get(int(resolution))


# --- shared helpers --------------------------------------------------------------------------------


def _nfe(denoiser) -> int:
    """Network evaluations per call of a (possibly already wrapped) denoiser."""
    return int(getattr(denoiser, "nfe_per_call", 1))


def _check_callable(f, name: str) -> None:
    if not callable(f):
        raise PixdiffError(f"{name} must be callable as {name}(z, logsnr, cond=None); got {type(f).__name__}")


def _check_weight(w, name: str, minimum: float | None) -> float:
    if isinstance(w, bool) or not (isinstance(w, numbers.Real) or (torch.is_tensor(w) and w.numel() == 1)):
        raise PixdiffError(f"{name} must be a real number (got {w!r})")
    w = float(w)
    if not math.isfinite(w):
        raise PixdiffError(f"{name} must be finite (got {w})")
    if minimum is not None and w < minimum:
        raise PixdiffError(f"{name} must be >= {minimum} (got {w})")
    return w


def _check_interval(interval) -> Interval | None:
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise PixdiffError(f"interval must be None or a pair (logsnr_lo, logsnr_hi) (got {interval!r})") from None
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise PixdiffError(f"interval needs logsnr_lo < logsnr_hi (got ({lo}, {hi})); use ±inf for an open end")
    return lo, hi


def _per_sample(logsnr, z: torch.Tensor) -> torch.Tensor:
    """λ as a [B] tensor (a scalar λ is broadcast), keeping its dtype for the denoiser."""
    lam = torch.as_tensor(logsnr, device=z.device)
    if not lam.is_floating_point():
        lam = lam.to(torch.float64)
    if lam.dim() == 0 or lam.numel() == 1:
        return lam.reshape(()).expand(z.shape[0])
    if lam.shape != (z.shape[0],):
        raise PixdiffError(f"logsnr must be a scalar or have shape [{z.shape[0]}] (got {tuple(lam.shape)})")
    return lam


def _labels(cond, batch: int, device) -> torch.Tensor | None:
    """cond as a LongTensor [B], or None. An int or 0-d tensor is one label for the whole batch."""
    if cond is None:
        return None
    c = torch.as_tensor(cond, device=device)
    if c.is_floating_point() or c.dtype == torch.bool:
        raise PixdiffError(f"cond must hold integer class labels (got dtype {c.dtype})")
    c = c.long()
    if c.dim() == 0:
        return c.expand(batch)
    if c.shape != (batch,):
        raise PixdiffError(f"cond must be an int or have shape [{batch}] (got {tuple(c.shape)})")
    return c


def _pad(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample coefficient [B] shaped to broadcast over x [B, ...], in x's dtype."""
    return coef.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def _learn_sigma(denoiser) -> bool:
    return bool(getattr(denoiser, "learn_sigma", False))


def _evaluate(denoiser, z: torch.Tensor, logsnr, cond, with_var: bool):
    """(x̂, var_interp): with ``with_var`` from the denoiser's ``predict`` when it has one (IDDPM's
    learned variance), else (denoiser(z, λ, cond), None)."""
    if with_var and callable(getattr(denoiser, "predict", None)):
        out = denoiser.predict(z, logsnr, cond)
        if isinstance(out, tuple):
            return out[0], out[1]
        return out.x_hat, out.var_interp
    return denoiser(z, logsnr, cond), None


# --- classifier-free guidance (Ho & Salimans 2022) ------------------------------------------------


class ClassifierFreeGuidance:
    """x̃ = (1 + w) x̂(z, c) − w x̂(z, ∅) for λ in (λ_lo, λ_hi), else x̂(z, c).

    Ho & Salimans 2022, Algorithm 2 line 3: ε̃ = (1 + w) ε_θ(z, c) − w ε_θ(z), carried to x-space
    exactly (module docstring). Computed as ``lerp(x̂_u, x̂_c, 1 + w)`` =
    x̂_c + w (x̂_c − x̂_u), so w = 0 returns x̂_c bit for bit. The other common convention is the
    guidance *scale* g = 1 + w (EDM2's ``guidance``, diffusers' ``guidance_scale``): g = 1 is no
    guidance; pass w = g − 1.

    Interval (Kynkäänniemi et al. 2024; Hoogeboom et al. 2025 App. A.4): λ is per sample, so each sample is guided only where its own
    λ lies in the open interval (λ_lo, λ_hi); the others get the conditional prediction, and the
    unconditional pass is run only for the samples that need it.

    The unconditional pass: if the denoiser has an int attribute ``null_label`` (a network
    trained with label dropout, Ho & Salimans 2022 Alg. 1), conditional and unconditional halves run in
    one forward on the concatenated batch [z; z] with labels [c; null_label]. Otherwise the
    denoiser is called twice, once with ``cond`` and once with ``cond=None`` (which, by the
    interface, is the unconditional / null-label prediction).

    ``nfe_per_call``: network evaluations per sample per call (2, or 1 when w = 0), times those of
    the wrapped denoiser. Called with ``cond=None`` it returns the unconditional prediction
    (guidance towards "no class" is the identity: (1 + w) x̂_u − w x̂_u = x̂_u).

    ``predict`` returns the same x̃ with the conditional pass's ``var_interp`` (the model's
    ``predict``; None for a model without learned variance); ``learn_sigma`` is the model's.
    """

    def __init__(self, denoiser: DenoiserFn, w: float, interval: Interval | None = None):
        _check_callable(denoiser, "denoiser")
        self.denoiser = denoiser
        self.w = _check_weight(w, "classifier-free guidance weight w", 0.0)
        self.interval = _check_interval(interval)
        null = getattr(denoiser, "null_label", None)
        if null is not None and (isinstance(null, bool) or not isinstance(null, int)):
            raise PixdiffError(f"denoiser.null_label must be an int label (got {null!r})")
        self.null_label = null
        self.nfe_per_call = (1 if self.w == 0.0 else 2) * _nfe(denoiser)

    def guided_mask(self, logsnr: torch.Tensor) -> torch.Tensor:
        """[B] bool: which samples are guided at these λ."""
        if self.w == 0.0:
            return torch.zeros(logsnr.shape, dtype=torch.bool, device=logsnr.device)
        if self.interval is None:
            return torch.ones(logsnr.shape, dtype=torch.bool, device=logsnr.device)
        lo, hi = self.interval
        return (logsnr > lo) & (logsnr < hi)

    @property
    def learn_sigma(self) -> bool:
        return _learn_sigma(self.denoiser)

    def __call__(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        return self._guide(z, logsnr, cond, False)[0]

    def predict(self, z: torch.Tensor, logsnr, cond=None) -> DenoiserOutput:
        return DenoiserOutput(*self._guide(z, logsnr, cond, True))

    def _guide(self, z: torch.Tensor, logsnr, cond, with_var: bool):
        cond = _labels(cond, z.shape[0], z.device)
        if cond is None:
            return _evaluate(self.denoiser, z, logsnr, None, with_var)
        lam = _per_sample(logsnr, z)
        mask = self.guided_mask(lam)  # [B]
        if not bool(mask.any()):
            return _evaluate(self.denoiser, z, logsnr, cond, with_var)
        every = bool(mask.all())
        z_u, lam_u = (z, lam) if every else (z[mask], lam[mask])
        if self.null_label is not None:
            null = torch.full((z_u.shape[0],), self.null_label, dtype=torch.long, device=z.device)
            both, var = _evaluate(self.denoiser, torch.cat([z, z_u]), torch.cat([lam, lam_u]), torch.cat([cond, null]),
                                  with_var)
            x_c, x_u = both[: z.shape[0]], both[z.shape[0]:]
            var = None if var is None else var[: z.shape[0]]
        else:
            x_c, var = _evaluate(self.denoiser, z, logsnr, cond, with_var)
            x_u = self.denoiser(z_u, lam_u, None)
        if every:
            return torch.lerp(x_u, x_c, 1.0 + self.w), var
        out = x_c.clone()
        out[mask] = torch.lerp(x_u, x_c[mask], 1.0 + self.w)
        return out, var


def classifier_free(denoiser: DenoiserFn, w: float, interval: Interval | None = None) -> ClassifierFreeGuidance:
    """Classifier-free guidance x̃ = (1 + w) x̂_c − w x̂_u (Ho & Salimans 2022, Alg. 2), w ≥ 0 (w = 0:
    conditional model, unguided), optionally only for λ in ``interval`` = (λ_lo, λ_hi)
    (Kynkäänniemi et al. 2024; see ``GUIDANCE_INTERVALS``). Returns a denoiser; see
    ``ClassifierFreeGuidance``."""
    return ClassifierFreeGuidance(denoiser, w, interval)


# --- classifier guidance (Dhariwal & Nichol 2021) -----------------------------------------------------


def classifier_gradient(classifier: Callable, z: torch.Tensor, logsnr, cond) -> torch.Tensor:
    """g = ∇_z log p_φ(y | z_t) for each sample's label y = cond (Dhariwal & Nichol 2021, §4.1: the
    gradient of the classifier's log-probability with respect to the noisy input x_t).

    ``classifier(z, logsnr) -> logits [B, C]``; log p(y | z) = log_softmax(logits)[y], so
    unnormalised logits and exact log-probabilities both work. The gradient is taken with autograd
    enabled even when the caller samples under ``no_grad`` / ``inference_mode``; it is detached
    and has z's shape and dtype."""
    _check_callable(classifier, "classifier")
    y = _labels(cond, z.shape[0], z.device)
    if y is None:
        raise PixdiffError("classifier guidance needs class labels (cond); got None")
    lam = _per_sample(logsnr, z)
    with torch.inference_mode(False), torch.enable_grad():
        z_in = z.detach().clone().requires_grad_(True)
        logits = classifier(z_in, lam.clone())
        if logits.dim() != 2 or logits.shape[0] != z.shape[0]:
            raise PixdiffError(f"classifier must return logits [B, C] = [{z.shape[0]}, C] (got {tuple(logits.shape)})")
        if bool((y < 0).any()) or bool((y >= logits.shape[1]).any()):
            raise PixdiffError(f"labels must lie in [0, {logits.shape[1] - 1}] for a {logits.shape[1]}-class classifier")
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, z_in)
    return grad.detach().to(z.dtype)


class ClassifierGuidance:
    """x̃ = x̂ + (σ²/α) s ∇_z log p_φ(y | z_t).

    Derivation. Guidance samples the tilted p(z | y)_s ∝ p(z) p(y | z)^s, whose score is
    ∇ log p(z) + s ∇ log p(y | z) (Dhariwal & Nichol 2021, §4.2: ∇ log(p_θ(x_t) p_φ(y | x_t)),
    with the gradient scale s of Algorithms 1–2). Tweedie gives score = (α x̂ − z)/σ², so
    x̂ = (z + σ² score)/α, and adding s g to the score adds (σ²/α) s g to x̂. In ε-form this is
    ε̃ = (z − α x̃)/σ = ε̂ − σ s g: Algorithm 2's ε̂ − sqrt(1 − ᾱ_t) s ∇ log p_φ(y|x_t) with
    σ = sqrt(1 − ᾱ_t). This is what every ODE sampler (and ``ddim``) gets by calling the wrapper.

    Ancestral samplers use Algorithm 1 instead (``ddpm`` and ``sid2_ddpm`` recognise this class):
    μ and Σ from the unguided model (``model_x`` / ``model_predict``), then
    z_s ~ N(μ + Σ · ``score_shift``, Σ), ``score_shift`` = s g. ``predict`` returns x̃ with the
    model's ``var_interp``; ``learn_sigma`` is the model's.

    With the exact classifier p(y | z) of the data, s = 1 turns the unconditional model into the
    conditional one, and scale s equals classifier-free guidance with w = s − 1 (p(z|y)^s p(z)^{1−s}
    ∝ p(z) p(y|z)^s); tests/test_guidance.py checks this on the Gaussian mixture.

    ``conditional``: whether the wrapped denoiser is told the label (ADM-G's "conditional model +
    classifier", Dhariwal & Nichol 2021 Table 4) or called with cond=None (an unconditional model). Called with
    cond=None, the guided denoiser returns the unguided unconditional prediction.
    ``nfe_per_call`` counts denoiser evaluations (1 × the wrapped one's); each call also runs the
    classifier forward and backward once.
    """

    def __init__(self, denoiser: DenoiserFn, classifier: Callable, scale: float, conditional: bool = True):
        _check_callable(denoiser, "denoiser")
        _check_callable(classifier, "classifier")
        self.denoiser, self.classifier = denoiser, classifier
        self.scale = _check_weight(scale, "classifier guidance scale", None)
        self.conditional = bool(conditional)
        self.nfe_per_call = _nfe(denoiser)

    @property
    def learn_sigma(self) -> bool:
        return _learn_sigma(self.denoiser)

    def _model_cond(self, z, cond):
        cond = _labels(cond, z.shape[0], z.device)
        return cond, (cond if self.conditional else None)

    def model_x(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        """The unguided model's x̂ (told the label when ``conditional``)."""
        return self.denoiser(z, logsnr, self._model_cond(z, cond)[1])

    def model_predict(self, z: torch.Tensor, logsnr, cond=None) -> DenoiserOutput:
        """The unguided model's (x̂, var_interp): Algorithm 1's μ_θ and Σ_θ."""
        return DenoiserOutput(*_evaluate(self.denoiser, z, logsnr, self._model_cond(z, cond)[1], True))

    def score_shift(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor | None:
        """s ∇_{z_t} log p_φ(y | z_t), the term guidance adds to the score; None without labels or
        at s = 0 (nothing to add)."""
        cond = _labels(cond, z.shape[0], z.device)
        if cond is None or self.scale == 0.0:
            return None
        return self.scale * classifier_gradient(self.classifier, z, _per_sample(logsnr, z), cond)

    def _shift_x(self, x_hat: torch.Tensor, z: torch.Tensor, logsnr, cond) -> torch.Tensor:
        shift = self.score_shift(z, logsnr, cond)
        if shift is None:
            return x_hat
        a, s = alpha_sigma(_per_sample(logsnr, z).to(torch.float64))
        return x_hat + _pad(s * s / a, x_hat) * shift.to(x_hat.dtype)

    def __call__(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        return self._shift_x(self.model_x(z, logsnr, cond), z, logsnr, cond)

    def predict(self, z: torch.Tensor, logsnr, cond=None) -> DenoiserOutput:
        out = self.model_predict(z, logsnr, cond)
        return DenoiserOutput(self._shift_x(out.x_hat, z, logsnr, cond), out.var_interp)


def classifier(denoiser: DenoiserFn, classifier: Callable, scale: float, *,
               conditional: bool = True) -> ClassifierGuidance:
    """Classifier guidance of gradient scale s (Dhariwal & Nichol 2021, Alg. 1–2) with a noisy classifier
    ``classifier(z, logsnr) -> logits [B, C]``; returns a denoiser (see ``ClassifierGuidance``)."""
    return ClassifierGuidance(denoiser, classifier, scale, conditional)


def classifier_mean_shift(mean: torch.Tensor, variance, grad: torch.Tensor, scale: float) -> torch.Tensor:
    """μ + s Σ ∇_{z_t} log p_φ(y | z_t): Dhariwal & Nichol 2021, Algorithm 1, for ancestral samplers
    that draw z_s ~ N(μ, Σ) (``ddpm`` applies it itself to a ``ClassifierGuidance`` denoiser). ``variance`` is Σ: a scalar, a per-sample [B] tensor (as
    ``pixdiff.process.posterior`` returns) or a per-element tensor like ``mean`` (IDDPM's learned
    Σ). ``grad`` comes from ``classifier_gradient`` at z_t.

    Relation to ``classifier``: shifting x̂ by (σ_t²/α_t) s g moves the posterior mean
    c_x x̂ + c_z z_t (Hoogeboom et al. 2025 eq. 3) by c_x σ_t²/α_t s g = (1 − r)(α_s/α_t) σ_t² s g, while
    Algorithm 1 moves it by Σ s g = (1 − r) σ_s² s g (r = e^{λ_t − λ_s}). They agree to first order
    in the step size (α_s ≈ α_t, σ_s ≈ σ_t): Algorithm 1 is the small-step approximation."""
    scale = _check_weight(scale, "classifier guidance scale", None)
    if grad.shape != mean.shape:
        raise PixdiffError(f"grad must have the shape of mean {tuple(mean.shape)} (got {tuple(grad.shape)})")
    var = torch.as_tensor(variance, device=mean.device)
    if var.dim() == 1 and mean.dim() > 1 and var.shape[0] == mean.shape[0] and var.shape != mean.shape:
        var = _pad(var, mean)
    elif var.dim() > 0 and var.shape != mean.shape:
        raise PixdiffError(f"variance must be a scalar, [B] or shaped like mean (got {tuple(var.shape)})")
    return mean + scale * var.to(mean.dtype) * grad.to(mean.dtype)


# --- autoguidance (Karras et al. 2024, autoguidance; Hoogeboom et al. 2025 App. A.3) -----------------


class AutoGuidance:
    """D = D_weak + w (D_good − D_weak): a model guided by a worse version of itself.

    Karras et al. 2024 (autoguidance) guide a model with a smaller or less-trained version of
    itself instead of an unconditional model; as Hoogeboom et al. 2025 (App. A.3) put it, "the
    negative signal is provided by a *worse* model, either earlier in training or a small
    version." Both models get the same cond. ``predict`` returns D with the good model's
    ``var_interp``; ``learn_sigma`` is the good model's.

    Conventions (``convention``):
      - "edm2" (default): w is EDM2's ``guidance`` (``D_weak.lerp(D_good, w)``): w = 1 is D_good,
        w > 1 guides, w = 0 is D_weak.
      - "cfg": w as in Ho & Salimans 2022, D = D_good + w (D_good − D_weak): w = 0 is D_good; the same as
        "edm2" with w + 1.
    ``nfe_per_call``: evaluations of both models (the weak one is usually cheaper), or only
    D_good's when w selects it exactly or good is weak.
    """

    def __init__(self, good: DenoiserFn, weak: DenoiserFn, w: float, convention: Literal["edm2", "cfg"] = "edm2"):
        _check_callable(good, "good")
        _check_callable(weak, "weak")
        if convention not in ("edm2", "cfg"):
            raise PixdiffError(f"unknown autoguidance convention {convention!r}; choose 'edm2' or 'cfg'")
        w = _check_weight(w, "autoguidance weight w", None)
        self.good, self.weak, self.convention = good, weak, convention
        self.w = w + 1.0 if convention == "cfg" else w  # the lerp weight, EDM2 convention
        self._only_good = self.w == 1.0 or good is weak
        self.nfe_per_call = _nfe(good) + (0 if self._only_good else _nfe(weak))

    @property
    def learn_sigma(self) -> bool:
        return _learn_sigma(self.good)

    def __call__(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        d_good = self.good(z, logsnr, cond)
        if self._only_good:
            return d_good
        return torch.lerp(self.weak(z, logsnr, cond), d_good, self.w)

    def predict(self, z: torch.Tensor, logsnr, cond=None) -> DenoiserOutput:
        d_good, var = _evaluate(self.good, z, logsnr, cond, True)
        if self._only_good:
            return DenoiserOutput(d_good, var)
        return DenoiserOutput(torch.lerp(self.weak(z, logsnr, cond), d_good, self.w), var)


def autoguidance(good: DenoiserFn, weak: DenoiserFn, w: float, *,
                 convention: Literal["edm2", "cfg"] = "edm2") -> AutoGuidance:
    """Autoguidance D = D_weak + w (D_good − D_weak) (EDM2 convention: w = 1 is ``good``); with
    ``convention="cfg"``, D = D_good + w (D_good − D_weak). Returns a denoiser (see ``AutoGuidance``)."""
    return AutoGuidance(good, weak, w, convention)
