"""The engines Parla knows: name -> options model, capabilities and a lazily imported constructor.

This module is torch-free: the API reads it to validate a job's ``engine_options`` at submit and to
describe the engines (``GET /v1/engines``, the OpenAPI document); a worker calls ``build_engine``,
which imports only the engine it runs. Each ``load`` function imports its engine's constructor when
called, and mypy checks that what it returns builds an ``Engine``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from models.aniportrait.options import AniPortraitOptions, AniPortraitTinyOptions
from models.engine import AnyEngine
from models.hallo.options import HalloOptions, HalloTinyOptions
from models.liveportrait.options import LivePortraitOptions
from models.options import EngineOptions
from models.testing import PatternOptions
from models.vexpress.options import VExpressOptions, VExpressTinyOptions
from models.warp.options import WarpOptions

EngineFactory = Callable[..., AnyEngine]
"""An engine's constructor: keyword arguments from the worker (``device``, ``weights_dir``,
``PARLA_ENGINE_CONFIG``'s keys)."""


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, for clients building their forms (``GET /v1/engines``).

    Attributes:
        driving_video: uses a ``driving_video`` input (a job with one for an engine without it is refused).
        emotion: takes an emotion control.
        gaze: takes a gaze control.
        outputs: what a job can ask it to produce (``RenderParams.outputs``); ``video`` always.
        framing: the ``framing`` values it renders.
        needs_weights: loads model weights (the worker refuses to start without them).
        realtime: renders faster than real time on one GPU.
    """

    driving_video: bool = False
    emotion: bool = False
    gaze: bool = False
    outputs: tuple[str, ...] = ("video",)
    framing: tuple[str, ...] = ("crop", "full")
    needs_weights: bool = False
    realtime: bool = False

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["framing"] = list(self.framing)
        values["outputs"] = list(self.outputs)
        return values


@dataclass(frozen=True)
class EngineSpec:
    """One engine: its name, a line about it, its options model, capabilities and constructor."""

    name: str
    summary: str
    options: type[EngineOptions]
    capabilities: Capabilities
    load: Callable[[], EngineFactory]

    def options_schema(self) -> dict[str, Any]:
        """JSON schema of the engine's options."""
        return self.options.model_json_schema()

    def defaults(self) -> dict[str, Any]:
        """The options a job gets when it sets none."""
        return self.options().model_dump(mode="json")


def _warp() -> EngineFactory:
    from models.warp.engine import WarpEngine

    return WarpEngine


def _vexpress() -> EngineFactory:
    from models.vexpress.engine import VExpressEngine

    return VExpressEngine


def _vexpress_tiny() -> EngineFactory:
    from models.vexpress.testing import tiny_engine

    return tiny_engine


def _hallo() -> EngineFactory:
    from models.hallo.engine import HalloEngine

    return HalloEngine


def _hallo_tiny() -> EngineFactory:
    from models.hallo.testing import tiny_engine

    return tiny_engine


def _liveportrait() -> EngineFactory:
    from models.liveportrait.engine import LivePortraitEngine

    return LivePortraitEngine


def _liveportrait_tiny() -> EngineFactory:
    from models.liveportrait.engine import tiny_engine

    return tiny_engine


def _aniportrait() -> EngineFactory:
    from models.aniportrait.engine import AniPortraitEngine

    return AniPortraitEngine


def _aniportrait_tiny() -> EngineFactory:
    from models.aniportrait.testing import tiny_engine

    return tiny_engine


def _pattern() -> EngineFactory:
    from models.testing import PatternEngine

    return PatternEngine


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            "warp",
            "Face-mesh warp driven by the audio; no weights, CPU, faster than real time.",
            WarpOptions,
            Capabilities(realtime=True),
            _warp,
        ),
        EngineSpec(
            "vexpress",
            "V-Express: SD1.5 diffusion with reference, keypoint and audio attention.",
            VExpressOptions,
            Capabilities(driving_video=True, needs_weights=True),
            _vexpress,
        ),
        EngineSpec(
            "vexpress-tiny",
            "The vexpress pipeline on tiny random weights (tests: noise, not faces).",
            VExpressTinyOptions,
            Capabilities(driving_video=True),
            _vexpress_tiny,
        ),
        EngineSpec(
            "hallo",
            "Hallo: SD1.5 diffusion with hierarchical (pose, face, lip) audio attention, an ArcFace "
            "identity and a face-region mask; the published Hallo weights.",
            HalloOptions,
            Capabilities(needs_weights=True),
            _hallo,
        ),
        EngineSpec(
            "hallo-tiny",
            "The hallo pipeline on tiny random weights (tests: noise, not faces).",
            HalloTinyOptions,
            Capabilities(),
            _hallo_tiny,
        ),
        EngineSpec(
            "liveportrait",
            "LivePortrait: implicit-keypoint neural warp; driving video, or motion from the audio "
            "(procedural lips/blinks/sway, or the Ditto / JoyVASA motion diffusion models).",
            LivePortraitOptions,
            Capabilities(
                driving_video=True,
                emotion=True,
                gaze=True,
                outputs=("video", "motion"),
                needs_weights=True,
                realtime=True,
            ),
            _liveportrait,
        ),
        EngineSpec(
            "liveportrait-tiny",
            "The liveportrait renderer and its motion models on tiny random weights (tests: noise, not faces).",
            LivePortraitOptions,
            Capabilities(driving_video=True, emotion=True, gaze=True, outputs=("video", "motion")),
            _liveportrait_tiny,
        ),
        EngineSpec(
            "aniportrait",
            "AniPortrait: audio -> face-mesh landmarks and head pose, then SD1.5 diffusion guided by "
            "the drawn landmarks (head pose from the audio, a driving video, or still).",
            AniPortraitOptions,
            Capabilities(driving_video=True, outputs=("video", "landmarks"), needs_weights=True),
            _aniportrait,
        ),
        EngineSpec(
            "aniportrait-tiny",
            "The aniportrait pipeline on tiny random weights (tests: noise, not faces).",
            AniPortraitTinyOptions,
            Capabilities(driving_video=True, outputs=("video", "landmarks")),
            _aniportrait_tiny,
        ),
        EngineSpec(
            "test",
            "A pattern that follows the audio's loudness (tests of the job machinery).",
            PatternOptions,
            Capabilities(driving_video=True),
            _pattern,
        ),
    )
}


def engine_spec(name: str) -> EngineSpec:
    """The spec of engine ``name``.

    Raises:
        ValueError: no such engine.
    """
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None


def build_engine(name: str, **config: Any) -> AnyEngine:
    """Construct engine ``name`` with ``config`` (``device``, ``weights_dir``, ...).

    Raises:
        ValueError: an unknown engine, or a config key its constructor does not take (named).
        WeightsError: from the constructor, when its weights are missing or do not match.
    """
    spec = engine_spec(name)
    factory = spec.load()
    accepted = inspect.signature(factory).parameters
    unknown = sorted(key for key in config if key not in accepted)
    if unknown:
        raise ValueError(
            f"engine {name!r} does not take {', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    engine = factory(**config)
    if engine.options_model is not spec.options:
        raise TypeError(
            f"engine {name!r} reads {engine.options_model.__name__}, its spec names {spec.options.__name__}"
        )
    return engine
