"""The baseline families (pixdiff.baselines, issue 17): each loss on a hand-checked case, PixelCNN
causality by gradients, MaskGIT's schedule, and each family through the CLI (train, checkpoint,
bit-exact resume after a lost step, sample to npz with per-image seeds, eval)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pixdiff.baselines import FAMILIES
from pixdiff.baselines.gan import hinge_d_loss, hinge_g_loss
from pixdiff.baselines.vae import discretized_gaussian_log_likelihood, kl_diag_gaussians
from pixdiff.cli import main

# ------------------------------------------------------------------------------------ GAN: hinge


def test_hinge_losses_on_a_hand_case():
    d_real = torch.tensor([2.0, 0.5, -1.0])
    d_fake = torch.tensor([-2.0, 0.0, 0.5])
    # max(0, 1 − D(x)) = 0, 0.5, 2 → mean 5/6;  max(0, 1 + D(G(z))) = 0, 1, 1.5 → mean 5/6
    assert hinge_d_loss(d_real, d_fake).item() == pytest.approx(5 / 3)
    assert hinge_g_loss(d_fake).item() == pytest.approx(0.5)  # −mean(−2, 0, 0.5)


# -------------------------------------------------------------------------------------------- VAE


def test_kl_of_diagonal_gaussians_against_the_closed_form_and_torch_distributions():
    # KL(N((1, 0), diag(1, 4)) ‖ N(0, I)) = ½[(1 + 1 − 1 − 0) + (4 + 0 − 1 − ln 4)] = 2 − ln 2
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    assert kl_diag_gaussians(mu, logvar).item() == pytest.approx(2 - math.log(2), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp())).sum(-1)
    torch.testing.assert_close(kl_diag_gaussians(m1, lv1, m2, lv2), ref)


def test_the_discretised_gaussian_gives_each_8_bit_level_its_bin():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    for mean, log_scale in ((0.3, math.log(0.2)), (-0.99, math.log(0.01)), (1.2, math.log(1.0))):
        ll = discretized_gaussian_log_likelihood(levels, torch.tensor(mean, dtype=torch.float64),
                                                 torch.tensor(log_scale, dtype=torch.float64))
        assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-9)  # the bins tile the line
    # a wide Gaussian: an inner bin's mass ≈ density × bin width 2/255
    ll = discretized_gaussian_log_likelihood(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64),
                                             torch.tensor(0.0, dtype=torch.float64))
    assert ll.exp().item() == pytest.approx((2 / 255) / math.sqrt(2 * math.pi), rel=1e-4)


# ----------------------------------------------------------------------------------------- VQ-VAE


def test_commitment_loss_value_and_that_only_the_encoder_gets_its_gradient():
    from pixdiff.baselines.vqvae import commitment_loss

    z = torch.tensor([[1.0, 2.0]], requires_grad=True)
    e = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = commitment_loss(z, e, beta=0.25)
    assert loss.item() == pytest.approx(0.25 * (1 + 4) / 2)  # β · mean of (z − e)²
    loss.backward()
    torch.testing.assert_close(z.grad, torch.tensor([[0.25, 0.5]]))  # β · 2 (z − e) / 2 elements
    assert e.grad is None  # sg[e]: the codebook learns by EMA, not by this loss


def test_ema_codebook_update_on_a_hand_case():
    from pixdiff.baselines.vqvae import VectorQuantizerEMA, ema_codebook_update

    n = torch.tensor([1.0, 1.0])
    m = torch.tensor([[0.0], [10.0]])
    z = torch.tensor([[1.0], [3.0], [9.0]])
    codes = torch.tensor([0, 0, 1])
    e = ema_codebook_update(n, m, z, codes, decay=0.5, eps=0.0)
    # N = 0.5 N + 0.5 (2, 1) = (1.5, 1);  m = 0.5 m + 0.5 (1 + 3, 9) = (2, 9.5);  e = m / N
    torch.testing.assert_close(n, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(m, torch.tensor([[2.0], [9.5]]))
    torch.testing.assert_close(e, torch.tensor([[2.0 / 1.5], [9.5]]))
    q = VectorQuantizerEMA(2, 1, 0.5, 0.25)
    q.embed.copy_(torch.tensor([[0.0], [10.0]]))
    assert q.codes(torch.tensor([[4.0], [6.0], [-3.0]])).tolist() == [0, 1, 0]  # nearest code (eq. 1)


# --------------------------------------------------------------------------------------- PixelCNN


@pytest.mark.parametrize("output,cond_map,v_residual,classes", [
    ("softmax", 0, False, 3), ("softmax", 2, True, 3), ("logistic", 0, False, 3), ("logistic", 2, True, 3),
    ("logistic", 2, True, 0)])
def test_pixelcnn_output_at_pixel_i_depends_on_pixels_before_i_only(output, cond_map, v_residual, classes):
    from pixdiff.baselines.pixelcnn import build

    torch.manual_seed(0)
    m = build({"channels": 8, "layers": 4, "kernel": 3, "embed": 4, "cond_map": cond_map, "output": output,
               "mixtures": 3, "v_residual": v_residual}, (1, 6, 6), classes)
    x = torch.rand(1, 1, 6, 6, requires_grad=True)
    y = torch.tensor([1]) if classes else None
    for i in (0, 1, 7, 14, 21, 35):  # raster index
        r, c = divmod(i, 6)
        out = m(x, y)[0, :, r, c].square().sum()  # every parameter of p(x_i | x_<i, y): logits or mixture
        (g,) = torch.autograd.grad(out, x)
        dep = (g[0, 0].flatten() != 0).tolist()
        assert not any(dep[i:]), f"pixel {i} sees pixels at or after itself: {[j for j in range(i, 36) if dep[j]]}"
        if c > 0:
            assert dep[i - 1], f"pixel {i} does not see its left neighbour"
        if r > 0:
            assert dep[i - 6] and dep[i - 6 + (1 if c < 5 else 0)], f"pixel {i} does not see the row above"


def test_pixelcnn_bits_per_dim_of_a_uniform_softmax_is_8():
    from pixdiff.baselines.pixelcnn import build

    m = build({"channels": 8, "layers": 2, "kernel": 3, "embed": 4, "output": "softmax"}, (1, 4, 4), 0)
    torch.nn.init.zeros_(m.head[-1].weight)
    torch.nn.init.zeros_(m.head[-1].bias)
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    torch.testing.assert_close(m.bits_per_dim(x), torch.full((3,), 8.0))  # log2 256


def _sigmoid(t):
    return 1.0 / (1.0 + math.exp(-t))


def test_discretised_logistic_mixture_on_hand_cases_at_both_edges_and_inside():
    from pixdiff.baselines.pixelcnn import logistic_mixture_log_prob

    def p(levels, logit_pi, mean, log_scale):
        t = lambda v: torch.tensor(v, dtype=torch.float64)[:, None]  # noqa: E731  [K, 1]: components × levels
        return logistic_mixture_log_prob(t(logit_pi), t(mean), t(log_scale), torch.tensor(levels), dim=0).exp()

    # one logistic, μ = 0, s = 0.1: level l at x = l / 127.5 − 1 owns [x − 1/255, x + 1/255]
    got = p([0, 128, 255], [0.0], [0.0], [math.log(0.1)]).tolist()
    x = 128 / 127.5 - 1
    want = [_sigmoid((-1 + 1 / 255) / 0.1),                                # level 0: all mass below its upper edge
            _sigmoid((x + 1 / 255) / 0.1) - _sigmoid((x - 1 / 255) / 0.1),  # inside: the bin
            1 - _sigmoid((1 - 1 / 255) / 0.1)]                             # level 255: all mass above its lower edge
    assert got == pytest.approx(want, rel=1e-12)
    # two logistics, π = softmax(0, ln 3) = (1/4, 3/4), (μ, s) = (−0.5, 0.2) and (0.6, 0.05)
    def one(lv, mu, s):
        xl = lv / 127.5 - 1
        up = 1.0 if lv == 255 else _sigmoid((xl + 1 / 255 - mu) / s)
        lo = 0.0 if lv == 0 else _sigmoid((xl - 1 / 255 - mu) / s)
        return up - lo
    levels = [0, 1, 64, 203, 254, 255]
    got = p(levels, [0.0, math.log(3.0)], [-0.5, 0.6], [math.log(0.2), math.log(0.05)]).tolist()
    want = [0.25 * one(lv, -0.5, 0.2) + 0.75 * one(lv, 0.6, 0.05) for lv in levels]
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("mean,log_scale", [(0.0, -1.0), (-1.0, -7.0), (0.999, -7.0), (2.5, 0.0), (-3.0, 3.0),
                                            (0.3, 8.0)])
def test_discretised_logistic_mixture_probabilities_sum_to_1(mean, log_scale):
    from pixdiff.baselines.pixelcnn import logistic_mixture_log_prob

    g = torch.Generator().manual_seed(0)
    k = 4  # a mixture: the given component and three random ones
    mu = torch.cat([torch.tensor([mean], dtype=torch.float64), torch.randn(k - 1, generator=g, dtype=torch.float64)])
    ls = torch.cat([torch.tensor([log_scale], dtype=torch.float64), torch.randn(k - 1, generator=g, dtype=torch.float64) - 3])
    pi = torch.randn(k, generator=g, dtype=torch.float64)
    for w in (pi, torch.tensor([0.0, -60, -60, -60], dtype=torch.float64)):  # ≈ the given component alone
        lp = logistic_mixture_log_prob(w[:, None], mu[:, None], ls[:, None], torch.arange(256), dim=0)
        assert lp.shape == (256,) and bool(torch.isfinite(lp).all())
        assert abs(lp.exp().sum().item() - 1.0) < 1e-13


def test_pixelcnn_logistic_bits_per_dim_is_the_cross_entropy_of_its_256_level_probabilities():
    from pixdiff.baselines.pixelcnn import build, to_levels

    torch.manual_seed(0)
    m = build({"channels": 8, "layers": 3, "kernel": 3, "embed": 4, "cond_map": 2, "output": "logistic",
               "mixtures": 3, "v_residual": True}, (1, 5, 5), 3).double()
    lv = torch.randint(0, 256, (4, 1, 5, 5))
    lv[0, 0, 0, :3] = torch.tensor([0, 255, 128])  # both edge levels and an inner one
    x = lv.double() / 127.5 - 1.0  # 8-bit images
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        m.head[-1].bias.mul_(0).add_(torch.linspace(-2, 2, m.head[-1].bias.numel(), dtype=torch.float64))
        lp = m.log_probs(x, y)  # [n, 256, C, H, W]: every level's probability at every pixel
        torch.testing.assert_close(lp.exp().sum(1), torch.ones(4, 1, 5, 5, dtype=torch.float64), rtol=0, atol=1e-13)
        assert torch.equal(to_levels(x), lv)
        ce = -lp.gather(1, lv[:, None]).flatten(1).sum(1) / (25 * math.log(2.0))
        torch.testing.assert_close(m.bits_per_dim(x, y), ce, rtol=1e-12, atol=0)


def test_pixelcnn_run_saved_before_the_new_fields_loads_as_the_softmax_network():
    from pixdiff.baselines.pixelcnn import build

    m = build({"channels": 16, "layers": 5, "kernel": 5, "embed": 16}, (1, 16, 16), 10)  # an old net_config
    assert m.output == "softmax" and m.cmap is None and m.head[-1].out_channels == 256
    assert sum(p.numel() for p in m.parameters()) == 67728  # the 0.07 M network of the first table


# ---------------------------------------------------------------------------------------- MaskGIT


def test_maskgit_cosine_schedule_and_tokens_masked_per_iteration():
    from pixdiff.baselines.maskgit import cosine_schedule, tokens_masked_after

    assert float(cosine_schedule(0.0)) == 1.0
    assert float(cosine_schedule(0.5)) == pytest.approx(math.sqrt(0.5))
    assert float(cosine_schedule(1.0)) == pytest.approx(0.0, abs=1e-15)
    # ⌊16 cos(π/2 · t/8)⌋ for t = 1..8: 16·0.98079, 0.92388, 0.83147, 0.70711, 0.55557, 0.38268, 0.19509, 0
    assert [tokens_masked_after(t, 8, 16) for t in range(8)] == [15, 14, 13, 11, 8, 6, 3, 0]


def test_maskgit_decoding_unmasks_on_the_schedule(monkeypatch):
    from pixdiff.baselines import maskgit as mg

    torch.manual_seed(0)
    net = {**mg.NET_DEFAULTS, "channels": 8, "code_dim": 8, "codebook": 16, "width": 16, "depth": 1, "heads": 2}
    m = mg.build(net, (1, 16, 16), 10).eval()
    seen = []
    real = m.prior.forward

    def spy(tokens, cls):
        seen.append(int((tokens == m.mask_id).sum(1)[0]))
        return real(tokens, cls)

    monkeypatch.setattr(m.prior, "forward", spy)
    x = m.generate(torch.tensor([3, 4]), [torch.Generator().manual_seed(s) for s in (0, 1)], steps=8)
    assert seen == [16, 15, 14, 13, 11, 8, 6, 3]  # masked tokens entering each of the 8 iterations
    assert x.shape == (2, 1, 16, 16)


# ---------------------------------------------------------------------------- each family via CLI

SMALL = {
    "vae": ["--net", "channels=8", "--net", "latent=4", "--net", "embed=4"],
    "gan": ["--net", "channels=8", "--net", "latent=8", "--net", "embed=4"],
    "pixelcnn": ["--net", "channels=8", "--net", "layers=2", "--net", "kernel=3", "--net", "embed=4",
                 "--resolution", "8"],  # 64 network passes per sample instead of 256
    "vqvae": ["--net", "channels=8", "--net", "code_dim=8", "--net", "codebook=16", "--net", "width=16",
              "--net", "depth=1", "--net", "heads=2", "--net", "vq_images=16"],
}
SMALL["maskgit"] = SMALL["vqvae"]


def _train(out, family, steps, *extra):
    argv = ["train", "--family", family, "--data", "digits", "--out", str(out), "--steps", str(steps), "--batch", "8",
            "--warmup", "8", "--decay-images", "32", "--ckpt-every", "16", "--log-every", "8", "--quiet",
            "--device", "cpu", *SMALL[family], *extra]
    assert main(argv) == 0


def _tensors(ckpt):
    return {f: load_file(str(ckpt / f)) for f in ("model.safetensors", "ema.safetensors", "optim.safetensors")}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_resumes_bit_exactly_samples_and_evaluates(family, tmp_path, capsys):
    from pixdiff import checkpoint as ckpt_io

    a, b = tmp_path / "a", tmp_path / "b"
    _train(a, family, 4)  # uninterrupted: 4 steps (vqvae, maskgit: 2 autoencoder steps, then 2 prior steps)
    _train(b, family, 3)  # 3 steps, checkpoint at step 2; the step-3 checkpoint is then "lost"
    shutil.rmtree(b / "checkpoints" / "ckpt-000000000024")
    assert main(["train", "--out", str(b), "--resume", "--steps", "4", "--quiet", "--device", "cpu"]) == 0
    ca, cb = ckpt_io.load(a), ckpt_io.load(b)
    assert ca.state["kind"] == cb.state["kind"] == family and ca.state["images"] == cb.state["images"] == 32
    ta, tb = _tensors(ca.path), _tensors(cb.path)
    for f in ta:
        assert ta[f].keys() == tb[f].keys()
        for k in ta[f]:
            assert torch.equal(ta[f][k], tb[f][k]), f"{family}: {f} {k} differs after resume"
    logs = [json.loads(ln) for ln in (b / "log.jsonl").read_text().splitlines()]
    assert [r["images"] for r in logs] == [8, 16, 24, 32]  # the lost step's record is rewritten once
    assert (a / "samples.png").is_file() and (a / "loss.png").is_file()

    capsys.readouterr()
    x1, x2 = tmp_path / "x1.npz", tmp_path / "x2.npz"
    assert main(["sample", "--ckpt", str(a), "--n", "6", "--classes", "1,2", "--seed", "3", "--out", str(x1),
                 "--device", "cpu"]) == 0
    assert main(["sample", "--ckpt", str(a), "--n", "2", "--classes", "2,1", "--seed", "4", "--out", str(x2),
                 "--batch", "1", "--device", "cpu"]) == 0
    s1, s2 = np.load(x1), np.load(x2)
    side = 8 if family == "pixelcnn" else 16
    assert s1["images"].shape == (6, side, side, 1) and s1["images"].dtype == np.uint8
    assert s1["labels"].tolist() == [1, 2, 1, 2, 1, 2]
    # image i comes from seed + i whatever the batch: seed 4's images are seed 3's images 1 and 2
    assert np.abs(s1["images"][1:3].astype(int) - s2["images"].astype(int)).max() <= 1
    assert not np.array_equal(s1["images"][0], s1["images"][2])

    capsys.readouterr()
    js = tmp_path / "eval.json"
    assert main(["eval", "--ckpt", str(a), "--n", "20", "--metrics", "acc,kid", "--kid-subset-size", "10",
                 "--kid-subsets", "5", "--json", str(js), "--device", "cpu"]) == 0
    res = json.loads(js.read_text())
    assert 0.0 <= res["metrics"]["acc"]["accuracy"] <= 1.0 and "kid" in res["metrics"]


def test_baseline_runs_refuse_diffusion_only_sampling_options(tmp_path):
    from pixdiff import load
    from pixdiff.errors import PixdiffError

    out = tmp_path / "g"
    _train(out, "gan", 1)
    pipe = load(out, device="cpu")
    for kw in ({"guidance": 1.0}, {"sampler": "heun"}, {"steps": 5}, {"classifier": "x"}):
        with pytest.raises(PixdiffError):
            pipe.sample(2, **kw)
    assert main(["train", "--family", "gan", "--vqvae", str(out), "--out", str(tmp_path / "h")]) != 0


def test_info_describes_a_baseline_run_and_diffusion_only_commands_refuse_it(tmp_path, capsys):
    out = tmp_path / "v"
    _train(out, "vae", 1)
    capsys.readouterr()
    assert main(["info", "--ckpt", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "vae" and s["images"] == 8 and s["data"]["num_classes"] == 10
    assert "parameterization" not in s  # no diffusion-only facts about a VAE
    assert main(["nll", "--ckpt", str(out), "--n", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a vae run, not a diffusion run" in err
