"""CLIP token, guider input and the CFG batching of a window's conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from models.aniportrait.conditioning import clip_image_tokens, guider_input, window_conditions
from models.aniportrait.guider import PoseGuider

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_clip_token_shape_and_determinism() -> None:
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        patch_size=32,
        projection_dim=24,
    )
    encoder = CLIPVisionModelWithProjection(config).eval()
    image = np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8)
    tokens = clip_image_tokens(encoder, CLIPImageProcessor(), image)
    assert tokens.shape == (1, 1, 24)
    torch.testing.assert_close(
        tokens, clip_image_tokens(encoder, CLIPImageProcessor(), image), rtol=0, atol=0
    )


def test_guider_input_scale_and_checks() -> None:
    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    images[1, 0, 0] = (10, 200, 255)
    tensor = guider_input(images, torch.device("cpu"), torch.float32)
    assert tensor.shape == (1, 3, 2, 64, 64)
    assert tensor[0, :, 1, 0, 0].tolist() == [19.0, 399.0, 509.0] and tensor[0, 0, 0, 5, 5].item() == -1.0
    with pytest.raises(ValueError, match="uint8"):
        guider_input(images.astype(np.float32), torch.device("cpu"), torch.float32)


def test_window_conditions_batch_for_guidance() -> None:
    torch.manual_seed(0)
    guider = PoseGuider(32, 2, 8).eval()
    clip = torch.randn(1, 1, 8)
    bank = [torch.randn(1, 4, 32)]
    images = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    plain = window_conditions(guider, clip, bank, images, guidance=False)
    guided = window_conditions(guider, clip, bank, images, guidance=True)
    assert plain.unconditional_samples == 0 and guided.unconditional_samples == 1
    assert guided.encoder_hidden_states.shape == (2, 1, 8) and not guided.encoder_hidden_states[0].any()
    assert guided.pose_features[0].shape == (2, 32, 3, 8, 8)
    torch.testing.assert_close(guided.pose_features[4][1], plain.pose_features[4][0])
    assert set(guided.denoiser_kwargs()) == {
        "encoder_hidden_states",
        "reference_hidden_states",
        "pose_features",
        "unconditional_samples",
    }
