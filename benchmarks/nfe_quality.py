"""Quality per NFE: how close each sampler's samples are to the data distribution, against the number
of denoiser evaluations (NFE), for every pixdiff sampler and for diffusers' schedulers as the peer.

(a) Default: the analytic 2-D Gaussian mixture (``GaussianMixture.toy_2d``) driven by its *exact*
    denoiser, so the only errors are the sampler's discretisation and the finite sample. Quality is
    the sliced Wasserstein distance (SW) of N samples to the true mixture (1-D W1 between sorted
    projections and the mixture's exact projected quantiles, mean over evenly spaced directions),
    averaged over a few independent runs: SW of 10k 2-D samples fluctuates by ±30 % from seed to
    seed. The noise floor is the same score for true samples (the SW of two independent true samples
    is printed too; it is ≈ √2 × larger).
    diffusers' schedulers see the same denoiser as an ε-model on their discrete timesteps
    (DDPM linear β table, T = 1000): ε = (z − α x̂)/σ at the timestep's λ, where a fractional
    timestep (Euler, Heun) gets σ_ve interpolated linearly in t, as diffusers interpolates its sigmas.
(b) ``--ckpt DIR``: the same sweep for a trained digits checkpoint (``pixdiff.generate.load_denoiser``,
    EMA weights), quality = Fréchet distance in the digits feature space (``digits_extractor``) against
    the training split's statistics; noise floor = FD of the held-out test split (N = 360).

Target (issue 10): the best pixdiff sampler at 10 NFE is within 10 % of its own 250-NFE quality,
measured relative to the noise floor: SW(10) − SW(250) ≤ 0.1 × floor (the plain ratio SW(10)/SW(250)
is printed too).

    python benchmarks/nfe_quality.py [--n 10000] [--replicas 4] [--nfe 5 10 ...] [--threads 1]
        [--plot docs/nfe_quality.png] [--append docs/benchmarks.md]
    python benchmarks/nfe_quality.py --ckpt runs/demo [--n 360] [--nfe 5 10 20 50 100] [--samplers heun ...]
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _report import append_section, machine  # noqa: E402 - benchmarks/ is on sys.path

from pixdiff import samplers as S
from pixdiff import schedules
from pixdiff.analytic import GaussianMixture
from pixdiff.metrics.sliced import SlicedW1

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]

def two_sample_sw(x: torch.Tensor, y: torch.Tensor, dirs: torch.Tensor) -> float:
    return float((torch.sort(x.to(F64) @ dirs, 0).values - torch.sort(y.to(F64) @ dirs, 0).values).abs().mean())


# --- which steps hit an NFE target ----------------------------------------------------------------------

# name -> (sampler, options for the analytic toy, options for images, NFE(steps) family)
PIXDIFF = {
    "ddpm": ("ddpm", {}, {}, "1"),
    "ddim": ("ddim", {}, {}, "1"),
    # SiD2 clips x̂ to [-1, 1] by default; the toy mixture reaches beyond ±1, so no clipping there.
    "sid2_ddpm": ("sid2_ddpm", {"clip_x": None}, {}, "1"),
    "euler": ("euler", {}, {}, "1"),
    "heun": ("heun", {}, {}, "2"),
    "edm": ("edm", {}, {}, "2"),
    "dpm_solver-2": ("dpm_solver", {"order": 2}, {"order": 2}, "dpm2"),
    "dpm_solver-3": ("dpm_solver", {"order": 3}, {"order": 3}, "dpm3"),
    "dpmpp_2m": ("dpmpp_2m", {}, {}, "1"),
    # Not a default: the same solver on λ-uniform steps over [−10, 8] (DPM-Solver's own spacing, range cut
    # to where this toy's x̂ changes), to show how much of the few-step error is the grid's.
    "dpmpp_2m-uniform_logsnr": ("dpmpp_2m", {"grid": "uniform_logsnr", "schedule": schedules.CosineSchedule(-10.0, 8.0)},
                                {"grid": "uniform_logsnr", "schedule": schedules.CosineSchedule(-10.0, 8.0)}, "1"),
    # issue 15: k-diffusion / diffusers solvers at their defaults
    "lms": ("lms", {}, {}, "1"),
    "dpm2_ancestral": ("dpm2_ancestral", {}, {}, "2"),
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", {}, {}, "2"),
    "dpmpp_sde": ("dpmpp_sde", {}, {}, "2"),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {}, {}, "1"),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {}, {}, "1"),
    "unipc": ("unipc", {}, {}, "1"),
    "deis": ("deis", {}, {}, "1"),
    # Not defaults: UniPC on a grid fitted to this mixture (``samplers.fitgrid.fit_grid``, fitted on 512
    # starting noises of seed 12345, scored on seeds 0–3; fitted up to 20 steps, longer grids are the
    # 20-step fit interpolated log-linearly), toy only.
    "unipc-fitted": ("unipc", {"grid": "fitted"}, None, "1"),
    "euler_maruyama": ("euler_maruyama", {}, {}, "1"),
    "pc": ("pc", {}, {}, "2"),
    "langevin": ("langevin", {}, {}, "langevin"),
}
STOCHASTIC = {"ddpm", "sid2_ddpm", "edm", "euler_maruyama", "pc", "langevin", "dpm2_ancestral", "dpmpp_2s_ancestral",
              "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde",
              "DDPMScheduler", "EulerAncestralDiscreteScheduler"}
# The consistency sampler is left out: it calls a consistency function f (an ODE map), not a denoiser;
# driven by E[x|z] it returns the posterior mean, not samples.


def steps_for(family: str, nfe: int) -> tuple[int, dict]:
    """The largest steps whose NFE ≤ the target (the run's return_nfe is what gets reported)."""
    if family == "1":  # one call per interval
        return max(1, nfe), {}
    if family == "2":  # Heun-like: 2N − 1; pc with one corrector: (N − 1)·2 + 1
        return max(1, (nfe + 1) // 2), {}
    if family in ("dpm2", "dpm3"):  # order·(N − 1) + 1
        k = int(family[-1])
        return max(1, (nfe - 1) // k + 1), {}
    if family == "langevin":  # L levels × T steps + 1 final denoising step
        levels = min(10, max(1, nfe - 1))
        return levels, {"steps_per_level": max(1, (nfe - 1) // levels)}
    raise ValueError(family)


# --- diffusers' schedulers as the peer ------------------------------------------------------------------


class EpsModel:
    """A pixdiff denoiser seen as diffusers' ε-model on a discrete (T = 1000) chain: timestep t (float)
    → σ_ve(t) by linear interpolation of the table (diffusers' own sigma interpolation) → λ = −2 log σ_ve;
    ε̂ = (z − α x̂)/σ. Counts its calls (NFE)."""

    def __init__(self, denoiser, alphas_cumprod: torch.Tensor):
        ab = alphas_cumprod.double().numpy()
        self.sig = np.sqrt((1 - ab) / ab)
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, z, t, cond=None):
        self.calls += 1
        s_ve = float(np.interp(float(t), np.arange(len(self.sig)), self.sig))
        lam = -2.0 * math.log(s_ve)
        a, s = math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))
        x_hat = self.denoiser(z, torch.full((z.shape[0],), lam, dtype=F64), cond)
        return (z - a * x_hat) / s


def diffusers_peers():
    """name -> (constructor, NFE family); only those this diffusers has."""
    import diffusers

    common = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    want = {
        "DDIMScheduler": (dict(clip_sample=False, set_alpha_to_one=True), "1"),
        "EulerDiscreteScheduler": ({}, "1"),
        "HeunDiscreteScheduler": ({}, "2"),
        "DPMSolverMultistepScheduler": ({}, "1"),
        "UniPCMultistepScheduler": ({}, "1"),
        "DDPMScheduler": (dict(clip_sample=False), "1"),
        "EulerAncestralDiscreteScheduler": ({}, "1"),
    }
    out = {}
    for name, (kw, fam) in want.items():
        cls = getattr(diffusers, name, None)
        if cls is not None:
            out[name] = (lambda cls=cls, kw=kw: cls(**common, **kw), fam)
    return out


@torch.no_grad()
def run_diffusers(make, denoiser, shape, steps: int, seed: int, cond=None, batch: int | None = None):
    sch = make()
    g = torch.Generator().manual_seed(seed)
    ab = sch.alphas_cumprod
    eps_model = EpsModel(denoiser, ab)
    noise = torch.randn(shape, generator=g)
    outs = []
    n = shape[0]
    batch = batch or n
    nfe = 0
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        sch = make()
        sch.set_timesteps(steps)
        eps_model.calls = 0
        x = noise[lo:hi] * sch.init_noise_sigma
        c = None if cond is None else cond[lo:hi]
        kw = {"generator": g} if "generator" in inspect.signature(sch.step).parameters else {}
        for t in sch.timesteps:
            eps = eps_model(sch.scale_model_input(x, t), t, c)
            x = sch.step(eps, t, x, **kw).prev_sample
        outs.append(x)
        nfe = eps_model.calls
    return torch.cat(outs), nfe


FIT_MAX_STEPS = 20
_FITTED: dict = {}


def fitted_grid(denoiser, sampler: str, steps: int, opts: dict) -> torch.Tensor:
    """A grid fitted to ``denoiser`` for ``sampler`` (``samplers.fitgrid.fit_grid``) on 512 starting
    noises of seed 12345, which the scores never use; above FIT_MAX_STEPS the FIT_MAX_STEPS fit
    interpolated log-linearly (``fitgrid.interpolate_grid``). Cached per (sampler, steps)."""
    from pixdiff.samplers.fitgrid import fit_grid, interpolate_grid, reference_map

    key = (sampler, steps)
    if key not in _FITTED:
        if steps > FIT_MAX_STEPS:
            _FITTED[key] = interpolate_grid(fitted_grid(denoiser, sampler, FIT_MAX_STEPS, opts), steps)
        else:
            if "ref" not in _FITTED:
                noise = torch.randn(512, 2, generator=torch.Generator().manual_seed(12345), dtype=F64)
                _FITTED["ref"] = (noise, reference_map(denoiser, noise))
            noise, ref = _FITTED["ref"]
            t0 = time.perf_counter()
            _FITTED[key] = fit_grid(denoiser, sampler, max(2, steps), noise, reference=ref, **opts)
            print(f"    fitted {sampler} grid, {steps} steps: {time.perf_counter() - t0:.0f} s; sigmas "
                  + " ".join(f"{v:.3g}" for v in S.grids.sigmas(_FITTED[key]).tolist()))
    return _FITTED[key]


@torch.no_grad()
def run_pixdiff(sampler, opts, denoiser, shape, steps, seed, cond=None, batch: int | None = None):
    if opts.get("grid") == "fitted":
        opts = {k: v for k, v in opts.items() if k != "grid"}
        opts["grid"] = fitted_grid(denoiser, sampler, steps, opts)
        steps = None
    n = shape[0]
    batch = batch or n
    g = torch.Generator().manual_seed(seed)
    outs, nfe = [], 0
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        c = None if cond is None else cond[lo:hi]
        x, nfe = S.sample(denoiser, (hi - lo, *shape[1:]), sampler=sampler, steps=steps, cond=c, generator=g,
                          return_nfe=True, **opts)
        outs.append(x)
    return torch.cat(outs), nfe


# --- the sweep ----------------------------------------------------------------------------------------


def sweep(denoiser, shape, score, nfes, names, peers, image_mode: bool, seeds, cond=None, batch=None, log=print):
    """rows: {name: {target_nfe: (actual_nfe, mean score over seeds)}}; each seed is one replica."""
    if image_mode:  # rows without image options (the toy-only fitted grid) are left out
        names = [name for name in names if PIXDIFF[name][2] is not None]
    jobs = [(name, "pixdiff") for name in names] + [(name, "diffusers") for name in peers]
    rows = {}
    for name, lib in jobs:
        rows[name] = {}
        fam = PIXDIFF[name][3] if lib == "pixdiff" else peers[name][1]
        for target in nfes:
            steps, extra = steps_for(fam, target)
            t0, vals = time.perf_counter(), []
            for seed in seeds:
                if lib == "pixdiff":
                    sampler, toy_opts, img_opts, _ = PIXDIFF[name]
                    x, nfe = run_pixdiff(sampler, {**(img_opts if image_mode else toy_opts), **extra}, denoiser, shape,
                                         steps, seed, cond, batch)
                else:
                    x, nfe = run_diffusers(peers[name][0], denoiser, shape, steps, seed, cond, batch)
                vals.append(score(x))
            rows[name][target] = (nfe, float(np.mean(vals)))
            log(f"  {name:32s} target {target:4d}  steps {steps:4d}  NFE {nfe:4d}  score {rows[name][target][1]:.5f}"
                f"  ({time.perf_counter() - t0:.1f}s)")
    return rows


def nfe_within(r, nfes, floor: float, ref: int) -> str:
    """The smallest NFE column from which on every score is within 0.1 × floor of the `ref` column's."""
    if ref not in r:
        return "–"
    ok = [r[n][1] - r[ref][1] <= 0.1 * floor for n in nfes]
    for i, n in enumerate(nfes):
        if all(ok[i:]):
            return str(r[n][0])
    return "–"


def table(rows, nfes, metric: str, floor: float) -> str:
    head = f"| sampler ({metric}; NFE in brackets where it differs from the column) | " + \
        " | ".join(str(n) for n in nfes) + f" | NFE to within 10 % of {max(nfes)} |"
    lines = [head, "|---|" + "---:|" * (len(nfes) + 1)]
    for name, r in rows.items():
        cells = []
        for n in nfes:
            nfe, v = r[n]
            cells.append(("nan" if not math.isfinite(v) else f"{v:.4f}") + ("" if nfe == n else f" ({nfe})"))
        kind = "diffusers " if name.endswith("Scheduler") else ""
        sto = " (stoch.)" if name in STOCHASTIC else ""
        lines.append(f"| {kind}{name}{sto} | " + " | ".join(cells) + f" | {nfe_within(r, nfes, floor, max(nfes))} |")
    return "\n".join(lines)


def target_check(rows, floor: float, at: int = 10, ref: int = 250) -> tuple[str, bool]:
    """Best pixdiff sampler with NFE ≤ `at` (column `at`), compared with its own `ref`-NFE score (the
    largest column when there is no `ref` column)."""
    cols = next(iter(rows.values()), {})
    if ref not in cols and cols and max(cols) > at:
        ref = max(cols)
    cands = [(r[at][1], name) for name, r in rows.items()
             if not name.endswith("Scheduler") and at in r and ref in r and math.isfinite(r[at][1])]
    if not cands:
        return f"target check skipped (needs NFE columns {at} and {ref})", False
    best, name = min(cands)
    nfe_at, nfe_ref, s_ref = rows[name][at][0], rows[name][ref][0], rows[name][ref][1]
    excess = best - s_ref
    ok = excess <= 0.1 * floor
    return (f"best pixdiff sampler at {at} NFE: **{name}** (NFE {nfe_at}) score {best:.4f}; its {ref}-NFE "
            f"(NFE {nfe_ref}) score {s_ref:.4f}; noise floor {floor:.4f}. Excess {excess:+.4f} = "
            f"{100 * excess / floor:+.1f} % of the floor (target ≤ +10 %), ratio {best / s_ref:.3f}: "
            f"**{'met' if ok else 'not met'}**."), ok


def plot(rows, floor, path, ylabel, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    colours = [*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors]  # 40 distinct: one per row
    for i, (name, r) in enumerate(rows.items()):
        xs = [r[n][0] for n in r if math.isfinite(r[n][1])]
        ys = [r[n][1] for n in r if math.isfinite(r[n][1])]
        peer = name.endswith("Scheduler")
        ax.plot(xs, ys, ("--" if peer else "-") + ("x" if name in STOCHASTIC else "o"), ms=4, color=colours[i % len(colours)],
                label=("diffusers " + name.replace("Scheduler", "") if peer else name), lw=1.2)
    ax.axhline(floor, color="k", ls=":", lw=1, label="noise floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (denoiser evaluations)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="solid: pixdiff, dashed: diffusers;\n"
              "o deterministic, x stochastic", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# --- the two modes ----------------------------------------------------------------------------------


def analytic(args):
    gm = GaussianMixture.toy_2d(labels=False)
    den = gm.denoise  # exact; its shared-λ path is a few matmuls
    n, reps = args.n or 10000, args.replicas or 4
    score = SlicedW1(gm, n, args.projections)
    true = [gm.sample(n, torch.Generator().manual_seed(10_000 + r)) for r in range(2 * reps)]
    floor = float(np.mean([score(x) for x in true[:reps]]))
    two = float(np.mean([two_sample_sw(true[r], true[reps + r], score.dirs) for r in range(reps)]))
    print(f"toy_2d mixture, N = {n} × {reps} replicas, {args.projections} directions; noise floor "
          f"SW(true sample, truth) = {floor:.5f}; SW(true sample, true sample) = {two:.5f}")
    rows = sweep(den, (n, 2), score, args.nfe, args.samplers or list(PIXDIFF),
                 {} if args.no_diffusers else diffusers_peers(), False, range(args.seed, args.seed + reps))
    args.floor_note = (f"noise floor = SW of a true sample to the truth (mean of {reps}) = {floor:.4f}; "
                       f"the SW of two independent true samples is {two:.4f}")
    return rows, floor, n, "SW", "sliced W1 to the true mixture", \
        f"Analytic 2-D mixture, exact denoiser, N = {n} × {reps}: SW to the truth vs NFE"


def checkpoint(args):
    from pixdiff import data as data_mod
    from pixdiff.generate import load_denoiser
    from pixdiff.metrics import digits_extractor, feature_statistics, frechet_distance

    den, ck = load_denoiser(args.ckpt)
    meta = ck.state["meta"]
    shape = tuple(meta.get("data_shape") or ())
    if len(shape) != 3 or shape[0] != 1 or shape[1] not in (8, 16, 32):
        raise SystemExit(f"--ckpt: the digits feature space needs a 1×{{8,16,32}}² digits model (got {shape})")
    ext = digits_extractor()
    train = data_mod.load_digits(shape[1], "train").images
    test = data_mod.load_digits(shape[1], "test").images
    mu, sigma = feature_statistics(ext(train).features)

    def fd(x):
        x = data_mod.from_uint8(data_mod.to_uint8(x.float().clamp(-1, 1)))  # the pixels an eval would see
        if not torch.isfinite(x).all():
            return float("nan")
        return frechet_distance(*feature_statistics(ext(x).features), mu, sigma)

    floor = fd(test)
    n = args.n or test.shape[0]
    nc = meta.get("num_classes") or 0
    cond = torch.arange(n) % nc if nc else None
    print(f"checkpoint {ck.path} ({'class-conditional' if nc else 'unconditional'}), N = {n}; "
          f"noise floor FD(test split, N = {test.shape[0]}) = {floor:.3f}")
    names = args.samplers or ["ddim", "euler", "heun", "dpm_solver-3", "dpmpp_2m", "ddpm", "edm"]
    peers = {} if args.no_diffusers else {k: v for k, v in diffusers_peers().items()
                                          if k in ("DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")}
    rows = sweep(den, (n, *shape), fd, args.nfe, names, peers, True, [args.seed], cond, args.batch)
    args.floor_note = f"noise floor = FD of the held-out test split (N = {test.shape[0]}) = {floor:.3f}"
    return rows, floor, n, "FD", "Fréchet distance (digits features) to the train split", \
        f"{Path(args.ckpt).name}: FD (digits features) vs NFE, N = {n}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="a trained digits run/checkpoint folder: FD instead of the toy SW")
    ap.add_argument("--n", type=int, default=None, help="samples (default 20000 for the toy, 360 = test split for --ckpt)")
    ap.add_argument("--nfe", type=int, nargs="+", default=None,
                    help="NFE targets (default 5 7 10 15 20 30 50 100 250; 5 10 20 50 100 with --ckpt)")
    ap.add_argument("--samplers", nargs="+", default=None, choices=list(PIXDIFF), metavar="NAME",
                    help=f"pixdiff samplers (names as in the table: {', '.join(PIXDIFF)})")
    ap.add_argument("--no-diffusers", action="store_true", help="skip the diffusers peer curves")
    ap.add_argument("--projections", type=int, default=64, help="SW directions (evenly spaced)")
    ap.add_argument("--replicas", type=int, default=None, help="toy: independent runs (seeds) averaged per cell (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256, help="--ckpt: images per forward")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared 2-core box)")
    ap.add_argument("--plot", default=None, help="figure path (default docs/nfe_quality.png; "
                                                  "docs/nfe_quality_digits.png with --ckpt)")
    ap.add_argument("--append", default=None, help="append a markdown section to this file (e.g. docs/benchmarks.md)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.nfe is None:
        args.nfe = [5, 10, 20, 50, 100] if args.ckpt else [5, 7, 10, 15, 20, 30, 50, 100, 250]
    args.nfe = sorted(set(args.nfe))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    t0 = time.perf_counter()
    rows, floor, n, metric, ylabel, title = (checkpoint if args.ckpt else analytic)(args)
    wall = time.perf_counter() - t0
    tab = table(rows, args.nfe, metric, floor)
    check, _ = target_check(rows, floor)
    plot_path = args.plot or str(ROOT / "docs" / ("nfe_quality_digits.png" if args.ckpt else "nfe_quality.png"))
    plot(rows, floor, plot_path, ylabel, title)
    print(f"\nnoise floor: {floor:.4f}\n\n{tab}\n\n{check}\n\nfigure: {plot_path}; {wall:.0f} s")
    if args.append:
        argv = " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])
        what = (f"Analytic 2-D mixture (`GaussianMixture.toy_2d`, 3 components) with its exact denoiser "
                f"(float32 states, float64 denoiser). Score = sliced W1 to the *true* mixture: mean over "
                f"{args.projections} evenly spaced directions of the 1-D W1 between the N = {n} sorted projected "
                f"samples and the mixture's exact projected quantiles, averaged over {args.replicas or 4} runs "
                f"(seeds {args.seed}…{args.seed + (args.replicas or 4) - 1}); {args.floor_note}."
                if not args.ckpt else
                f"Checkpoint `{args.ckpt}` (EMA weights); score = Fréchet distance in the digits feature space "
                f"(64-d) between N = {n} samples (uint8-quantised) and the train split; {args.floor_note}.")
        rel = os.path.relpath(plot_path, Path(args.append).resolve().parent)
        section = (f"\n## Quality per NFE{' (' + Path(args.ckpt).name + ')' if args.ckpt else ''} "
                   f"(benchmarks/nfe_quality.py)\n\n"
                   f"Date: {date}. Machine: {machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
                   f"intra-op thread(s); {wall:.0f} s.\n\n"
                   f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/nfe_quality.py {argv}`\n\n{what} "
                   f"Every sampler at its default grid and schedule; steps chosen per column so NFE (read from "
                   f"`return_nfe`) is the largest not above the column's; the same seeds for every sampler. "
                   f"diffusers' schedulers (linear β, T = 1000, their default spacing, clip_sample off) drive the "
                   f"same denoiser as an ε-model. `edm` is EDM's stochastic sampler at its default churn (γ = 40/256 per step), `euler_maruyama` "
                   f"the VP reverse SDE, `pc` the VE predictor–corrector with one Langevin corrector, `langevin` "
                   f"≤ 10 noise levels × (NFE − 1)/levels steps; `dpmpp_2m-uniform_logsnr` is not a default (λ-uniform "
                   f"grid over [−10, 8]); `unipc-fitted` is UniPC (defaults) on a grid fitted to this mixture "
                   f"(`samplers.fitgrid.fit_grid`: pathwise error to the exact flow map on 512 starting noises "
                   f"of seed 12345, not the scored seeds; fitted up to {FIT_MAX_STEPS} steps, longer grids "
                   f"interpolate the {FIT_MAX_STEPS}-step fit log-linearly), so it shows what a schedule "
                   f"optimised for the model buys, not a default. Consistency sampling is not in the sweep: it calls a "
                   f"consistency function, not a denoiser.\n\n"
                   f"![{metric} vs NFE]({rel})\n\n{tab}\n\n"
                   f"Target (best pixdiff sampler at 10 NFE within 10 % of its 250-NFE quality, measured as "
                   f"score(10) − score(250) ≤ 0.1 × noise floor, with the largest column standing in for 250 when "
                   f"there is none; the last column is the smallest NFE from which on this holds): {check}\n")
        append_section(args.append, section)


if __name__ == "__main__":
    main()
