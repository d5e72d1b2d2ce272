"""`distill`: train the stage's input model (the student) to reproduce a teacher, on the shared Trainer.

The teacher is the model before compression by default (``teacher: input``), the stage's own input for
born-again generations, or the last distill stage's result for teacher-assistant chains
(prune → distill → prune → distill with ``teacher: previous_distill``). Train-only heads live in the
objective and are dropped with it; the state carries only the student.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgeship.core.errors import ConfigError, DataError
from edgeship.distill.config import DistillConfig
from edgeship.distill.engine import carve_holdout, distill_once, tune_label_preservation
from edgeship.inference import predict
from edgeship.metrics import label_metrics
from edgeship.stage import ModelState, Stage, StageContext, StageResult
from edgeship.training.trainer import world


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Fresh random weights for every layer that can reset itself (born-again students start from scratch)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def _macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(shape))
    return int(macs)


class DistillStage(Stage[DistillConfig]):
    """Knowledge distillation with composable losses; metrics per epoch as docs/stages/distill.md lists them."""

    name = "distill"
    needs_reference = True

    def _teacher(self, state: ModelState) -> nn.Module:
        cfg = self.config
        order = {"stage_input": [], "previous_distill": [state.distilled, state.reference],
                 "input": [state.reference]}
        # (a Module's truthiness is its length for containers: test for None explicitly, not with `or`)
        source = next((m for m in order[cfg.teacher] if m is not None), state.model)
        return copy.deepcopy(source).eval()

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Tune (label preservation), then train ``generations`` students in turn; the last one is the result."""
        cfg = self.config
        if state.quantized:
            raise ConfigError("stage distill must come before quantize (QAT distils inside the quantize stage)")
        train, val = ctx.splits.train, ctx.splits.validation
        labelled = [s.type for s in cfg.method_terms() if s.type == "ce"]
        if labelled and train.y is None:
            raise DataError(f"distill method {cfg.method} uses labels; the train split ({train.origin}) has none "
                            f"(use method function_matching or kd with alpha: 0 for unlabeled data)")
        teacher = self._teacher(state)
        data = carve_holdout(train.x, train.y, cfg.holdout_fraction, ctx.seed, val.x, val.y)
        tuning = None
        specs = cfg.method_terms()
        if cfg.method == "label_preservation" and cfg.tune.enabled:
            tuning = tune_label_preservation(state.model, teacher, data, cfg, seed=ctx.seed, log=ctx.log)
            chosen = tuning.chosen
            specs = cfg.method_terms(chosen["alpha"], chosen["beta"], chosen["temperature"])
            if cfg.refits:  # the trials never saw the held-out rows; a baseline trained on them would start ahead
                data = carve_holdout(train.x, train.y, 0.0, ctx.seed, val.x, val.y)
        ctx.log("  losses: " + " + ".join(f"{s.weight:g}·{s.type}" for s in specs)
                + (f" (augment {cfg.augment_mode}, live teacher)" if cfg.augment_mode != "none" else ""))
        start = copy.deepcopy(state.model)
        generations: list[dict[str, Any]] = []
        gen_teacher, student = teacher, state.model
        for gen in range(1, cfg.generations + 1):
            if gen == 1 and tuning is not None and tuning.student is not None and not cfg.reinit:
                ctx.log("  the winning trial ran the full schedule: it is the first student")
                student = tuning.student
                generations.append({"generation": gen, "epochs": tuning.history})
                gen_teacher = student
                continue
            student = copy.deepcopy(start)
            if cfg.reinit:
                reinitialise(student, ctx.seed + gen)
            workdir = ctx.workdir if cfg.generations == 1 else ctx.workdir / f"generation-{gen}"
            if cfg.generations > 1:
                ctx.log(f"  born-again generation {gen}/{cfg.generations}")
            history = distill_once(student, gen_teacher, specs, data, cfg, cfg.trainer, seed=ctx.seed + gen - 1,
                                   workdir=workdir, log=ctx.log, resume=ctx.resume,
                                   fingerprint=f"{ctx.fingerprint}:{gen}")
            generations.append({"generation": gen, "epochs": history})
            gen_teacher = student
        state.model.load_state_dict(student.state_dict())
        state.model.eval()
        state.distilled = copy.deepcopy(state.model)
        final = label_metrics(predict(state.model, val.x), predict(teacher, val.x), val.y)
        metrics = {
            "method": cfg.method, "teacher": cfg.teacher, "augment": cfg.augment_mode,
            "losses": [s.model_dump(exclude_defaults=True) for s in specs],
            "tuning": tuning.summary() if tuning is not None else None,
            "generations": generations, "final_vs_teacher": final, "train_rows": len(data.x),
            "teacher_macs": _macs(teacher, state.spec.shape), "student_macs": _macs(state.model, state.spec.shape),
            "processes": world()[1],
        }
        ctx.log(f"  vs teacher on validation: agreement {final['agreement']:.4f} ({final['mismatches']} mismatches)"
                + (f", accuracy {final['accuracy']:.4f} (teacher {final['reference_accuracy']:.4f})"
                   if "accuracy" in final else ""))
        return StageResult(state=state, metrics=metrics)

    def load(self, state: ModelState, ctx: StageContext) -> ModelState:
        """Restore the student's weights and mark it as the next chain link's teacher.

        The structure is the stage input's (e.g. as a prune stage left it), so weights are all that is saved.
        """
        state = super().load(state, ctx)
        state.distilled = copy.deepcopy(state.model)
        return state
