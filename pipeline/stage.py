"""The stage contract: a typed config, ``run(state, ctx) -> StageResult``, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from calibration.splits import Splits
    from exporters.artifact import InputSpec


class StageConfig(BaseModel):
    """Base for stage configs: unknown keys are errors; ``type`` is the registry key."""

    model_config = ConfigDict(extra="forbid")
    type: str


@dataclass
class ModelState:
    """The model as it moves through stages, with its input contract and what happened to it."""

    model: torch.nn.Module
    spec: InputSpec
    history: list[dict[str, Any]] = field(default_factory=list)
    # Set by the quantize stage: "float_model" (second reference), "quantizer" (for the TFLite lowering),
    # "bits" (per-layer bit widths). Set by the runner: "reference" (the model before the first compressing
    # stage, the default teacher). Set by distill: "distilled" (its result, the next chain link's teacher).
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        """True once a quantize stage has produced a PT2E graph."""
        return "quantizer" in self.extras


@dataclass
class StageContext:
    """What a stage may use: its private work directory, the data splits, the seed and a logger.

    ``resume``: continue an interrupted training from the checkpoint in ``workdir`` when it carries the same
    ``fingerprint`` (the stage's cache key: config, input model, data, seed, versions).
    """

    workdir: Path
    splits: Splits
    seed: int
    log: Any  # callable(str) -> None
    resume: bool = False
    fingerprint: str = ""


@dataclass
class StageResult:
    """A stage's output model and the metrics it reports."""

    state: ModelState
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Stage:
    """A model transformation. Subclasses set ``name``/``config_cls`` and implement ``run``."""

    name: ClassVar[str]
    config_cls: ClassVar[type[StageConfig]]

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Transform ``state`` and return the result; write only under ``ctx.workdir``."""
        raise NotImplementedError

    def save(self, state: ModelState, ctx: StageContext) -> list[Path]:
        """Persist the output model for ``--resume`` (default: its state_dict as safetensors); return the files."""
        from safetensors.torch import save_file

        from pipeline._io import atomic_path

        path = ctx.workdir / "model.safetensors"
        tensors = {k: v.detach().contiguous().clone() for k, v in state.model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        return [path]

    def load(self, state: ModelState, ctx: StageContext) -> ModelState:
        """Restore what ``save`` wrote, given this stage's input ``state`` (default: load the state_dict)."""
        from safetensors.torch import load_file

        state.model.load_state_dict(load_file(str(ctx.workdir / "model.safetensors")))
        state.model.eval()
        return state
