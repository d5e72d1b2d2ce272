"""The prune stage's typed config (no torch import: recipes load fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeship.stage import StageConfig


class SlimmingOptions(BaseModel):
    """Network Slimming sparsity training before BN-scale pruning (Liu et al. 2017)."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(default=0, ge=0, description="0: prune on the BN scales as they are")
    lam: float = Field(default=1e-4, ge=0, description="λ added as λ·sign(γ) to BN γ gradients (1e-5 for ResNets)")
    lr: float = Field(default=1e-3, gt=0)


class RecoverOptions(BaseModel):
    """Training between iterative pruning rounds (the last round's recovery is a following distill stage)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["none", "finetune", "distill"] = Field(
        default="none", description="finetune: CE on labels; distill: KD from the model before pruning")
    epochs: int = Field(default=2, ge=1)
    lr: float = Field(default=5e-3, gt=0)


class LatencyTableOptions(BaseModel):
    """How the latency lookup table is measured when the cache has none for this model and runtime.

    Each profile times like the report's rows: the recipe's ``latency`` threads, warm-up and runs.
    """

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(default=10, ge=2, description="pruned variants profiled (5 uniform, then random ones)")
    repeats: int = Field(default=2, ge=1, description="fresh processes per variant, interleaved; medians kept")
    rebuild: bool = Field(default=False, description="measure again even when the cache has this table")
    refine: int = Field(default=2, ge=0, description="times the pruned model, measured beside the unpruned one, "
                                                     "may join the table and the pruning be redone")
    tolerance: float = Field(default=0.1, gt=0, lt=1, description="predicted vs measured latency ratio error "
                                                                  "accepted without refining")


class PruneConfig(StageConfig):
    """Which channels go (criterion) and how many (ratio or a global MAC/parameter budget)."""

    type: Literal["prune"] = "prune"
    criterion: Literal["l1", "l2", "taylor", "bn_scale", "random"] = "l1"
    ratio: float | None = Field(default=None, gt=0, lt=1, description="fraction of channels removed per layer")
    target_macs: float | None = Field(default=None, gt=0, lt=1, description="keep this fraction of the MACs")
    target_params: float | None = Field(default=None, gt=0, lt=1, description="keep this fraction of the params")
    target_latency: float | None = Field(
        default=None, gt=0, lt=1, description="keep this fraction of the unpruned model's latency on "
                                              "latency_runtime, as its measured lookup table predicts it")
    target_latency_ms: float | None = Field(default=None, gt=0, description="the same, in milliseconds")
    latency_runtime: Literal["onnxruntime", "openvino", "litert"] = Field(
        default="onnxruntime", description="the runtime (on the recipe's device and threads) whose table is used")
    latency_table: LatencyTableOptions = LatencyTableOptions()
    global_pruning: bool = Field(default=True, description="rank channels across layers (budget mode)")
    round_to: int | None = Field(default=8, ge=1, description="channel counts stay multiples of this")
    protect: list[str] = Field(default_factory=list, description="regexes of module names never pruned")
    protect_classifier: bool = True
    heads_ratio: float | None = Field(
        default=None, gt=0, lt=1, description="transformers: fraction of attention heads removed (whole heads, "
                                              "ranked globally) before the channel budget is applied")
    taylor_batches: int = Field(default=4, ge=1, description="calibration batches whose gradients rank channels")
    max_steps: int = Field(default=50, ge=1,
                           description="iterative steps to approach a budget (each removes ~2% of channels)")
    slimming: SlimmingOptions = SlimmingOptions()
    iterative_steps: int = Field(default=1, ge=1, description="rounds: the budget is reached in equal parts, with "
                                                               "`recover` training between rounds")
    recover: RecoverOptions = RecoverOptions()

    @model_validator(mode="after")
    def _one_budget(self) -> PruneConfig:
        given = [k for k in BUDGETS if getattr(self, k) is not None]
        if len(given) != 1:
            msg = f"give exactly one of {', '.join(BUDGETS)}; got {given or 'none'}"
            raise ValueError(msg)
        if self.latency_budget and self.heads_ratio:
            msg = "target_latency with heads_ratio: remove heads in a prune stage of its own, before this one"
            raise ValueError(msg)
        return self

    @property
    def latency_budget(self) -> bool:
        """Whether the budget is a latency (measured lookup table) rather than a ratio, MACs or params."""
        return self.target_latency is not None or self.target_latency_ms is not None


BUDGETS = ("ratio", "target_macs", "target_params", "target_latency", "target_latency_ms")
