"""The conformance corpus as data: each case builds its inputs in a fresh directory and names what must happen.

A case's ``make(tmp)`` returns the ``edgeship`` arguments (and, optionally, a check of its own run afterwards).
``exit`` is the documented exit code; ``words`` must all appear in what the CLI printed; every case also
requires no traceback, no "internal error", and no marker file (the proof that no payload ran). ``writes: False``
means no artifact may exist afterwards. Classes follow issue 19's list and engineering.md's reliability tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tests.conftest import tiny_recipe

MARKER = "PWNED"  # the file a payload would create in the case directory


@dataclass(frozen=True)
class Case:
    """One input, what the CLI must answer (exit code, words), and what it must not do."""

    name: str
    group: str
    make: Callable[[Path], Any]
    exit: int
    words: tuple[str, ...] = ()
    writes: bool = True
    after: Callable[[Path], None] | None = field(default=None)


def recipe_file(tmp: Path, name: str = "recipe.yaml", **overrides: Any) -> Path:
    """A fast recipe (one training epoch, ONNX only, no timing) with ``overrides``, written under ``tmp``."""
    base = {"stages": [{"type": "train", "epochs": 1}], "export.formats": ["onnx"], "latency.enabled": False}
    recipe = tiny_recipe(tmp, **{**base, **overrides})
    path = tmp / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(tmp: Path, command: str = "export", extra: tuple[str, ...] = (), **overrides: Any) -> list[str]:
    return [command, str(recipe_file(tmp, **overrides)), "--out", str(tmp / "run"), *extra]


def npz(tmp: Path, x: np.ndarray, y: np.ndarray | None = None) -> str:
    path = tmp / "data.npz"
    np.savez(path, x=x, **({"y": y} if y is not None else {}))
    return f"npz:{path}"


def npz_run(x: np.ndarray, y: np.ndarray | None = None, **overrides: Any) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        source = npz(tmp, x, y)
        return run(tmp, **{"data.calibration.source": source, "data.validation.source": source,
                           "data.calibration.samples": 8, "data.validation.samples": 8, **overrides})
    return make


def weights_run(content: Callable[[Path], None], name: str = "w.pt") -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        content(path)
        return run(tmp, **{"model.weights": str(path), "stages": []})
    return make


def digits_state() -> dict[str, torch.Tensor]:
    from edgeship.zoo import digits_cnn

    return digits_cnn().state_dict()


def torch_saved(tmp_path: Path, obj: Any) -> bytes:
    scratch = tmp_path.with_suffix(".scratch")
    torch.save(obj, scratch)
    return scratch.read_bytes()


class Payload:
    """Pickles as ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return Path.touch, (self.marker,)


def model_file(tmp: Path, body: str) -> str:
    (tmp / "mymodel.py").write_text(body)
    return f"{tmp / 'mymodel.py'}:build"


def exported(tmp: Path, fmt: str) -> Path:
    """A real fp32 artifact of the digits CNN (exported once per case directory)."""
    from edgeship.core.artifact import InputSpec
    from edgeship.exporters import FORMATS, export_formats
    from edgeship.exporters.base import ExportContext
    from edgeship.zoo import digits_cnn

    spec = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
    ctx = ExportContext(out_dir=tmp / "exported", log_dir=tmp / "logs")
    return export_formats(digits_cnn().eval(), spec, ctx, [fmt], {n: f.options() for n, f in FORMATS.items()})[fmt].path


def check(path_of: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: ["check", str(path_of(tmp)), "--profile", "cpu"]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def flip_byte(path: Path, at: float = 0.5) -> Path:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def empty_onnx(tmp: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([], "empty", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])])
    path = tmp / "empty.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def alias_bomb(tmp: Path) -> list[str]:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    lines.append("name: *i")
    path = tmp / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return ["export", str(path), "--out", str(tmp / "run")]


def hold_lock(tmp: Path) -> list[str]:
    """Another process holds the run directory (a child sleeping with the lock taken)."""
    import subprocess
    import sys
    import time

    (tmp / "run").mkdir()
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('4242'); f.flush(); print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp / "run" / ".edgeship.lock")],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    (tmp / "child.pid").write_text(str(child.pid))
    time.sleep(0.1)
    return run(tmp)


def stop_child(tmp: Path) -> None:
    import os
    import signal

    os.kill(int((tmp / "child.pid").read_text()), signal.SIGKILL)


def users_folder_intact(tmp: Path) -> None:
    assert (tmp / "run" / "src" / ".build.tmp-cache" / "keep.txt").read_text() == "mine"


def user_files_in_out(tmp: Path) -> list[str]:
    keep = tmp / "run" / "src" / ".build.tmp-cache"
    keep.mkdir(parents=True)
    (keep / "keep.txt").write_text("mine")
    return run(tmp)


def truncated_checkpoint(tmp: Path) -> list[str]:
    stage = tmp / "run" / "stages" / "02-quantize"
    stage.mkdir(parents=True)
    (stage / "checkpoint.pt").write_bytes(torch_saved(tmp / "x", {"fingerprint": "x"})[:100])
    return run(tmp, extra=("--resume",), stages=[{"type": "train", "epochs": 1},
                                                 {"type": "quantize", "mode": "qat", "qat": {"epochs": 1}}])


def safetensors_header_too_long(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 10_000) + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')


def pickled_global(path: Path) -> None:
    torch.save({"weight": Payload(path.parent / MARKER)}, path)


def shape_mismatch(path: Path) -> None:
    sd = digits_state()
    sd["0.weight"] = torch.zeros(3, 1, 3, 3)
    torch.save(sd, path)


def nan_weights(path: Path) -> None:
    sd = digits_state()
    sd["0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, path)


def safetensors_named_pt(path: Path) -> None:
    from safetensors.torch import save_file

    save_file(digits_state(), str(path))


CASES: list[Case] = [
    # -- false greens: exit 0 where nothing was proven ------------------------------------------------------------
    Case("zero-byte onnx", "false green", check(lambda t: write(t / "m.onnx", b"")), 5, ("no operators found",)),
    Case("zero-node onnx", "false green", check(empty_onnx), 5, ("no operators found",)),
    Case("no formats", "false green", lambda t: run(t, **{"export.formats": []}), 2,
         ("export.formats", "at least 1"), writes=False),
    Case("factory calls sys.exit(0)", "false green",
         lambda t: run(t, **{"model.source": model_file(t, "import sys\ndef build(num_classes):\n    sys.exit(0)\n")}),
         2, ("sys.exit(0)",), writes=False),
    Case("npz floats in 0..255", "false green",
         npz_run(np.random.default_rng(0).uniform(0, 255, (40, 1, 8, 8)), np.arange(40) % 10), 2,
         ("floats in [", "divide by 255"), writes=False),
    Case("npz uint16", "false green", npz_run(np.full((40, 1, 8, 8), 60000, np.uint16), np.arange(40) % 10), 2,
         ("uint16 with values 60000..60000",), writes=False),
    Case("npz complex", "false green", npz_run(np.ones((40, 1, 8, 8), np.complex64), np.arange(40) % 10), 2,
         ("dtype complex64",), writes=False),
    Case("validation larger than the data", "false green",
         lambda t: run(t, **{"data.validation.samples": 5000}), 2,
         ("validation: asked for 5000 samples", "allow_fewer_samples"), writes=False),
    # -- the user's files -------------------------------------------------------------------------------------------
    Case("a user's temporary-looking folder in --out", "user files", user_files_in_out, 0,
         after=users_folder_intact),
    Case("a second run into a held directory", "user files", hold_lock, 2,
         ("in use by another edgeship run (PID 4242)",), writes=False, after=stop_child),
    # -- I/O failures ---------------------------------------------------------------------------------------------
    Case("artifacts folder is a file", "I/O", lambda t: (t / "run").mkdir() or write(t / "run" / "artifacts", b"x")
         and run(t), 2, ("artifacts",)),
    Case("--json into a file path", "I/O",
         lambda t: ["check", "edgeship.zoo:digits_cnn", "--profile", "cpu", "--input-shape", "1,1,16,16",
                    "--json", str(write(t / "afile", b"x") / "out.json")], 2, ("afile",)),
    # -- bounded inputs ---------------------------------------------------------------------------------------------
    Case("YAML alias bomb in name", "bounded inputs", alias_bomb, 2, ("YAML aliases",), writes=False),
    Case("a 2 MB recipe", "bounded inputs",
         lambda t: ["export", str(write(t / "big.yaml", b"# " + b"x" * (2 << 20) + b"\n")), "--out", str(t / "run")],
         2, ("at most 1048576 bytes",), writes=False),
    # -- user text that looks like console markup ---------------------------------------------------------------
    Case("brackets in model.source", "escaping",
         lambda t: run(t, **{"model.source": f"{t}/[bold]x.py:build"}), 2, ("[bold]x.py",), writes=False),
    Case("brackets in --out", "escaping", lambda t: [*run(t)[:-2], "--out", str(t / "[red]run")], 0, ("[red]run",)),
    Case("a 3-dim shape is printed whole", "escaping", lambda t: run(t, **{"model.input.shape": [1, 3, 224]}), 2,
         ("[batch, channels, height, width] (NCHW); got [1, 3, 224]",), writes=False),
    Case("brackets in model.weights", "escaping", lambda t: run(t, **{"model.weights": "weights/[bold]w.pt"}), 2,
         ("weights/[bold]w.pt",), writes=False),
    # -- user errors that were internal errors --------------------------------------------------------------------
    Case("labels outside num_classes", "user error",
         npz_run(np.random.default_rng(0).random((40, 1, 8, 8)), np.arange(40) % 12), 2,
         ("labels run from 0 to 11, outside [0, 10)",), writes=False),
    Case("seed 2**70", "user error", lambda t: run(t, seed=2**70), 2, ("seed",), writes=False),
    Case("bad YAML value in --set", "user error", lambda t: run(t, extra=("--set", "name=[unclosed")), 2,
         ("--set name", "not valid YAML"), writes=False),
    Case("npz images of no pixels", "user error", npz_run(np.zeros((40, 1, 0, 0), np.float32)), 2,
         ("images of no pixels",), writes=False),
    Case("argparse at import of a model file", "user error",
         lambda t: run(t, **{"model.source": model_file(
             t, "import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\ndef build(num_classes):\n"
                "    pass\n")}), 2, ("called sys.exit(2)", "__main__"), writes=False),
    Case("truncated QAT checkpoint on --resume", "user error", truncated_checkpoint, 0, ("training from the start",)),
    # -- checkpoints: engineering.md reliability test 1 ------------------------------------------------------------
    Case("weights: zero bytes", "checkpoint", weights_run(lambda p: p.write_bytes(b"")), 5, ("is empty",),
         writes=False),
    Case("weights: LFS pointer", "checkpoint",
         weights_run(lambda p: p.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")), 5,
         ("Git LFS pointer",), writes=False),
    Case("weights: an HTML page named .pt", "checkpoint",
         weights_run(lambda p: p.write_bytes(b"<!DOCTYPE html><html>404</html>")), 5,
         ("not a PyTorch weights file",), writes=False),
    Case("weights: truncated to half", "checkpoint",
         weights_run(lambda p: (torch.save(digits_state(), p), truncate(p))), 5, ("truncated or corrupt",),
         writes=False),
    Case("weights: a pickled global", "checkpoint", weights_run(pickled_global), 5,
         ("pickled Python objects beyond tensors",), writes=False),
    Case("weights: safetensors header longer than the file", "checkpoint",
         weights_run(safetensors_header_too_long, "w.safetensors"), 5, ("corrupt safetensors",), writes=False),
    Case("weights: a shape mismatch", "checkpoint", weights_run(shape_mismatch), 5,
         ("shape mismatches: 0.weight",), writes=False),
    Case("weights: NaN values", "checkpoint", weights_run(nan_weights), 5, ("NaN or Inf values in 0.weight",),
         writes=False),
    Case("weights: safetensors named .pt", "checkpoint", weights_run(safetensors_named_pt), 0),
    # -- corrupt artifacts: engineering.md reliability test 2 ------------------------------------------------------
    Case("onnx with a flipped header byte", "artifact", check(lambda t: flip_byte(exported(t, "onnx"), 0.0)), 5,
         ("could not read the model",)),
    Case("tflite truncated", "artifact", check(lambda t: truncate(exported(t, "tflite"))), 5,
         ("could not read the model",)),
    Case("openvino without its .bin", "artifact",
         check(lambda t: (p := exported(t, "openvino"), p.with_suffix(".bin").unlink())[0]), 5,
         ("could not read the model",)),
    # -- diagnoses that mislead -------------------------------------------------------------------------------------
    Case("a model failing on the probe for its own reasons", "diagnosis",
         lambda t: run(t, **{"model.source": model_file(
             t, "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                "        raise ValueError('division table missing')\ndef build(num_classes):\n    return M()\n")}),
         2, ("failed inside the model", "division table missing"), writes=False),
    Case("a model torch.export cannot capture", "diagnosis",
         lambda t: run(t, stages=[], **{"model.source": model_file(
             t, "import torch\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                "        self.fc = torch.nn.Linear(192, 10)\n    def forward(self, x):\n"
                "        return self.fc(torch.from_numpy(x.detach().numpy()).flatten(1))\n"
                "def build(num_classes):\n    return M()\n")}), 3,
         ("cannot be exported with torch.export", ".numpy() is not supported")),
    # -- config fuzz: engineering.md E1 ----------------------------------------------------------------------------
    *(Case(f"quantize weight_bits {b}", "config", lambda t, b=b: run(
        t, stages=[{"type": "train"}, {"type": "quantize", "weight_bits": b}]), 2, ("weight_bits",), writes=False)
      for b in (0, 1, 9)),
    Case("prune ratio 1.2", "config", lambda t: run(t, stages=[{"type": "prune", "ratio": 1.2}]), 2,
         ("stages.0.ratio",), writes=False),
    Case("an unregistered stage type", "config", lambda t: run(t, stages=[{"type": "sparsify"}]), 2,
         ("unknown stage 'sparsify'",), writes=False),
    Case("a top-level list", "config",
         lambda t: ["export", str(write(t / "l.yaml", b"- a\n- b\n")), "--out", str(t / "run")], 2,
         ("expected a mapping",), writes=False),
]

# The corpus may grow; it must not shrink without someone deciding so (engineering.md E3).
FLOOR = 40
