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


class PruneConfig(StageConfig):
    """Which channels go (criterion) and how many (ratio or a global MAC/parameter budget)."""

    type: Literal["prune"] = "prune"
    criterion: Literal["l1", "l2", "taylor", "bn_scale", "random"] = "l1"
    ratio: float | None = Field(default=None, gt=0, lt=1, description="fraction of channels removed per layer")
    target_macs: float | None = Field(default=None, gt=0, lt=1, description="keep this fraction of the MACs")
    target_params: float | None = Field(default=None, gt=0, lt=1, description="keep this fraction of the params")
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
        given = [k for k in ("ratio", "target_macs", "target_params") if getattr(self, k) is not None]
        if len(given) != 1:
            msg = f"give exactly one of ratio, target_macs, target_params; got {given or 'none'}"
            raise ValueError(msg)
        return self
