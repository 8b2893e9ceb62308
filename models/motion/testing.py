"""Tiny random-weight motion generators written in the published file layouts, for tests and benches.

The layouts are the real ones (Ditto: ``ditto_pytorch/models/lmdm_v0.4_hubert.pth`` +
``ditto_cfg/v0.4_hubert_cfg_pytorch.pkl``; JoyVASA: the generator checkpoint with ``args`` and
``model`` incl. ``audio_encoder.*``, the template pickle, ``chinese-hubert-base/``); only the widths
are small, so the tiny configs must be passed to the loaders (the published files do not record the
transformer widths). Ditto's HuBERT is ONNX only: `FakeDittoHubert` stands in for its session with
the same input and output shapes.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.motion.ditto import CFG_PATH, LMDM_PATH
from models.motion.ditto_model import DittoConfig, DittoDenoiser, tiny_ditto_config
from models.motion.joyvasa import GENERATOR_PATH, HUBERT_DIR, TEMPLATE_PATH
from models.motion.joyvasa_model import JoyVASAConfig, JoyVASAGenerator, tiny_joyvasa_config


def _perturb_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    # Fresh LayerNorms are the identity: give them weights so a mix-up of norms would show.
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def write_ditto_layout(root: Path, config: DittoConfig | None = None, seed: int = 0) -> DittoConfig:
    """Random LMDM weights and a config pickle in Ditto's published layout under `root`."""
    config = config or tiny_ditto_config()
    torch.manual_seed(seed)
    model = DittoDenoiser(config)
    _perturb_norms(model, torch.Generator().manual_seed(seed))
    (root / LMDM_PATH).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": model.state_dict()}, root / LMDM_PATH)
    cfg = {
        "audio2motion_cfg": {
            "model_path": "./ditto_pytorch/models/lmdm_v0.4_hubert.pth",
            "device": "cuda",
            "motion_feat_dim": config.motion_dim,
            "audio_feat_dim": config.cond_dim,
            "seq_frames": config.seq_frames,
            "use_emo": config.use_emo,
            "use_sc": config.use_sc,
            "use_eye_open": config.use_eye_open,
            "use_eye_ball": config.use_eye_ball,
            "w2f_type": "hubert",
        },
        "default_kwargs": {"sampling_timesteps": 4, "overlap_v2": 4, "smo_k_d": 3},
        "base_cfg": {},
    }
    (root / CFG_PATH).parent.mkdir(parents=True, exist_ok=True)
    (root / CFG_PATH).write_bytes(pickle.dumps(cfg))
    return config


def tiny_hubert(hidden_size: int, seed: int = 0) -> Any:
    """A two-layer HuBERT with the real conv stack (hop 320) and a narrow transformer."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        vocab_size=8,
    )
    model: Any = HubertModel(config)
    return model.eval()


def write_joyvasa_layout(root: Path, config: JoyVASAConfig | None = None, seed: int = 0) -> JoyVASAConfig:
    """A random generator checkpoint (with HuBERT entries), template and HuBERT directory under `root`."""
    config = config or tiny_joyvasa_config()
    hubert = tiny_hubert(config.audio_dim, seed)
    hubert.save_pretrained(root / HUBERT_DIR)
    torch.manual_seed(seed + 1)
    model = JoyVASAGenerator(config)
    _perturb_norms(model, torch.Generator().manual_seed(seed))
    state = {f"audio_encoder.{k}": v.clone() + 0.01 for k, v in hubert.state_dict().items()}
    state.update(model.state_dict())
    args = argparse.Namespace(
        motion_feat_dim=config.motion_dim,
        n_motions=config.n_motions,
        n_prev_motions=config.n_prev_motions,
        feature_dim=config.feature_dim,
        audio_model="hubert_zh",
        n_diff_steps=config.n_diff_steps,
        fps=config.fps,
        pad_mode=config.pad_mode,
        use_indicator=True,
    )
    (root / GENERATOR_PATH).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"args": args, "model": state, "iter": 1}, root / GENERATOR_PATH)
    rng = np.random.RandomState(seed)
    template: dict[str, npt.NDArray[np.float32]] = {}
    for name, size, lo, span in (("exp", 63, 0.0, 0.02), ("scale", 1, 1.0, 0.5), ("t", 3, -0.05, 0.1),
                                 ("pitch", 1, -10.0, 20.0), ("yaw", 1, -15.0, 30.0), ("roll", 1, -5.0, 10.0)):  # fmt: skip
        template[f"min_{name}"] = np.full(size, lo, np.float32)
        template[f"max_{name}"] = np.full(size, lo + span, np.float32)
        template[f"mean_{name}"] = (rng.randn(size) * span).astype(np.float32)
        template[f"std_{name}"] = np.full(size, span, np.float32)
    (root / TEMPLATE_PATH).parent.mkdir(parents=True, exist_ok=True)
    (root / TEMPLATE_PATH).write_bytes(pickle.dumps(template))
    return config


class FakeDittoHubert:
    """Stands in for Ditto's ONNX HuBERT session: (1, 6480) samples -> (20, 1024), each output row a
    fixed random projection of its 320-sample hop (so features follow the audio, frame for frame)."""

    def __init__(self, seed: int = 0) -> None:
        self.projection = np.random.RandomState(seed).randn(400, 1024).astype(np.float32) * 0.05

    def run(self, output_names: Any, input_feed: dict[str, Any]) -> list[Any]:
        audio = np.asarray(input_feed["input_values"], np.float32)
        if audio.shape != (1, 6480):
            raise ValueError(f"input_values has shape {audio.shape}, expected (1, 6480)")
        rows = [audio[0, i * 320 : i * 320 + 400] @ self.projection for i in range(20)]
        return [np.stack(rows).astype(np.float32)]


def portrait_motion(seed: int = 0) -> Any:
    """A random `PortraitMotion` (what LivePortrait's extractor and the eye attributes would give)."""
    from models.motion.generator import PortraitMotion

    rng = np.random.RandomState(seed)
    kp_info = {
        "scale": np.array([1.4], np.float32),
        "pitch": rng.randn(66).astype(np.float32),
        "yaw": rng.randn(66).astype(np.float32),
        "roll": rng.randn(66).astype(np.float32),
        "t": (rng.randn(3) * 0.02).astype(np.float32),
        "exp": (rng.randn(63) * 0.02).astype(np.float32),
        "kp": (rng.randn(63) * 0.1).astype(np.float32),
    }
    return PortraitMotion(
        kp_info, np.array([0.3, 0.31], np.float32), (rng.randn(6) * 0.05).astype(np.float32)
    )


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # protobuf int64: two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: npt.NDArray[Any]) -> bytes:
    data_type = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[array.dtype]
    dims = b"".join(_field(1, int(d)) for d in array.shape)
    return dims + _field(2, data_type) + _field(8, name) + _field(9, np.ascontiguousarray(array).tobytes())


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_field(1, _field(1, d)) for d in shape)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, dims)))


def _ints(name: str, values: list[int]) -> bytes:
    # AttributeProto: name, ints (unpacked), type INTS (7)
    return _field(5, _field(1, name) + b"".join(_field(8, v) for v in values) + _field(20, 7))


def _node(op: str, inputs: list[str], outputs: list[str], attributes: bytes = b"") -> bytes:
    return (
        b"".join(_field(1, i) for i in inputs)
        + b"".join(_field(2, o) for o in outputs)
        + _field(4, op)
        + attributes
    )


def write_tiny_ditto_hubert_onnx(path: Path, seed: int = 0) -> npt.NDArray[np.float32]:
    """An ONNX file with the interface of Ditto's HuBERT (``input_values`` (1, 6480) ->
    ``encoding_out`` (20, 1024)): one strided conv (kernel 400, hop 320), written as raw protobuf
    (no onnx package needed). Returns the conv weight (1024, 400) for checking."""
    weight = (np.random.RandomState(seed).randn(1024, 1, 400) * 0.05).astype(np.float32)
    nodes = [
        _node("Reshape", ["input_values", "shape_in"], ["audio_3d"]),
        _node(
            "Conv", ["audio_3d", "weight"], ["conv"], _ints("strides", [320]) + _ints("kernel_shape", [400])
        ),
        _node("Reshape", ["conv", "shape_out"], ["channels_time"]),
        _node("Transpose", ["channels_time"], ["encoding_out"], _ints("perm", [1, 0])),
    ]
    graph = b"".join(_field(1, n) for n in nodes) + _field(2, "tiny_ditto_hubert")
    graph += _field(5, _tensor("shape_in", np.array([1, 1, 6480], np.int64)))
    graph += _field(5, _tensor("weight", weight))
    graph += _field(5, _tensor("shape_out", np.array([1024, 20], np.int64)))
    graph += _field(11, _value_info("input_values", (1, 6480))) + _field(
        12, _value_info("encoding_out", (20, 1024))
    )
    model = (
        _field(1, 8) + _field(2, "parla-tests") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return weight[:, 0, :]
