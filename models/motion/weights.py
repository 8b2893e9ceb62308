"""Loading the motion models a worker is configured with, from their published layouts.

Both layouts are rooted at one directory (the ``liveportrait`` engine's ``weights_dir`` by default,
beside LivePortrait's ``base_models/`` and ``retargeting_models/``; the names do not collide)::

    ditto:   ditto_cfg/v0.4_hubert_cfg_pytorch.pkl, ditto_pytorch/models/lmdm_v0.4_hubert.pth,
             ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx
    joyvasa: JoyVASA/motion_generator/motion_generator_hubert_chinese.pt,
             JoyVASA/motion_template/motion_template.pkl, chinese-hubert-base/config.json (+ weights)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from core.errors import WeightsError
from models.motion.audio import (
    DITTO_HUBERT_PATH,
    DittoAudioFeatures,
    JoyVASAHubert,
    OnnxSession,
    load_joyvasa_hubert,
    open_ditto_hubert,
)
from models.motion.ditto import CFG_PATH, LMDM_PATH, DittoSampler, load_ditto
from models.motion.generator import MotionGenerator
from models.motion.joyvasa import GENERATOR_PATH, HUBERT_DIR, TEMPLATE_PATH, JoyVASASampler, load_joyvasa

FloatArray = npt.NDArray[np.float32]
DittoFeatures = Callable[[Callable[[int, int], FloatArray], int], DittoAudioFeatures]
MOTION_MODELS = ("ditto", "joyvasa")
MOTION_FILES: dict[str, tuple[str, ...]] = {
    "ditto": (CFG_PATH, LMDM_PATH, DITTO_HUBERT_PATH),
    "joyvasa": (GENERATOR_PATH, TEMPLATE_PATH, f"{HUBERT_DIR}/config.json"),
}
"""The files each motion model needs, relative to the motion weights directory."""


def _features(session: OnnxSession) -> DittoFeatures:
    def features(read_audio: Callable[[int, int], FloatArray], num_samples: int) -> DittoAudioFeatures:
        return DittoAudioFeatures(session, read_audio, num_samples)

    return features


def check_motion_models(models: Sequence[str]) -> tuple[str, ...]:
    """`models` deduplicated, in order.

    Raises:
        ValueError: an unknown name.
    """
    unknown = [m for m in models if m not in MOTION_MODELS]
    if unknown:
        raise ValueError(f"unknown motion model(s) {unknown}; known: {', '.join(MOTION_MODELS)}")
    return tuple(dict.fromkeys(models))


def missing_motion_files(root: Path, models: Sequence[str]) -> list[str]:
    """The files of `models` that `root` lacks (relative paths, in order)."""
    return [path for model in models for path in MOTION_FILES[model] if not (Path(root) / path).is_file()]


def load_motion_generator(
    root: Path, models: Sequence[str], device: str = "cpu", dtype: torch.dtype = torch.float32
) -> MotionGenerator:
    """A `MotionGenerator` with `models` loaded (strictly) from their published layouts under `root`.

    Raises:
        WeightsError: naming every missing file, or from the loaders (a mismatching file).
    """
    models = check_motion_models(models)
    missing = missing_motion_files(root, models)
    if missing:
        raise WeightsError(
            f"motion model(s) {', '.join(models)} need their published files under {root}: missing "
            + ", ".join(missing)
            + " (Ditto: digital-avatar/ditto-talkinghead; JoyVASA: jdh-algo/JoyVASA + TencentGameMate/"
            "chinese-hubert-base)"
        )
    ditto: DittoSampler | None = None
    ditto_features: DittoFeatures | None = None
    joyvasa: JoyVASASampler | None = None
    if "ditto" in models:
        model, sampling = load_ditto(root, device=device, dtype=dtype)
        ditto = DittoSampler(model, sampling, device)
        ditto_features = _features(open_ditto_hubert(root, device))

    if "joyvasa" in models:
        jmodel, template, hubert_state = load_joyvasa(root, device=device, dtype=dtype)
        hubert = load_joyvasa_hubert(root / HUBERT_DIR, hubert_state, device=device, dtype=dtype)
        joyvasa = JoyVASASampler(
            jmodel, template, JoyVASAHubert(hubert, 2 * jmodel.config.n_motions), device=device
        )
    return MotionGenerator(ditto=ditto, ditto_features=ditto_features, joyvasa=joyvasa)


def tiny_motion_generator(
    models: Sequence[str] = MOTION_MODELS, seed: int = 0, dtype: torch.dtype = torch.float32
) -> MotionGenerator:
    """Tiny random-weight motion models (CPU, `dtype`), written in their published layouts to a temporary
    directory and loaded from there. Ditto's HuBERT is a tiny ONNX file with the published interface
    (`models.motion.testing.write_tiny_ditto_hubert_onnx`: one strided conv), JoyVASA's a two-layer
    HuBERT from a random config."""
    import tempfile

    from models.motion.ditto_model import tiny_ditto_config
    from models.motion.joyvasa_model import tiny_joyvasa_config
    from models.motion.testing import (
        write_ditto_layout,
        write_joyvasa_layout,
        write_tiny_ditto_hubert_onnx,
    )

    models = check_motion_models(models)
    ditto: DittoSampler | None = None
    ditto_features: DittoFeatures | None = None
    joyvasa: JoyVASASampler | None = None
    with tempfile.TemporaryDirectory(prefix="parla-motion-tiny-") as tmp:
        root = Path(tmp)
        if "ditto" in models:
            config = write_ditto_layout(root, tiny_ditto_config(), seed)
            write_tiny_ditto_hubert_onnx(root / DITTO_HUBERT_PATH, seed)
            model, sampling = load_ditto(root, config, dtype=dtype)
            ditto = DittoSampler(model, sampling)
            ditto_features = _features(open_ditto_hubert(root))  # the session holds the graph

        if "joyvasa" in models:
            jconfig = write_joyvasa_layout(root, tiny_joyvasa_config(), seed)
            jmodel, template, hubert_state = load_joyvasa(root, jconfig, dtype=dtype)
            hubert = load_joyvasa_hubert(root / HUBERT_DIR, hubert_state, dtype=dtype)
            joyvasa = JoyVASASampler(jmodel, template, JoyVASAHubert(hubert, 2 * jmodel.config.n_motions))
    return MotionGenerator(ditto=ditto, ditto_features=ditto_features, joyvasa=joyvasa)
