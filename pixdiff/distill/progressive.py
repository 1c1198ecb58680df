"""Progressive distillation (Salimans & Ho 2022, Alg. 2): halve the sampling steps each round.

Cosine schedule α_t = cos(π t/2), λ_t = −2 log tan(π t/2) (``common.cosine_logsnr``). A round
distils the teacher's 2N-step DDIM sampler on t ∈ {i/2N} into an N-step student: with
t = i/N (i ~ U{1, …, N}), t' = t − 0.5/N, t'' = t − 1/N, z_t = α_t x + σ_t ε,

    z_{t'}  = α_{t'} x̂_η(z_t) + (σ_{t'}/σ_t)(z_t − α_t x̂_η(z_t))         (2 DDIM steps of the teacher η)
    z_{t''} = α_{t''} x̂_η(z_{t'}) + (σ_{t''}/σ_{t'})(z_{t'} − α_{t'} x̂_η(z_{t'}))
    x̃       = (z_{t''} − (σ_{t''}/σ_t) z_t) / (α_{t''} − (σ_{t''}/σ_t) α_t)      (Alg. 2; App. eq. for x̃)
    L_θ     = w(λ_t) ‖x̃ − x̂_θ(z_t)‖²,   w = max(exp(λ_t), 1)   ("truncated SNR" weighting, §4)

x̃ is the x whose single DDIM step from z_t lands on z_{t''}: one student step equals two teacher
steps. After each round the student becomes the teacher and N halves (the student of the next
round starts from it); each finished student is saved as ``OUT/students/steps-NNN`` (a full run
checkpoint). Rounds run from ``start_steps`` teacher steps down to the ``--steps`` student. The
student predicts with its run's parameterisation (v for pixdiff runs, Salimans & Ho's choice; x
with ``--param x`` on a toy). An analytic teacher has no weights to start the student from, so a
first round fits the student to the teacher's denoiser (‖x̂_θ(z_t) − D(z_t)‖², same weighting).
"""

from __future__ import annotations

import math

import torch

from pixdiff import process
from pixdiff.distill.common import Method, copy_module, cosine_logsnr, ddim_to
from pixdiff.errors import PixdiffError

__all__ = ["ProgressiveDistillation", "pd_target", "pd_loss", "truncated_snr", "fit_loss"]


def truncated_snr(lam: torch.Tensor) -> torch.Tensor:
    """w(λ) = max(SNR, 1) = max(exp λ, 1) (Salimans & Ho 2022, §4, "truncated SNR")."""
    return torch.clamp(torch.exp(lam), min=1.0)


def fit_loss(student, teacher, x: torch.Tensor, eps: torch.Tensor, g: torch.Generator, cond=None) -> torch.Tensor:
    """Per-example regression of a student denoiser on an (analytic) teacher's, at t ~ U(0, 1] on the
    cosine schedule: w(λ_t) ‖x̂_θ(z_t) − D(z_t)‖² with the truncated-SNR weight. It gives a student
    network to start from when the teacher has no weights to copy."""
    t = 1.0 - torch.rand(x.shape[0], generator=g, dtype=torch.float64)
    lam = cosine_logsnr(t)
    z = process.diffuse(x, lam, eps)
    with torch.no_grad():
        target = teacher(z, lam, cond).to(x.dtype)
    err = (student(z, lam, cond) - target).reshape(x.shape[0], -1).pow(2).sum(1)
    return truncated_snr(lam).to(x.device, x.dtype) * err


def pd_target(teacher, z_t: torch.Tensor, t: torch.Tensor, n_student: int, cond=None) -> torch.Tensor:
    """x̃ of Alg. 2: two DDIM steps of ``teacher`` (x̂ = teacher(z, λ, cond)) from t to t − 1/N,
    inverted to the x of one DDIM step from t to the same point."""
    t1, t2 = t - 0.5 / n_student, t - 1.0 / n_student
    lam, lam1, lam2 = cosine_logsnr(t), cosine_logsnr(t1), cosine_logsnr(t2)
    x0 = teacher(z_t, lam, cond)
    z1 = ddim_to(z_t, x0, lam, lam1)
    x1 = teacher(z1, lam1, cond)
    z2 = ddim_to(z1, x1, lam1, lam2)
    a_t, s_t = process.alpha_sigma(lam)
    a2, s2 = process.alpha_sigma(lam2)
    r = s2 / s_t  # 0 at t'' = 0: x̃ = z_{t''}
    b = (-1,) + (1,) * (z_t.dim() - 1)
    r, den = r.reshape(b).to(z_t.device, z_t.dtype), (a2 - r * a_t).reshape(b).to(z_t.device, z_t.dtype)
    return (z2 - r * z_t) / den


def pd_loss(student, teacher, x: torch.Tensor, eps: torch.Tensor, i: torch.Tensor, n_student: int,
            cond=None) -> torch.Tensor:
    """Per-example loss of Alg. 2 at t = i/N: w(λ_t) ‖x̃ − x̂_θ(z_t)‖² (sum over values)."""
    t = i.to(torch.float64) / n_student
    lam = cosine_logsnr(t)
    z_t = process.diffuse(x, lam, eps)
    with torch.no_grad():
        target = pd_target(teacher, z_t, t, n_student, cond)
    err = (student(z_t, lam, cond) - target).reshape(x.shape[0], -1).pow(2).sum(1)
    return truncated_snr(lam).to(x.device, x.dtype) * err


class ProgressiveDistillation(Method):
    name = "progressive"
    sampler = "ddim"
    grid_kind = "cosine_t"
    OPTIONS = {"start_steps": 64}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        k, n0 = int(self.cfg.steps), int(self.opt["start_steps"])
        r = math.log2(n0 / k) if k >= 1 and n0 > k else -1
        if r < 1 or r != int(r):
            raise PixdiffError(f"progressive: start_steps ({n0}) must be --steps ({k}) times a power of 2, "
                               "at least twice it")
        self.fit = self.teacher.module is None  # an analytic teacher: round 0 fits the student to it
        # rounds: (student steps N, first step, end step); round 0 (N = 2·start, the fit) when analytic
        ns = ([0] if self.fit else []) + [n0 // 2 ** j for j in range(1, int(r) + 1)]
        per = self.total_steps // len(ns)
        if per < 1:
            raise PixdiffError(f"progressive: {len(ns)} rounds need at least {len(ns)} training steps")
        self.rounds = [(n, j * per, (j + 1) * per if j < len(ns) - 1 else self.total_steps) for j, n in enumerate(ns)]
        self.teacher_den = None  # the previous round's student (None: the original teacher)

    def round_of(self, step: int) -> int:
        return next(j for j, (_, lo, hi) in enumerate(self.rounds) if lo <= step < hi) if step < self.total_steps \
            else len(self.rounds) - 1

    def _teacher_fn(self):
        return self.teacher.denoise if self.teacher_den is None else self.teacher_den

    def loss(self, step, x, cond, g):
        n, _, _ = self.rounds[self.round_of(step)]
        eps = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        if n == 0:  # round 0: fit D_θ to the analytic teacher
            return fit_loss(self.student, self.teacher.denoise, x, eps, g, cond).mean()
        i = torch.randint(1, n + 1, (x.shape[0],), generator=g)
        return pd_loss(self.student, self._teacher_fn(), x, eps, i, n, cond).mean()

    def after_step(self, step):
        j = self.round_of(step)
        n, _, hi = self.rounds[j]
        if step + 1 == hi and j < len(self.rounds) - 1:
            if n == 0:  # after the fit: the student starts from its EMA, the teacher stays analytic
                with torch.no_grad():
                    self.student.load_state_dict(self.ema)
            else:
                self._promote(self.ema)

    def _promote(self, weights=None):
        """The finished student (its EMA weights) becomes the next round's teacher and the next
        student's start (Alg. 2: θ ← η)."""
        if weights is not None:
            with torch.no_grad():
                self.student.load_state_dict(weights)
        self.teacher_den = copy_module(self.student).eval()

    def ema_age(self, step):
        return step - self.rounds[self.round_of(step)][1]  # the sampling EMA restarts each round

    def snapshot(self, step):
        j = self.round_of(step)
        n, _, hi = self.rounds[j]
        return n if step + 1 == hi and n != 0 else None

    def extra_tensors(self):
        return {} if self.teacher_den is None else {f"teacher.{k}": v for k, v in self.teacher_den.state_dict().items()}

    def load_extra(self, tensors, state):
        t = {k[len("teacher."):]: v for k, v in tensors.items() if k.startswith("teacher.")}
        if t:
            self._promote()
            self.teacher_den.load_state_dict(t)

    def extra_state(self):
        return {"rounds": [n for n, _, _ in self.rounds]}
