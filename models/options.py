"""Per-engine job options: each engine declares its own as a typed model (torch-free).

A job's common options (fps, size, seed, framing, face_index) are ``core.jobs.RenderOptions``;
what only one engine understands lives in its ``EngineOptions`` subclass, with defaults, bounds and
descriptions. The API validates ``engine_options`` against the chosen engine's model at submit (a
422 ``invalid_params`` naming the field), stores the validated options with every default filled
in, and the worker validates them once more when it builds ``RenderParams``. The same models give
the OpenAPI document and ``GET /v1/engines`` their schemas.

Validators that need to know the job's inputs read ``info.context`` (``OptionsContext``).
"""

from __future__ import annotations

from typing import Any, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo

from core.errors import InvalidInput


class OptionsContext(TypedDict):
    """What option validators may know about the job (``info.context``)."""

    driving_video: bool
    """Whether the job comes with a driving video."""


class EngineOptions(BaseModel):
    """Base of every engine's options: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=EngineOptions)


def has_driving_video(info: ValidationInfo) -> bool:
    """Whether the job being validated has a driving video (False when validated without context)."""
    context = info.context
    return bool(isinstance(context, dict) and context.get("driving_video"))


def check_driving_video(head_motion: object, info: ValidationInfo) -> None:
    """Refuse ``head_motion="driving"`` for a job validated without a driving video (a ValueError).

    Validation without a job context (defaults, schemas) lets it through.
    """
    if head_motion == "driving" and info.context is not None and not has_driving_video(info):
        raise ValueError("head_motion 'driving' needs a driving_video")


def validate_options(
    model: type[OptionsT], raw: dict[str, Any], *, driving_video: bool, field: str = "engine_options"
) -> OptionsT:
    """``raw`` validated as ``model``.

    Raises:
        InvalidInput: ``invalid_params``, naming every refused field as ``engine_options.<name>``.
    """
    context: OptionsContext = {"driving_video": driving_video}
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join([field, *(str(part) for part in err['loc'])])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidInput(problems, code="invalid_params") from None
