"""``python -m models.weights``: which files an engine loads from its weights directory, and which are missing.

    python -m models.weights layout vexpress            # the files, in the published layout
    python -m models.weights check vexpress /srv/weights [--converted /srv/converted]

``check`` exits 0 when the directory is complete, 1 when files are missing (listed one a line),
2 on bad usage. It reads file names only: nothing is downloaded, opened or loaded; the engine's
own strict loading (at worker start) still checks shapes and dtypes. Engines without weights
(``warp``, ``test``, ``vexpress-tiny``) say so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from models.registry import ENGINES, engine_spec

MissingFiles = Callable[[Path, Path | None], list[str]]
"""``(weights_dir, converted_dir) -> missing paths`` relative to ``weights_dir`` (``a or b``: either)."""


def _vexpress_missing(weights_dir: Path, converted_dir: Path | None) -> list[str]:
    from models.vexpress.engine import missing_weight_files

    return missing_weight_files(weights_dir, converted_dir)


def _aniportrait_missing(weights_dir: Path, converted_dir: Path | None) -> list[str]:
    from models.aniportrait.engine import missing_weight_files

    return missing_weight_files(weights_dir)


WEIGHT_CHECKS: dict[str, MissingFiles] = {"vexpress": _vexpress_missing, "aniportrait": _aniportrait_missing}
"""Per engine that needs weights (``Capabilities.needs_weights``): its check of a directory."""


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


def required_files(engine: str) -> list[str]:
    """Every file the engine loads, relative to its weights directory (what an empty one misses)."""
    check = weights_check(engine)
    if check is None:
        return []
    with tempfile.TemporaryDirectory(prefix="parla-weights-") as empty:
        return check(Path(empty), None)


def missing_files(engine: str, weights_dir: Path, converted_dir: Path | None = None) -> list[str]:
    """The files of ``required_files`` that ``weights_dir`` lacks (none once ``converted_dir`` holds a
    converted copy of the modules that it replaces)."""
    check = weights_check(engine)
    return [] if check is None else check(weights_dir, converted_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    layout = commands.add_parser("layout", help="the files an engine loads (published layout)")
    layout.add_argument("engine", choices=sorted(ENGINES))
    check = commands.add_parser("check", help="which of those files a directory lacks")
    check.add_argument("engine", choices=sorted(ENGINES))
    check.add_argument("weights_dir", type=Path)
    check.add_argument("--converted", type=Path, help="a directory holding our converted safetensors copy")
    args = parser.parse_args(argv)
    if weights_check(args.engine) is None:
        print(f"engine {args.engine!r} loads no weights")
        return 0
    if args.command == "layout":
        print("\n".join(required_files(args.engine)))
        return 0
    if not args.weights_dir.is_dir():
        print(f"{args.weights_dir} is not a directory", file=sys.stderr)
        return 2
    required = required_files(args.engine)
    missing = missing_files(args.engine, args.weights_dir, args.converted)
    for name in required:
        print(f"{'missing' if name in missing else 'ok     '}  {name}")
    for name in missing:
        if name not in required:
            print(f"missing  {name}")
    print(f"{len(missing)} missing of {len(required)} in {args.weights_dir}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
