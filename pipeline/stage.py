"""The stage contract: a typed config, ``run(state, ctx) -> StageResult``, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from edgeship.calibration.splits import Splits
    from edgeship.core.artifact import InputSpec
    from edgeship.quant.bits import LayerBits


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
    # The model before the first compressing stage (set by the runner when a stage needs it): distill's default
    # teacher and a pruned run's timed baseline.
    reference: torch.nn.Module | None = None
    # The last distill stage's result: the next link's teacher in a teacher-assistant chain.
    distilled: torch.nn.Module | None = None
    # Set by the quantize stage: the float model (second reference), the PT2E quantizer (the TFLite lowering
    # needs it) and the resolved per-layer bit widths.
    float_model: torch.nn.Module | None = None
    quantizer: Any = None
    bits: list[LayerBits] | None = None

    @property
    def quantized(self) -> bool:
        """True once a quantize stage has produced a PT2E graph."""
        return self.quantizer is not None


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
    # ``probe(model, spec, quantizer, x, workdir)``: the model exported as the run will export it and run on
    # every gated runtime (``edgeship.runner.probe``); None when the run exports or validates nothing.
    probe: Any = None
    # Where the run times its artifacts (``edgeship.prune.latency_table.TimingTarget``): the recipe's device or
    # a fresh local process, and its thread count. Latency-aware pruning measures its lookup table there.
    timing: Any = None


@dataclass
class StageResult:
    """A stage's output model and the metrics it reports."""

    state: ModelState
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


ConfigT = TypeVar("ConfigT", bound=StageConfig)


class Stage(Generic[ConfigT]):
    """A model transformation: subclasses set ``name``, bind their config (``Stage[PruneConfig]``), implement ``run``.

    The class attributes tell the runner what a stage needs, so the runner never tests stage names.
    """

    name: ClassVar[str]
    # Uses the model before compression (``ModelState.reference``): distill's default teacher, prune's baseline.
    needs_reference: ClassVar[bool] = False
    # Produces the input model itself (training from scratch): the reference is taken after it, not before.
    makes_input: ClassVar[bool] = False
    # Changes layer shapes: the report times the reference on each runtime as the unpruned baseline.
    changes_shape: ClassVar[bool] = False

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Transform ``state`` and return the result; write only under ``ctx.workdir``."""
        raise NotImplementedError

    def save(self, state: ModelState, ctx: StageContext) -> list[Path]:
        """Persist the output model for ``--resume`` (default: its state_dict as safetensors); return the files."""
        from safetensors.torch import save_file

        from edgeship.core.io import atomic_path

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
