"""The four V-Express modules at tiny size: shapes, determinism, and the reference semantics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.sd.attention import Attention, set_attn_processor
from models.sd.configs import sd15_unet_config, tiny_unet_config
from models.sd.motion_module import (
    TemporalSelfAttention,
    VanillaTemporalModule,
    sinusoidal_position_table,
)
from models.sd.reference_net import ReferenceNet
from models.vexpress.audio_projection import AudioProjection
from models.vexpress.configs import tiny_audio_projection_config, tiny_guider_config
from models.vexpress.guider import VKpsGuider
from models.vexpress.unet_3d import VExpressUNet3D

MANIFEST = Path(__file__).parent / "data" / "checkpoint_manifest.json"
WIDTH = 32  # tiny cross-attention / audio token width
# The UNet tests compare runs that should agree exactly (e.g. one frame alone vs inside a window). They
# run in float64: a random-init UNet amplifies fp32 rounding to ~1e-4, which would make such checks
# either loose or hardware-dependent.
DTYPE = torch.float64


def _seeded(build: Any, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    torch.manual_seed(seed)
    model = build().eval()
    torch.nn.Module.to(model, dtype)  # plain nn.Module.to: diffusers' logs a spurious warning
    return model


def _copy(unet: VExpressUNet3D) -> VExpressUNet3D:
    return _seeded(
        lambda: VExpressUNet3D.from_unet_config(tiny_unet_config()), dtype=unet.dtype
    ).requires_grad_(False)


@pytest.fixture(scope="module")
def reference_net() -> ReferenceNet:
    return _seeded(lambda: ReferenceNet.from_unet_config(tiny_unet_config()), dtype=DTYPE)


@pytest.fixture(scope="module")
def unet() -> VExpressUNet3D:
    return _seeded(lambda: VExpressUNet3D.from_unet_config(tiny_unet_config()), dtype=DTYPE)


def _bank(reference_net: ReferenceNet, batch: int = 1, seed: int = 1, size: int = 8) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, size, size, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        return reference_net(latents, 0, torch.zeros(batch, 1, WIDTH, dtype=DTYPE))


def _inputs(batch: int = 1, frames: int = 3, seed: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, 4, frames, 8, 8, generator=generator, dtype=DTYPE),
        "encoder_hidden_states": torch.randn(batch * frames, 5, WIDTH, generator=generator, dtype=DTYPE),
        "kps_features": torch.randn(batch, 32, frames, 8, 8, generator=generator, dtype=DTYPE),
    }


def _run(
    unet: VExpressUNet3D, bank: list[torch.Tensor], inputs: dict[str, torch.Tensor], **kwargs: Any
) -> torch.Tensor:
    with torch.no_grad():
        return unet(
            inputs["sample"],
            torch.tensor(500),
            inputs["encoder_hidden_states"],
            bank,
            kps_features=inputs.get("kps_features"),
            **kwargs,
        )


def _without_motion(unet: VExpressUNet3D) -> VExpressUNet3D:
    """A copy whose motion modules are identities (proj_out zeroed, as AnimateDiff initialises them)."""
    clone = _copy(unet)
    clone.load_state_dict(unet.state_dict())
    for name, parameter in clone.named_parameters():
        if "temporal_transformer.proj_out" in name:
            parameter.data.zero_()
    return clone


# --- ReferenceNet -------------------------------------------------------------------------------


def test_reference_bank_shapes_follow_the_denoiser_blocks(
    reference_net: ReferenceNet, unet: VExpressUNet3D
) -> None:
    bank = _bank(reference_net, batch=2)
    assert len(bank) == 16 == unet.num_banks
    blocks = [m for m in unet.modules() if type(m).__name__ == "ReferenceReaderTransformerBlock"]
    # Registration order: down 0,0 1,1 2,2 (8x8, 4x4, 2x2), up 1x3 2x3 3x3 (2x2, 4x4, 8x8), mid (1x1).
    tokens = [64, 64, 16, 16, 4, 4, 4, 4, 4, 16, 16, 16, 64, 64, 64, 1]
    for entry, block, length in zip(bank, blocks, tokens, strict=True):
        assert entry.shape == (2, length, block.norm1.normalized_shape[0])


def test_reference_net_is_deterministic_and_batch_independent(reference_net: ReferenceNet) -> None:
    first, second = _bank(reference_net, batch=2), _bank(reference_net, batch=2)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    single = _bank(reference_net, batch=1)  # the same seed: its latents are row 0 of the pair's
    for a, b in zip(single, first, strict=True):
        torch.testing.assert_close(a[0], b[0])


def test_reference_bank_early_stop_equals_the_full_forward(reference_net: ReferenceNet) -> None:
    """The forward stops after the last bank entry; a full UNet pass (hooks on every norm2) agrees."""
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for module in reference_net.modules():
        if type(module).__name__ == "ReferenceWriterTransformerBlock":
            index = module.bank_index
            hooks.append(
                module.norm2.register_forward_hook(
                    lambda m, i, o, index=index: captured.__setitem__(index, o)
                )
            )
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    context = torch.zeros(1, 1, WIDTH, dtype=DTYPE)
    bank: list[torch.Tensor | None] = [None] * 16
    kwargs = {"encoder_hidden_states": context, "bank": bank}
    with torch.no_grad():
        temb = reference_net.time_embedding(reference_net.time_proj(torch.zeros(1)).to(DTYPE))
        hidden = reference_net.conv_in(latents)
        skips: tuple[torch.Tensor, ...] = (hidden,)
        for block in reference_net.down_blocks:
            hidden, more = block(hidden, temb, 1, kwargs)
            skips += more
        hidden = reference_net.mid_block(hidden, temb, 1, kwargs)
        for block in reference_net.up_blocks:
            n = len(block.resnets)
            hidden, skips = block(hidden, skips[-n:], temb, 1, kwargs), skips[:-n]
        output = reference_net.conv_out(hidden)
    for hook in hooks:
        hook.remove()
    assert output.shape == (1, 4, 8, 8)
    early = _bank(reference_net)
    assert len(captured) == 16
    for i, entry in enumerate(early):
        assert torch.equal(entry, captured[i])


def test_reference_net_has_no_conv_norm_out(reference_net: ReferenceNet) -> None:
    keys = reference_net.state_dict().keys()
    assert not any(key.startswith("conv_norm_out") for key in keys)
    assert "conv_out.weight" in keys


# --- denoising UNet -----------------------------------------------------------------------------


def test_unet_output_shape_and_determinism(reference_net: ReferenceNet, unet: VExpressUNet3D) -> None:
    bank = _bank(reference_net, batch=2)
    inputs = _inputs(batch=2)
    out = _run(unet, bank, inputs, reference_attention_weight=0.95, audio_attention_weight=3.0)
    assert out.shape == (2, 4, 3, 8, 8)
    assert torch.isfinite(out).all()
    again = _run(unet, bank, inputs, reference_attention_weight=0.95, audio_attention_weight=3.0)
    assert torch.equal(out, again)


def test_unet_handles_latents_not_a_multiple_of_eight(
    reference_net: ReferenceNet, unet: VExpressUNet3D
) -> None:
    bank = _bank(reference_net, size=6)
    inputs = _inputs()
    inputs["sample"] = torch.randn(1, 4, 3, 6, 10, dtype=DTYPE)
    inputs["kps_features"] = torch.zeros(1, 32, 3, 6, 10, dtype=DTYPE)
    assert _run(unet, bank, inputs).shape == (1, 4, 3, 6, 10)


def test_without_motion_modules_frames_are_independent_and_norms_per_frame(
    reference_net: ReferenceNet, unet: VExpressUNet3D
) -> None:
    """Per-frame GroupNorm/conv and per-frame audio tokens: frame 0 of a 3-frame window equals the
    1-frame run of frame 0 once the motion modules are identities."""
    frame_local = _without_motion(unet)
    bank = _bank(reference_net)
    inputs = _inputs()
    window = _run(frame_local, bank, inputs)
    single = {
        "sample": inputs["sample"][:, :, :1],
        "encoder_hidden_states": inputs["encoder_hidden_states"][:1],
        "kps_features": inputs["kps_features"][:, :, :1],
    }
    torch.testing.assert_close(
        _run(frame_local, bank, single)[:, :, 0], window[:, :, 0], rtol=1e-4, atol=1e-5
    )
    # Frame 1's audio tokens reach frame 1 only.
    changed = dict(inputs)
    changed["encoder_hidden_states"] = inputs["encoder_hidden_states"].clone()
    changed["encoder_hidden_states"][1] += 1.0
    other = _run(frame_local, bank, changed)
    torch.testing.assert_close(other[:, :, 0], window[:, :, 0])
    assert not torch.allclose(other[:, :, 1], window[:, :, 1])


def test_motion_modules_mix_frames(reference_net: ReferenceNet, unet: VExpressUNet3D) -> None:
    bank = _bank(reference_net)
    inputs = _inputs()
    base = _run(unet, bank, inputs)
    changed = dict(inputs)
    changed["sample"] = inputs["sample"].clone()
    changed["sample"][:, :, 2] += 1.0
    assert not torch.allclose(_run(unet, bank, changed)[:, :, 0], base[:, :, 0])


def test_reference_attention_reads_the_bank_of_its_own_sample(
    reference_net: ReferenceNet, unet: VExpressUNet3D
) -> None:
    bank = _bank(reference_net, batch=2)
    inputs = _inputs(batch=2)
    base = _run(unet, bank, inputs)
    changed_bank = [torch.cat([entry[:1], entry[1:] + 1.0]) for entry in bank]
    changed = _run(unet, changed_bank, inputs)
    torch.testing.assert_close(changed[0], base[0])
    assert not torch.allclose(changed[1], base[1])


def test_reference_weight_scales_the_whole_output_including_bias(
    reference_net: ReferenceNet, unet: VExpressUNet3D
) -> None:
    """With weight 0 neither the bank nor attn1_5's output bias matter, so the bias is inside the scale."""
    model = _copy(unet)
    model.load_state_dict(unet.state_dict())
    bank = _bank(reference_net)
    inputs = _inputs()
    base = _run(model, bank, inputs, reference_attention_weight=0.0)
    for name, parameter in model.named_parameters():
        if "attn1_5.to_out.0.bias" in name:
            parameter.data.add_(0.5)
    other_bank = [torch.randn_like(entry) for entry in bank]
    torch.testing.assert_close(
        _run(model, other_bank, inputs, reference_attention_weight=0.0), base, rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(_run(model, bank, inputs, reference_attention_weight=1.0), base)


def test_audio_weight_zero_removes_the_audio_path(reference_net: ReferenceNet, unet: VExpressUNet3D) -> None:
    bank = _bank(reference_net)
    inputs = _inputs()
    base = _run(unet, bank, inputs, audio_attention_weight=0.0)
    changed = dict(inputs)
    changed["encoder_hidden_states"] = torch.randn_like(inputs["encoder_hidden_states"])
    torch.testing.assert_close(
        _run(unet, bank, changed, audio_attention_weight=0.0), base, rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(_run(unet, bank, changed, audio_attention_weight=3.0), base)


def test_kps_features_are_added_after_conv_in(reference_net: ReferenceNet, unet: VExpressUNet3D) -> None:
    """A per-channel constant kps feature is the same as that constant added to conv_in's bias."""
    bank = _bank(reference_net)
    inputs = _inputs()
    offset = torch.linspace(-1, 1, 32, dtype=DTYPE)
    inputs["kps_features"] = offset[None, :, None, None, None].expand(1, 32, 3, 8, 8).clone()
    with_kps = _run(unet, bank, inputs)
    shifted = _copy(unet)
    shifted.load_state_dict(unet.state_dict())
    shifted.conv_in.bias.data += offset
    no_kps = dict(inputs)
    del no_kps["kps_features"]
    torch.testing.assert_close(_run(shifted, bank, no_kps), with_kps)


def test_unet_rejects_inconsistent_inputs(reference_net: ReferenceNet, unet: VExpressUNet3D) -> None:
    bank = _bank(reference_net)
    inputs = _inputs()
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        unet(inputs["sample"], 1, inputs["encoder_hidden_states"][:2], bank)
    with pytest.raises(ValueError, match="reference_hidden_states has 15"):
        unet(inputs["sample"], 1, inputs["encoder_hidden_states"], bank[:-1])
    with pytest.raises(ValueError, match="num_frames=33"):
        unet(torch.zeros(1, 4, 33, 8, 8, dtype=DTYPE), 1, torch.zeros(33, 5, WIDTH, dtype=DTYPE), bank)


def test_time_embedding_is_cos_first_without_shift(unet: VExpressUNet3D) -> None:
    table = unet.time_proj(torch.tensor([0, 10]))
    assert torch.equal(table[0, :16], torch.ones(16)) and torch.equal(table[0, 16:], torch.zeros(16))
    frequencies = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(16) / 16)
    torch.testing.assert_close(table[1, :16], torch.cos(10 * frequencies))


# --- motion module ------------------------------------------------------------------------------


def test_motion_module_uses_positions_zero_to_f_minus_one() -> None:
    torch.manual_seed(0)
    module = VanillaTemporalModule(32, max_positions=8).eval()
    for parameter in module.parameters():
        parameter.data.normal_(0, 0.2)
    x = torch.randn(2 * 3, 32, 2, 2)
    with torch.no_grad():
        base = module(x, num_frames=3)
        pe = [m.pe for m in module.modules() if hasattr(m, "pe") and isinstance(m.pe, torch.Tensor)]
        assert len(pe) == 2
        torch.testing.assert_close(pe[0], sinusoidal_position_table(8, 32))
        for table in pe:
            table[0, 3:] = 100.0  # rows the 3-frame window never reads
        torch.testing.assert_close(module(x, num_frames=3), base)
        for table in pe:
            table[0, 1] += 1.0
        assert not torch.allclose(module(x, num_frames=3), base)
    with pytest.raises(ValueError, match="num_frames=9"):
        module(torch.zeros(9, 32, 1, 1), num_frames=9)


def test_temporal_attention_attends_along_frames_at_each_position() -> None:
    torch.manual_seed(0)
    attention = TemporalSelfAttention(32, heads=8, max_positions=32).eval()
    tokens = torch.randn(2 * 4, 5, 32)  # B=2, F=4, 5 spatial positions
    with torch.no_grad():
        base = attention(tokens, num_frames=4)
        changed_tokens = tokens.clone()
        changed_tokens[0, 1] += 1.0  # sample 0, frame 0, position 1
        changed = attention(changed_tokens, num_frames=4)
    assert not torch.allclose(changed[3, 1], base[3, 1])  # frame 3 of sample 0 sees it at position 1
    torch.testing.assert_close(changed[:, [0, 2, 3, 4]], base[:, [0, 2, 3, 4]])  # other positions do not
    torch.testing.assert_close(changed[4:], base[4:])  # nor does sample 1


# --- guider and audio projection ----------------------------------------------------------------


def test_guider_shape_determinism_and_frame_independence() -> None:
    guider = _seeded(lambda: VKpsGuider(**tiny_guider_config()))
    images = torch.rand(2, 3, 4, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = guider(images)
        assert out.shape == (2, 32, 4, 4, 6)
        assert torch.equal(out, guider(images))
        torch.testing.assert_close(guider(images[:, :, 2:3])[:, :, 0], out[:, :, 2], rtol=1e-4, atol=1e-5)


def test_audio_projection_shape_and_determinism() -> None:
    projection = _seeded(lambda: AudioProjection(**tiny_audio_projection_config()))
    windows = torch.randn(6, 10, WIDTH, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = projection(windows)
        assert out.shape == (6, 5, WIDTH)
        assert torch.equal(out, projection(windows))
        torch.testing.assert_close(projection(windows[3:4]), out[3:4], rtol=1e-4, atol=1e-5)
    again = _seeded(lambda: AudioProjection(**tiny_audio_projection_config()))
    assert all(torch.equal(a, b) for a, b in zip(projection.parameters(), again.parameters(), strict=True))


def test_full_size_modules_have_the_published_key_counts() -> None:
    manifest = json.loads(MANIFEST.read_text())["files"]
    with torch.device("meta"):
        assert (
            len(ReferenceNet.from_unet_config(sd15_unet_config()).state_dict())
            == manifest["reference_net.bin"]["n_tensors"]
        )
        assert (
            len(VExpressUNet3D.from_unet_config(sd15_unet_config()).state_dict())
            == manifest["denoising_unet.bin"]["n_tensors"]
        )


# --- configuration validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ReferenceNet(block_out_channels=(32, 48, 64, 64)), "norm_num_groups"),
        (lambda: ReferenceNet(block_out_channels=(32, 64)), "down_block_types has 4"),
        (lambda: ReferenceNet(act_fn="gelu"), "act_fn"),
        (lambda: ReferenceNet(attention_head_dim=7), "attention_head_dim"),
        (lambda: ReferenceNet(layers_per_block=0), "layers_per_block"),
        (lambda: ReferenceNet(down_block_types=("X", "DownBlock2D", "DownBlock2D", "DownBlock2D")), "'X'"),
        (
            lambda: ReferenceNet.from_unet_config({**tiny_unet_config(), "upcast_attention": True}),
            "upcast_attention",
        ),
        (lambda: ReferenceNet.from_unet_config({**tiny_unet_config(), "foo": 1}), "'foo'"),
        (lambda: VExpressUNet3D(motion_module_num_attention_heads=0), "motion_module_num_attention_heads"),
        (lambda: VExpressUNet3D(motion_module_max_positions=0), "motion_module_max_positions"),
        (
            lambda: VExpressUNet3D.from_unet_config(tiny_unet_config(), motion_module_type="Sparse"),
            "motion_module_type",
        ),
        (
            lambda: VExpressUNet3D.from_unet_config(tiny_unet_config(), unet_use_temporal_attention=True),
            "unet_use_temporal_attention",
        ),
        (
            lambda: VExpressUNet3D.from_unet_config(tiny_unet_config(), use_inflated_groupnorm=False),
            "use_inflated_groupnorm",
        ),
        (lambda: VExpressUNet3D.from_unet_config(tiny_unet_config(), bogus=1), "bogus"),
        (lambda: VKpsGuider(conditioning_channels=0), "conditioning_channels"),
        (lambda: VKpsGuider(block_out_channels=()), "block_out_channels"),
        (lambda: AudioProjection(depth=0), "depth"),
        (lambda: AudioProjection(heads=-1), "heads"),
    ],
)
def test_invalid_configuration_raises_value_error(build: Any, message: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        build()


def test_unet_config_round_trips_through_register_to_config(unet: VExpressUNet3D) -> None:
    rebuilt = VExpressUNet3D.from_config(unet.config)
    assert list(rebuilt.state_dict()) == list(unet.state_dict())
    assert unet.config["motion_module_max_positions"] == 32


# --- attention processors -----------------------------------------------------------------------


class _ExplicitSoftmaxProcessor:
    """Textbook attention with the context repeated per query row: the meaning SDPAttnProcessor must keep."""

    def __call__(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        context = context.repeat_interleave(hidden_states.shape[0] // context.shape[0], dim=0)
        batch, length, _ = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], x.shape[1], attn.heads, attn.dim_head).transpose(1, 2)

        q, k, v = heads(attn.to_q(hidden_states)), heads(attn.to_k(context)), heads(attn.to_v(context))
        weights = torch.softmax(q @ k.transpose(-1, -2) * attn.dim_head**-0.5, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, length, -1)
        return attn.to_out[1](attn.to_out[0](out))


def test_shared_context_attention_equals_repeating_the_context() -> None:
    torch.manual_seed(0)
    attention = Attention(32, 24, heads=4, dim_head=8).eval()
    queries = torch.randn(6, 10, 32)  # B=2 samples x F=3 frames
    bank = torch.randn(2, 7, 24)  # one row per sample
    with torch.no_grad():
        folded = attention(queries, bank)
        attention.set_processor(_ExplicitSoftmaxProcessor())
        explicit = attention(queries, bank)
    torch.testing.assert_close(folded, explicit, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="does not divide"):
        Attention(32, 24, heads=4, dim_head=8)(queries, torch.randn(4, 7, 24))


def test_swapping_processors_keeps_the_denoiser_output(
    reference_net: ReferenceNet, unet: VExpressUNet3D
) -> None:
    """The whole denoiser with textbook attention (bank repeated per frame) equals the SDPA version.

    In float64 (see DTYPE), so the tolerance can be tight.
    """
    bank, inputs = _bank(reference_net, batch=2), _inputs(batch=2)
    models = []
    for processor in (None, _ExplicitSoftmaxProcessor()):
        model = _copy(unet)
        model.load_state_dict(unet.state_dict())
        if processor is not None:
            set_attn_processor(model, processor)
            attentions = [m for m in model.modules() if isinstance(m, Attention)]
            assert len(attentions) == 16 * 3 + 21 * 2
            assert all(m.processor is processor for m in attentions)
        models.append(model)
    expected, actual = (
        _run(model, bank, inputs, reference_attention_weight=0.95, audio_attention_weight=3.0)
        for model in models
    )
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10)
