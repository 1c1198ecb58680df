"""Specs for pixdiff.nets: shapes, initialisation properties, conditioning, FLOPs, presets."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import pixdiff.nets as nets
from pixdiff.errors import PixdiffError
from pixdiff.nets import ClassifierConfig, UNetConfig, UViTConfig

# Small variants of the presets keep the whole file fast on 2 CPU cores.
SMALL_UNET = dict(channels=16, norm_groups=8, head_channels=16)
SMALL_UVIT = dict(channels=(16, 32, 32), mid_blocks=2, head_channels=16, norm_groups=8)
SMALL = {"tiny": SMALL_UNET, "tiny-uvit": SMALL_UVIT}



def _inputs(net, batch=2, side=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    side = side or net.config.resolution
    x = torch.randn(batch, net.config.in_channels, side, side, generator=g)
    logsnr = torch.randn(batch, generator=g) * 5
    return x, logsnr


@torch.no_grad()
def _dezero(net, std=0.1, seed=1):
    """Replace every all-zero parameter (zero-initialised outputs) by small noise."""
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        if not p.any():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def _build(name, **overrides):
    torch.manual_seed(0)
    return nets.from_preset(name, **overrides)


@pytest.mark.parametrize(
    "name, overrides, side",
    [
        ("tiny", dict(num_classes=0), 16),
        ("tiny", dict(in_channels=3, resolution=32, num_classes=5, learn_sigma=True, **SMALL_UNET), 32),
        ("tiny", dict(resblock_updown=False, num_heads=2, head_channels=None), 24),
        ("tiny", dict(resblock_updown=False, conv_resample=False, out_channels=2), 16),
        ("tiny-uvit", dict(num_classes=0, **SMALL_UVIT), 16),
        ("tiny-uvit", dict(patch_size=2, in_channels=3, resolution=32, learn_sigma=True, **SMALL_UVIT), 32),
        ("tiny-uvit", dict(patch_size=4, resolution=32, up_blocks=(1, 3), **SMALL_UVIT), 48),
    ],
)
def test_output_shape(name, overrides, side):
    net = _build(name, **overrides)
    x, logsnr = _inputs(net, side=side)
    cond = torch.tensor([0, net.config.num_classes]) if net.config.num_classes else None
    out = net(x, logsnr, cond)
    assert out.shape == (2, net.config.output_channels, side, side)
    expected_c = (overrides.get("out_channels") or x.shape[1]) * (2 if overrides.get("learn_sigma") else 1)
    assert net.config.output_channels == expected_c


def test_classifier_logits_depend_on_noise_level():
    net = _dezero(_build("tiny-classifier"))  # zero-init residual branches ignore emb at init
    x, logsnr = _inputs(net)
    logits = net(x, logsnr)
    assert logits.shape == (2, 10)
    assert not torch.allclose(logits, net(x, logsnr + 3.0))
    with pytest.raises(ValueError, match="16x16"):
        net(torch.randn(2, 1, 8, 8), logsnr)


@pytest.mark.parametrize("name", ["tiny", "tiny-uvit"])
def test_zero_initialised_output_is_exactly_zero(name):
    net = _build(name).train()  # dropout active: still exactly zero
    x, logsnr = _inputs(net)
    assert torch.count_nonzero(net(x, logsnr, torch.tensor([3, 10]))) == 0


@pytest.mark.parametrize("pos_emb", [False, True])
def test_uvit_trunk_is_exactly_identity_at_init(pos_emb):
    """Hoogeboom et al. 2025 (SiD2), §2.3, eq. 5: with f_d, f_u, f_m identities at init the trunk
    f(x) = f_u(U(f_m(D(h)) - D(h)) + h) is the identity, for any D and U, in train mode too
    (and with the position code, whose projection starts at zero)."""
    net = _build("tiny-uvit", up_blocks=(1, 3), dropout=(0.1, 0.1, 0.1), pos_emb=pos_emb).train()
    x, logsnr = _inputs(net)
    emb = net.embed(logsnr, None, 2, x.device)
    h = net.patch_in(x)
    assert any(p.abs().sum() > 0 for p in net.downs.parameters())  # D, U are not zero ...
    assert any(p.abs().sum() > 0 for p in net.ups.parameters())
    assert torch.equal(net.trunk(h, emb), h)  # ... yet the trunk is exactly the identity
    # so the whole network is its skip path: un-patch(head(stem(x)))
    _dezero(net.out_proj)
    skip_path = torch.nn.functional.pixel_shuffle(net.out_proj(torch.nn.functional.silu(net.out_norm(h))), 1)
    assert torch.equal(net(x, logsnr), skip_path)
    # and the property comes from the zero-initialised block outputs, not from anything else
    _dezero(net.mid)
    assert not torch.allclose(net.trunk(h, emb), h)


@pytest.mark.parametrize("name", ["tiny", "tiny-uvit"])
def test_class_labels_and_null_label(name):
    net = _dezero(_build(name, **SMALL[name])).eval()
    x, logsnr = _inputs(net)
    x, logsnr = x[:1].expand(2, -1, -1, -1), logsnr[:1].expand(2)
    out = net(x, logsnr, torch.tensor([1, 7]))
    assert not torch.allclose(out[0], out[1])  # labels change the output
    null = torch.full((2,), net.config.num_classes)
    assert torch.equal(net(x, logsnr, None), net(x, logsnr, null))  # None is the null label
    assert not torch.allclose(net(x, logsnr, null), out)


@pytest.mark.parametrize("name", ["tiny", "tiny-uvit", "tiny-classifier"])
def test_gradients_reach_every_parameter(name):
    net = _dezero(_build(name, **SMALL.get(name, {})))
    n_labels = getattr(net.config, "num_classes", 0)
    batch = n_labels + 1 if name != "tiny-classifier" else 2
    x, logsnr = _inputs(net, batch=batch)
    cond = torch.arange(batch) if name != "tiny-classifier" else None
    net(x, logsnr, cond).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", ["tiny", "tiny-uvit"])
def test_bf16_autocast_close_to_fp32(name):
    net = _dezero(_build(name, **SMALL[name])).eval()
    x, logsnr = _inputs(net, batch=4)
    cond = torch.tensor([0, 3, 9, 10])
    ref = net(x, logsnr, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x, logsnr, cond)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel


@pytest.mark.parametrize(
    "name, overrides, side",
    [
        ("tiny", {}, 16),
        ("tiny", {}, 32),  # attention placement follows the config, maps grow with the input
        ("tiny", dict(resblock_updown=False, learn_sigma=True, in_channels=3, **SMALL_UNET), 16),
        ("tiny", dict(resblock_updown=False, conv_resample=False, num_heads=4, head_channels=None), 16),
        ("tiny-uvit", {}, 16),
        ("tiny-uvit", dict(patch_size=2, resolution=32, up_blocks=(1, 3), **SMALL_UVIT), 32),
        ("tiny-uvit", dict(block_types=("res", "res", "transformer"), **SMALL_UVIT), 16),
        ("tiny-classifier", {}, 16),
    ],
)
def test_flops_match_torch_counter(name, overrides, side):
    net = _build(name, **overrides)
    x, logsnr = _inputs(net, side=side)
    # torch's counter has no formula for the CPU flash kernel; the math backend runs SDPA as
    # two counted bmm's.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x, logsnr)
    measured = counter.get_total_flops() / x.shape[0]
    assert nets.count_flops(net, side) == pytest.approx(measured, rel=0.05)


def test_paper_presets_params_and_flops():
    """Constructed on the meta device: shapes only, no memory, never trained."""
    report = {}
    for name in ["adm-64", "sid2-s", "sid2-flopheavy"]:
        with torch.device("meta"):
            net = nets.from_preset(name)
        report[name] = (sum(p.numel() for p in net.parameters()), nets.count_flops(net))
    print({k: (f"{p / 1e6:.1f}M", f"{f / 1e9:.0f} GFLOPs") for k, (p, f) in report.items()})
    # ADM ImageNet-64: 296M parameters in Dhariwal & Nichol 2021, App. Table 11.
    assert report["adm-64"][0] == pytest.approx(296e6, rel=0.02)
    # Hoogeboom et al. 2025, §2.2: flop-heavy keeps "parameter count almost the same" (only the
    # p×p patch stem and head shrink) while "reducing the patching size also increases FLOPS by
    # roughly a factor of 4".
    (p_s, f_s), (p_fh, f_fh) = report["sid2-s"], report["sid2-flopheavy"]
    assert p_fh == pytest.approx(p_s, rel=1e-3)
    assert 3.5 < f_fh / f_s < 5.0
    # SiD2 App. A.2 counts multiply-accumulates of the dominant products: ours is ≈ 2×.
    for name in ["sid2-s", "sid2-flopheavy"]:
        estimate = 2e9 * nets.sid2_estimate(nets.preset_config(name))
        assert report[name][1] == pytest.approx(estimate, rel=0.02)


def test_downsampling_factor_is_cheap():
    assert nets.downsampling_factor("tiny") == 4
    assert nets.downsampling_factor("sid2-s") == 32
    assert nets.downsampling_factor("sid2-flopheavy") == 16
    assert nets.downsampling_factor(_build("tiny-uvit")) == 4


@pytest.mark.parametrize("name", ["tiny", "tiny-uvit", "tiny-classifier"])
def test_config_roundtrip_through_json(name):
    net = _dezero(_build(name)).eval()
    saved = json.loads(json.dumps(dataclasses.asdict(net.config)))
    clone = nets.build(net.config.kind, saved)
    assert clone.config == net.config
    clone.load_state_dict(net.state_dict())
    x, logsnr = _inputs(net)
    assert torch.equal(clone(x, logsnr), net(x, logsnr))


def test_bad_inputs_raise_clear_errors():
    net = _build("tiny")
    x, logsnr = _inputs(net)
    with pytest.raises(ValueError, match="divisible by the total downsampling factor 4"):
        net(torch.randn(2, 1, 18, 16), logsnr)
    with pytest.raises(ValueError, match="in_channels=1"):
        net(torch.randn(2, 3, 16, 16), logsnr)
    for bad in ([0, 11], [-1, 2]):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\]"):
            net(x, logsnr, torch.tensor(bad))
    with pytest.raises(ValueError, match="logsnr must have shape"):
        net(x, logsnr[:1])
    with pytest.raises(ValueError, match="unconditional"):
        _build("tiny", num_classes=0)(x, logsnr, torch.tensor([0, 1]))
    uvit = _build("tiny-uvit", patch_size=2, resolution=32)
    with pytest.raises(ValueError, match="divisible by the total downsampling factor 8"):
        uvit(torch.randn(2, 1, 20, 20), logsnr)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: UViTConfig(block_types=("res", "res", "conv", "transformer")), "block type"),
        (lambda: UViTConfig(down_blocks=(3, 3)), "one entry per level"),
        (lambda: UViTConfig(resolution=500), "divisible"),
        (lambda: UNetConfig(attention_resolutions=(12,)), "attention_resolutions"),
        (lambda: UNetConfig(head_channels=64, num_heads=4), "exactly one"),
        (lambda: UNetConfig(channels=20), "norm_groups"),
        (lambda: ClassifierConfig(num_classes=0), "num_classes"),
        (lambda: nets.from_preset("nope"), "available"),
        (lambda: nets.from_preset("tiny", patch_size=2), "no fields"),
        (lambda: nets.build("gan", {}), "kind"),
    ],
)
def test_bad_configs_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_position_code_2d_values():
    """Vaswani et al. 2017, §3.5 per axis: [sin(r·ω), cos(r·ω), sin(c·ω), cos(c·ω)], ω_k = 10⁴^(−k/(dim/4))."""
    from pixdiff.nets.layers import position_code_2d

    code = position_code_2d(3, 5, 8)
    assert code.shape == (15, 8)
    omega = torch.tensor([1.0, 1e-2])  # dim/4 = 2: ω_0 = 1, ω_1 = 10⁴^(−1/2)
    r, c = 2, 4  # token 2·5 + 4 = 14 (row-major, as x.flatten(2))
    want = torch.cat([torch.sin(r * omega), torch.cos(r * omega), torch.sin(c * omega), torch.cos(c * omega)])
    torch.testing.assert_close(code[14], want)
    assert torch.equal(code[0], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    assert torch.unique(code, dim=0).shape[0] == 15  # every token gets its own code
    with pytest.raises(PixdiffError, match="divisible by 4"):
        position_code_2d(2, 2, 6)


@pytest.mark.parametrize("pos_emb", [False, True])
def test_transformer_stack_sees_token_positions_only_with_the_position_code(pos_emb):
    """Without a position code, attention + per-token MLPs commute with any shuffle of the tokens
    (the stack cannot know where a token is); the code breaks that symmetry."""
    from pixdiff.nets.uvit import _Stack

    cfg = nets.preset_config("tiny-uvit", pos_emb=pos_emb)
    stack = _dezero(_Stack(cfg, 2, 2)).eval()  # the 4×4 middle stack, 128 wide
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 128, 4, 4, generator=g)
    emb = torch.randn(2, cfg.embedding_channels, generator=g)
    perm = torch.randperm(16, generator=g)
    shuffle = lambda t: t.flatten(2)[:, :, perm].reshape(t.shape)  # noqa: E731
    commutes = torch.allclose(stack(shuffle(x), emb), shuffle(stack(x, emb)), atol=1e-5)
    assert commutes is not pos_emb


def test_position_code_projection_learns_and_is_counted():
    net = _dezero(_build("tiny-uvit", pos_emb=True, **SMALL_UVIT))
    x, logsnr = _inputs(net, batch=1)
    net(x, logsnr).square().mean().backward()
    pos = [n for n, p in net.named_parameters() if ".pos." in n]
    assert len(pos) == 3 and all(p.grad.abs().sum() > 0 for n, p in net.named_parameters() if n in pos)
    # one projection per transformer stack that has blocks (down, up and mid), once per forward
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x, logsnr)
    assert nets.count_flops(net, 16) == pytest.approx(counter.get_total_flops(), rel=0.05)
    plain = _build("tiny-uvit", **SMALL_UVIT)
    assert nets.count_flops(net, 16) - nets.count_flops(plain, 16) == 2 * 2 * 32 * 32 * 8 * 8 + 2 * 32 * 32 * 4 * 4
