"""Run by tests/test_trainer.py under torchrun (2 gloo processes): distil a tiny student on digits with the
shared Trainer and write this rank's final weights to ``<out>/rank<k>.pt``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from edgeship.calibration.splits import make_splits
from edgeship.distill.config import DistillConfig
from edgeship.distill.engine import carve_holdout, distill_once
from edgeship.zoo import digits_cnn


def main(out: Path) -> None:
    torch.set_num_threads(1)
    splits = make_splits("digits", "digits", 64, 96, 0, (1, 12, 12), (0.5,), (0.5,))
    torch.manual_seed(0)
    teacher = digits_cnn(width=8)
    torch.manual_seed(int(os.environ["RANK"]) + 1)  # different initial students: DDP must broadcast rank 0's
    student = digits_cnn(width=4)
    cfg = DistillConfig(type="distill", method="kd", holdout=0.1,
                        losses=[{"type": "similarity", "student": "9", "teacher": "9", "weight": 10.0}],
                        trainer={"epochs": 2, "batch_size": 32, "lr": 0.01})
    data = carve_holdout(splits.train.x[:256], splits.train.y[:256], cfg.holdout, 0, splits.validation.x,
                         splits.validation.y)
    history = distill_once(student, teacher, cfg.method_terms(), data, cfg, cfg.trainer, seed=0,
                           workdir=out / "work", log=print)
    torch.save({"state": student.state_dict(), "epochs": len(history),
                "world": int(os.environ["WORLD_SIZE"])}, out / f"rank{os.environ['RANK']}.pt")
    import torch.distributed as dist

    dist.barrier()  # both ranks are done with the group before either tears it down (gloo aborted at exit otherwise)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
