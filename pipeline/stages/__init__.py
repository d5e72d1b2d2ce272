"""Stage registry: every stage a recipe may name, listed explicitly (no import-time registration).

Each entry is the stage's typed config class (torch-free, so a recipe validates without importing torch) and
where its implementation lives (imported when a run builds the stage). ``Recipe.stages`` is the discriminated
union of these config classes on ``type``.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Union

from pydantic import Field

from edgeship.archify.config import ArchifyConfig
from edgeship.distill.config import DistillConfig
from edgeship.prune.config import PruneConfig
from edgeship.quant.config import QuantizeConfig
from edgeship.stage import Stage, StageConfig
from edgeship.training.config import TrainConfig

STAGES: dict[str, tuple[type[StageConfig], str]] = {
    "train": (TrainConfig, "edgeship.stages.train:TrainStage"),
    "quantize": (QuantizeConfig, "edgeship.stages.quantize:QuantizeStage"),
    "prune": (PruneConfig, "edgeship.stages.prune:PruneStage"),
    "distill": (DistillConfig, "edgeship.stages.distill:DistillStage"),
    "archify": (ArchifyConfig, "edgeship.stages.archify:ArchifyStage"),
}

# One entry of ``Recipe.stages``: validated once, by the config class its ``type`` names.
StageEntry = Annotated[Union[tuple(config for config, _ in STAGES.values())],  # noqa: UP007 - a runtime tuple
                       Field(discriminator="type")]


def stage_class(name: str) -> type[Stage[Any]]:
    """The implementation of the stage registered as ``name`` (imported on first use)."""
    module, _, cls = STAGES[name][1].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_stage(config: StageConfig) -> Stage[Any]:
    """Instantiate the stage a validated ``config`` names."""
    return stage_class(config.type)(config)
