"""``/v1/engines``: the engines this deployment serves right now, with what clients build forms from."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from core.errors import NotFound
from core.jobs import OutputName
from models.registry import ENGINES, EngineSpec
from service.deps import Services, ServicesDep, TenantDep
from service.openapi import ENGINE_ERRORS, ENGINE_LIST_ERRORS

router = APIRouter(prefix="/v1/engines", tags=["engines"])


class EngineWorkers(BaseModel):
    count: int = Field(description="Live workers serving the engine.")
    devices: list[str] = Field(description="Their devices (`cuda`, `cpu`, ...), one entry per worker.")
    weights_loaded: bool = Field(description="Whether a live worker has the engine's weights loaded.")


class EngineCapabilities(BaseModel):
    """What an engine can do (``models.registry.Capabilities``), for building forms."""

    driving_video: bool = Field(description="Uses a `driving_video` input.")
    emotion: bool = Field(description="Takes an emotion control.")
    gaze: bool = Field(description="Takes a gaze control.")
    outputs: list[OutputName] = Field(
        description="What a job can ask it to produce (`outputs`): `video` always, `motion` (the "
        "generated motion, NPZ), `landmarks` (first-stage landmarks, NPZ)."
    )
    framing: list[Literal["crop", "full"]] = Field(description="The `framing` values it renders.")
    needs_weights: bool = Field(description="Loads model weights.")
    realtime: bool = Field(description="Renders faster than real time on one GPU.")


class EngineInfo(BaseModel):
    """One engine as ``GET /v1/engines`` describes it."""

    name: str
    summary: str
    default: bool = Field(description="Whether jobs that name no engine go to this one.")
    capabilities: EngineCapabilities
    options_schema: dict[str, Any] = Field(description="JSON schema of the engine's `engine_options`.")
    defaults: dict[str, Any] = Field(description="The `engine_options` a job gets when it sets none.")
    workers: EngineWorkers


class EngineList(BaseModel):
    data: list[EngineInfo]


def _info(services: Services, spec: EngineSpec, cards: list[dict[str, Any]]) -> EngineInfo:
    return EngineInfo(
        name=spec.name,
        summary=spec.summary,
        default=spec.name == services.settings.engine,
        capabilities=EngineCapabilities.model_validate(spec.capabilities.to_json()),
        options_schema=spec.options_schema(),
        defaults=spec.defaults(),
        workers=EngineWorkers(
            count=len(cards),
            devices=[str(card.get("device", "unknown")) for card in cards],
            weights_loaded=any(bool(card.get("weights_loaded")) for card in cards),
        ),
    )


def _served(services: Services) -> list[tuple[EngineSpec, list[dict[str, Any]]]]:
    """The enabled engines with at least one live worker, and those workers' cards."""
    served = []
    for name in services.settings.enabled_engines:
        cards = services.engine_workers(name) if services.engine_workers is not None else []
        if cards:
            served.append((ENGINES[name], cards))
    return served


@router.get(
    "",
    response_model=EngineList,
    responses=ENGINE_LIST_ERRORS,
    summary="The engines served now, their options and capabilities",
    description="Only engines that a live worker serves are listed; build forms from `options_schema`.",
)
def list_engines(services: ServicesDep, tenant: TenantDep) -> EngineList:
    return EngineList(data=[_info(services, spec, cards) for spec, cards in _served(services)])


@router.get("/{name}", response_model=EngineInfo, responses=ENGINE_ERRORS, summary="One served engine")
def get_engine(name: str, services: ServicesDep, tenant: TenantDep) -> EngineInfo:
    for spec, cards in _served(services):
        if spec.name == name:
            return _info(services, spec, cards)
    raise NotFound(f"engine {name!r} is not served here", code="engine_not_found")
