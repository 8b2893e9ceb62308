"""The shared skeleton on its own: a second engine's denoiser, built from ``models.sd`` with another
condition plug (per-sample tokens, no guider, no reference bank, its own scheduler), renders in
one call and chunk by chunk with carries, the same frames. Nothing here comes from an engine."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import EngineFailure
from models.engine import ChunkCarry, ChunkSpec
from models.sd.configs import tiny_unet_config, unet_3d_kwargs_from_additional
from models.sd.pipeline import ClassifierFreeGuidance, DenoiserInputs, SDVideoPipeline
from models.sd.reference_net import ReferenceNet
from models.sd.sampler import ChunkSchedule
from models.sd.testing import sd_vae
from models.sd.transformer_blocks import CrossAttentionTransformerBlock, ReferenceReaderTransformerBlock
from models.sd.unet_3d import UNet3DConditionModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
WIDTH = 32  # tiny_unet_config's cross-attention width
# SD1.5's own DDIM settings (epsilon prediction), not V-Express's: the scheduler is the engine's choice.
SD15_DDIM = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


class ReferenceTokensUNet(UNet3DConditionModel):
    """An engine's denoiser that reads a reference bank: one line of configuration, no copied code."""

    transformer_block_class: ClassVar[type[nn.Module]] = ReferenceReaderTransformerBlock


@pytest.fixture(scope="module")
def pipeline() -> SDVideoPipeline:
    """Per-sample tokens, no guider, no ReferenceNet: the plug of a CLIP-token engine."""
    torch.manual_seed(0)
    unet = UNet3DConditionModel.from_unet_config(tiny_unet_config()).eval()
    return SDVideoPipeline(sd_vae(), None, unet, SD15_DDIM, torch.device("cpu"), torch.float32)


TOKENS = torch.randn(1, 3, WIDTH, generator=torch.Generator().manual_seed(1))
GUIDANCE = ClassifierFreeGuidance(guidance_scale=2.0)


def token_plug(bank: Sequence[torch.Tensor], start: int, stop: int) -> DenoiserInputs:
    """A dummy token source: the same 3 tokens for every frame of the sample (like CLIP image tokens)."""
    assert list(bank) == []
    return DenoiserInputs(TOKENS).for_guidance(GUIDANCE)


def portrait() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_the_skeleton_imports_no_engine() -> None:
    code = (
        "import sys, models.sd.pipeline, models.sd.checkpoint, models.sd.testing; "
        "print(sorted(m for m in sys.modules if m.startswith('models.') and not m.startswith('models.sd')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['models.engine', 'models.options']"


def test_the_plain_denoiser_has_cross_attention_blocks_and_no_bank(pipeline: SDVideoPipeline) -> None:
    unet = pipeline.denoising_unet
    blocks = [m for m in unet.modules() if isinstance(m, CrossAttentionTransformerBlock)]
    assert len(blocks) == 16 and unet.num_banks == 0
    assert not any("attn1_5" in key for key in unet.state_dict())
    sample = torch.zeros(1, 4, 2, 4, 4)
    with pytest.raises(ValueError, match="no transformer block reads a reference bank"):
        unet(sample, 1, TOKENS, [torch.zeros(1, 16, 32)])


def test_per_sample_tokens_equal_the_same_tokens_given_per_frame(pipeline: SDVideoPipeline) -> None:
    # float64: at 4x4 latents the deepest GroupNorms amplify fp32 rounding past a useful tolerance
    unet = copy.deepcopy(pipeline.denoising_unet)
    nn.Module.to(unet, torch.float64)
    sample = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tokens = torch.randn(2, 3, WIDTH, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        shared = unet(sample, 500, tokens)
        per_frame = unet(sample, 500, tokens.repeat_interleave(3, dim=0))
    torch.testing.assert_close(shared, per_frame, rtol=1e-5, atol=1e-7)  # swapped samples: 0.3 off
    with pytest.raises(ValueError, match="per frame or"):
        unet(sample, 500, tokens[:1].expand(4, -1, -1))


def test_one_call_and_chunks_with_carries_render_the_same_frames(pipeline: SDVideoPipeline) -> None:
    options: dict[str, Any] = {"context_frames": 3, "motion_frames": 1, "num_inference_steps": 2}
    one_shot = pipeline(
        portrait(), 5, token_plug, guidance=GUIDANCE, generator=torch.Generator().manual_seed(4), **options
    )
    assert one_shot.shape == (5, SIZE, SIZE, 3) and one_shot.dtype == np.uint8

    schedule = ChunkSchedule(num_frames=5, context_frames=3, motion_frames=1, seed=4)
    chunks = schedule.plan()
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 5)]
    frames, carry = [], None
    for chunk in chunks:
        latents, carry = pipeline.denoise_motion_frames_chunk(
            schedule,
            chunk,
            carry,
            lambda start, stop: token_plug([], start, stop),
            GUIDANCE,
            pipeline.make_scheduler(2),
            latent_size=(SIZE // 8, SIZE // 8),
        )
        carry = ChunkCarry.from_bytes(carry.to_bytes())  # what the runner stores between chunks
        frames.append(pipeline.decode_latents(latents))
    np.testing.assert_array_equal(np.concatenate(frames), one_shot)

    with pytest.raises(EngineFailure, match="needs the carry of chunk 0"):
        pipeline.denoise_motion_frames_chunk(
            schedule, chunks[1], None, lambda a, b: token_plug([], a, b), GUIDANCE, pipeline.make_scheduler(1),
            latent_size=(4, 4),
        )  # fmt: skip
    with pytest.raises(EngineFailure, match="does not match the plan"):
        schedule.start_chunk(ChunkSpec(index=1, start=2, stop=5), carry)


def test_a_bank_reading_denoiser_runs_a_guided_step_with_the_shared_reference_net() -> None:
    torch.manual_seed(0)
    reference_net = ReferenceNet.from_unet_config(tiny_unet_config()).eval()
    unet = ReferenceTokensUNet.from_unet_config(tiny_unet_config()).eval()
    assert unet.num_banks == reference_net.num_banks == 16
    pipeline = SDVideoPipeline(sd_vae(), reference_net, unet, SD15_DDIM, torch.device("cpu"), torch.float32)
    bank = pipeline.reference_bank(pipeline.encode_reference(portrait()))

    def plug(bank: Sequence[torch.Tensor], start: int, stop: int) -> DenoiserInputs:
        inputs = DenoiserInputs(TOKENS, list(bank), block_kwargs={"reference_attention_weight": 0.5})
        return inputs.for_guidance(GUIDANCE)

    conditions = plug(bank, 0, 2)
    assert conditions.encoder_hidden_states.shape == (2, 3, WIDTH)
    assert conditions.reference_hidden_states is not None
    assert all(torch.all(entry[0] == 0) for entry in conditions.reference_hidden_states)
    latents = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    scheduler = pipeline.make_scheduler(1)
    v_pred = pipeline.predict_v(latents, scheduler.timesteps[0], conditions, GUIDANCE)
    assert v_pred.shape == latents.shape and torch.isfinite(v_pred).all()
    with pytest.raises(
        ValueError, match="reference_hidden_states is required: the transformer blocks read 16"
    ):
        unet(latents, 1, TOKENS)


def test_unet_additional_kwargs_translate_partially_and_refuse_what_is_not_built() -> None:
    assert unet_3d_kwargs_from_additional({}) == {}
    kwargs = unet_3d_kwargs_from_additional(
        {"motion_module_kwargs": {"temporal_position_encoding_max_len": 16}},
        defaults={"use_motion_module": True, "motion_module_kwargs": {"num_attention_heads": 4}},
    )
    assert kwargs == {
        "use_motion_module": True,
        "motion_module_num_attention_heads": 4,
        "motion_module_max_positions": 16,
    }
    with torch.device("meta"):
        unet = UNet3DConditionModel.from_unet_config(
            tiny_unet_config(), motion_module_kwargs={"temporal_position_encoding_max_len": 16}
        )
    assert unet.max_frames == 16
    for bad, message in (
        ({"motion_module_type": "Sparse"}, "motion_module_type"),
        ({"unet_use_cross_frame_attention": True}, "unet_use_cross_frame_attention"),
        ({"motion_module_kwargs": {"attention_block_types": ["Temporal_Cross"]}}, "Temporal_Self"),
        ({"motion_module_kwargs": {"bogus": 1}}, "bogus"),
    ):
        with pytest.raises(ValueError, match=message):
            unet_3d_kwargs_from_additional(bad)
