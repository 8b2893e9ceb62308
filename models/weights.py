"""``python -m models.weights``: which files an engine loads, fetching them, and checking a directory.

    python -m models.weights layout vexpress                # the files, in the published layout
    python -m models.weights sources vexpress               # the Hub repositories they come from
    python -m models.weights download vexpress /srv/weights # fetch them (huggingface_hub), then check --strict
    python -m models.weights check vexpress /srv/weights [--converted /srv/converted] [--strict]

``check`` lists what is missing by file name; with ``--strict`` it also reads every published
module file the way the worker loads it (``torch.load(weights_only=True)``, memory-mapped) and
matches each tensor's key and shape against the modules built on the meta device, so a truncated
file or another checkpoint's shapes fail here with the keys named, not at worker start. Nothing is
allocated: the tensors go to the meta device. ``--engine-config`` takes the worker's
``PARLA_ENGINE_CONFIG`` JSON (its ``module_configs`` are a checkpoint of another size's).
``download`` fetches the files of `models.hub.WEIGHT_SOURCES` and then runs ``check --strict``.

Exit status: 0 complete, 1 files missing or wrong (listed) or a download failed, 2 bad usage
(unknown engine, not a directory, downloads switched off). Engines without weights (``warp``,
``test``, the ``-tiny`` ones) say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.registry import ENGINES, engine_spec

MissingFiles = Callable[[Path, Path | None], list[str]]
"""``(weights_dir, converted_dir) -> missing paths`` relative to ``weights_dir`` (``a or b``: either)."""
StrictCheck = Callable[[Path, Mapping[str, Any]], None]
"""``(weights_dir, engine_config)``: raises ``WeightsError`` naming what does not match."""


def _vexpress_missing(weights_dir: Path, converted_dir: Path | None) -> list[str]:
    from models.vexpress.engine import missing_weight_files

    return missing_weight_files(weights_dir, converted_dir)


def _liveportrait_missing(weights_dir: Path, converted_dir: Path | None) -> list[str]:
    from models.liveportrait.checkpoint import CONVERTED_MANIFEST, missing_files

    for directory in (converted_dir, weights_dir):
        if directory is not None and (directory / CONVERTED_MANIFEST).is_file():
            return []  # our converted layout (the engine loads it instead)
    return missing_files(weights_dir)


def _hallo_missing(weights_dir: Path, converted_dir: Path | None) -> list[str]:
    from models.hallo.engine import missing_weight_files

    return missing_weight_files(weights_dir, converted_dir)


def _aniportrait_missing(weights_dir: Path, converted_dir: Path | None) -> list[str]:
    from models.aniportrait.engine import missing_weight_files

    return missing_weight_files(weights_dir)


def _vexpress_strict(weights_dir: Path, engine_config: Mapping[str, Any]) -> None:
    from models.vexpress.checkpoint import load_published

    configs = dict(engine_config.get("module_configs") or {})
    load_published(
        weights_dir,
        guider_config=configs.get("guider_config"),
        audio_projection_config=configs.get("audio_projection_config"),
        device="meta",
    )


def _liveportrait_strict(weights_dir: Path, engine_config: Mapping[str, Any]) -> None:
    from models.liveportrait.checkpoint import load_published

    load_published(weights_dir, device="meta")


def _hallo_strict(weights_dir: Path, engine_config: Mapping[str, Any]) -> None:
    from models.hallo.checkpoint import load_published
    from models.hallo.engine import NET_FILES

    load_published(weights_dir, device="meta", net_file=NET_FILES[engine_config.get("variant", "hallo")])


def _aniportrait_strict(weights_dir: Path, engine_config: Mapping[str, Any]) -> None:
    from models.aniportrait.checkpoint import load_a2l, load_pose_guider, load_unets

    load_a2l(weights_dir, device="meta")
    load_pose_guider(weights_dir, device="meta")
    load_unets(weights_dir, device="meta")


WEIGHT_CHECKS: dict[str, MissingFiles] = {
    "vexpress": _vexpress_missing,
    "liveportrait": _liveportrait_missing,
    "hallo": _hallo_missing,
    "aniportrait": _aniportrait_missing,
}
"""Per engine that needs weights (``Capabilities.needs_weights``): its check of a directory."""
STRICT_CHECKS: dict[str, StrictCheck] = {
    "vexpress": _vexpress_strict,
    "liveportrait": _liveportrait_strict,
    "hallo": _hallo_strict,
    "aniportrait": _aniportrait_strict,
}
"""Per engine: its strict loading on the meta device (every key and shape of the published files)."""


def weights_check(engine: str) -> MissingFiles | None:
    """The engine's check, or None when it loads no weights.

    Raises:
        ValueError: an unknown engine, or one that needs weights but has no check here.
    """
    spec = engine_spec(engine)
    if not spec.capabilities.needs_weights:
        return None
    if engine not in WEIGHT_CHECKS:
        raise ValueError(f"engine {engine!r} needs weights but models.weights has no check for it")
    return WEIGHT_CHECKS[engine]


def required_files(engine: str, motion_models: Sequence[str] = ()) -> list[str]:
    """Every file the engine loads, relative to its weights directory (what an empty one misses)."""
    check = weights_check(engine)
    if check is None:
        return []
    with tempfile.TemporaryDirectory(prefix="parla-weights-") as empty:
        return missing_files(engine, Path(empty), None, motion_models)


def missing_files(
    engine: str, weights_dir: Path, converted_dir: Path | None = None, motion_models: Sequence[str] = ()
) -> list[str]:
    """The files of ``required_files`` that ``weights_dir`` lacks (none once ``converted_dir`` holds a
    converted copy of the modules that it replaces); ``motion_models``: liveportrait's (names only)."""
    check = weights_check(engine)
    missing = [] if check is None else check(weights_dir, converted_dir)
    if motion_models:
        from models.motion.weights import check_motion_models, missing_motion_files

        missing += missing_motion_files(weights_dir, check_motion_models(motion_models))
    return missing


def strict_problem(engine: str, weights_dir: Path, engine_config: Mapping[str, Any]) -> str | None:
    """What the engine's strict loading finds wrong in ``weights_dir`` (None: every tensor fits)."""
    from core.errors import WeightsError

    strict = STRICT_CHECKS.get(engine)
    if strict is None:
        return None
    try:
        strict(weights_dir, engine_config)
    except WeightsError as error:
        return str(error)
    return None


def _report(args: argparse.Namespace) -> int:
    """``check``: one line per file, then the strict check; the exit status."""
    motion = tuple(args.motion_models or ())
    required = required_files(args.engine, motion)
    missing = missing_files(args.engine, args.weights_dir, args.converted, motion)
    for name in required:
        print(f"{'missing' if name in missing else 'ok     '}  {name}")
    for name in missing:
        if name not in required:
            print(f"missing  {name}")
    print(f"{len(missing)} missing of {len(required)} in {args.weights_dir}", file=sys.stderr)
    if missing:
        return 1
    if args.strict and args.converted is None:
        problem = strict_problem(args.engine, args.weights_dir, args.engine_config)
        if problem is not None:
            print(f"wrong    {problem}", file=sys.stderr)
            return 1
        print(
            f"strict: every tensor of {args.engine}'s published files has its key and shape", file=sys.stderr
        )
    return 0


def _download(args: argparse.Namespace) -> int:
    from huggingface_hub import is_offline_mode

    from models.hub import DownloadError, download, sources_for

    if is_offline_mode():
        print(
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: downloads are off; unset it for this command",
            file=sys.stderr,
        )
        return 2
    try:
        sources = sources_for(args.engine, tuple(args.motion_models or ()))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Read now, not when huggingface_hub was imported: a mirror named for this command is used.
        download(sources, args.weights_dir, endpoint=os.environ.get("HF_ENDPOINT") or None)
    except DownloadError as error:
        print(f"download failed: {error}", file=sys.stderr)
        return 1
    args.strict, args.converted = True, None
    return _report(args)


def _sources(engine: str, motion_models: Sequence[str]) -> int:
    from models.hub import sources_for

    try:
        sources = sources_for(engine, motion_models)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    for source in sources:
        print(f"{source.repo_id}@{source.revision}  ({source.note})")
        for entry in source.files:
            choices = [entry] if isinstance(entry, str) else list(entry)
            print("    " + " or ".join(f"{c} -> {source.target(c)}" for c in choices))
    return 0


def _engine_config(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--engine-config takes a JSON object")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    layout = commands.add_parser("layout", help="the files an engine loads (published layout)")
    sources = commands.add_parser(
        "sources", help="the Hub repositories and files an engine's weights come from"
    )
    check = commands.add_parser(
        "check", help="which of those files a directory lacks (--strict: or gets wrong)"
    )
    fetch = commands.add_parser("download", help="fetch an engine's published files, then check --strict")
    for command in (layout, sources, check, fetch):
        command.add_argument("engine", choices=sorted(ENGINES))
        command.add_argument(
            "--motion-models", nargs="+", metavar="MODEL", help="liveportrait: also ditto and/or joyvasa"
        )
    for command in (check, fetch):
        command.add_argument("weights_dir", type=Path)
        command.add_argument(
            "--engine-config",
            type=_engine_config,
            default={},
            help="the worker's PARLA_ENGINE_CONFIG JSON (module_configs of a checkpoint of another size)",
        )
    check.add_argument("--converted", type=Path, help="a directory holding our converted safetensors copy")
    check.add_argument("--strict", action="store_true", help="also match every tensor's key and shape")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.motion_models and args.engine != "liveportrait":
        print("--motion-models belongs to the liveportrait engine", file=sys.stderr)
        return 2
    if weights_check(args.engine) is None:
        print(f"engine {args.engine!r} loads no weights")
        return 0
    if args.command == "layout":
        print("\n".join(required_files(args.engine, tuple(args.motion_models or ()))))
        return 0
    if args.command == "sources":
        return _sources(args.engine, tuple(args.motion_models or ()))
    if args.command == "download":
        return _download(args)
    if not args.weights_dir.is_dir():
        print(f"{args.weights_dir} is not a directory", file=sys.stderr)
        return 2
    return _report(args)


if __name__ == "__main__":
    raise SystemExit(main())
