"""Post-hoc EMA: choose the EMA length after training (Karras et al. 2024, EDM2, §3 and App. C).

A power-function EMA with exponent γ averages the training trajectory θ(τ) with the profile

    p_{t,γ}(τ) = (γ + 1) τ^γ / t^(γ+1)   on 0 ≤ τ ≤ t                   (App. C.1)

whose width relative to its length is σ_rel = std(p) / t. With x = τ/t the profile is the density
(γ+1) x^γ on [0, 1], of mean (γ+1)/(γ+2) and second moment (γ+1)/(γ+3), so

    σ_rel² = (γ + 1) / ((γ + 2)² (γ + 3))                               (App. C.1, eq. 123)

and γ from σ_rel is the largest real root of γ³ + 7γ² + (16 − σ_rel⁻²) γ + (12 − σ_rel⁻²) = 0
(eq. 126, Alg. 2). Unlike a fixed-decay EMA the profile scales with the training time, so one
σ_rel means "the last ~σ_rel of training" at every t.

It is tracked in training with the per-step decay

    θ̂_t = β_t θ̂_{t−1} + (1 − β_t) θ_t,   β_t = (1 − 1/t)^(γ+1),   t = 1, 2, …   (eq. 127)

Unrolled, θ̂_t = Σ_{τ=1..t} w_τ θ_τ with w_τ = (τ^(γ+1) − (τ−1)^(γ+1)) / t^(γ+1): the products of
β telescope to (τ/t)^(γ+1), the weights sum to 1 and β_1 = 0 forgets the initial weights. Each w_τ
is exactly the integral of p_{t,γ} over (τ−1, τ], so the discrete EMA *is* the continuous profile
applied to the step-wise constant trajectory — which is why the continuous inner products below
reconstruct it well.

Post-hoc reconstruction (App. C.2–C.3): training stores snapshots θ̂_i of two EMAs (e.g. σ_rel
0.05 and 0.10) at times t_i. Any other profile p* at a snapshot time is approximated by
Σ_i x_i p_i with x minimising ‖p* − Σ_i x_i p_i‖² in L²(0, ∞): the normal equations A x = b with
A_ij = ⟨p_i, p_j⟩ and b_i = ⟨p_i, p*⟩, where

    ⟨p_{ta,γa}, p_{tb,γb}⟩ = (γa+1)(γb+1) m^(γa+γb+1) / ((γa+γb+1) ta^(γa+1) tb^(γb+1)),
    m = min(ta, tb)                                                      (eq. 151, Alg. 3)

(the integral of the product over [0, m]). Then the same x combines the stored weights:
θ̂* = Σ_i x_i θ̂_i, because the EMA is linear in the trajectory. The solve is in float64.

In pixdiff: ``optim.posthoc_ema`` (σ_rel values) and ``optim.posthoc_every_images`` make
``pixdiff.train`` keep one ``PowerEMA`` per σ_rel and write ``RUN/posthoc/snap-<images>.safetensors``;
``reconstruct_run`` / ``export_posthoc`` read them back. docs/posthoc_ema.md has the details.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from pixdiff.errors import PixdiffError

__all__ = ["SIGMA_REL_MAX", "check_sigma_rel", "sigma_rel_to_gamma", "gamma_to_sigma_rel", "power_beta",
           "power_weights", "profile_inner", "solve_coefficients", "fit_error", "PowerEMA", "reconstruct",
           "SNAPSHOT_FORMAT", "snapshot_path", "write_snapshot", "read_snapshot_info", "reconstruct_run",
           "export_posthoc", "to_flat", "load_flat", "FLAT_PREFIX"]

# γ = 0, the plain average of the whole run: the widest profile with γ ≥ 0. Past it the cubic's
# largest root is negative and the profile weights the first steps most, which no one wants.
SIGMA_REL_MAX = 1.0 / math.sqrt(12.0)
SNAPSHOT_FORMAT = "pixdiff-posthoc-1"
FLAT_PREFIX = "posthoc."  # checkpoint keys of the PowerEMA tensors (beside the optimizer's "<idx>.<name>")


# --- the profile ---------------------------------------------------------------------------------


def check_sigma_rel(sigma_rel: float, what: str = "sigma_rel") -> float:
    """``sigma_rel`` as a float in (0, 1/√12]; anything else (nan, inf, ≤ 0, wider than the plain
    average) is a ``PixdiffError`` naming ``what``."""
    try:
        s = float(sigma_rel)
    except (TypeError, ValueError):
        raise PixdiffError(f"{what} must be a number (got {sigma_rel!r})") from None
    if not (math.isfinite(s) and 0.0 < s <= SIGMA_REL_MAX * (1 + 1e-12)):
        raise PixdiffError(f"{what} must lie in (0, {SIGMA_REL_MAX:.5f}] (1/√12 is the plain average of "
                           f"the run; EDM2 uses 0.05 and 0.10) (got {sigma_rel})")
    return min(s, SIGMA_REL_MAX)


def gamma_to_sigma_rel(gamma: float) -> float:
    """σ_rel of the power-function profile of exponent γ ≥ 0 (Karras et al. 2024, App. C.1, eq. 123)."""
    g = float(gamma)
    if not (math.isfinite(g) and g >= 0.0):
        raise PixdiffError(f"gamma must be a finite number >= 0 (got {gamma})")
    return math.sqrt((g + 1.0) / ((g + 2.0) ** 2 * (g + 3.0)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """γ ≥ 0 with ``gamma_to_sigma_rel(γ) = sigma_rel`` (Karras et al. 2024, App. C.1, eq. 126 and
    Alg. 2): the largest real root of γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²), polished by Newton steps
    on σ_rel²(γ) so the round trip holds to float64 rounding."""
    s = check_sigma_rel(sigma_rel)
    k = s ** -2
    roots = np.roots([1.0, 7.0, 16.0 - k, 12.0 - k])
    g = float(max(r.real for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r.real))))
    g = max(g, 0.0)
    for _ in range(3):  # np.roots goes through an eigenvalue solve: a few ulps off for large γ
        f = (g + 1) / ((g + 2) ** 2 * (g + 3)) - s * s
        df = ((g + 2) * (g + 3) - (g + 1) * (2 * (g + 3) + (g + 2))) / ((g + 2) ** 3 * (g + 3) ** 2)
        if df == 0:
            break
        g = max(g - f / df, 0.0)
    return g


def power_beta(t: int, gamma: float) -> float:
    """The decay of step ``t`` (1-based) of a power-function EMA (Karras et al. 2024, eq. 127).
    β_1 = 0: the first step replaces the initial weights entirely."""
    if t < 1:
        raise PixdiffError(f"the power-function EMA counts steps from t = 1 (got t = {t})")
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


def power_weights(t: int, gamma: float) -> np.ndarray:
    """The weights w_τ (τ = 1 … t) of θ_τ in θ̂_t: (τ^(γ+1) − (τ−1)^(γ+1)) / t^(γ+1), float64.
    Written with ratios τ/t ≤ 1 so a large γ cannot overflow."""
    tau = np.arange(1, t + 1, dtype=np.float64)
    return (tau / t) ** (gamma + 1.0) - ((tau - 1.0) / t) ** (gamma + 1.0)


def profile_inner(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """⟨p_{t_a,γ_a}, p_{t_b,γ_b}⟩ = ∫ p_a p_b dτ (Karras et al. 2024, App. C.3, eq. 151), broadcast
    over numpy arrays, float64. Computed as (γa+1)(γb+1)/(γa+γb+1) · (m/ta)^(γa+1) (m/tb)^(γb+1) / m
    with m = min(ta, tb): every power is of a ratio ≤ 1, so γ log t never overflows."""
    ta, ga, tb, gb = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b)))
    m = np.minimum(ta, tb)
    return (ga + 1.0) * (gb + 1.0) / (ga + gb + 1.0) * (m / ta) ** (ga + 1.0) * (m / tb) ** (gb + 1.0) / m


def solve_coefficients(ts: Sequence[float], gammas: Sequence[float], t_target: float,
                       gamma_target: float) -> np.ndarray:
    """x minimising ‖p_{t*,γ*} − Σ_i x_i p_{t_i,γ_i}‖² (Karras et al. 2024, App. C.3, Alg. 3), float64.

    The normal equations are solved directly: A is a Gram matrix of distinct profiles, symmetric
    positive definite though ill-conditioned (~1e5 for 2 × 40 snapshots), and a backward-stable
    solve still gives a residual at float64 rounding. The result is rescaled to sum to 1: the
    profiles all have unit mass, so this only removes the solve's rounding from the total, and a
    parameter that never moved is then reconstructed exactly."""
    ts, gs = np.asarray(ts, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != gs.shape or not len(ts):
        raise PixdiffError("solve_coefficients needs one or more snapshots, each with a time and a gamma")
    A = profile_inner(ts[:, None], gs[:, None], ts[None, :], gs[None, :])
    b = profile_inner(ts, gs, t_target, gamma_target)
    try:
        x = np.linalg.solve(A, b)
    except np.linalg.LinAlgError:  # duplicate snapshots make A singular; the minimum-norm fit is then the answer
        x = np.linalg.lstsq(A, b, rcond=None)[0]
    return x / x.sum()


def fit_error(ts: Sequence[float], gammas: Sequence[float], x: Sequence[float], t_target: float,
              gamma_target: float) -> float:
    """‖p* − Σ x_i p_i‖ / ‖p*‖: how far the combined profile is from the requested one. It tracks
    the error of the reconstructed weights: on tests/test_posthoc_ema.py's random walk (0.05/0.10
    snapshots every 1/40 of the run) 2.6e-2 here for 5.4e-3 there at σ_rel 0.02, 6.3e-4 for 3.4e-5
    at σ_rel 0.07."""
    ts, gs, x = (np.asarray(v, dtype=np.float64) for v in (ts, gammas, x))
    A = profile_inner(ts[:, None], gs[:, None], ts[None, :], gs[None, :])
    b = profile_inner(ts, gs, t_target, gamma_target)
    pp = float(profile_inner(t_target, gamma_target, t_target, gamma_target))
    return math.sqrt(max(pp - 2.0 * float(x @ b) + float(x @ A @ x), 0.0) / pp)


# --- tracking --------------------------------------------------------------------------------------


class PowerEMA:
    """A power-function EMA θ̂_t of a dict of tensors (Karras et al. 2024, §3, App. C.1, eq. 127).

    ``PowerEMA(params, sigma_rel=0.05)`` (or ``gamma=``) starts from a copy of ``params`` at t = 0;
    ``update(params, t)`` applies step t's decay β_t = (1 − 1/t)^(γ+1). ``t`` defaults to the
    previous t + 1; a trainer that skips a non-finite step passes its real step number, which is
    exact: the skipped step left the weights unchanged, and the EMA then averages them twice.
    Floating-point tensors are averaged in their own dtype; others (integer buffers) are copied.
    ``state_dict`` / ``load_state_dict`` restore it bit for bit."""

    def __init__(self, params: Mapping[str, torch.Tensor], sigma_rel: float | None = None,
                 gamma: float | None = None):
        if (sigma_rel is None) == (gamma is None):
            raise PixdiffError("give PowerEMA one of sigma_rel or gamma")
        self.gamma = sigma_rel_to_gamma(sigma_rel) if gamma is None else float(gamma)
        self.sigma_rel = gamma_to_sigma_rel(self.gamma)  # also checks gamma
        self.t = 0
        self.ema = {k: v.detach().clone() for k, v in params.items()}

    @torch.no_grad()
    def update(self, params: Mapping[str, torch.Tensor], t: int | None = None) -> float:
        """θ̂ ← β_t θ̂ + (1 − β_t) θ; returns β_t."""
        t = self.t + 1 if t is None else int(t)
        if t <= self.t:
            raise PixdiffError(f"PowerEMA steps must increase (at t = {self.t}, got t = {t})")
        beta = power_beta(t, self.gamma)
        ema, new = [], []
        for k, e in self.ema.items():
            v = params[k]
            if e.dtype.is_floating_point:
                ema.append(e)
                new.append(v if v.dtype == e.dtype else v.to(e.dtype))
            else:
                e.copy_(v)
        if ema:  # one fused multiply and add, as pixdiff.train.ema_update
            torch._foreach_mul_(ema, beta)
            torch._foreach_add_(ema, new, alpha=1.0 - beta)
        self.t = t
        return beta

    def state_dict(self) -> dict:
        return {"gamma": self.gamma, "sigma_rel": self.sigma_rel, "t": self.t,
                "ema": {k: v.detach().clone() for k, v in self.ema.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        """Restore ``state_dict()``'s values into this EMA's tensors (device kept, values exact)."""
        ema = state["ema"]
        if set(ema) != set(self.ema):
            missing, extra = sorted(set(self.ema) - set(ema)), sorted(set(ema) - set(self.ema))
            raise PixdiffError(f"PowerEMA state does not fit: missing {missing[:3]}, unexpected {extra[:3]}")
        for k, v in ema.items():
            if v.shape != self.ema[k].shape or v.dtype != self.ema[k].dtype:
                raise PixdiffError(f"PowerEMA state of {k} is {v.dtype}{tuple(v.shape)}, expected "
                                   f"{self.ema[k].dtype}{tuple(self.ema[k].shape)}")
            self.ema[k].copy_(v)
        self.gamma, self.t = float(state["gamma"]), int(state["t"])
        self.sigma_rel = gamma_to_sigma_rel(self.gamma)


def to_flat(emas: Sequence[PowerEMA]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(tensors keyed ``posthoc.<i>.<name>``, JSON list of {sigma_rel, gamma, t}) of a trainer's EMAs,
    for its checkpoint."""
    tensors = {f"{FLAT_PREFIX}{i}.{k}": v.detach().cpu().contiguous().clone()
               for i, e in enumerate(emas) for k, v in e.ema.items()}
    return tensors, [{"sigma_rel": e.sigma_rel, "gamma": e.gamma, "t": e.t} for e in emas]


def load_flat(emas: Sequence[PowerEMA], tensors: Mapping[str, torch.Tensor], meta: Sequence[dict]) -> None:
    """Inverse of ``to_flat`` into existing EMAs (same order)."""
    if len(meta) != len(emas):
        raise PixdiffError(f"the checkpoint holds {len(meta)} post-hoc EMA(s), the run wants {len(emas)}")
    for i, (e, m) in enumerate(zip(emas, meta)):
        pre = f"{FLAT_PREFIX}{i}."
        e.load_state_dict({"gamma": m["gamma"], "t": m["t"],
                           "ema": {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}})


# --- reconstruction ---------------------------------------------------------------------------------


def _target(snapshots_t: Sequence[int], t_target: int | None) -> int:
    if t_target is None:
        return max(snapshots_t)
    if t_target not in set(snapshots_t):
        # the snapshots before it end earlier and those after it have seen later weights: neither
        # spans exactly [0, t_target] (EDM2's reconstruct_phema refuses it too)
        raise PixdiffError(f"t_target {t_target} is not a snapshot time; choose one of "
                           f"{sorted(set(snapshots_t))[-5:]} (last 5 shown)")
    return int(t_target)


def _plan(ts: Sequence[int], gammas: Sequence[float], sigma_rel_target: float,
          t_target: int | None) -> tuple[int, float, list[int], np.ndarray | None, int | None]:
    """(t*, γ*, indices of the snapshots used, their coefficients, or the index of a stored
    snapshot that is the target itself)."""
    if not len(ts):
        raise PixdiffError("no post-hoc EMA snapshots to reconstruct from")
    g_target = sigma_rel_to_gamma(sigma_rel_target)
    t_star = _target(ts, t_target)
    for i, (t, g) in enumerate(zip(ts, gammas)):  # a stored profile: itself, bit for bit
        if t == t_star and abs(g - g_target) <= 1e-9 * max(1.0, g_target):
            return t_star, g_target, [i], None, i
    use, seen = [], set()
    for i, (t, g) in enumerate(zip(ts, gammas)):
        if 0 < t <= t_star and (t, g) not in seen:  # a later snapshot has averaged weights past t*
            use.append(i)
            seen.add((t, g))
    x = solve_coefficients([ts[i] for i in use], [gammas[i] for i in use], t_star, g_target)
    return t_star, g_target, use, x, None


def _combine(get, use: Sequence[int], x: np.ndarray) -> dict[str, torch.Tensor]:
    """Σ x_i θ̂_i over the snapshots ``get(i)`` (loaded one at a time), accumulated in float64 and
    returned in the snapshots' dtype; non-floating tensors come from the newest snapshot used."""
    acc: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for n, (i, c) in enumerate(zip(use, x)):
        sd = get(i)
        for k, v in sd.items():
            if v.dtype.is_floating_point:
                dtypes[k] = v.dtype
                term = v.detach().to(torch.float64) * float(c)
                acc[k] = term if k not in acc else acc[k].add_(term)
            elif n == len(use) - 1 or k not in acc:
                acc[k], dtypes[k] = v.detach().clone(), v.dtype
    return {k: v.to(dtypes[k]) for k, v in acc.items()}


def reconstruct(snapshots: Sequence[tuple[int, float, Mapping[str, torch.Tensor]]], sigma_rel_target: float,
                t_target: int | None = None) -> dict[str, torch.Tensor]:
    """The power-function EMA of width ``sigma_rel_target`` at time ``t_target`` (default: the
    newest snapshot; otherwise one of the snapshot times), from ``(t, gamma, state_dict)``
    snapshots of other EMAs of the same run (Karras et al. 2024, App. C.2–C.3).

    Only snapshots with t ≤ t_target are used. A stored (t, γ) equal to the target is returned as
    is (a copy); anything else is Σ x_i θ̂_i with ``solve_coefficients``' x."""
    snapshots = sorted(snapshots, key=lambda s: s[0])
    ts, gs = [int(s[0]) for s in snapshots], [float(s[1]) for s in snapshots]
    _, _, use, x, same = _plan(ts, gs, sigma_rel_target, t_target)
    if same is not None:
        return {k: v.detach().clone() for k, v in snapshots[same][2].items()}
    return _combine(lambda i: snapshots[i][2], use, x)


# --- snapshots of a run ------------------------------------------------------------------------------


def snapshot_path(run_dir: str | Path, images: int) -> Path:
    return Path(run_dir) / "posthoc" / f"snap-{images:012d}.safetensors"


def write_snapshot(path: str | Path, emas: Sequence[PowerEMA], images: int, info: dict | None = None) -> Path:
    """One file with every EMA of ``emas`` (keys ``<i>/<name>``) and, in the safetensors metadata
    key ``pixdiff_posthoc``, {format, images, t, emas: [{sigma_rel, gamma}], **info} (the trainer
    puts the run's config and network meta there, so the files alone make a model). Atomic."""
    from safetensors.torch import save_file

    from pixdiff.atomic import atomic_write

    ts = {e.t for e in emas}
    if len(ts) != 1:
        raise PixdiffError(f"the EMAs of one snapshot must be at one step (got t = {sorted(ts)})")
    doc = {**(info or {}), "format": SNAPSHOT_FORMAT, "images": int(images), "t": ts.pop(),
           "emas": [{"sigma_rel": e.sigma_rel, "gamma": e.gamma} for e in emas]}
    tensors = {f"{i}/{k}": v.detach().cpu().contiguous().clone() for i, e in enumerate(emas) for k, v in e.ema.items()}
    return atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata={"pixdiff_posthoc": json.dumps(doc)}))


def read_snapshot_info(path: str | Path) -> dict:
    """The metadata of a snapshot file (no tensors read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("pixdiff_posthoc")
    except (OSError, ValueError, RuntimeError) as e:  # safetensors' errors derive from these
        raise PixdiffError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    try:
        doc = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
        raise PixdiffError(f"{path} is not a pixdiff post-hoc EMA snapshot")
    return doc


def _snapshot_files(run_dir: str | Path) -> list[Path]:
    folder = Path(run_dir) / "posthoc"
    files = sorted(folder.glob("snap-*.safetensors")) if folder.is_dir() else []
    if not files:
        raise PixdiffError(f"no post-hoc EMA snapshots in {folder} (train with optim.posthoc_ema, "
                           "`pixdiff train --posthoc-ema 0.05 0.1`)")
    return files


def reconstruct_run(run_dir: str | Path, sigma_rel: float, t_target: int | None = None) -> tuple[dict, dict]:
    """(weights, info) of ``sigma_rel`` from the snapshots in ``run_dir/posthoc``, reading one file
    at a time. ``info``: sigma_rel, gamma, t, images, the snapshots used, the profile fit error
    (``fit_error``), and the newest snapshot's metadata (config, meta) under ``snapshot``."""
    from safetensors.torch import load_file

    files = _snapshot_files(run_dir)
    infos = [read_snapshot_info(f) for f in files]
    entries = [(fi, j, int(d["t"]), float(e["gamma"])) for fi, d in enumerate(infos) for j, e in enumerate(d["emas"])]
    ts, gs = [e[2] for e in entries], [e[3] for e in entries]
    t_star, g_star, use, x, same = _plan(ts, gs, sigma_rel, t_target)
    cache: dict[int, dict] = {}

    def get(i: int) -> dict:
        fi, j, _, _ = entries[i]
        if fi not in cache:
            cache.clear()  # one file in memory at a time (entries of one file are adjacent)
            cache[fi] = load_file(str(files[fi]))
        pre = f"{j}/"
        return {k[len(pre):]: v for k, v in cache[fi].items() if k.startswith(pre)}

    if same is not None:
        weights, use, x = get(same), [same], np.ones(1)
    else:  # ``use`` is in file order, so each file is read once
        weights = _combine(get, use, x)
    newest = max(entries[i][0] for i in use)
    info = {"sigma_rel": float(sigma_rel), "gamma": g_star, "t": t_star,
            "images": int(infos[newest]["images"]) if infos[newest]["t"] == t_star else None,
            "snapshots": len(use), "fit_error": fit_error([ts[i] for i in use], [gs[i] for i in use], x, t_star, g_star),
            "snapshot": infos[newest]}
    return weights, info


def export_posthoc(run_dir: str | Path, sigma_rel: float, out: str | Path, t_target: int | None = None) -> Path:
    """Reconstruct ``sigma_rel`` (``reconstruct_run``) and write it as a weights file that
    ``pixdiff.load`` / ``pixdiff sample --ckpt`` read, in ``pixdiff.export``'s format (the run's
    config in the metadata), with a ``posthoc`` record of what was reconstructed."""
    from pixdiff.export import write_weights_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise PixdiffError(f"the weights file must end in .safetensors (got {out})")
    weights, info = reconstruct_run(run_dir, sigma_rel, t_target)
    snap = info.pop("snapshot")
    if "config" not in snap or "meta" not in snap:
        raise PixdiffError(f"the snapshots in {Path(run_dir) / 'posthoc'} carry no run config; cannot write a model")
    return write_weights_file(out, weights, {"weights": "ema", "images": info["images"],
                                             "source": str(Path(run_dir) / "posthoc"), "config": snap["config"],
                                             "meta": snap["meta"], "posthoc": info})
