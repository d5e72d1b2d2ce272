"""Stage registry: every stage a recipe may name, listed explicitly (no import-time registration)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pipeline.errors import ConfigError
from pipeline.stage import Stage, StageConfig
from pipeline.stages.archify import ArchifyStage
from pipeline.stages.distill import DistillStage
from pipeline.stages.prune import PruneStage
from pipeline.stages.quantize import QuantizeStage
from pipeline.stages.train import TrainStage

STAGES: dict[str, type[Stage]] = {
    TrainStage.name: TrainStage,
    QuantizeStage.name: QuantizeStage,
    PruneStage.name: PruneStage,
    DistillStage.name: DistillStage,
    ArchifyStage.name: ArchifyStage,
}


def validate_stage_spec(spec: dict[str, Any], where: str) -> StageConfig:
    """Validate one ``stages:`` entry against its stage's config class; errors list the valid keys."""
    kind = spec.get("type")
    if kind not in STAGES:
        raise ConfigError(f"{where}.type: unknown stage {kind!r}; valid stages: {', '.join(STAGES) or '(none)'}")
    cls = STAGES[kind].config_cls
    try:
        return cls.model_validate(spec)
    except ValidationError as e:
        lines = [f"{where}: invalid {kind} stage"]
        valid = ", ".join(cls.model_fields)
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                lines.append(f"  {key}: unknown key; valid keys for {kind}: {valid}")
            else:
                lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def build_stage(spec: dict[str, Any], where: str) -> Stage:
    """Instantiate the stage named by ``spec['type']`` with its validated config."""
    config = validate_stage_spec(spec, where)
    return STAGES[config.type](config)
