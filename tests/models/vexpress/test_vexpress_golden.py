"""The tiny V-Express engine's outputs, bit for bit, against a recording.

``data/tiny_engine_golden.npz`` holds what the code before the typed engine options renders (commit
27d7c91, recorded on an AVX512 CPU; that commit itself matched, bit for bit on AVX2, a recording made
at b7ee8dc, before the Stable-Diffusion skeleton was moved into ``models/sd/``): random-weight hashes (parameter init
order), the ReferenceNet bank and one denoiser call on fixed inputs, and the frames and carries of
chunked renders in both continuity modes, with and without classifier-free guidance. Any change that
moves code without changing behaviour keeps every array equal to the last bit (fp32, CPU, one thread).

Since the exact savings of the guided renders (the unconditional half's reference and audio
attentions substituted by their constant outputs instead of computed on all-zero inputs), the two
guided renders (``motion_frames``, ``overlap_average``) are no longer bit-identical: the skipped
rows change the row count of the remaining GEMMs and so their fp32 rounding (2.4e-7 in one
``to_q``), and this tiny model at 32x32 (1x1 deepest maps, GroupNorms over 2 values) amplifies
that by about 1e3 per denoiser call and chaotically over the steps (up to 132/255 in frames), so no
tolerance against the fp32 recording would tell rounding from a bug. Their equality with the old
computation is proven in float64 instead, at 1e-6 relative on every window's latents
(``test_vexpress_exact_savings.py``); here their recorded arrays are kept (not re-recorded) and
checked for keys, shapes and dtypes. Everything else (weights, bank, the explicit all-zero
denoiser call, the unguided render) stays bit-identical.

Re-recorded when the transformer blocks' and motion modules' outputs were made contiguous (in the
network's layout: ``models.sd.transformer_blocks.same_layout``) instead of channels-last strided,
so that GroupNorms and convolutions take their fast path on CPU (the denoiser at least as fast as
the reference's): a change of memory layout only, whose reduction order changes the last bits (the
bank by 3e-7 to 6e-5 relative, and this tiny model amplifies that as above); equality in float64
is ``test_block_outputs_keep_the_networks_layout_and_change_no_value``. The guided renders' arrays
are now today's too.

Float results depend on the CPU's kernels: the recording names the torch version and CPU capability
it was made with, and on another combination the comparison is skipped, saying so. Re-record (only
for an intended change of behaviour) with ``python -m tests.models.vexpress.test_vexpress_golden``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.engine import ChunkCarry, RenderInputs, RenderParams, make_params
from models.vexpress.options import VExpressTinyOptions

GOLDEN = Path(__file__).parent / "data" / "tiny_engine_golden.npz"
SIZE = 32


def environment() -> str:
    return f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}"


def job_inputs(seconds: float) -> RenderInputs:
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    return RenderInputs(image=image, audio=audio)


def job_params(**overrides: Any) -> RenderParams[VExpressTinyOptions]:
    values: dict[str, Any] = {"fps": 10.0, "size": SIZE, "seed": 7, "context_frames": 6, "motion_frames": 2}
    values.update(overrides)
    return make_params(VExpressTinyOptions, **values)


# name -> (seconds of audio, RenderParams overrides)
RENDERS: dict[str, tuple[float, dict[str, Any]]] = {
    "motion_frames": (1.5, {"head_motion": 0.8}),
    "overlap_average": (1.5, {"head_motion": 0.8, "continuity": "overlap_average"}),
    "no_guidance": (0.9, {"head_motion": "still", "guidance_scale": 1.0}),
}


def state_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def record() -> dict[str, np.ndarray]:
    """Everything the golden file holds, computed by the code as it is now."""
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_engine

    engine: Any = tiny_engine(seed=0, face_analyzer=FixedKeypointAnalyzer())
    modules = engine.pipeline.components.modules
    arrays: dict[str, np.ndarray] = {"environment": np.array(environment())}
    components = engine.pipeline.components
    for name, module in (
        *modules.items(),
        ("vae", components.vae),
        ("audio_encoder", components.audio_encoder),
    ):
        arrays[f"state_sha256/{name}"] = np.array(state_hash(module))

    generator = torch.Generator().manual_seed(3)
    reference_latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=generator)
    bank = engine.pipeline.reference_bank(reference_latents)
    for index, entry in enumerate(bank):
        arrays[f"bank/{index}"] = entry.numpy()
    sample = torch.randn(2, 4, 3, SIZE // 8, SIZE // 8, generator=generator)
    audio_tokens = torch.randn(2 * 3, 5, 32, generator=generator)
    kps_features = torch.randn(2, 32, 3, SIZE // 8, SIZE // 8, generator=generator)
    with torch.inference_mode():
        v_pred = modules.denoising_unet(
            sample,
            torch.tensor(499),
            audio_tokens,
            [torch.cat([torch.zeros_like(entry), entry]) for entry in bank],
            kps_features=kps_features,
            reference_attention_weight=0.95,
            audio_attention_weight=3.0,
        )
    arrays["denoiser/v_pred"] = v_pred.numpy()

    for name, (seconds, overrides) in RENDERS.items():
        prepared = engine.prepare(job_inputs(seconds), job_params(**overrides))
        carry: ChunkCarry | None = None
        frames = []
        for chunk in engine.plan(prepared):
            chunk_frames, carry = engine.render_chunk(prepared, chunk, carry)
            frames.append(chunk_frames)
            carry = ChunkCarry.from_bytes(carry.to_bytes())
            for key, value in carry.arrays.items():
                if key == "generator_state":  # 5 KiB of Mersenne Twister state: its hash will do
                    value = np.array(hashlib.sha256(value.tobytes()).hexdigest())
                arrays[f"{name}/carry/{chunk.index}/{key}"] = value
        arrays[f"{name}/frames"] = np.concatenate(frames)
    return arrays


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    recorded_on = str(arrays["environment"])
    if recorded_on != environment():
        pytest.skip(f"golden outputs were recorded with {recorded_on}; this is {environment()}")
    return arrays


@pytest.fixture(scope="module")
def current(one_torch_thread: None) -> dict[str, np.ndarray]:
    return record()


def test_the_recording_covers_every_part(golden: dict[str, np.ndarray]) -> None:
    prefixes = {key.split("/")[0] for key in golden}
    assert prefixes == {"environment", "state_sha256", "bank", "denoiser", *RENDERS}
    assert golden["motion_frames/frames"].shape == (15, SIZE, SIZE, 3)
    assert "motion_frames/carry/2/motion_latents" in golden


GUIDED_RENDERS = ("motion_frames", "overlap_average")
"""Renders with guidance: rounding-order changes only, proven in float64 (see the module docstring)."""


def _bit_exact(key: str) -> bool:
    return key.split("/")[0] not in GUIDED_RENDERS


def test_tiny_engine_outputs_are_bit_identical_to_the_recording(
    golden: dict[str, np.ndarray], current: dict[str, np.ndarray]
) -> None:
    assert sorted(current) == sorted(golden)
    differing = [key for key in golden if _bit_exact(key) and not np.array_equal(golden[key], current[key])]
    assert not differing, f"outputs differ from the recording: {differing}"
    for key in filter(lambda key: not _bit_exact(key), golden):
        assert (current[key].shape, current[key].dtype) == (golden[key].shape, golden[key].dtype), key


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.savez_compressed(GOLDEN, **record())
    print(f"recorded {GOLDEN} ({environment()})")
