"""Engine names -> constructors, imported lazily so that a process loads only the engine it runs."""

from __future__ import annotations

import importlib
from typing import Any

from models.engine import Engine

ENGINES: dict[str, str] = {
    "warp": "models.warp.engine:WarpEngine",
    "vexpress": "models.vexpress.engine:VExpressEngine",
    "test": "models.testing:PatternEngine",
    # the vexpress pipeline on tiny random weights: exercises the whole diffusion path without weights
    "vexpress-tiny": "models.vexpress.testing:tiny_engine",
    "liveportrait": "models.liveportrait.engine:LivePortraitEngine",
    # the LivePortrait renderer on tiny random weights, for end-to-end tests without weights
    "liveportrait-tiny": "models.liveportrait.engine:tiny_engine",
}


def build_engine(name: str, **options: Any) -> Engine:
    """Construct the engine called ``name``; ``options`` go to its constructor (weights_dir, device...)."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {sorted(ENGINES)}") from None
    module_name, _, class_name = target.partition(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    engine: Engine = engine_class(**options)
    return engine
