"""Issue 16, claim 2: a learned reverse variance (IDDPM's L_hybrid) against the fixed choices
σ² = β and σ² = β̃ of L_simple: better samples with few sampling steps (25–50) and a better
log-likelihood (Nichol & Dhariwal 2021, §3.1, Fig. 8 and Table 1). Bits/dim are given by the
discrete variational bound (IDDPM's L_vlb) and by the probability-flow ODE side by side.

    python experiments/evidence_variance.py [--scale cpu|gpu|smoke] [--runs DIR] [--out-dir docs/evidence]

Two ε-prediction models per training seed, both on IDDPM's cosine chain (``iddpm_cosine_discrete``,
T = 1000 steps, 100 at smoke scale; L_vlb is a sum over a discrete chain): L_simple (``eps_mse``) with a fixed
variance, and L_hybrid = L_simple + 0.001 · L_vlb with ``learn_sigma`` (the network also predicts
the interpolation log Σ = f log β + (1 − f) log β̃; L_vlb sees a stop-gradient mean). Each is
sampled with ancestral DDPM on IDDPM's respacing of the chain (25 and 50 steps): the L_simple
model with σ² = β and with σ² = β̃, the L_hybrid model with its learned variance. Bits/dim on the
first test digits (8-bit): L_vlb over all T steps with the matching reverse variance
(``pixdiff.likelihood.vlb_bpd``, discretised decoder, x̂ clipped to [−1, 1] as IDDPM evaluates
it: ``vlb_bpd``'s ``clip_denoised``) and −log p by the probability-flow ODE
(``pixdiff.likelihood.ode_nll``, RK45, Hutchinson trace, uniform dequantisation), as ``pixdiff nll``
computes them; the ODE depends on the mean only, so both rows of the L_simple model share it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evidence_common as ec  # noqa: E402
import evidence_extra as ex  # noqa: E402

SCHEDULE = "iddpm_cosine_discrete"
MODELS = {  # name: training overrides
    "L_simple": {"model__parameterization": "eps", "loss__weighting": "eps_mse", "loss__schedule": SCHEDULE},
    "L_hybrid": {"model__parameterization": "eps", "loss__weighting": "eps_mse", "loss__schedule": SCHEDULE,
                 "model__learn_sigma": True, "loss__vlb_weight": 0.001},
}
ROWS = {  # row label: (model, DDPM variance, L_vlb's fixed variance)
    "L_simple, fixed σ² = β": ("L_simple", "beta", "large"),
    "L_simple, fixed σ² = β̃": ("L_simple", "beta_tilde", "small"),
    "L_hybrid, learned Σ": ("L_hybrid", "learned", None),
}
LEARNED = "L_hybrid, learned Σ"


def settings(scale: ec.Scale) -> dict:
    """Chain length T, sampling steps, test images for bits/dim and the ODE tolerance of a scale
    (smoke: a 100-step chain, so that L_vlb's sum over every step takes seconds)."""
    if scale.name == "smoke":
        return {"T": 100, "steps": (3, 5), "nll_n": 2, "rtol": 1e-2}
    return {"T": 1000, "steps": (25, 50), "nll_n": 360 if scale.name == "gpu" else 12, "rtol": 1e-5}


def _test_images(scale: ec.Scale, n: int):
    """The first n test digits at the scale's resolution, quantised to 8 bits, and their labels."""
    from pixdiff import data as data_mod

    ds = data_mod.load_digits(scale.resolution, "test")
    return data_mod.from_uint8(data_mod.to_uint8(ds.images[:n])), ds.labels[:n]


def _vlb_bpd(pipe, x, y, fixed: str | None) -> float:
    import torch

    from pixdiff import likelihood

    r = likelihood.vlb_bpd(pipe.denoiser, x, pipe.config.loss.build_schedule(),
                           torch.Generator().manual_seed(0), y, fixed_variance=fixed or "small")
    return float(r.bpd.mean())


def _ode_bpd(pipe, x, y, rtol: float) -> dict:
    import torch

    from pixdiff import likelihood

    pipe.denoiser.requires_grad_(False)  # the trace needs ∂x̂/∂z only
    r = likelihood.ode_nll(pipe.denoiser, x, torch.Generator().manual_seed(0), y, rtol=rtol, atol=rtol,
                           dequantize="uniform")
    return {"bpd": float(r.bpd.mean()), "nfe": int(r.nfe)}


def run_study(scale: ec.Scale, runs: Path, out_dir: Path) -> dict:
    import pixdiff
    from pixdiff.samplers import grids

    cfg = settings(scale)
    steps, n_nll, rtol = cfg["steps"], cfg["nll_n"], cfg["rtol"]
    x, y = _test_images(scale, n_nll)
    res: dict = {row: {} for row in ROWS}
    nfe = []
    for seed in scale.seeds:
        pipes, runs_of = {}, {}
        for name, overrides in MODELS.items():
            run = ec.train_digits(runs / f"variance-{name.lower().replace('_', '-')}-seed{seed}", seed, scale,
                                  data__p_uncond=0.1, loss__schedule_options={"T": cfg["T"]}, **overrides)
            pipes[name], runs_of[name] = pixdiff.load(run, device="cpu"), run
        for row, (model, variance, fixed) in ROWS.items():
            pipe, run = pipes[model], runs_of[model]
            sched = pipe.config.loss.build_schedule()  # the training chain, respaced below
            for k in steps:
                key = f"ddpm/uniform_t/{k}/variance={variance}/clip_x=static/n={scale.n}/seed=10000"
                r = ec.cached_score(run, key, pipe.sample, scale.n, None, "ddpm", None, seed=10_000,
                                    grid=grids.uniform_t(sched, k), variance=variance, clip_x="static")
                for m in ("fd", "acc"):
                    res[row].setdefault(f"{m}@{k}", []).append(r[m])
            res[row].setdefault("vlb", []).append(ex.cached_value(
                run, f"vlb_bpd/variance={variance}/clip_x=static/n={n_nll}/seed=0", _vlb_bpd, pipe, x, y, fixed))
            ode = ex.cached_value(run, f"ode_bpd/rtol={rtol:g}/n={n_nll}/seed=0", _ode_bpd, pipe, x, y, rtol)
            res[row].setdefault("ode", []).append(ode["bpd"])
            nfe.append(ode["nfe"])
    s = ex.summarise(res)
    ec.save_json(out_dir / "data" / "variance.json", {"settings": {**cfg, "schedule": SCHEDULE}, "summary": s,
                                                       "per_seed": res})
    _page(scale, s, cfg, nfe, out_dir)
    return s


def verdict(s: dict, steps, smoke: bool = False) -> tuple[str, str]:
    """(verdict, reason) from {row: {'fd@k': summary, 'vlb': summary, ...}}: the learned variance must
    beat the better of the two fixed variances in FD at every step count in ``steps`` and in L_vlb
    bits/dim (the ODE bits/dim are shown, not judged)."""
    fixed = [r for r in s if r != LEARNED]
    parts, why = [], []
    for k in steps:
        best = min(fixed, key=lambda r: s[r][f"fd@{k}"]["mean"])
        parts.append(ex.compare(s[LEARNED][f"fd@{k}"], s[best][f"fd@{k}"]))
        why.append(f"FD at {k} steps, learned {s[LEARNED][f'fd@{k}']['mean']:.3g} vs best fixed "
                   f"({best.split('σ² = ')[-1]}) {s[best][f'fd@{k}']['mean']:.3g}: {parts[-1]}")
    best = min(fixed, key=lambda r: s[r]["vlb"]["mean"])
    parts.append(ex.compare(s[LEARNED]["vlb"], s[best]["vlb"]))
    why.append(f"L_vlb bits/dim, learned {s[LEARNED]['vlb']['mean']:.3g} vs best fixed ({best.split('σ² = ')[-1]}) "
               f"{s[best]['vlb']['mean']:.3g}: {parts[-1]}")
    if smoke:
        return ex.INCONCLUSIVE, "smoke run: the numbers only check the pipeline (" + "; ".join(why) + ")"
    return ex.combine(parts), "; ".join(why)


def _page(scale: ec.Scale, s: dict, cfg: dict, nfe: list, out_dir: Path) -> None:
    steps = cfg["steps"]
    head = " | ".join(f"FD, {k} steps" for k in steps) + " | " + " | ".join(f"class acc, {k} steps" for k in steps)
    rows = [f"| model | reverse variance | {head} | bits/dim (L_vlb) | bits/dim (PF-ODE) |",
            "|---|---|" + "---:|" * (2 * len(steps) + 2)]
    for row, (model, _, _) in ROWS.items():
        r = s[row]
        cells = [ec.fmt(r[f"fd@{k}"]) for k in steps] + [ec.fmt(r[f"acc@{k}"]) for k in steps]
        rows.append(f"| {model} | {row.split(', ', 1)[1]} | {' | '.join(cells)} | {ec.fmt(r['vlb'])} | "
                    f"{ec.fmt(r['ode'])} |")
    v, reason = verdict(s, steps, scale.name == "smoke")
    plot = ec.plot(out_dir / "learned_variance.png",
                   {row: (list(steps), [s[row][f"fd@{k}"]["mean"] for k in steps],
                          [s[row][f"fd@{k}"]["std"] for k in steps]) for row in ROWS},
                   "DDPM sampling steps (NFE)", "Fréchet distance (digits features)")
    how = (f"ε-prediction on IDDPM's cosine chain (`{SCHEDULE}`, T = {cfg['T']}): L_simple (`eps_mse`) and L_hybrid "
           "(`eps_mse` + 0.001 · L_vlb, `learn_sigma`); sampled with ancestral DDPM on IDDPM's respacing of the chain "
           f"({' and '.join(map(str, steps))} steps, x̂ clipped to [−1, 1] as IDDPM samples, no guidance)")
    protocol = ex.protocol(scale, f"digits {scale.resolution}×{scale.resolution}", f"`{scale.preset}` preset", how,
                           "evidence_variance.py")
    protocol.insert(4, f"bits/dim: the first {cfg['nll_n']} test digits (8-bit, with their labels), the same images and "
                       f"noise (generator 0) for every model; L_vlb over all {cfg['T']} steps with the row's reverse variance "
                       "(discretised decoder, `likelihood.vlb_bpd`, x̂ clipped to [−1, 1] as IDDPM's evaluation does); PF-ODE −log p with uniform dequantisation "
                       f"(`likelihood.ode_nll`, RK45 rtol = atol = {cfg['rtol']:g}, Hutchinson trace, "
                       f"{min(nfe)}{'–' + str(max(nfe)) if max(nfe) > min(nfe) else ''} network evaluations); the ODE uses the mean only, so both L_simple rows "
                       "show the same number")
    ec.write_page("learned_variance", "Learned reverse variance (L_hybrid) vs fixed β / β̃",
                  "learning the reverse variance with L_hybrid gives better samples than L_simple with a fixed σ² = β "
                  "or β̃ when sampling with few steps (25–50), and a better log-likelihood",
                  "Nichol & Dhariwal 2021, §3.1, Fig. 8 and Table 1", protocol, "\n".join(rows), v, reason, scale,
                  plot, out_dir)


def main(argv=None) -> int:
    return ec.main(__doc__, run_study, argv)


if __name__ == "__main__":
    raise SystemExit(main())
