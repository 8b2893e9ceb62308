"""The identity embedding Hallo's image projection reads: insightface's ArcFace recognition model.

The reference runs insightface's ``FaceAnalysis`` over ``face_analysis/models/`` and takes
``face["embedding"]`` of the largest face: the recognition model's raw (not normalised) output on
the face aligned to 112x112 (``face_align.norm_crop``: the similarity transform, least squares in
Umeyama's closed form, that maps the five detected keypoints onto insightface's ``arcface_dst``
template), fed as RGB ``(x - mean) / std`` with mean = std = 127.5, or raw pixels when the model's
graph starts with ``Sub`` and ``Mul`` nodes (a converted MXNet model). We do the same from our five
MediaPipe keypoints (``models.face.Face.keypoints``, insightface's order), through onnxruntime.

``StandInEmbedder`` is a deterministic, weight-free stand-in for the tiny engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import WeightsError

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
"""insightface's ``arcface_dst``: the five keypoints' places in a 112x112 crop."""
ALIGNED_SIZE = 112
EMBEDDING_DIM = 512


class IdentityEmbedder(Protocol):
    """Anything that turns a portrait and its five keypoints into the identity embedding."""

    def embed(
        self, image: npt.NDArray[np.uint8], keypoints: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """`(512,)` float32 embedding of the face at `keypoints` (`(5, 2)` pixels) in `image` (RGB)."""
        ...


def similarity_transform(source: npt.NDArray[Any], target: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """`(2, 3)` rotation + uniform scale + translation mapping `source` onto `target` (`(N, 2)`) in the
    least-squares sense (Umeyama 1991, as ``skimage.transform.SimilarityTransform.estimate``)."""
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    d = np.ones(2)
    if np.linalg.det(covariance) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(covariance)
    rank = np.linalg.matrix_rank(covariance)
    if rank == 0:
        raise ValueError("degenerate keypoints: all at one place")
    if rank == 1:  # skimage's branch for collinear points
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rotation = u @ vt
        else:
            sign = d[1]
            d[1] = -1
            rotation = u @ np.diag(d) @ vt
            d[1] = sign
    else:
        rotation = u @ np.diag(d) @ vt
    scale = float(s @ d) / float(src_c.var(axis=0).sum())
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def alignment_matrix(keypoints: npt.NDArray[Any], size: int = ALIGNED_SIZE) -> npt.NDArray[np.float64]:
    """insightface's ``estimate_norm`` (arcface mode): keypoints -> the template scaled to `size`."""
    points = np.asarray(keypoints, dtype=np.float32)
    if points.shape != (5, 2):
        raise ValueError(f"keypoints must be (5, 2), got {points.shape}")
    if size % 112 == 0:
        ratio, shift_x = size / 112.0, 0.0
    elif size % 128 == 0:
        ratio, shift_x = size / 128.0, 8.0 * size / 128.0
    else:
        raise ValueError(f"aligned size must be a multiple of 112 or 128, got {size}")
    template = ARCFACE_TEMPLATE * ratio
    template[:, 0] += shift_x
    return similarity_transform(points, template)


def align_face(
    image: npt.NDArray[np.uint8], keypoints: npt.NDArray[Any], size: int = ALIGNED_SIZE
) -> npt.NDArray[np.uint8]:
    """insightface's ``norm_crop``: the `size` x `size` aligned face (bilinear, black outside)."""
    import cv2

    matrix = alignment_matrix(keypoints, size)
    return np.asarray(
        cv2.warpAffine(image, matrix, (size, size), borderValue=(0.0, 0.0, 0.0)), dtype=np.uint8
    )


class ArcFaceEmbedder:
    """insightface's recognition model (``ArcFaceONNX``) through onnxruntime.

    Args:
        model_path: the ONNX file (published: ``face_analysis/models/glintr100.onnx``).
        providers: onnxruntime execution providers; default CUDA when available, then CPU.

    Raises:
        WeightsError: onnxruntime is not installed, or `model_path` is missing or not a model.
    """

    def __init__(self, model_path: str | Path, providers: list[str] | None = None) -> None:
        from models.hallo.onnx_wire import node_names

        path = Path(model_path)
        try:
            import onnxruntime
        except ImportError:
            raise WeightsError(f"onnxruntime is not installed; it runs {path}") from None
        if not path.is_file():
            raise WeightsError(f"the ArcFace model {path} is missing")
        try:
            names = node_names(path)
        except (ValueError, OSError) as error:
            raise WeightsError(f"{path} is not an ONNX model: {error}") from None
        mxnet = any(n.startswith(("Sub", "_minus")) for n in names) and any(
            n.startswith(("Mul", "_mul")) for n in names
        )
        self.input_mean, self.input_std = (0.0, 1.0) if mxnet else (127.5, 127.5)
        available = onnxruntime.get_available_providers()
        chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=chosen)
        except Exception as error:  # onnxruntime raises its own untyped errors for a bad file
            raise WeightsError(f"onnxruntime cannot load {path}: {error}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_size = int(model_input.shape[3])

    def embed(self, image: npt.NDArray[np.uint8], keypoints: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        aligned = align_face(image, keypoints, self.input_size)
        blob = (aligned.astype(np.float32) - self.input_mean) * np.float32(1.0 / self.input_std)
        blob = np.ascontiguousarray(blob.transpose(2, 0, 1)[None])
        output = self.session.run([self.output_name], {self.input_name: blob})[0]
        return np.asarray(output, dtype=np.float32).reshape(-1)


class StandInEmbedder:
    """A deterministic embedding without weights (``hallo-tiny``): a fixed random projection of the
    aligned face at 8x8, so that different faces give different embeddings."""

    def __init__(self, seed: int = 0, dim: int = EMBEDDING_DIM) -> None:
        rng = np.random.default_rng(seed)
        self.projection = (rng.standard_normal((8 * 8 * 3, dim)) / 8.0).astype(np.float32)

    def embed(self, image: npt.NDArray[np.uint8], keypoints: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        import cv2

        small = cv2.resize(align_face(image, keypoints), (8, 8), interpolation=cv2.INTER_AREA)
        pixels = (small.astype(np.float32).reshape(-1) - 127.5) / 127.5
        return np.asarray(pixels @ self.projection, dtype=np.float32)
