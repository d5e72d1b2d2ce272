"""The one training loop: distill, QAT and the `train` stage all run through ``Trainer.fit``.

What it owns: optimizer and schedule, the seeded batch order, gradient clipping, a progress bar, an atomic
checkpoint after every epoch (``resume`` continues from it), per-epoch evaluation and early stopping on a
monitored metric's plateau. Under ``torchrun`` (``WORLD_SIZE`` > 1) it wraps the objective in
DistributedDataParallel (gloo on CPU, nccl on GPU), shards each epoch's permutation across ranks and lets only
rank 0 write checkpoints and log lines; every rank ends with the same weights.

What it does not own: the loss. The caller passes an ``nn.Module`` whose ``forward(batch, generator)``
returns ``(loss, parts)`` (``batch``: ``x``, ``y`` or None, ``index`` into the training arrays); train-only
heads live inside that module and are checkpointed with it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeship.core.console import interactive, progress_console
from edgeship.training.config import TrainerConfig

CHECKPOINT = "checkpoint.pt"


# -- distributed --------------------------------------------------------------------------------------------
def world() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment; (0, 1) when not distributed."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed): the process that writes files and logs."""
    return world()[0] == 0


def _init_distributed() -> bool:
    rank, size = world()
    if size <= 1:
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=rank, world_size=size)
    return True


def _all_ranks_agree(flag: bool, distributed: bool) -> bool:
    """Rank 0's decision, broadcast so every rank stops at the same epoch."""
    if not distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, src=0)
    return bool(t.item())


# -- schedule -----------------------------------------------------------------------------------------------
def strided_pointwise_guards(model: nn.Module) -> list[Any]:
    """Feed every strided 1x1 convolution a plain NCHW input while training; the hooks, to remove afterwards.

    oneDNN's backward-weights kernel of a strided 1x1 convolution reads and writes past its workspace when the
    input is channels-last with fewer input channels than its block (uxlfoundation/oneDNN#6035): measured with
    torch 2.14.1, a digits ResNet pruned to 12-channel shortcuts crashed the process (odd batch sizes) during
    fine-tuning. A pruned network is where such layers appear; the copy costs one activation per such layer.
    """
    def contiguous(_: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].contiguous(), *args[1:])

    return [m.register_forward_pre_hook(contiguous) for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)]


def _optimizer(cfg: TrainerConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainerConfig, opt: torch.optim.Optimizer, steps_per_epoch: int,
               total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule from ``torch.optim.lr_scheduler``, stepped per optimizer step (warm-up, then the main one)."""
    schedulers = torch.optim.lr_scheduler
    if cfg.schedule == "onecycle":
        return schedulers.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    period = cfg.restart_epochs * steps_per_epoch
    main = {
        "constant": lambda: schedulers.ConstantLR(opt, factor=1.0, total_iters=0),
        "cosine": lambda: schedulers.CosineAnnealingLR(opt, T_max=max(1, total - warm)),
        # SGDR (Loshchilov & Hutter) with a fixed period
        "cosine_restarts": lambda: schedulers.CosineAnnealingWarmRestarts(opt, T_0=period),
    }[cfg.schedule]()
    if not warm:
        return main
    # step k of the warm-up runs at (k + 1) / warm of the learning rate
    warmup = schedulers.LinearLR(opt, start_factor=1 / warm, total_iters=max(warm - 1, 1))
    return schedulers.SequentialLR(opt, [warmup, main], milestones=[warm])


class _Progress:
    """A rich progress bar on an interactive terminal (rank 0 only); nothing otherwise (epoch lines suffice).

    It lives on the shared stderr console, where the log lines go too, so rich redraws it below each line.
    """

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self.bar = None
        if enabled and interactive():
            from rich.progress import Progress

            self.bar = Progress(transient=True, console=progress_console())
            self.task = self.bar.add_task("training", total=total, completed=completed)
            self.bar.start()

    def advance(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"training loss {loss:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- the loop -----------------------------------------------------------------------------------------------
class Trainer:
    """Fits an objective module (``forward(batch, generator) -> (loss, parts)``) to array data.

    ``evaluate(epoch)`` runs on rank 0 after each epoch and returns a metrics dict; ``monitor`` names the key
    that early stopping and ``restore_best`` follow (higher is better). ``after_backward(objective)`` may edit
    gradients before each step (Network Slimming). ``resume`` continues from ``workdir/checkpoint.pt`` when its
    ``fingerprint`` matches the caller's (same config, model and data).
    """

    def __init__(self, cfg: TrainerConfig, *, workdir: Path | None, seed: int,
                 log: Callable[[str], None] = print, evaluate: Callable[[int], dict[str, Any]] | None = None,
                 monitor: str | None = None, after_backward: Callable[[nn.Module], None] | None = None,
                 resume: bool = False, fingerprint: str = "", label: str = "epoch") -> None:
        self.cfg, self.workdir, self.seed, self.evaluate = cfg, workdir, seed, evaluate
        self.monitor, self.after_backward, self.resume, self.fingerprint = monitor, after_backward, resume, fingerprint
        self.label = label
        self.main = is_main_process()
        self.log = log if self.main else (lambda _msg: None)

    def _checkpoint_path(self) -> Path | None:
        return self.workdir / CHECKPOINT if self.workdir is not None else None

    def _save(self, objective: nn.Module, opt: torch.optim.Optimizer, sched: Any, g: torch.Generator,
              state: dict[str, Any]) -> None:
        path = self._checkpoint_path()
        if path is None or not self.main:
            return
        from edgeship.core.io import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"fingerprint": self.fingerprint, "objective": objective.state_dict(),
                   "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": g.get_state(),
                   "torch_rng": torch.get_rng_state(), **state}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        from edgeship.core.io import atomic_write_text
        from edgeship.core.signing import sign_file

        atomic_write_text(path.with_suffix(".sig"), sign_file(path))  # what _load checks before trusting it

    def _load(self) -> dict[str, Any] | None:
        path = self._checkpoint_path()
        if not self.resume or path is None or not path.is_file():
            return None
        from edgeship.core.signing import signed_by_us

        sig = path.with_suffix(".sig")
        if not signed_by_us(path, sig.read_text().strip() if sig.is_file() else None):
            self.log(f"  checkpoint {path} does not carry this machine's signature (replaced, or written "
                     "elsewhere); training from the start")
            return None
        try:
            ckpt = torch.load(path, weights_only=True)
        except Exception as e:  # truncated by a crash mid-write of an older version, or damaged since
            from edgeship.core.errors import plain

            reason = plain(str(e), 1, 200) or type(e).__name__
            self.log(f"  checkpoint {path} is unreadable ({reason}); training from the start")
            return None
        if not isinstance(ckpt, dict) or ckpt.get("fingerprint") != self.fingerprint:
            self.log(f"  checkpoint {path} belongs to another configuration; training from the start")
            return None
        return ckpt

    def fit(self, objective: nn.Module, x: np.ndarray, y: np.ndarray | None) -> list[dict[str, Any]]:
        """Train every parameter of ``objective`` that requires grad; return the per-epoch history."""
        cfg = self.cfg
        distributed = _init_distributed()
        rank, size = world()
        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        params = [p for p in objective.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: the objective has no parameter that requires grad")
        opt = _optimizer(cfg, params)
        steps_per_epoch = max(1, math.ceil(len(x) / size / cfg.batch_size))
        total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps,
                                                                              cfg.epochs * steps_per_epoch)
        sched = _scheduler(cfg, opt, steps_per_epoch, total)
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "weights": None}
        start, step, stale = 1, 0, 0
        ckpt = self._load()
        if ckpt is not None:
            objective.load_state_dict(ckpt["objective"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            g.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            history, best, step, stale = ckpt["history"], ckpt["best"], ckpt["step"], ckpt["stale"]
            start = cfg.epochs + 1 if ckpt.get("stopped") else ckpt["epoch"] + 1
            self.log(f"  resumed from {self._checkpoint_path()} after {self.label} {ckpt['epoch']}")
        model: nn.Module = objective
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(objective)
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y) if y is not None else None
        bar = _Progress(self.main, total, step)
        guards = strided_pointwise_guards(objective)
        try:
            for epoch in range(start, cfg.epochs + 1):
                if step >= total:
                    break
                objective.train()
                perm = torch.randperm(len(xt), generator=g)[rank::size]
                loss_sum, seen = 0.0, 0
                parts_sum: dict[str, float] = {}
                for i in range(0, len(perm), cfg.batch_size):
                    if step >= total:
                        break
                    idx = perm[i:i + cfg.batch_size]
                    loss, parts = model({"x": xt[idx], "y": None if yt is None else yt[idx], "index": idx}, g)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.after_backward is not None:
                        self.after_backward(objective)
                    if cfg.grad_clip:
                        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                    sched.step()
                    step += 1
                    loss_sum += loss.item() * len(idx)
                    seen += len(idx)
                    for k, v in parts.items():
                        parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * len(idx)
                    bar.advance(loss.item())
                objective.eval()
                record: dict[str, Any] = {"epoch": epoch, "loss": loss_sum / max(1, seen),
                                          **{f"loss_{k}": v / max(1, seen) for k, v in parts_sum.items()}}
                stop = False
                if self.main and self.evaluate is not None:
                    record.update(self.evaluate(epoch))
                    if self.monitor is not None:
                        score = record[self.monitor]
                        # A plateau is no gain beyond min_delta; among equal scores the later (longer trained,
                        # lower learning rate) weights are kept.
                        stale = 0 if score > best["score"] + cfg.early_stop_min_delta else stale + 1
                        if score >= best["score"]:
                            best = {"score": score, "epoch": epoch,
                                    "weights": {k: v.detach().clone() for k, v in objective.state_dict().items()}}
                        stop = cfg.early_stop_patience is not None and stale >= cfg.early_stop_patience
                history.append(record)
                self.log("  " + _format(record, cfg.epochs, self.label))
                self._save(objective, opt, sched, g, {"epoch": epoch, "history": history, "best": best,
                                                      "step": step, "stale": stale, "stopped": stop})
                if _all_ranks_agree(stop, distributed):
                    self.log(f"  early stop: {self.monitor} has not improved for {stale} evaluations")
                    break
        finally:
            bar.close()
            for guard in guards:
                guard.remove()
        if cfg.restore_best and best["weights"] is not None and best["epoch"] != history[-1]["epoch"]:
            objective.load_state_dict(best["weights"])
            self.log(f"  restored the weights of {self.label} {best['epoch']} ({self.monitor} {best['score']:.4f})")
        if distributed:  # rank 0 decided what to restore; make every rank hold exactly its weights
            import torch.distributed as dist

            for t in objective.state_dict().values():
                dist.broadcast(t, src=0)
        objective.eval()
        return history


def _format(record: dict[str, Any], epochs: int, label: str) -> str:
    shown = [f"{label} {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    for key, name in (("accuracy", "acc"), ("agreement", "agree"), ("holdout_agreement", "holdout agree")):
        if isinstance(record.get(key), float):
            shown.append(f"{name} {record[key]:.4f}")
    return " ".join(shown)
