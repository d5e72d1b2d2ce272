"""Every registered format x every runtime that reads it: export, load, run, list ops (fp32, digits CNN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeship.core.artifact import InputSpec
from edgeship.exporters import FORMATS, export_formats
from edgeship.exporters.base import ExportContext
from edgeship.targets import RUNTIMES, open_session
from edgeship.zoo import digits_cnn
from tests.models import randomize_batch_norms

SPEC = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
PAIRS = [(fmt, name) for name, runtime in RUNTIMES.items() for fmt in runtime.formats]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("registry")
    model = randomize_batch_norms(digits_cnn()).eval()
    ctx = ExportContext(out_dir=out / "artifacts", log_dir=out / "logs")
    artifacts = export_formats(model, SPEC, ctx, FORMATS, {n: f.options() for n, f in FORMATS.items()})
    return model, artifacts


def test_every_format_is_exported_and_its_ops_listed(exported):
    _, artifacts = exported
    for name, fmt in FORMATS.items():
        artifact = artifacts[name]
        assert artifact.format == name and artifact.path.suffix == fmt.suffix and artifact.path.is_file()
        canonical = {c for use in fmt.read_ops(artifact.path) for c in use.canonical}
        assert {"conv", "linear"} <= canonical, (name, canonical)


@pytest.mark.parametrize(("fmt", "runtime"), PAIRS, ids=[f"{r}-{f}" for f, r in PAIRS])
def test_every_runtime_runs_every_format_it_reads(exported, fmt, runtime):
    model, artifacts = exported
    x = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    session, gated = open_session(runtime, artifacts[fmt], threads=1)
    out = session.load().run(x)
    assert gated and out.shape == ref.shape and np.abs(out - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    assert any(o.compute for o in session.op_report()), session.op_report()


def test_a_runtime_refuses_a_format_it_does_not_read(exported):
    from edgeship.core.errors import ConfigError

    with pytest.raises(ConfigError, match="runtime litert reads tflite artifacts, not onnx"):
        open_session("litert", exported[1]["onnx"], threads=1)


def test_an_exporter_that_needs_another_format_gets_it_whatever_the_order(tmp_path):
    """OpenVINO from ONNX alone: the ONNX file is exported for it into a scratch directory and not kept."""
    model = digits_cnn().eval()
    ctx = ExportContext(out_dir=tmp_path / "artifacts", log_dir=tmp_path / "logs")
    options = {n: f.options() for n, f in FORMATS.items()}
    options["openvino"] = FORMATS["openvino"].options(source="onnx")
    artifacts = export_formats(model, SPEC, ctx, ["openvino"], options)
    assert list(artifacts) == ["openvino"] and artifacts["openvino"].details["converted_from"] == "onnx"
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == ["openvino"]
