"""AniPortrait's pose guider: landmark images -> five feature maps, one added after the denoiser's
``conv_in`` and one after each of its down blocks.

The published module also takes the reference's landmark image and runs it through the same convs,
but its "cross-attention" blocks are built without a context (diffusers' BasicTransformerBlock with no
``cross_attention_dim``: self-attention and feed-forward only), so the reference landmarks never reach
the output. We keep the published layout and parameter names and skip that dead computation.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from models.sd.attention import Attention

# (in, out, stride) of the stem's convs; each conv is followed by BatchNorm2d and ReLU.
_STEM: tuple[tuple[int, int, int, int], ...] = (
    (3, 3, 3, 1),
    (3, 16, 4, 2),
    (16, 16, 3, 1),
    (16, 32, 4, 2),
    (32, 32, 3, 1),
    (32, 64, 4, 2),
    (64, 64, 3, 1),
    (64, 128, 3, 1),
)


def _conv_bn_relu(
    layers: list[nn.Module], channels_in: int, channels_out: int, kernel: int, stride: int
) -> None:
    layers += [
        nn.Conv2d(channels_in, channels_out, kernel_size=kernel, stride=stride, padding=1),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    ]


class SelfAttentionTransformerBlock(nn.Module):
    """diffusers' BasicTransformerBlock without cross-attention: ``norm1, attn1, norm3, ff``."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.attn1(self.norm1(hidden_states)) + hidden_states
        output: torch.Tensor = self.ff(self.norm3(hidden_states)) + hidden_states
        return output


class SpatialSelfAttention(nn.Module):
    """GroupNorm, 1x1 ``proj_in`` to ``heads * dim_head`` channels, one block over the pixels, 1x1
    ``proj_out``, residual (diffusers' Transformer2DModel layout, ``transformer_blocks.0``)."""

    def __init__(self, channels: int, heads: int, dim_head: int, norm_num_groups: int) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([SelfAttentionTransformerBlock(inner_dim, heads, dim_head)])
        self.proj_out = nn.Conv2d(inner_dim, channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = hidden_states.shape
        tokens = self.proj_in(self.norm(hidden_states))
        inner_dim = tokens.shape[1]
        tokens = tokens.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = tokens.reshape(batch, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        output: torch.Tensor = self.proj_out(tokens) + hidden_states
        return output


class PoseGuider(ModelMixin, ConfigMixin):  # type: ignore[misc]
    r"""
    Per-frame conv stem (3 stride-2 convs: the latent grid) -> ``final_proj`` -> ``* scale``, then four
    stages (``conv_layers_1..4``, the first three stride 2) each followed by a spatial self-attention
    block (``cross_attn1..4``). Output widths ``c, c, 2c, 4c, 4c`` at strides 8, 16, 32, 64, 64: SD1.5's
    ``conv_in`` and down-block outputs for ``c = 320``.

    Parameters:
        noise_latent_channels (`int`): `c`, the denoiser's first block width (published: 320).
        attention_heads (`int`), attention_head_dim (`int`): of every attention block (published: 16, 88,
            i.e. 1408 channels inside every block whatever its width).
        norm_num_groups (`int`): GroupNorm groups before each attention block (published: 32).
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        noise_latent_channels: int = 320,
        attention_heads: int = 16,
        attention_head_dim: int = 88,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        c = noise_latent_channels
        for name, value in (
            ("noise_latent_channels", c),
            ("attention_heads", attention_heads),
            ("attention_head_dim", attention_head_dim),
            ("norm_num_groups", norm_num_groups),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if c % norm_num_groups:
            raise ValueError(f"norm_num_groups={norm_num_groups} does not divide noise_latent_channels={c}")
        stem: list[nn.Module] = []
        for channels_in, channels_out, kernel, stride in _STEM:
            _conv_bn_relu(stem, channels_in, channels_out, kernel, stride)
        self.conv_layers = nn.Sequential(*stem)
        self.final_proj = nn.Conv2d(128, c, kernel_size=1)
        stages: list[list[tuple[int, int, int]]] = [
            [(c, c, 1), (c, c, 2)],
            [(c, c, 1), (c, 2 * c, 2)],
            [(2 * c, 2 * c, 1), (2 * c, 4 * c, 2)],
            [(4 * c, 4 * c, 1)],
        ]
        for index, stage in enumerate(stages, start=1):
            layers: list[nn.Module] = []
            for channels_in, channels_out, stride in stage:
                _conv_bn_relu(layers, channels_in, channels_out, 3, stride)
            self.add_module(f"conv_layers_{index}", nn.Sequential(*layers))
            width = stage[-1][1]
            self.add_module(
                f"cross_attn{index}",
                SpatialSelfAttention(width, attention_heads, attention_head_dim, norm_num_groups),
            )
        self.scale = nn.Parameter(torch.full((1,), 2.0))

    def forward(self, pose_images: torch.Tensor) -> list[torch.Tensor]:
        r"""
        Args:
            pose_images (`torch.Tensor` of shape `(B, 3, F, H, W)`): landmark images as the reference
                feeds them: ``2 * pixel - 1`` with pixels in 0..255 (see ``models.aniportrait.pipeline``).

        Returns:
            `list[torch.Tensor]`: five maps of shape `(B, C_k, F, H / s_k, W / s_k)`, `C_k` = ``c, c, 2c, 4c,
            4c`` and `s_k` = 8, 16, 32, 64, 64.
        """
        if pose_images.ndim != 5 or pose_images.shape[1] != 3:
            raise ValueError(f"pose_images must be (B, 3, F, H, W), got shape {tuple(pose_images.shape)}")
        batch, channels, num_frames, height, width = pose_images.shape
        if height % 64 or width % 64:
            raise ValueError(f"pose image size must be a multiple of 64, got {width}x{height}")
        hidden_states = pose_images.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        hidden_states = self.final_proj(self.conv_layers(hidden_states)) * self.scale
        features = [hidden_states]
        for index in range(1, 5):
            hidden_states = getattr(self, f"conv_layers_{index}")(hidden_states)
            hidden_states = getattr(self, f"cross_attn{index}")(hidden_states)
            features.append(hidden_states)
        return [
            feature.reshape(batch, num_frames, *feature.shape[1:]).transpose(1, 2).contiguous()
            for feature in features
        ]
