"""Where each engine's published weights live on the Hugging Face Hub, and fetching them into the
layout the engine loads (``python -m models.weights download ENGINE DIR``).

Each `HubSource` names one repository (and revision), the files to take from it and where they go
under the weights directory: a repository path loses its ``strip`` prefix and gains the ``into``
folder. An entry of ``files`` is a path or an ``fnmatch`` pattern, or a tuple of alternatives of
which the first that the repository has is taken (``model.safetensors`` or ``pytorch_model.bin``).

`download` lists every repository first, so that a file missing upstream stops it before anything
is fetched; then it fetches with ``huggingface_hub.snapshot_download`` into a staging folder inside
the weights directory (``.download/``, resumable) and moves each file to its place. A file already
in place with the repository's size is not fetched again. Nothing goes to the ``HF_HOME`` cache:
the weights directory holds the only copy. Nothing here checks the files: the
caller runs the engine's strict check (``models.weights``) afterwards.

``huggingface_hub`` (a dependency of transformers, pinned in requirements.lock) honours
``HF_ENDPOINT`` (a mirror), ``HF_TOKEN`` and ``HF_HOME``. Tests and the image set
``HF_HUB_OFFLINE=1``, which turns every download off.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

FileChoice = str | tuple[str, ...]
"""A repository path or pattern, or alternatives (the first the repository has is taken)."""

STAGING_DIR = ".download"


class DownloadError(RuntimeError):
    """A repository, revision or file is missing upstream, or the hub cannot be reached."""


@dataclass(frozen=True)
class HubSource:
    """Files of one Hub repository and where they land under the weights directory.

    Attributes:
        repo_id: ``owner/name`` on the Hub.
        files: what to take (see the module docstring).
        strip: leading repository folder dropped from each path (``liveportrait/``).
        into: folder under the weights directory the files go to ('' = its root).
        revision: branch, tag or commit.
        note: what the files are, for ``python -m models.weights sources``.
    """

    repo_id: str
    files: tuple[FileChoice, ...]
    strip: str = ""
    into: str = ""
    revision: str = "main"
    note: str = ""

    def target(self, repo_path: str) -> str:
        """Where ``repo_path`` goes, relative to the weights directory."""
        relative = repo_path.removeprefix(self.strip) if self.strip else repo_path
        return f"{self.into}/{relative}" if self.into else relative

    def select(self, available: Sequence[str]) -> tuple[list[str], list[str]]:
        """The repository paths to fetch from ``available``, and the entries it has none of."""
        chosen: list[str] = []
        missing: list[str] = []
        for entry in self.files:
            alternatives = (entry,) if isinstance(entry, str) else entry
            for pattern in alternatives:
                matches = sorted(path for path in available if fnmatch.fnmatchcase(path, pattern))
                if matches:
                    chosen.extend(path for path in matches if path not in chosen)
                    break
            else:
                missing.append(" or ".join(alternatives))
        return chosen, missing


def _under(folder: str, choices: Sequence[FileChoice]) -> tuple[FileChoice, ...]:
    """``choices`` with every path under ``folder``."""
    return tuple(
        f"{folder}/{c}" if isinstance(c, str) else tuple(f"{folder}/{n}" for n in c) for c in choices
    )


_SD_UNET_CONFIG = "stable-diffusion-v1-5/unet/config.json"
_VAE = ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))
_WAV2VEC2 = ("config.json", "preprocessor_config.json", ("model.safetensors", "pytorch_model.bin"))

WEIGHT_SOURCES: dict[str, tuple[HubSource, ...]] = {
    "vexpress": (
        HubSource(
            "tk93/V-Express",
            (
                "reference_net.bin",
                "denoising_unet.bin",
                "motion_module.bin",
                "v_kps_guider.bin",
                "audio_projection.bin",
            ),
            into="v-express",
            note="V-Express's five module files (the repository's root)",
        ),
        HubSource(
            "tk93/V-Express",
            (
                f"model_ckpts/{_SD_UNET_CONFIG}",
                *_under("model_ckpts/sd-vae-ft-mse", _VAE),
                *_under("model_ckpts/wav2vec2-base-960h", _WAV2VEC2),
            ),
            strip="model_ckpts/",
            note="the bundled SD1.5 UNet config, sd-vae-ft-mse and wav2vec2-base-960h",
        ),
    ),
    "liveportrait": (
        HubSource(
            "KwaiVGI/LivePortrait",
            (
                "liveportrait/base_models/*.pth",
                "liveportrait/retargeting_models/stitching_retargeting_module.pth",
            ),
            strip="liveportrait/",
            note="the four networks and the stitching/retargeting MLPs",
        ),
    ),
    "hallo": (
        HubSource(
            "fudan-generative-vision/hallo",
            (
                "hallo/net.pth",
                "motion_module/mm_sd_v15_v2.ckpt",
                _SD_UNET_CONFIG,
                *_under("sd-vae-ft-mse", _VAE),
                *_under("wav2vec/wav2vec2-base-960h", _WAV2VEC2),
                "face_analysis/models/*.onnx",
            ),
            note="Hallo's pretrained_models/ (the hallo engine; hallo2/net.pth for variant hallo2 is not listed)",
        ),
    ),
    "aniportrait": (
        HubSource(
            "ZJYang/AniPortrait",
            (
                "audio2mesh.pt",
                "audio2pose.pt",
                "pose_guider.pth",
                "reference_unet.pth",
                "denoising_unet.pth",
                "motion_module.pth",
            ),
            note="AniPortrait's pretrained_model/ (engine not registered yet)",
        ),
        HubSource(
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            ("unet/config.json",),
            into="stable-diffusion-v1-5",
            note="the SD1.5 UNet config",
        ),
        HubSource(
            "facebook/wav2vec2-base-960h", _WAV2VEC2, into="wav2vec2-base-960h", note="the audio encoder"
        ),
    ),
}
"""Per engine: the repositories its published layout (``python -m models.weights layout``) comes from."""

MOTION_SOURCES: dict[str, tuple[HubSource, ...]] = {
    "ditto": (
        HubSource(
            "digital-avatar/ditto-talkinghead",
            (
                "ditto_cfg/v0.4_hubert_cfg_pytorch.pkl",
                "ditto_pytorch/models/lmdm_v0.4_hubert.pth",
                "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx",
            ),
            note="Ditto's motion diffusion model, its config and its streaming HuBERT (ONNX)",
        ),
    ),
    "joyvasa": (
        HubSource(
            "jdh-algo/JoyVASA",
            ("motion_generator/motion_generator_hubert_chinese.pt", "motion_template/motion_template.pkl"),
            into="JoyVASA",
            note="JoyVASA's motion generator and motion template",
        ),
        HubSource(
            "TencentGameMate/chinese-hubert-base",
            ("config.json", ("model.safetensors", "pytorch_model.bin")),
            into="chinese-hubert-base",
            note="the HuBERT JoyVASA's generator listens with",
        ),
    ),
}
"""The ``liveportrait`` engine's audio-to-motion models (``--motion-models``), same root."""


def sources_for(engine: str, motion_models: Sequence[str] = ()) -> tuple[HubSource, ...]:
    """The sources of ``engine`` (and of its ``motion_models``, for ``liveportrait``).

    Raises:
        ValueError: no sources are known for the engine, or motion models for another engine.
    """
    if engine not in WEIGHT_SOURCES:
        raise ValueError(
            f"no published weights are known for engine {engine!r}; known: {sorted(WEIGHT_SOURCES)}"
        )
    if motion_models and engine != "liveportrait":
        raise ValueError("motion models belong to the liveportrait engine")
    unknown = [name for name in motion_models if name not in MOTION_SOURCES]
    if unknown:
        raise ValueError(f"unknown motion model(s) {unknown}; known: {sorted(MOTION_SOURCES)}")
    extra = tuple(source for name in dict.fromkeys(motion_models) for source in MOTION_SOURCES[name])
    return WEIGHT_SOURCES[engine] + extra


@dataclass(frozen=True)
class PlannedFile:
    source: HubSource
    repo_path: str
    target: str
    size: int | None


def plan(
    sources: Sequence[HubSource], *, endpoint: str | None = None, token: str | None = None
) -> list[PlannedFile]:
    """Every file to fetch, from each repository's listing.

    Raises:
        DownloadError: a repository or revision does not exist, or lacks a file (all named at once).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token)
    planned: list[PlannedFile] = []
    problems: list[str] = []
    for source in sources:
        where = f"{source.repo_id}@{source.revision}"
        try:
            sizes = {
                item.path: item.size
                for item in api.list_repo_tree(source.repo_id, revision=source.revision, recursive=True)
                if isinstance(item, RepoFile)
            }
        except Exception as error:  # every hub or connection error: named with the repository
            raise DownloadError(f"cannot list {where}: {_reason(error)}") from error
        chosen, missing = source.select(list(sizes))
        problems.extend(f"{where} has no {entry}" for entry in missing)
        planned.extend(PlannedFile(source, path, source.target(path), sizes[path]) for path in chosen)
    if problems:
        raise DownloadError("; ".join(problems))
    return planned


def download(
    sources: Sequence[HubSource],
    weights_dir: Path,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    log: Callable[[str], None] = print,
) -> list[PlannedFile]:
    """Fetch ``sources`` into ``weights_dir`` in the engine's layout; returns what is in place.

    Raises:
        DownloadError: see `plan`; or a fetch failed (the staging folder keeps what arrived).
    """
    from huggingface_hub import snapshot_download

    planned = plan(sources, endpoint=endpoint, token=token)
    staging_root = weights_dir / STAGING_DIR
    for source in dict.fromkeys(item.source for item in planned):
        wanted = [
            item
            for item in planned
            if item.source == source and not _in_place(weights_dir / item.target, item.size)
        ]
        if not wanted:
            log(f"{source.repo_id}: already in place")
            continue
        staging = staging_root / source.repo_id.replace("/", "--")
        log(f"{source.repo_id}@{source.revision}: fetching {len(wanted)} file(s)")
        try:
            snapshot_download(
                source.repo_id,
                revision=source.revision,
                allow_patterns=[item.repo_path for item in wanted],
                local_dir=staging,
                cache_dir=staging_root / "cache",  # refs and locks: beside the files, not in HF_HOME
                endpoint=endpoint,
                token=token,
            )
        except Exception as error:
            raise DownloadError(
                f"fetching {source.repo_id}@{source.revision} failed: {_reason(error)}"
            ) from error
        for item in wanted:
            fetched = staging / item.repo_path
            if not fetched.is_file():
                raise DownloadError(f"{source.repo_id}: {item.repo_path} did not arrive")
            destination = weights_dir / item.target
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fetched, destination)
            log(f"  {item.target}")
    shutil.rmtree(staging_root, ignore_errors=True)
    return planned


def _in_place(path: Path, size: int | None) -> bool:
    return path.is_file() and size is not None and path.stat().st_size == size


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
