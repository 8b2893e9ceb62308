"""Audio features for the motion generators, computed window by window (memory flat in length).

- JoyVASA: chinese-hubert-base through transformers' ``HubertModel`` from a local directory, run on
  each window's 64000 samples as the reference runs it: the window is padded by reflection to a
  whole number of 320-sample hops plus 80, the conv features (50 per second) are cut to
  ``2 * n_motions`` rows, and the transformer runs over them; the generator then resamples to 25/s.
- Ditto: its streaming HuBERT, published as ONNX only (``hubert_streaming_fix_kv.onnx``), through
  onnxruntime (CPU or CUDA provider). As the reference's offline path: the audio is padded with 2000
  zeros before and 6480 after; every 5 frames a 6480-sample chunk starting at frame ``5g`` (640
  samples a frame) is encoded and rows ``[-14, -4)`` of its output, averaged in pairs, are the
  features of frames ``5g .. 5g + 4``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from core.errors import WeightsError
from models.sd.checkpoint import check_keys

FloatArray = npt.NDArray[np.float32]

HOP = 320
PAD_THRESHOLD = 80

DITTO_HUBERT_PATH = "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx"
DITTO_CHUNK = (3, 5, 2)  # context frames before, frames produced, frames after
DITTO_FRAME_SAMPLES = 640
DITTO_FEATURE_DIM = 1024


def reflect_pad(audio: torch.Tensor) -> torch.Tensor:
    """The reference's ``pad_audio``: (B, samples) padded by reflection so that the conv stack yields
    ``samples // 320`` frames."""
    length = audio.shape[1]
    side = math.ceil((HOP * (length // HOP) + PAD_THRESHOLD - length) / 2)
    if side >= 0:
        reflect, replicate = side // 2, side % 2
        if reflect > 0:
            audio = F.pad(audio, (reflect, reflect), mode="reflect")
            audio = F.pad(audio, (reflect, reflect), mode="reflect")
        if replicate > 0:
            audio = F.pad(audio[:, None], (1, 1), mode="replicate")[:, 0]
    return audio


class JoyVASAHubert:
    """HuBERT hidden states for one JoyVASA window.

    Args:
        model: A transformers ``HubertModel`` (eval).
        num_rows: Rows to return (``2 * n_motions``).
    """

    def __init__(self, model: Any, num_rows: int) -> None:
        self.model = model
        self.num_rows = num_rows

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(1, samples) -> (1, num_rows, hidden_size)."""
        model = self.model
        # The reference cuts the 50/s conv rows to what `num_rows` rows at 25/s would span (2x), then
        # resamples linearly to `num_rows`.
        features = model.feature_extractor(reflect_pad(audio))[:, :, : 2 * self.num_rows]
        features = F.interpolate(features, size=self.num_rows, align_corners=False, mode="linear")
        hidden = model.feature_projection(features.transpose(1, 2))
        return model.encoder(hidden, output_attentions=False, return_dict=True).last_hidden_state  # type: ignore[no-any-return]


def load_joyvasa_hubert(
    hubert_dir: Path,
    override: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """``HubertModel`` from a local directory, then the motion checkpoint's ``audio_encoder`` tensors
    over it when it has them (strictly: every key of the model, right shapes).

    Raises:
        WeightsError: the directory is missing or not a HuBERT model, or `override` does not match.
    """
    from transformers import HubertModel as _HubertModel

    HubertModel: Any = _HubertModel

    if not (hubert_dir / "config.json").is_file():
        raise WeightsError(f"{hubert_dir} is not a transformers model directory (no config.json)")
    try:
        model = HubertModel.from_pretrained(str(hubert_dir), local_files_only=True)
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot load HuBERT from {hubert_dir}: {error}") from error
    if override:
        check_keys(model, override, "audio_encoder entries of the JoyVASA checkpoint")
        model.load_state_dict(dict(override), strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


class OnnxSession(Protocol):
    def run(self, output_names: Any, input_feed: dict[str, Any]) -> list[Any]: ...


def open_ditto_hubert(weights_dir: Path, device: str = "cpu") -> OnnxSession:
    """An onnxruntime session on Ditto's published HuBERT (CUDA provider first on ``cuda``).

    Raises:
        WeightsError: the file is missing, or onnxruntime is not installed.
    """
    path = weights_dir / DITTO_HUBERT_PATH
    if not path.is_file():
        raise WeightsError(f"{weights_dir} lacks {DITTO_HUBERT_PATH}")
    try:
        import onnxruntime
    except ImportError as error:
        raise WeightsError("Ditto's HuBERT needs onnxruntime, which is not installed") from error
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device.startswith("cuda")
        else ["CPUExecutionProvider"]
    )
    session: OnnxSession = onnxruntime.InferenceSession(str(path), providers=providers)
    return session


class DittoAudioFeatures:
    """Ditto's HuBERT features for frames ``[a, b)`` on demand (25 fps, 1024-d).

    Args:
        session: The ONNX session (`open_ditto_hubert`), or anything with its ``run``.
        read_audio: ``read_audio(a, b)`` -> the job's 16 kHz samples ``[a, b)``.
        num_samples: Length of the job's audio.
    """

    CACHE_GROUPS = 32

    def __init__(
        self, session: OnnxSession, read_audio: Callable[[int, int], FloatArray], num_samples: int
    ) -> None:
        self.session = session
        self.read_audio = read_audio
        self.num_samples = num_samples
        self.num_frames = math.ceil(num_samples / 16000 * 25)
        _, produced, after = DITTO_CHUNK
        self.chunk_samples = int(sum(DITTO_CHUNK) * 0.04 * 16000) + 80  # 6480
        self.lead = self.chunk_samples - int((produced + after) * 0.04 * 16000)  # 2000 zeros before
        self._cache: dict[int, FloatArray] = {}

    def _group(self, g: int) -> FloatArray:
        if g in self._cache:
            return self._cache[g]
        _, produced, after = DITTO_CHUNK
        lo = int(g * produced * 0.04 * 16000) - self.lead
        hi = lo + self.chunk_samples
        a, b = min(max(lo, 0), self.num_samples), min(max(hi, 0), self.num_samples)
        chunk = np.zeros((self.chunk_samples,), np.float32)
        if b > a:
            chunk[a - lo : b - lo] = self.read_audio(a, b)
        encoding = np.asarray(
            self.session.run(None, {"input_values": chunk.reshape(1, -1)})[0], dtype=np.float32
        )
        if encoding.ndim == 3 and encoding.shape[0] == 1:
            encoding = encoding[0]
        valid = encoding[-(produced + after) * 2 : -after * 2]
        if valid.shape != (produced * 2, DITTO_FEATURE_DIM):
            raise ValueError(
                f"Ditto HuBERT returned {encoding.shape}, expected (T, {DITTO_FEATURE_DIM}) with T >= 14"
            )
        rows: FloatArray = valid.reshape(produced, 2, DITTO_FEATURE_DIM).mean(1).astype(np.float32)
        self._cache[g] = rows
        if len(self._cache) > self.CACHE_GROUPS:  # windows read forward: drop the oldest
            del self._cache[min(self._cache)]
        return rows

    def rows(self, a: int, b: int) -> FloatArray:
        """(b - a, 1024) features of frames ``[a, b)``, ``0 <= a <= b <= num_frames``."""
        if not 0 <= a <= b <= self.num_frames:
            raise ValueError(f"frames [{a}, {b}) outside [0, {self.num_frames})")
        produced = DITTO_CHUNK[1]
        out = np.zeros((b - a, DITTO_FEATURE_DIM), np.float32)
        for frame in range(a, b):
            out[frame - a] = self._group(frame // produced)[frame % produced]
        return out
