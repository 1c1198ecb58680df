"""What every distillation method shares: teachers, the sigma-space view, the consistency
function's boundary parameterisation, the training loop (checkpoints, resume, log) and the
loader that makes a student run sampleable by ``pixdiff sample`` / ``pixdiff eval``.

A student run is a run folder like a training run's: ``checkpoints/ckpt-<images>/`` written by
``pixdiff.checkpoint.save`` (model = raw student weights, ema = the sampling EMA, optim = Adam's
state plus the method's own tensors under ``extra.``), ``log.jsonl``, ``distill.json`` and the
run lock of ``pixdiff.runlock``. ``state["kind"] = "distilled"`` (a GENIE run: ``"genie"``,
``pixdiff.distill.genie.load_genie``): ``pixdiff.generate.load`` hands it to ``load_student``
(registered in ``pixdiff.generate.RUN_KINDS``), which rebuilds the
student from the saved network config and samples it with the method's own sampler, grid and step
count (``meta["sampler"]``, ``meta["steps"]``, ``meta["grid_kind"]``) unless others are named.

Resume is bit-exact (on CPU) by the trainer's construction (``pixdiff.train``): every random draw
of step k comes from a generator seeded by (seed, k), the data of step k from
``pixdiff.datasets.StepBatches`` (step k's indices), and the checkpoint holds every tensor the next
step reads (student, EMA, Adam, the method's target / teacher weights).

Teachers (``--teacher``): a run folder (any pixdiff diffusion run; ``pixdiff.generate.load_denoiser``,
EMA weights), or the name of a 2-D toy, whose exact denoiser E[x | z] is the teacher: ``mixture``
is ``GaussianMixture.toy_2d`` (the data's exact distribution); ``moons`` / ``swissroll`` are the
empirical distribution of their 8192 training points (a mixture of point masses, whose exact
denoiser is the posterior-weighted mean of the points).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixdiff import checkpoint as ckpt_io
from pixdiff import process
from pixdiff.analytic import GaussianMixture
from pixdiff.atomic import atomic_write_text
from pixdiff.config import TrainConfig
from pixdiff.denoiser import Denoiser
from pixdiff.errors import PixdiffError
from pixdiff.generate import Pipeline, build_denoiser, load_denoiser
from pixdiff.metrics.sliced import SlicedW1

__all__ = ["DistillConfig", "Teacher", "load_teacher", "ConsistencyFunction", "boundary_scalings", "karras_sigmas",
           "sigma_denoiser", "vp_state", "pseudo_huber", "cosine_t_grid", "cosine_logsnr", "ddim_to",
           "distill", "load_student", "DistilledPipeline", "SlicedW1", "ema_update", "TOY_TEACHERS"]

F64 = torch.float64
TOY_TEACHERS = ("mixture", "moons", "swissroll")
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0  # Song et al. 2023, §3 / App. C (Karras et al. 2022 values)


# --- sigma space ---------------------------------------------------------------------------------


def _b(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample [B] coefficient shaped to broadcast over x, in x's dtype."""
    c = torch.as_tensor(c, device=x.device)
    return (c.reshape(-1, *([1] * (x.dim() - 1))) if c.dim() else c).to(x.dtype)


def vp_state(x_sigma: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, λ) of the sigma-space state x_σ = x + s ε: z = x_σ / sqrt(1 + s²) = α x_σ, λ = −2 log s
    (``pixdiff.process``: s = σ/α = exp(−λ/2))."""
    s = torch.as_tensor(s, dtype=F64, device=x_sigma.device).expand(x_sigma.shape[0])
    return x_sigma / _b(torch.sqrt(1.0 + s * s), x_sigma), -2.0 * torch.log(s)


def sigma_denoiser(denoise, cond=None):
    """D(x_σ, s) = denoise(α x_σ, λ(s), cond): the EDM view (Karras et al. 2022, §2) of a VP denoiser,
    with a noise level per sample (s: [B] tensor or a number)."""
    def D(x_sigma: torch.Tensor, s) -> torch.Tensor:
        z, lam = vp_state(x_sigma, s)
        return denoise(z, lam, cond).to(x_sigma.dtype)
    return D


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> torch.Tensor:
    """The consistency models' discretisation, increasing (Song et al. 2023, §3 / App. C; Song &
    Dhariwal 2023, §3.3): σ_i = (σ_min^{1/ρ} + (i−1)/(N−1) (σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ,
    i = 1 … N, float64; σ_1 = σ_min and σ_N = σ_max exactly."""
    if n < 2:
        raise PixdiffError(f"the discretisation needs N >= 2 levels (got {n})")
    a, b = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    s = (a + torch.arange(n, dtype=F64) / (n - 1) * (b - a)) ** rho
    s[0], s[-1] = sigma_min, sigma_max
    return s


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Pseudo-Huber metric per example, d(a, b) = sqrt(‖a − b‖² + c²) − c (Song & Dhariwal 2023, §3.3,
    eq. 8), the norm over all of an example's values."""
    d2 = (a - b).reshape(a.shape[0], -1).pow(2).sum(1)
    return torch.sqrt(d2 + c * c) - c


def mean_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 per example, mean over its values (the consistency models' code's ``l2`` metric)."""
    return (a - b).reshape(a.shape[0], -1).pow(2).mean(1)


# --- the consistency function (Song et al. 2023, §3, App. C) -----------------------------------------


def boundary_scalings(s: torch.Tensor, sigma_min: float = SIGMA_MIN, sigma_data: float = 0.5):
    """(c_skip, c_out, c_in) of the consistency function f_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, σ)
    (Song et al. 2023, eq. in §3 "Parameterization" and App. C):

        c_skip(σ) = σ_d² / ((σ − σ_min)² + σ_d²),   c_out(σ) = σ_d (σ − σ_min) / sqrt(σ_d² + σ²),
        c_in(σ)   = 1 / sqrt(σ² + σ_d²)   (EDM's, Karras et al. 2022, Table 1)

    so that c_skip(σ_min) = 1 and c_out(σ_min) = 0: the boundary condition f(x, σ_min) = x holds
    exactly, whatever the network."""
    d2 = sigma_data * sigma_data
    c_skip = d2 / ((s - sigma_min) ** 2 + d2)
    c_out = sigma_data * (s - sigma_min) / torch.sqrt(d2 + s * s)
    c_in = 1.0 / torch.sqrt(s * s + d2)
    return c_skip, c_out, c_in


class ConsistencyFunction(nn.Module):
    """A consistency function called like a denoiser, ``f(z, logsnr, cond) -> x`` on the VP state
    (what ``pixdiff.samplers.consistency`` calls; its Alg. 1 re-noising uses the same ε = σ_min),
    built from a ``Denoiser``'s backbone F_θ with the boundary parameterisation above. ``sigma``
    evaluates it in sigma space, f(x_σ, s), as the training losses do."""

    def __init__(self, denoiser: Denoiser, sigma_min: float = SIGMA_MIN, sigma_data: float = 0.5):
        super().__init__()
        self.denoiser = denoiser
        self.sigma_min, self.sigma_data = float(sigma_min), float(sigma_data)
        self.num_classes = getattr(denoiser, "num_classes", 0)
        self.null_label = getattr(denoiser, "null_label", None)

    def sigma(self, x_sigma: torch.Tensor, s, cond=None) -> torch.Tensor:
        s = torch.as_tensor(s, dtype=F64, device=x_sigma.device).expand(x_sigma.shape[0])
        c_skip, c_out, c_in = boundary_scalings(s, self.sigma_min, self.sigma_data)
        net = self.denoiser.net
        p = next(net.parameters(), None)
        nd = p.dtype if p is not None else x_sigma.dtype
        out = net((_b(c_in, x_sigma) * x_sigma).to(nd), (-2.0 * torch.log(s)).to(nd), cond).to(x_sigma.dtype)
        return _b(c_skip, x_sigma) * x_sigma + _b(c_out, x_sigma) * out

    def forward(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        lam = torch.as_tensor(logsnr, dtype=F64, device=z.device).expand(z.shape[0])
        x_sigma, s = process.to_sigma_space(z, lam)
        return self.sigma(x_sigma, s, cond)


# --- the cosine t-grid of progressive / moment-matching distillation --------------------------------


def cosine_logsnr(t: torch.Tensor) -> torch.Tensor:
    """λ(t) = −2 log tan(π t / 2) of the cosine schedule α_t = cos(π t/2) (Salimans & Ho 2022, §4;
    Nichol & Dhariwal 2021), t ∈ [0, 1]; t = 1 (λ = −∞) is floored at ``grids.LOGSNR_FLOOR`` and
    t = 0 gives +∞ (data)."""
    from pixdiff.samplers.grids import LOGSNR_FLOOR

    t = torch.as_tensor(t, dtype=F64)
    lam = -2.0 * torch.log(torch.tan(0.5 * math.pi * t))
    lam = torch.where(t <= 0, torch.full_like(lam, math.inf), lam)
    return lam.clamp(min=LOGSNR_FLOOR)


def cosine_t_grid(steps: int) -> torch.Tensor:
    """The K-step sampling grid t_i = 1 − i/K (i = 0 … K) as increasing logSNR ending at +∞: the grid a
    progressive / moment-matching student was distilled on (K = 2^j grids nest)."""
    return cosine_logsnr(1.0 - torch.arange(steps + 1, dtype=F64) / steps)


def ddim_to(z: torch.Tensor, x_hat: torch.Tensor, lam_t: torch.Tensor, lam_s: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM step (Song et al. 2021a, eq. 12, η = 0) from λ_t to λ_s with a level
    per sample: z_s = α_s x̂ + σ_s (z_t − α_t x̂)/σ_t (Salimans & Ho 2022, Alg. 2); λ_s = +∞ gives x̂."""
    a_t, s_t = process.alpha_sigma(lam_t)
    a_s, s_s = process.alpha_sigma(lam_s)
    return _b(a_s, z) * x_hat + _b(s_s / s_t, z) * (z - _b(a_t, z) * x_hat)


def ema_update(target: dict[str, torch.Tensor], model: nn.Module, mu: float) -> None:
    """target ← μ target + (1 − μ) θ for floating-point entries (copied otherwise)."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                target[k].mul_(mu).add_(v.detach().to(target[k].dtype), alpha=1.0 - mu)
            else:
                target[k].copy_(v)


# --- teachers --------------------------------------------------------------------------------------


@dataclass
class Teacher:
    """``denoise(z, logsnr, cond) -> x̂``, and what a student of it needs to know."""

    name: str
    denoise: Any
    data: str  # the training data the student sees (a DataConfig name)
    data_shape: tuple[int, ...]
    num_classes: int
    student_config: TrainConfig  # architecture of a student (the teacher run's; an MLP for the toys)
    meta: dict  # meta of the student's checkpoints (network config, classes, …)
    module: Denoiser | None = None  # the teacher network (None: analytic)
    mixture: GaussianMixture | None = None  # the exact distribution, when known


def toy_mixture(name: str) -> GaussianMixture:
    """The exact distribution behind a 2-D toy teacher (see the module docstring)."""
    if name == "mixture":
        return GaussianMixture.toy_2d(labels=False)
    if name in ("moons", "swissroll"):
        from pixdiff.data import load_toy

        x = load_toy(name).images.to(F64)
        n = x.shape[0]
        return GaussianMixture(torch.ones(n), x, torch.zeros(n, 2, 2))
    raise PixdiffError(f"unknown toy teacher {name!r}; choose from {', '.join(TOY_TEACHERS)} or give a run folder")


def _toy_student_config(data: str, net: dict | None = None) -> TrainConfig:
    d = TrainConfig().to_dict()
    d["data"]["name"] = data
    d["model"]["preset"] = "mlp"
    d["model"]["overrides"] = dict(net or {})
    d["loss"]["bias"] = 0.0
    return TrainConfig.from_dict(d)


def load_teacher(spec: str | Path | None, data: str | None, device, net: dict | None = None) -> Teacher:
    """The teacher ``spec`` names: a 2-D toy (its exact denoiser) or a run folder; None (consistency
    training) needs ``data`` (a 2-D toy: the student is an MLP)."""
    if spec is None or str(spec) in TOY_TEACHERS:
        name = str(spec) if spec is not None else data
        if name not in TOY_TEACHERS:
            raise PixdiffError("without --teacher RUN the student is an MLP on a 2-D toy: give --data "
                               f"{' | '.join(TOY_TEACHERS)} (or --teacher RUN for the architecture of a run)")
        if data not in (None, name):
            raise PixdiffError(f"--teacher {name} is the exact denoiser of the {name} data; --data {data} differs")
        gm = toy_mixture(name)
        cfg = _toy_student_config(name, net)
        den = build_denoiser(cfg, 2, 0)
        meta = {"num_classes": 0, "in_channels": 2, "class_names": None, "net_kind": den.net.config.kind,
                "net_config": asdict(den.net.config), "dataset": name, "data_shape": [2]}
        return Teacher(name if spec is not None else "none", gm.denoise if spec is not None else None, name, (2,), 0,
                       cfg, meta, None, gm)
    den, ck = load_denoiser(spec, "ema", device)
    cfg = TrainConfig.from_dict(ck.state["config"])
    if data not in (None, cfg.data.name):
        d = cfg.to_dict()
        d["data"]["name"] = data
        cfg = TrainConfig.from_dict(d)
    for p in den.parameters():
        p.requires_grad_(False)
    meta = {k: v for k, v in ck.state["meta"].items() if k not in ("sampler", "steps", "grid_kind", "method")}
    shape = tuple(meta.get("data_shape") or (cfg.data.channels, cfg.data.resolution, cfg.data.resolution))
    gm = toy_mixture(cfg.data.name) if cfg.data.name == "mixture" else None
    return Teacher(str(spec), den, cfg.data.name, shape, int(meta["num_classes"]), cfg, meta, den, gm)


# --- the configuration of a distillation run ------------------------------------------------------


@dataclass
class DistillConfig:
    method: str
    teacher: str | None = None  # a run folder or a toy name; None: consistency training (no teacher)
    data: str | None = None  # default: the teacher's data
    steps: int = 1  # the student's sampling steps (its default when sampled)
    images: int = 256_000  # training length in images (examples) seen
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0
    ema: float = 0.999  # per-step decay of the sampling EMA (ramped min(β, (1+n)/(10+n)))
    checkpoint_every: int = 0  # images between checkpoints (0: at the end only)
    log_every: int = 50  # steps between log records
    keep: int = 2
    guidance: float = 0.0  # a run teacher distilled with classifier-free guidance at this weight w
    net: dict = field(default_factory=dict)  # network overrides of a toy student (MLP fields)
    options: dict = field(default_factory=dict)  # the method's own options (see its OPTIONS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        return cls(**d)


def _generator(seed: int, step: int) -> torch.Generator:
    from pixdiff.train import _shard_generator

    return _shard_generator(seed, step, 0)


class Method:
    """One distillation method. Subclasses set ``name``, ``OPTIONS`` and implement ``loss``."""

    name = "?"
    OPTIONS: dict[str, Any] = {}
    sampler = "ddim"  # the student's own sampler (meta "sampler")
    grid_kind: str | None = None  # meta "grid_kind": the student's grid when its own sampler is used
    consistency = False  # the student is a consistency function (ConsistencyFunction around the denoiser)
    run_kind = "distilled"  # state["kind"] of its checkpoints (pixdiff.generate.RUN_KINDS)

    def __init__(self, cfg: DistillConfig, teacher: Teacher, student: Denoiser, device: torch.device):
        unknown = set(cfg.options) - set(self.OPTIONS)
        if unknown:
            raise PixdiffError(f"--method {self.name} has no option(s) {sorted(unknown)}; its options: "
                               f"{', '.join(f'{k}={v}' for k, v in self.OPTIONS.items())}")
        self.cfg, self.teacher, self.student, self.device = cfg, teacher, student, device
        self.opt = {**self.OPTIONS, **cfg.options}
        self.total_steps = max(1, cfg.images // cfg.batch)
        self.ema: dict[str, torch.Tensor] = {}  # the sampling EMA, set by the loop before after_step

    # the student as the sampler calls it
    def model(self, den: Denoiser):
        return den

    def params(self) -> list[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]

    def loss(self, step: int, x: torch.Tensor, cond, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """After the optimizer step ``step`` and the sampling EMA's update (EMA targets, rounds)."""

    def ema_age(self, step: int) -> int:
        """Steps since the sampling EMA started (0: it restarts from the weights of this step)."""
        return step

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        pass

    def extra_state(self) -> dict:
        return {}

    def snapshot(self, step: int) -> int | None:
        """A student finished at the end of ``step`` (progressive rounds): its step count, else None."""
        return None

    def meta(self) -> dict:
        m = {"sampler": self.sampler, "steps": int(self.cfg.steps), "method": self.name}
        if self.grid_kind:
            m["grid_kind"] = self.grid_kind
        if self.consistency:
            m["sigma_min"] = float(self.opt.get("sigma_min", SIGMA_MIN))
        return m


def _methods() -> dict[str, str]:
    from pixdiff.distill import METHODS

    return METHODS


def method_class(name: str) -> type[Method]:
    import importlib

    methods = _methods()
    if name not in methods:
        raise PixdiffError(f"unknown --method {name!r}; available: {', '.join(methods)}")
    module, cls = methods[name].split(":")
    return getattr(importlib.import_module(module), cls)


# --- the loop ------------------------------------------------------------------------------------------


def distill(cfg: DistillConfig, out: str | Path, resume: bool = False, progress: bool = True,
            device: str | torch.device | None = None, stop_at: int | None = None) -> Path:
    """Distil per ``cfg`` into the run folder ``out``; returns the newest checkpoint's path. The folder
    is locked for the life of the process; ``resume`` continues the run there bit-exactly. SIGINT /
    SIGTERM (or ``stop_at`` images, as a test's stand-in for them) checkpoint and stop at the end of
    the current step."""
    from pixdiff.runlock import RunLock
    from pixdiff.train import _check_run_folder

    out = Path(out)
    _check_run_folder(out, resume)
    with RunLock(out):
        ckpt_io.remove_stale_temporaries(out)
        return _distill(cfg, out, resume, progress, device, stop_at)


def _build(cfg: DistillConfig, device) -> tuple[Method, Teacher, TrainConfig]:
    cls = method_class(cfg.method)
    if cfg.teacher is None and cfg.method != "ct":
        raise PixdiffError(f"--method {cfg.method} distils a teacher: give --teacher RUN or a 2-D toy "
                           f"({', '.join(TOY_TEACHERS)}); only ct trains without one")
    teacher = load_teacher(cfg.teacher, cfg.data, device, cfg.net)
    if cfg.guidance:  # the student distils the guided teacher: x̃ = (1 + w) x̂_c − w x̂_u (Ho & Salimans 2022)
        from pixdiff import guidance as guidance_mod

        if teacher.module is None or not teacher.num_classes:
            raise PixdiffError("--guidance needs a class-conditional teacher run")
        teacher.denoise = guidance_mod.classifier_free(teacher.module, float(cfg.guidance))
    scfg = teacher.student_config
    torch.manual_seed(cfg.seed)  # initial weights
    student = build_denoiser(scfg, teacher.meta["in_channels"], teacher.num_classes, teacher.meta.get("net_config"),
                             teacher.meta.get("net_kind")).to(device)
    if teacher.module is not None and cls.name != "ct":  # a student starts from its teacher's weights
        student.load_state_dict(teacher.module.state_dict())
    student.num_classes = teacher.num_classes
    student.train()
    return cls(cfg, teacher, student, device), teacher, scfg


def _distill(cfg: DistillConfig, out: Path, resume: bool, progress: bool, device, stop_at=None) -> Path:
    from pixdiff.datasets import StepBatches, open_training_data
    from pixdiff.generate import resolve_device
    from pixdiff.train import _StopFlag, _truncate_log

    device = resolve_device(device)
    ck = ckpt_io.load(out) if resume and ckpt_io.list_checkpoints(out) else None
    if resume and (out / "distill.json").is_file():
        saved = json.loads((out / "distill.json").read_text())
        if ck is not None:
            saved = ck.state["distill"]["config"]
        mine = cfg.to_dict()
        # the schedules (rounds, curriculum) follow the training length: it may not change either
        diff = [k for k in mine if k not in ("checkpoint_every", "log_every", "keep") and mine[k] != saved.get(k)]
        if diff:
            raise PixdiffError(f"cannot resume {out} with different settings: {', '.join(diff)}")
    method, teacher, scfg = _build(cfg, device)
    student = method.student
    opt = torch.optim.Adam(method.params(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    ema = {k: v.detach().clone().float() for k, v in student.state_dict().items()}
    images = 0
    if ck is not None:
        student.load_state_dict(ck.model)
        ema = {k: v.float().to(device) for k, v in ck.ema.items()}
        extra = {k[len("extra."):]: v.to(device) for k, v in ck.optim.items() if k.startswith("extra.")}
        ckpt_io.optimizer_from_flat(opt, {k: v for k, v in ck.optim.items() if not k.startswith("extra.")},
                                    ck.state["optim"])
        method.load_extra(extra, ck.state["distill"].get("method_state", {}))
        images = int(ck.state["images"])
        _truncate_log(out / "log.jsonl", images)
        if progress:
            print(f"resumed {ck.path} at {images} images", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "distill.json", json.dumps(cfg.to_dict(), indent=1) + "\n")
    ds = open_training_data(scfg.data, "train")
    batches = StepBatches(ds, seed=cfg.seed, batch=cfg.batch, device=device, conditional=teacher.num_classes > 0)

    def save(path_root: Path, imgs: int, meta_extra: dict | None = None, keep: int = cfg.keep) -> Path:
        opt_tensors, opt_meta = ckpt_io.optimizer_to_flat(opt)
        opt_tensors.update({f"extra.{k}": v for k, v in method.extra_tensors().items()})
        meta = {**teacher.meta, **method.meta(), **(meta_extra or {})}
        state = {"kind": method.run_kind, "config": scfg.to_dict(), "meta": meta, "optim": opt_meta, "images": imgs,
                 "step": imgs // cfg.batch, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "distill": {"config": cfg.to_dict(), "method_state": method.extra_state(), "teacher": teacher.name}}
        return ckpt_io.save(path_root, imgs, state, student.state_dict(), ema, opt_tensors, keep)

    log_f = open(out / "log.jsonl", "a")
    from tqdm import tqdm

    bar = tqdm(total=cfg.images, initial=images, unit="img", unit_scale=True, disable=not progress, desc=cfg.method)
    last, t0, losses = None, time.perf_counter(), []
    stop = _StopFlag()
    stop.__enter__()
    try:
        while images < cfg.images and stop.signal is None and (stop_at is None or images < stop_at):
            step = images // cfg.batch
            g = _generator(cfg.seed, step)
            torch.manual_seed(g.initial_seed())  # network dropout
            x, y = batches(step)
            opt.zero_grad(set_to_none=True)  # a network without a gradient this step (moment: the idle one) is not moved
            loss = method.loss(step, x, y, g)
            loss.backward()
            if not torch.isfinite(loss):
                raise PixdiffError(f"the {cfg.method} loss is not finite at step {step}; try a lower --lr")
            opt.step()
            age = method.ema_age(step)  # steps since the sampling EMA (re)started
            if age == 0 and step > 0:
                ema = {k: v.detach().clone().float() for k, v in student.state_dict().items()}
            ema_update(ema, student, min(cfg.ema, (1.0 + age) / (10.0 + age)))
            method.ema = ema
            method.after_step(step)
            images += cfg.batch
            losses.append(float(loss.detach()))
            bar.update(cfg.batch)
            if (step + 1) % cfg.log_every == 0 or images >= cfg.images:
                rec = {"images": images, "step": step + 1, "loss": sum(losses) / len(losses),
                       "seconds": round(time.perf_counter() - t0, 3), **method.extra_state()}
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                losses = []
            done = method.snapshot(step)
            if done is not None:  # a finished student of a progressive round, loadable on its own
                save(out / "students" / f"steps-{done:03d}", images, {"steps": done}, keep=1)
            if cfg.checkpoint_every and images // cfg.checkpoint_every > (images - cfg.batch) // cfg.checkpoint_every:
                last = save(out, images)
    finally:
        stop.__exit__()
        bar.close()
        log_f.close()
    if last is None or not str(last).endswith(f"{images:012d}"):
        last = save(out, images)
    return last


# --- a student run, sampled ------------------------------------------------------------------------


class DistilledPipeline(Pipeline):
    """A student run: ``Pipeline`` with the method's own grid when sampled with its own sampler."""

    def resolve(self, sampler=None, steps=None, options=None) -> tuple[str, int | None, dict]:
        """(sampler, steps, options) a request means: the run's own sampler, step count and grid unless
        named otherwise."""
        options = dict(options or {})
        own, own_steps = self.default_sampler
        if sampler is None:
            sampler, steps = own, (own_steps if steps is None else steps)
        if sampler == own and self.meta.get("grid_kind") == "cosine_t" and "grid" not in options:
            options["grid"] = cosine_t_grid(int(steps if steps is not None else own_steps))
            steps = None
        if sampler == "consistency" and "sigma_eps" not in options and "sigma_min" in self.meta:
            options["sigma_eps"] = float(self.meta["sigma_min"])
        return sampler, steps, options

    def sample(self, n, classes=None, sampler=None, steps=None, guidance=0.0, seed=0, batch=None, **options):
        sampler, steps, options = self.resolve(sampler, steps, options)
        return super().sample(n, classes, sampler, steps, guidance, seed, batch, **options)

    @torch.no_grad()
    def points(self, n: int, steps: int | None = None, seed: int = 0, sampler: str | None = None) -> torch.Tensor:
        """n unconditional samples [n, *shape] (float, not clipped to [−1, 1] as ``sample`` clips
        them), sample i from seed + i: what the 2-D scores read."""
        from pixdiff import samplers

        sampler, steps, options = self.resolve(sampler, steps)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
        return samplers.sample(self.denoiser, (n, *self.data_shape), sampler=sampler, steps=steps, generator=gens,
                               device=self.device, **options).float().cpu()


def load_student(ck: ckpt_io.Checkpoint, device, weights: str = "ema") -> DistilledPipeline:
    """``pixdiff.generate.RUN_KINDS["distilled"]``: a student run as a Pipeline."""
    den, ck = load_denoiser(ck.path, weights, device, checkpoint=ck)
    meta = dict(ck.state["meta"])
    cfg = TrainConfig.from_dict(ck.state["config"])
    model = den
    if meta.get("sampler") == "consistency":
        model = ConsistencyFunction(den, meta.get("sigma_min", SIGMA_MIN), cfg.loss.sigma_data).eval()
    return DistilledPipeline(model, cfg, ck.path, weights, device, meta)


def copy_module(m: nn.Module) -> nn.Module:
    c = copy.deepcopy(m)
    for p in c.parameters():
        p.requires_grad_(False)
    return c
