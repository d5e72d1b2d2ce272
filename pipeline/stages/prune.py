"""`prune`: structured pruning on torch-pruning's dependency graph; channels are physically removed.

Criteria: L1/L2 magnitude, first-order Taylor ((activation·gradient)² grouped by DepGraph), BN scale (optionally
after Network Slimming sparsity training, λ·sign(γ) on BN gradients) and random (the baseline to beat).
Budget: a per-layer ``ratio``, or a global ``target_macs`` / ``target_params`` fraction of the original, reached
in small iterative steps. ``round_to`` keeps channel counts hardware friendly; the classifier is protected.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeship.core.errors import ConfigError, DataError
from edgeship.prune.config import PruneConfig, RecoverOptions, SlimmingOptions
from edgeship.stage import ModelState, Stage, StageContext, StageResult


def _importance(criterion: str) -> object:
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
        "random": lambda: tp.importance.RandomImportance(),
    }[criterion]()


def _attention_round_to(model: nn.Module, round_to: int | None) -> int | None:
    """Channel multiple that also keeps every nn.MultiheadAttention's embed dim divisible by its head count."""
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not heads:
        return round_to
    return math.lcm(round_to or 1, *heads)


def sync_derived_attributes(model: nn.Module) -> None:
    """Update attributes a forward pass reads that torch-pruning cannot see (torchvision ViT's hidden_dim)."""
    for m in model.modules():
        if hasattr(m, "hidden_dim") and isinstance(getattr(m, "conv_proj", None), nn.Conv2d):
            m.hidden_dim = m.conv_proj.out_channels


def channel_table(model: nn.Module) -> dict[str, int]:
    """Output channels/features of every conv and linear layer, by module name."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def ignored_modules(model: nn.Module, cfg: PruneConfig) -> list[nn.Module]:
    """The modules whose output channels stay: ``protect`` matches and, with ``protect_classifier``, the last linear."""
    ignored = [m for n, m in model.named_modules() if n and any(re.search(p, n) for p in cfg.protect)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if cfg.protect_classifier and linears:
        ignored.append(linears[-1])
    return ignored


def chosen_attempt(attempts: list[dict[str, Any]], tolerance: float) -> int:
    """The attempt to keep: by measurement, not prediction.

    The least pruned one whose measured ratio meets its target (within ``tolerance``); when none does, the
    fastest.
    """
    meeting = [i for i, a in enumerate(attempts) if a["measured_ratio"] <= a["target_ratio"] * (1 + tolerance)]
    if meeting:
        return max(meeting, key=lambda i: attempts[i]["measured_ratio"])
    return min(range(len(attempts)), key=lambda i: attempts[i]["measured_ratio"])


# A budget met within 10% is what a user asked for; further below it, they lost accuracy they did not trade.
OVERSHOOT_TOLERANCE = 0.9
# Budget mode ramps torch-pruning's global ratio to this over max_steps, checking the budget after each step.
BUDGET_RAMP_RATIO = 0.95


def budget_notes(cfg: PruneConfig, round_to: int | None, steps: int, achieved: tuple[float, float],
                 before_last_step: tuple[float, float]) -> list[str]:
    """Say when a global budget was missed or overshot, so a user never mistakes 11% MACs for the 20% they asked.

    ``achieved`` and ``before_last_step`` are (MACs, params) fractions of the original model.
    """
    field, target = ("target_macs", cfg.target_macs) if cfg.target_macs else ("target_params", cfg.target_params)
    assert target is not None  # budget mode: the config validator demands one of them
    index = 0 if field == "target_macs" else 1
    got, before = achieved[index], before_last_step[index]
    coarse = round_to is not None and round_to > 1
    if got > target:
        grain = f"multiples of round_to {round_to}" if coarse else "single channels"
        return [f"prune: {field} {target} not reached: {got:.1%} after {steps} steps, the most the pruner removed "
                f"with channel counts in {grain}; lower round_to, protect fewer layers or raise max_steps"]
    if got < OVERSHOOT_TOLERANCE * target:
        why = (f"channel counts stay multiples of round_to {round_to}, a coarse step on layers this narrow; a smaller "
               "round_to gets closer" if coarse else
               f"each of up to max_steps {cfg.max_steps} steps removes ~{BUDGET_RAMP_RATIO / cfg.max_steps:.1%} of the "
               "channels; more max_steps get closer")
        return [f"prune: {field} {target} gave {got:.1%}: the last step went from {before:.1%} to {got:.1%} "
                f"because {why}"]
    return []


class PruneStage(Stage[PruneConfig]):
    """Remove channels with torch-pruning's DepGraph; report params and MACs before/after."""

    name = "prune"
    needs_reference = True
    changes_shape = True

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Prune ``state.model`` in place (after optional sparsity training) to the configured budget."""
        import torch_pruning as tp

        cfg = self.config
        if state.quantized:
            raise ConfigError("stage prune must come before quantize (it removes float channels)")
        model = state.model.eval()
        # Gradients left by earlier training would be cut to the pruned shapes along with the weights (or not,
        # and then a later backward writes into tensors of the old shape): none go into the pruner.
        model.zero_grad(set_to_none=True)
        example = torch.zeros(state.spec.shape)
        base_macs, base_params = tp.utils.count_ops_and_params(model, example)
        before = channel_table(model)
        ignored = ignored_modules(model, cfg)
        if cfg.criterion == "bn_scale" and cfg.slimming.epochs:
            self._slimming(model, ctx, cfg.slimming)
        heads, head_counts = self._prune_heads(model, example, ignored, cfg, ctx) if cfg.heads_ratio else ({}, None)
        budget = cfg.ratio is None
        round_to = _attention_round_to(model, cfg.round_to)
        if round_to != cfg.round_to:
            ctx.log(f"  round_to {cfg.round_to} -> {round_to}: attention embed dims must stay divisible by the heads")
        if cfg.latency_budget:
            return self._latency_pruning(state, ctx, example, ignored, round_to or 1, before,
                                         (base_macs, base_params))
        rounds = cfg.iterative_steps
        pruner = tp.pruner.MetaPruner(
            model, example, importance=_importance(cfg.criterion), ignored_layers=ignored, round_to=round_to,
            pruning_ratio=cfg.ratio if not budget else BUDGET_RAMP_RATIO, global_pruning=cfg.global_pruning and budget,
            iterative_steps=rounds if not budget else cfg.max_steps,
            num_heads=heads, prune_num_heads=False, prune_head_dims=False)  # heads were decided above
        teacher = copy.deepcopy(model).eval() if rounds > 1 and cfg.recover.method == "distill" else None
        macs, params = base_macs, base_params
        last_step_from = (macs, params)
        steps, recoveries = 0, []
        for r in range(1, rounds + 1):
            keep = 1 - (1 - (cfg.target_macs or cfg.target_params or 0)) * r / rounds  # this round's budget
            for _ in range(1 if not budget else cfg.max_steps):
                if cfg.criterion == "taylor":
                    self._taylor_gradients(model, ctx, cfg.taylor_batches)
                last_step_from = (macs, params)
                pruner.step()
                sync_derived_attributes(model)
                steps += 1
                macs, params = tp.utils.count_ops_and_params(model, example)
                if budget and ((cfg.target_macs and macs <= keep * base_macs)
                               or (cfg.target_params and params <= keep * base_params)):
                    break
            if r < rounds and cfg.recover.method != "none":
                ctx.log(f"  round {r}/{rounds}: MACs {macs / base_macs:.1%}; {cfg.recover.method} "
                        f"{cfg.recover.epochs} epochs")
                recoveries.append({"round": r, "macs_ratio": macs / base_macs,
                                   "epochs": self._recover(model, teacher, ctx, cfg.recover, r)})
        model.zero_grad(set_to_none=True)
        model.eval()
        notes = budget_notes(cfg, round_to, steps, (macs / base_macs, params / base_params),
                             (last_step_from[0] / base_macs, last_step_from[1] / base_params)) if budget else []
        for n in notes:
            ctx.log(f"  note: {n}")
        after = channel_table(model)
        metrics = {
            "criterion": cfg.criterion, "steps": steps, "rounds": rounds, "recoveries": recoveries,
            "attention_heads": head_counts,
            "macs_before": int(base_macs), "macs_after": int(macs), "macs_ratio": macs / base_macs,
            "params_before": int(base_params), "params_after": int(params), "params_ratio": params / base_params,
            "channels": [{"layer": n, "before": before[n], "after": after.get(n)} for n in before],
        }
        ctx.log(f"  MACs {base_macs / 1e6:.2f}M -> {macs / 1e6:.2f}M ({macs / base_macs:.1%}), "
                f"params {base_params / 1e6:.3f}M -> {params / 1e6:.3f}M ({params / base_params:.1%})")
        return StageResult(state=state, metrics=metrics, notes=notes)

    def _latency_pruning(self, state: ModelState, ctx: StageContext, example: torch.Tensor,
                         ignored: list[nn.Module], round_to: int, before: dict[str, int],
                         base: tuple[int, int]) -> StageResult:
        """Prune to a latency the runtime's measured lookup table predicts; verify it measured, refine the table.

        The pruned model is measured beside the unpruned one (interleaved fresh processes, so a machine that
        drifts moves both), and their ratio is compared with the table's. Off by more than ``tolerance``, the
        measured model joins the table (in the table's time base) and the pruning is redone from the unpruned
        model: the table learns the region the pruner steers into.
        """
        import torch_pruning as tp

        from edgeship.prune.latency_table import (
            TimingTarget,
            measure_table,
            model_key,
            model_layers,
            profile_interleaved,
        )

        cfg, opts, spec = self.config, self.config.latency_table, state.spec
        original = state.model.eval()
        timing = ctx.timing or TimingTarget.of(None, 2)  # called outside a run: this machine, 2 threads
        table = timing.table(cfg.latency_runtime, opts.rebuild)
        layers = model_layers(original, spec)
        key = model_key(layers, spec)
        measured_now = not table.knows(key)
        if measured_now:
            ctx.log(f"  latency table: measuring {opts.samples} variants x {opts.repeats} on {cfg.latency_runtime} "
                    f"({timing.device}, {timing.threads} threads)")
            measure_table(table, original, spec, ignored, timing, samples=opts.samples, round_to=round_to,
                          repeats=opts.repeats, seed=ctx.seed, workdir=ctx.workdir, log=ctx.log)
            table.save()
        full = table.predict(key, layers)
        target = cfg.target_latency_ms or full * (cfg.target_latency or 1.0)
        ctx.log(f"  latency table {table.path}: unpruned {full:.3f} ms predicted; target {target:.3f} ms")
        ignored_names = {n for n, m in original.named_modules() if any(m is i for i in ignored)}
        attempts: list[dict[str, Any]] = []
        recoveries: list[dict[str, Any]] = []
        candidates = []
        for attempt in range(opts.refine + 1):
            model = copy.deepcopy(original)
            own_ignored = [m for n, m in model.named_modules() if n in ignored_names]
            outcome, recoveries = self._latency_rounds(model, ctx, example, own_ignored, table, key, layers, full,
                                                       target, round_to)
            pruned, unpruned = profile_interleaved(
                [("pruned", model), ("unpruned", original)], spec, cfg.latency_runtime, timing,
                repeats=opts.repeats, seed=ctx.seed + attempt, workdir=ctx.workdir, log=ctx.log)
            ratio_measured, ratio_predicted = pruned.p50 / unpruned.p50, outcome["predicted_ms"] / full
            error = ratio_predicted / ratio_measured - 1
            attempts.append({"predicted_ms": round(outcome["predicted_ms"], 4), "target_ms": round(target, 4),
                             "unpruned_predicted_ms": round(full, 4), "target_ratio": round(target / full, 4),
                             "predicted_ratio": round(ratio_predicted, 4),
                             "measured_ratio": round(ratio_measured, 4), "error": round(error, 4),
                             "pruned_p50_ms": round(pruned.p50, 4), "unpruned_p50_ms": round(unpruned.p50, 4),
                             "reached": outcome["reached"]})
            candidates.append((model, outcome, recoveries))
            ctx.log(f"  attempt {attempt + 1}: latency ratio predicted {ratio_predicted:.3f}, measured "
                    f"{ratio_measured:.3f} ({error:+.1%})")
            if abs(error) <= opts.tolerance or attempt == opts.refine or cfg.iterative_steps > 1:
                break
            # the table's own unpruned sample sets its time base; this measurement is moved onto it
            table.add_sample(key, model_layers(model, spec), pruned.scaled(full / unpruned.p50),
                             f"refined {ratio_predicted:.3f}")
            table.save()
            full = table.predict(key, layers)
            target = cfg.target_latency_ms or full * (cfg.target_latency or 1.0)
        chosen = chosen_attempt(attempts, opts.tolerance)
        model, outcome, recoveries = candidates[chosen]
        state.model = model
        model.zero_grad(set_to_none=True)
        model.eval()
        macs, params = tp.utils.count_ops_and_params(model, example)
        best = attempts[chosen]
        latency = {"runtime": cfg.latency_runtime, "device": timing.device, "threads": timing.threads,
                   "table": str(table.path), "table_measured_now": measured_now,
                   "table_samples": len(table.data["models"][key]["samples"]), "cache_mb": table.cache_mb,
                   "unpruned_predicted_ms": best["unpruned_predicted_ms"], "target_ms": best["target_ms"],
                   "predicted_ms": best["predicted_ms"], "reached": outcome["reached"], "attempts": attempts,
                   "chosen_attempt": chosen + 1,
                   **{k: best[k] for k in ("target_ratio", "predicted_ratio", "measured_ratio", "error")}}
        notes = [] if outcome["reached"] else [
            f"prune: target latency {best['target_ms']:.3f} ms not reached: the table predicts "
            f"{outcome['predicted_ms']:.3f} ms with every group down to round_to {round_to} channels; lower "
            "round_to or protect fewer layers"]
        if abs(best["error"]) > opts.tolerance:
            notes.append(f"prune: the latency table predicted {best['predicted_ratio']:.3f} of the unpruned model's "
                         f"latency on {cfg.latency_runtime}; measured {best['measured_ratio']:.3f} "
                         f"({best['error']:+.1%}); attempt {chosen + 1} of {len(attempts)} kept")
        after = channel_table(model)
        metrics = {
            "criterion": cfg.criterion, "steps": outcome["steps"], "rounds": cfg.iterative_steps,
            "recoveries": recoveries, "attention_heads": None, "latency": latency,
            "macs_before": int(base[0]), "macs_after": int(macs), "macs_ratio": macs / base[0],
            "params_before": int(base[1]), "params_after": int(params), "params_ratio": params / base[1],
            "channels": [{"layer": n, "before": before[n], "after": after.get(n)} for n in before],
        }
        ctx.log(f"  predicted {best['unpruned_predicted_ms']:.3f} -> {outcome['predicted_ms']:.3f} ms on "
                f"{cfg.latency_runtime}; MACs {macs / base[0]:.1%}, params {params / base[1]:.1%}")
        return StageResult(state=state, metrics=metrics, notes=notes)

    def _latency_rounds(self, model: nn.Module, ctx: StageContext, example: torch.Tensor, ignored: list[nn.Module],
                        table: Any, key: str, layers: dict[str, Any], full: float, target: float,
                        round_to: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``iterative_steps`` rounds of latency-aware pruning, with ``recover`` training between them."""
        from edgeship.prune.latency_aware import prune_to_latency

        cfg = self.config
        teacher = copy.deepcopy(model).eval() if cfg.iterative_steps > 1 and cfg.recover.method == "distill" else None
        refresh = ((lambda: self._taylor_gradients(model, ctx, cfg.taylor_batches)) if cfg.criterion == "taylor"
                   else None)
        rounds, steps, recoveries, outcome = cfg.iterative_steps, 0, [], {}
        for r in range(1, rounds + 1):
            outcome = prune_to_latency(model, example, ignored, _importance(cfg.criterion), table, key, layers,
                                       full - (full - target) * r / rounds, round_to, refresh)
            steps += outcome["steps"]
            if r < rounds and cfg.recover.method != "none":
                ctx.log(f"  round {r}/{rounds}: predicted {outcome['predicted_ms']:.3f} ms; {cfg.recover.method} "
                        f"{cfg.recover.epochs} epochs")
                recoveries.append({"round": r, "predicted_ms": outcome["predicted_ms"],
                                   "epochs": self._recover(model, teacher, ctx, cfg.recover, r)})
        return {**outcome, "steps": steps}, recoveries

    @staticmethod
    def _recover(model: nn.Module, teacher: nn.Module | None, ctx: StageContext,
                 opts: RecoverOptions, round_: int) -> list[dict]:
        """Train the partly pruned model between rounds; return the per-epoch history.

        Each round checkpoints in its own folder: a resumed stage prunes the same channels again (the ranking is
        seeded) and each round's training continues from its last epoch, or is skipped when it had finished.
        """
        resume = {"workdir": ctx.workdir / f"recover-round{round_}", "resume": ctx.resume,
                  "fingerprint": ctx.fingerprint}
        from edgeship.training.supervised import train_supervised

        train = ctx.splits.train
        if opts.method == "finetune" or teacher is None:
            if train.y is None:
                raise DataError("prune.recover.method finetune needs labels; use distill on unlabeled data")
            return train_supervised(model, train.x, train.y, epochs=opts.epochs, lr=opts.lr, batch_size=64,
                                    weight_decay=1e-4, seed=ctx.seed, log=ctx.log, label="recover epoch", **resume)
        from edgeship.distill.config import DistillConfig
        from edgeship.distill.engine import carve_holdout, distill_once

        cfg = DistillConfig(type="distill", method="kd", alpha=0.0 if train.y is None else 1.0,
                            trainer={"epochs": opts.epochs, "lr": opts.lr})
        data = carve_holdout(train.x, train.y, 0.0, ctx.seed, ctx.splits.validation.x, ctx.splits.validation.y)
        return distill_once(model, teacher, cfg.method_terms(), data, cfg, cfg.trainer, seed=ctx.seed, log=ctx.log,
                            **resume)

    @staticmethod
    def _prune_heads(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module], cfg: PruneConfig,
                     ctx: StageContext) -> tuple[dict[nn.Module, int], dict[str, int]]:
        """Remove whole attention heads (global ranking).

        Returns {q/k/v linear: heads left} for the channel pass, and the head counts before and after.
        """
        import torch_pruning as tp

        from edgeship.attention import HeadAttention, split_attention

        heads = split_attention(model)
        if not heads:
            raise ConfigError("prune.heads_ratio: the model has no nn.MultiheadAttention to remove heads from")
        before = len(heads) // 3 * next(iter(heads.values()))
        if cfg.criterion == "taylor":
            PruneStage._taylor_gradients(model, ctx, cfg.taylor_batches)
        # pruning_ratio ~0: this pass removes heads only; the channel budget follows in the main pass
        tp.pruner.MetaPruner(model, example, importance=_importance(cfg.criterion), ignored_layers=ignored,
                             pruning_ratio=1e-6, global_pruning=True, num_heads=heads, prune_num_heads=True,
                             prune_head_dims=False, head_pruning_ratio=cfg.heads_ratio).step()
        model.zero_grad(set_to_none=True)
        left = {a.q: a.num_heads for a in model.modules() if isinstance(a, HeadAttention)}
        ctx.log(f"  attention heads {before} -> {sum(left.values())}")
        return ({m: left[a.q] for a in model.modules() if isinstance(a, HeadAttention) for m in (a.q, a.k, a.v)},
                {"before": before, "after": sum(left.values())})

    @staticmethod
    def _taylor_gradients(model: nn.Module, ctx: StageContext, batches: int) -> None:
        # Gradients of the task loss on calibration data; labels if present, else the model's own labels.
        data = ctx.splits.calibration
        model.zero_grad(set_to_none=True)
        model.eval()
        size = max(1, len(data) // batches)
        for i in range(0, min(len(data), size * batches), size):
            x = torch.from_numpy(data.x[i:i + size])
            out = model(x)
            y = torch.from_numpy(data.y[i:i + size]) if data.y is not None else out.argmax(1).detach()
            nn.functional.cross_entropy(out, y).backward()

    @staticmethod
    def _slimming(model: nn.Module, ctx: StageContext, opts: SlimmingOptions) -> None:
        from edgeship.training.supervised import train_supervised

        train = ctx.splits.train
        if train.y is None:
            raise DataError("prune: Network Slimming sparsity training needs labels in the train split")
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

        def sparsify(_: nn.Module) -> None:
            for bn in bns:  # L1 subgradient on γ (Liu et al.: updateBN)
                if bn.weight.grad is not None:
                    bn.weight.grad.add_(opts.lam * torch.sign(bn.weight.detach()))

        train_supervised(model, train.x, train.y, epochs=opts.epochs, lr=opts.lr, batch_size=64, weight_decay=0.0,
                         seed=ctx.seed, after_backward=sparsify, log=ctx.log, label="slimming epoch",
                         workdir=ctx.workdir / "slimming", resume=ctx.resume, fingerprint=ctx.fingerprint)

    def save(self, state: ModelState, ctx: StageContext) -> list[Path]:
        """Save tensors (safetensors) and the pruned structure (JSON) — no pickled code objects."""
        from edgeship.core.io import atomic_path
        from edgeship.structure import save_structured

        tensors, record = ctx.workdir / "model.safetensors", ctx.workdir / "structure.json"
        with atomic_path(tensors) as t, atomic_path(record) as r:
            save_structured(state.model, t, r)
        return [tensors, record]

    def load(self, state: ModelState, ctx: StageContext) -> ModelState:
        """Reshape the unpruned input model to the saved structure and load its weights."""
        from edgeship.attention import split_attention
        from edgeship.structure import load_structured

        cfg = self.config
        if cfg.heads_ratio:
            split_attention(state.model)  # the saved structure has per-head q/k/v projections
        load_structured(state.model, ctx.workdir / "model.safetensors", ctx.workdir / "structure.json")
        return state
