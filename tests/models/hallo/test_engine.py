"""HalloEngine behind the engine seam, on tiny random weights (CPU, fp32, 64x64, 1-2 steps)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image

from core.errors import EngineFailure, InvalidInput, WeightsError
from models.engine import ChunkCarry, Frames, RenderInputs, RenderParams, make_params
from models.hallo.arcface import ArcFaceEmbedder
from models.hallo.engine import HalloEngine, HalloPrepared, load_components, missing_weight_files
from models.hallo.options import HalloTinyOptions
from models.hallo.testing import tiny_audio_encoder, tiny_engine, tiny_modules, tiny_sizes

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FixedFaces:
    """The faces MediaPipe found once, for every image (the engine tests need no detector)."""

    def __init__(self, faces: list[Any]) -> None:
        self.faces = faces

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Any]:
        return self.faces


@pytest.fixture(scope="module")
def portrait() -> npt.NDArray[np.uint8]:
    with Image.open(ASSETS / "portrait.png") as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def engine(portrait: npt.NDArray[np.uint8]) -> HalloEngine:
    from models.face import MediaPipeFaceAnalyzer

    analyzer = MediaPipeFaceAnalyzer()
    faces = analyzer.detect(portrait)
    analyzer.close()
    assert faces
    return tiny_engine(face_analyzer=FixedFaces(faces))


def params(**overrides: object) -> RenderParams[HalloTinyOptions]:
    values: dict[str, object] = {
        "fps": 10.0,
        "size": SIZE,
        "seed": 5,
        "clip_frames": 2,
        "motion_frames": 1,
        "num_inference_steps": 1,
        "guidance_scale": 2.0,
    }
    values.update(overrides)
    return make_params(HalloTinyOptions, **values)


def inputs(image: npt.NDArray[np.uint8], seconds: float = 0.45) -> RenderInputs:
    audio = np.random.default_rng(1).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    return RenderInputs(image=image, audio=audio)


def render(
    engine: HalloEngine, prepared: HalloPrepared, start: int = 0, carry: ChunkCarry | None = None
) -> list[Frames]:
    out = []
    for chunk in engine.plan(prepared)[start:]:
        frames, carry = engine.render_chunk(prepared, chunk, carry)
        carry = ChunkCarry.from_bytes(carry.to_bytes())
        out.append(frames)
    return out


def test_prepare_and_plan(engine: HalloEngine, portrait: npt.NDArray[np.uint8]) -> None:
    prepared = engine.prepare(inputs(portrait), params())
    assert (prepared.num_frames, prepared.height, prepared.width) == (5, SIZE, SIZE)  # ceil(0.45 s x 10)
    assert [(c.start, c.stop) for c in engine.plan(prepared)] == [(0, 2), (2, 4), (4, 5)]
    assert prepared.audio.num_frames == 6  # padded to whole clips, as the reference
    assert prepared.identity_embedding.shape == (1, 512)
    assert prepared.face_mask.shape == (1, 3, SIZE, SIZE) and float(prepared.face_mask.max()) == 1.0
    assert [level[0].shape[1] for level in prepared.audio_masks] == [64, 16, 4, 1]
    with pytest.raises(InvalidInput, match="multiple of 64") as refused:
        engine.prepare(inputs(portrait), params(size=96))
    assert refused.value.code == "invalid_params"
    full = engine.prepare(inputs(portrait), params(framing="full"))
    assert (full.height, full.width) != (SIZE, SIZE)


@pytest.mark.slow
def test_resume_from_the_carry_equals_an_uninterrupted_job(
    engine: HalloEngine, portrait: npt.NDArray[np.uint8]
) -> None:
    prepared = engine.prepare(inputs(portrait), params())
    chunks = engine.plan(prepared)
    whole = render(engine, prepared)
    assert [f.shape for f in whole] == [(2, SIZE, SIZE, 3), (2, SIZE, SIZE, 3), (1, SIZE, SIZE, 3)]
    assert all(f.dtype == np.uint8 for f in whole)
    # A new process: prepare again, resume at chunk 1 from chunk 0's stored carry.
    _, carry = engine.render_chunk(prepared, chunks[0], None)
    stored = ChunkCarry.from_bytes(carry.to_bytes())
    resumed = render(engine, engine.prepare(inputs(portrait), params()), start=1, carry=stored)
    assert all(np.array_equal(a, b) for a, b in zip(whole[1:], resumed, strict=True))
    # The carry belongs to its chunk; a later chunk needs one.
    with pytest.raises(EngineFailure, match="carry for chunk 1 given to chunk 2"):
        engine.render_chunk(prepared, chunks[2], stored)
    with pytest.raises(EngineFailure, match="needs the carry"):
        engine.render_chunk(prepared, chunks[1], None)


@pytest.mark.slow
def test_seed_weights_and_hallo2_mask_change_the_frames(
    engine: HalloEngine, portrait: npt.NDArray[np.uint8]
) -> None:
    def first_clip(**overrides: object) -> Frames:
        prepared = engine.prepare(inputs(portrait, 0.2), params(**overrides))
        return engine.render_chunk(prepared, engine.plan(prepared)[0], None)[0]

    base = first_clip()
    assert np.array_equal(base, first_clip())
    for change in ({"seed": 6}, {"lip_weight": 3.0}, {"motion_mask_rate": 0.25}, {"face_expand_ratio": 2.0}):
        assert not np.array_equal(base, first_clip(**change)), change


def test_missing_weights_are_listed(tmp_path: Path) -> None:
    missing = missing_weight_files(tmp_path)
    for name in (
        "hallo/net.pth",
        "stable-diffusion-v1-5/unet/config.json",
        "sd-vae-ft-mse/config.json",
        "wav2vec/wav2vec2-base-960h/preprocessor_config.json",
        "face_analysis/models/glintr100.onnx",
    ):
        assert name in missing
    assert (
        "wav2vec/wav2vec2-base-960h/model.safetensors or wav2vec/wav2vec2-base-960h/pytorch_model.bin"
        in missing
    )
    with pytest.raises(WeightsError, match=r"missing: .*face_analysis/models/glintr100\.onnx"):
        HalloEngine(weights_dir=tmp_path, device="cpu")
    with pytest.raises(WeightsError, match="needs a weights directory"):
        HalloEngine(device="cpu")
    hallo2 = missing_weight_files(tmp_path, variant="hallo2")
    assert "hallo2/net.pth" in hallo2 and "hallo/net.pth" not in hallo2
    with pytest.raises(ValueError, match="unknown hallo variant 'hallo3'"):
        HalloEngine(weights_dir=tmp_path, device="cpu", variant="hallo3")


def _published_layout(root: Path) -> None:
    """Tiny random weights in Hallo's ``pretrained_models/`` layout."""
    from models.hallo.checkpoint import save_published
    from models.hallo.configs import tiny_hallo_unet_config
    from models.hallo.onnx_wire import tiny_recognition_model
    from models.sd.testing import sd_vae

    save_published(tiny_modules(seed=2), root, tiny_hallo_unet_config(), dtype=torch.float32)
    sd_vae().save_pretrained(root / "sd-vae-ft-mse")
    wav2vec = root / "wav2vec" / "wav2vec2-base-960h"
    tiny_audio_encoder(0).save_pretrained(wav2vec)
    (wav2vec / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "sampling_rate": 16000})
    )
    onnx_path = root / "face_analysis" / "models" / "glintr100.onnx"
    onnx_path.parent.mkdir(parents=True)
    onnx_path.write_bytes(tiny_recognition_model()[0])


@pytest.mark.slow
def test_components_load_from_the_published_layout(tmp_path: Path) -> None:
    _published_layout(tmp_path)
    assert missing_weight_files(tmp_path) == []
    components = load_components(tmp_path, torch.device("cpu"), torch.float32, sizes=tiny_sizes())
    assert isinstance(components.embedder, ArcFaceEmbedder) and components.do_normalize
    expected = tiny_modules(seed=2).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in components.modules.state_dict().items())
    converted = tmp_path / "converted"
    again = load_components(
        tmp_path, torch.device("cpu"), torch.float32, converted_dir=converted, sizes=tiny_sizes()
    )
    assert (converted / "manifest.json").is_file()
    assert all(torch.equal(v, expected[k]) for k, v in again.modules.state_dict().items())
    (tmp_path / "hallo2").mkdir()
    (tmp_path / "hallo" / "net.pth").rename(tmp_path / "hallo2" / "net.pth")  # Hallo2's checkpoint
    assert missing_weight_files(tmp_path, converted) == []  # the converted copy replaces net.pth
    hallo2 = load_components(
        tmp_path, torch.device("cpu"), torch.float32, sizes=tiny_sizes(), variant="hallo2"
    )
    assert all(torch.equal(v, expected[k]) for k, v in hallo2.modules.state_dict().items())


@pytest.mark.slow
def test_the_engine_equals_the_reference_clip_loop(
    engine: HalloEngine, portrait: npt.NDArray[np.uint8]
) -> None:
    """Chunked through the seam (carries through bytes) = one run of the reference's clip loop
    (``scripts/inference.py``: one generator, motion frames from the previous clip), which is what
    ``parity_sampling.py`` compares with the reference itself. The audio features are the windowed
    ones, equal to the reference's whole-clip features here to 1e-5 (a tiny model at 64 px, whose
    1x1 mid block amplifies float rounding, would turn even that into visible pixel differences)."""
    from models.hallo.audio import whole_clip_features
    from models.hallo.pipeline import ClipInputs, next_reference_pixels, sample_clip

    job, options = inputs(portrait), params()
    prepared = engine.prepare(job, options)
    chunked = np.concatenate(render(engine, prepared))
    components, settings = engine.components, options.options
    clip = settings.clip_frames
    reference_features = whole_clip_features(
        components.audio_encoder, job.audio, sample_rate=16000, fps=10.0, clip_frames=clip
    )
    features = torch.cat(
        [
            prepared.audio.frames(components.audio_encoder, s, s + clip)[0]
            for s in range(0, prepared.audio.num_frames, clip)
        ]
    )
    assert float((features - reference_features).abs().max() / reference_features.abs().max()) < 1e-5
    generator = torch.Generator().manual_seed(options.seed)
    previous, clips = None, []
    for start in range(0, features.shape[0], clip):
        clip_inputs = ClipInputs(
            next_reference_pixels(prepared.portrait, previous, settings.motion_frames),
            prepared.identity_embedding,
            prepared.face_mask,
            features[start : start + clip][None],
            prepared.audio_masks,
        )
        previous = sample_clip(
            components.modules,
            components.vae,
            engine.scheduler_config,
            clip_inputs,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            motion_scale=settings.motion_scale(),
            generator=generator,
        )
        clips.append(previous)
    pixels = torch.cat(clips)[: prepared.num_frames].permute(0, 2, 3, 1).numpy()
    assert np.array_equal(chunked, np.clip(pixels * 255, 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_the_strict_check_reads_net_pth_against_the_published_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.weights import main

    assert main(["check", "hallo", str(tmp_path), "--strict"]) == 1
    assert "missing  face_analysis/models/glintr100.onnx" in capsys.readouterr().out
    _published_layout(tmp_path)  # tiny modules: every file there, but not the published shapes
    assert main(["check", "hallo", str(tmp_path), "--strict"]) == 1
    printed = capsys.readouterr()
    assert "hallo/net.pth [imageproj.] does not match ImageProjection" in printed.out + printed.err
