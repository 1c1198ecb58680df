"""Moment-matching distillation (Salimans, Mensink, Heek & Hoogeboom 2024, "Multistep distillation
of diffusion models via moment matching"), the alternating variant (their Alg. 2; SiD2,
Hoogeboom et al. 2025 §2.4, cites this paper for distilling its models).

The student is a K-step stochastic sampler: at each step of the cosine t-grid t_i = i/K it predicts
x̃ = g_η(z_t, t) and draws z_{t−1/K} ~ q(z_{t−1/K} | z_t, x̃) (the ancestral step; pixdiff's
``ddpm`` sampler with the β̃ posterior variance on ``common.cosine_t_grid``). Moment matching asks
that the generated x̃ have the teacher's conditional mean given any later noisy state:
E_g[x̃ | z_s] = E_q[x | z_s] = g_θ(z_s, s). Alg. 2 estimates the left side with an auxiliary
denoiser g_φ trained on the student's own samples and alternates two updates (steps of even /
odd index):

    t ~ U{1/K, …, 1}, s ~ U[t − 1/K, t) (clipped at ``s_min``), x ~ data, z_t ~ q(z_t | x),
    x̃ = g_η(z_t, t),  z_s ~ q(z_s | z_t, x̃)
    φ:  L(φ) = w(s) ‖x̃ − g_φ(z_s, s)‖²                            (x̃ without gradient)
    η:  L(η) = w(s) x̃ᵀ stopgrad[ g_φ(z_s, s) − g_θ(z_s, s) ]       (its gradient pushes x̃ along the
                                                                   moment mismatch)

Choices stated here (the paper leaves them to its appendix / code, not checked against it): the
weight w(s) ≡ 1 (x-space), z_t noised from data (not from the student's own chain), s drawn in
the interval the ancestral step crosses, and ``aux_steps`` = 4 auxiliary updates per generator
update (Alg. 2 alternates one to one; on the 2-D mixture one-to-one made the 4-step student worse
than its starting point, sliced W1 0.27–0.51 against 0.16, while 4 gave 0.086; docs/distillation.md). Student and auxiliary start from the teacher's weights; an
analytic teacher has none, so a first phase (``fit_fraction`` of the training) fits the student to
the teacher's denoiser (``progressive.fit_loss``) and the auxiliary starts from that fit.

``--option variant=parameter``: moment matching in parameter space (their Alg. 3). No auxiliary
network: the student minimises ‖E_g[∇_θ ℓ(θ; x̃, z_s)]‖²_Λ, the teacher's own loss gradient on the
student's samples (zero when they have the data's moments), ℓ = ‖x̃ − g_θ(z_s)‖² at the teacher's
weights θ. Its unbiased gradient uses two halves A, B of the batch: with v = Λ g_A, g_A = ∇_θ ℓ_A
(no gradient), the surrogate is vᵀ ∇_θ ℓ_B, and since ∇_θ ℓ_B = −2 J_θ(z_s)ᵀ (x̃ − g_θ(z_s)) is
affine in x̃, its gradient with respect to x̃ is −2 J_θ(z_s) v — one Jacobian-vector product of
the teacher along v (``parameter_loss``; z_s held fixed, as Alg. 2 holds it). Λ = diag(1/(sqrt(ν) +
1e-8)), ν an EMA (β₂ = 0.99) of g_A²: Adam's normalisation, our choice. Needs a network teacher
(an analytic toy teacher has no θ) and no guidance (the guided teacher is not one network's loss).
"""

from __future__ import annotations

import torch

from pixdiff import process
from pixdiff.distill.common import Method, copy_module, cosine_logsnr
from pixdiff.distill.progressive import fit_loss

__all__ = ["MomentMatching", "generator_loss", "aux_loss", "posterior_sample", "teacher_loss_grad", "parameter_loss"]


def posterior_sample(z_t: torch.Tensor, x: torch.Tensor, lam_t: torch.Tensor, lam_s: torch.Tensor,
                     noise: torch.Tensor) -> torch.Tensor:
    """z_s ~ q(z_s | z_t, x) = N(c_z z_t + c_x x, var) (``process.posterior_coefficients``)."""
    cz, cx, var = process.posterior_coefficients(lam_t, lam_s)
    b = (-1,) + (1,) * (z_t.dim() - 1)
    def c(v):
        return v.reshape(b).to(z_t.device, z_t.dtype)

    return c(cz) * z_t + c(cx) * x + c(var.sqrt()) * noise


def generator_loss(x_tilde: torch.Tensor, aux_pred: torch.Tensor, teacher_pred: torch.Tensor,
                   w: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Per-example L(η) = w x̃ᵀ stopgrad(g_φ − g_θ) (Alg. 2)."""
    d = (aux_pred - teacher_pred).detach()
    return w * (x_tilde * d).reshape(x_tilde.shape[0], -1).sum(1)


def aux_loss(x_tilde: torch.Tensor, aux_pred: torch.Tensor, w: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Per-example L(φ) = w ‖x̃ − g_φ(z_s)‖² (Alg. 2; x̃ without gradient)."""
    return w * (x_tilde.detach() - aux_pred).reshape(x_tilde.shape[0], -1).pow(2).sum(1)


def teacher_loss_grad(module, params: dict, x_tilde, z_s, lam_s, cond=None) -> dict:
    """g = ∇_θ mean_n ‖x̃_n − g_θ(z_s,n)‖² at the weights ``params`` (Salimans et al. 2024, Alg. 3)."""
    from torch.func import functional_call, grad

    def loss(p):
        pred = functional_call(module, p, (z_s, lam_s, cond))
        return (x_tilde - pred).pow(2).reshape(x_tilde.shape[0], -1).sum(1).mean()

    return grad(loss)(params)


def parameter_loss(module, params: dict, v: dict, x_tilde, z_s, lam_s, cond=None) -> torch.Tensor:
    """The surrogate vᵀ ∇_θ mean_n ‖x̃_n − g_θ(z_s,n)‖² up to terms without x̃: −2/n Σ_n x̃_nᵀ sg(J_θ(z_s,n) v)
    (Alg. 3; ∇_θ ℓ is affine in x̃). Its gradient with respect to x̃ is that of vᵀ ∇_θ ℓ exactly."""
    from torch.func import functional_call, jvp

    with torch.no_grad():
        _, jv = jvp(lambda p: functional_call(module, p, (z_s, lam_s, cond)), (params,), (v,))
    return -2.0 * (x_tilde * jv).reshape(x_tilde.shape[0], -1).sum(1).mean()


class MomentMatching(Method):
    name = "moment"
    sampler = "ddpm"
    grid_kind = "cosine_t"
    OPTIONS = {"fit_fraction": 0.3, "s_min": 1e-3, "aux_steps": 4, "variant": "alternating"}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        from pixdiff.errors import PixdiffError

        self.variant = str(self.opt["variant"])
        if self.variant not in ("alternating", "parameter"):
            raise PixdiffError(f"--option variant= takes alternating (Alg. 2) or parameter (Alg. 3) (got {self.variant!r})")
        if self.variant == "parameter":
            if self.teacher.module is None:
                raise PixdiffError("variant=parameter matches moments in the teacher's weights: it needs a teacher run, "
                                   "not an analytic toy")
            if self.cfg.guidance:
                raise PixdiffError("variant=parameter distils one network's loss: it takes no --guidance")
            self.theta = {k: v.detach() for k, v in self.teacher.module.named_parameters()}
            self.nu = {k: torch.zeros_like(v) for k, v in self.theta.items()}  # EMA of g_A² (Λ's estimate)
        else:
            self.aux = copy_module(self.student)  # g_φ, trained (requires_grad back on)
            for p in self.aux.parameters():
                p.requires_grad_(True)
            self.aux.train()
        self.fit_steps = int(self.total_steps * float(self.opt["fit_fraction"])) if self.teacher.module is None else 0

    def params(self):
        aux = list(self.aux.parameters()) if self.variant == "alternating" else []  # Alg. 3 has no auxiliary
        return [p for p in self.student.parameters() if p.requires_grad] + aux

    def ema_age(self, step):
        return step - self.fit_steps if step >= self.fit_steps else step

    def loss(self, step, x, cond, g):
        eps = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        if step < self.fit_steps:
            return fit_loss(self.student, self.teacher.denoise, x, eps, g, cond).mean()
        k = int(self.cfg.steps)
        b = x.shape[0]
        t = torch.randint(1, k + 1, (b,), generator=g).to(torch.float64) / k
        u = torch.rand(b, generator=g, dtype=torch.float64)
        s = (t - (1.0 - u) / k).clamp(min=float(self.opt["s_min"]))
        lam_t, lam_s = cosine_logsnr(t), cosine_logsnr(s)
        z_t = process.diffuse(x, lam_t, eps)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        if self.variant == "parameter":
            return self._parameter_step(z_t, lam_t, lam_s, noise, cond)
        train_aux = (step - self.fit_steps) % (int(self.opt["aux_steps"]) + 1) != int(self.opt["aux_steps"])
        if train_aux:
            with torch.no_grad():
                x_tilde = self.student(z_t, lam_t, cond)
                z_s = posterior_sample(z_t, x_tilde, lam_t, lam_s, noise)
            return aux_loss(x_tilde, self.aux(z_s, lam_s, cond)).mean()
        x_tilde = self.student(z_t, lam_t, cond)
        with torch.no_grad():
            z_s = posterior_sample(z_t, x_tilde, lam_t, lam_s, noise)
            a = self.aux(z_s, lam_s, cond)
            te = self.teacher.denoise(z_s, lam_s, cond).to(x.dtype)
        return generator_loss(x_tilde, a, te).mean()

    def _parameter_step(self, z_t, lam_t, lam_s, noise, cond):
        x_tilde = self.student(z_t, lam_t, cond)
        with torch.no_grad():
            z_s = posterior_sample(z_t, x_tilde, lam_t, lam_s, noise)
        h = x_tilde.shape[0] // 2
        a, b = slice(0, h), slice(h, None)
        ca, cb = (None, None) if cond is None else (cond[a], cond[b])
        dt = next(iter(self.theta.values())).dtype
        with torch.no_grad():
            g = teacher_loss_grad(self.teacher.module, self.theta, x_tilde[a].detach().to(dt), z_s[a].to(dt), lam_s[a], ca)
            for k, gk in g.items():
                self.nu[k].mul_(0.99).addcmul_(gk, gk, value=0.01)
            v = {k: gk / (self.nu[k].sqrt() + 1e-8) for k, gk in g.items()}
        return parameter_loss(self.teacher.module, self.theta, v, x_tilde[b], z_s[b].to(dt), lam_s[b], cb)

    def after_step(self, step):
        if self.fit_steps and step + 1 == self.fit_steps:  # the fit is done: student ← its EMA, aux ← student
            with torch.no_grad():
                self.student.load_state_dict(self.ema)
                if self.variant == "alternating":
                    self.aux.load_state_dict(self.student.state_dict())

    def extra_tensors(self):
        if self.variant == "parameter":
            return {f"nu.{k}": v for k, v in self.nu.items()}
        return {f"aux.{k}": v for k, v in self.aux.state_dict().items()}

    def load_extra(self, tensors, state):
        if self.variant == "parameter":
            for k in self.nu:
                self.nu[k].copy_(tensors[f"nu.{k}"])
        else:
            self.aux.load_state_dict({k[len("aux."):]: v for k, v in tensors.items() if k.startswith("aux.")})
