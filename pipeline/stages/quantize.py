"""`quantize`: post-training (PTQ) or quantization-aware (QAT, LSQ) quantization in PyTorch with PT2E.

The result is a converted PT2E graph (float weights + Q/DQ nodes carrying every scale and zero point). It is
the reference every exported artifact is validated against; the float model stays as the second reference.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeship.core.artifact import InputSpec
from edgeship.core.errors import DataError
from edgeship.core.io import captured_output
from edgeship.inference import predict
from edgeship.metrics import top1_agreement
from edgeship.quant.bits import resolve_bits
from edgeship.quant.config import QuantizeConfig
from edgeship.quant.pixels import PixelInput
from edgeship.stage import ModelState, Stage, StageContext, StageResult


class QuantizeStage(Stage[QuantizeConfig]):
    """Quantize weights (2-8 bits) and activations (4-8 bits) once; exporters lower exactly these integers."""

    name = "quantize"

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Prepare with edgeship's quantizer, calibrate (PTQ) or train (QAT, from the float model), convert."""
        return quantize_state(self.config, state, ctx)

    @staticmethod
    def quantized_state(state: ModelState, converted: torch.nn.Module, quantizer: object, table: list,
                        pixels: PixelPlan | None = None) -> ModelState:
        """The state after quantization: the PT2E graph, with the float model kept as the second reference.

        A pixel-input run's state takes [0, 1] pixels: its spec has no normalisation left, and its float model is
        the original behind its normalisation.
        """
        if pixels is None:
            return dataclasses.replace(state, model=converted, float_model=copy.deepcopy(state.model),
                                       quantizer=quantizer, bits=table)
        return dataclasses.replace(state, model=converted, float_model=pixels.float_model, spec=pixels.spec,
                                   quantizer=quantizer, bits=table)

    def save(self, state: ModelState, ctx: StageContext) -> list[Path]:
        """Save the converted PT2E graph with ``torch.export.save`` (dynamic batch), atomically."""
        from edgeship.core.graph import dynamic_batch_shapes
        from edgeship.core.io import atomic_path

        example = torch.from_numpy(ctx.splits.calibration.x[:2])
        program = torch.export.export(state.model, (example,), dynamic_shapes=dynamic_batch_shapes(state.model))
        path = ctx.workdir / "model.pt2"
        with atomic_path(path) as tmp:
            torch.export.save(program, str(tmp))
        return [path]

    def load(self, state: ModelState, ctx: StageContext) -> ModelState:
        """Reload the PT2E graph; the quantizer is rebuilt from the config (deterministic) for the TFLite lowering."""
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        from edgeship.core.pt2 import load_exported_program
        from edgeship.quant.pt2e import build_quantizer, match_runtimes

        cfg = self.config
        pixels = pixel_plan(cfg, state, ctx)
        table, float_layers = saved_fallback(ctx.workdir, resolve_bits(pixels.model if pixels else state.model,
                                                                       cfg)[0])
        converted = load_exported_program(ctx.workdir / "model.pt2").module()
        match_runtimes(converted)
        allow_exported_model_train_eval(converted)
        converted.eval()
        quantizer = build_quantizer(cfg, table, float_layers, pixels.stem if pixels else None)
        return self.quantized_state(state, converted, quantizer, table, pixels)


def quantize_state(cfg: QuantizeConfig, state: ModelState, ctx: StageContext,
                   teacher: torch.nn.Module | None = None) -> StageResult:
    """Quantize ``state.model`` per ``cfg``; QAT distils from ``teacher`` (default: the float model itself).

    The archify stage hands its student here with the original teacher, so the exported artifacts carry the
    integers its last period trained.
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    from edgeship.core.standalone_bn import standalone_batch_norms_to_depthwise
    from edgeship.quant.pt2e import (
        build_quantizer,
        calibrate,
        dynamic_batch_export,
        finish,
        overflow_fix_enabled,
        release_graph_caches,
    )

    if not np.isfinite(ctx.splits.calibration.x).all():
        raise DataError("quantize: the calibration data contains NaN or Inf values")
    pixels = pixel_plan(cfg, state, ctx)
    if pixels is not None:  # from here on every split, the model and the teacher take [0, 1] pixels
        ctx = dataclasses.replace(ctx, splits=ctx.splits.as_pixels(state.spec.mean, state.spec.std))
        teacher = PixelInput(teacher, state.spec.mean, state.spec.std) if teacher is not None else None
        ctx.log(f"  pixel input: normalisation folded into {pixels.stem}; input quantized at 1/255")
    calib = ctx.splits.calibration.x[: cfg.calibration.samples]
    if len(calib) == 0:
        raise DataError("quantize: the calibration split is empty (data.calibration.samples must be > 0)")
    float_model = (pixels.model if pixels else state.model).eval()
    table, warnings = resolve_bits(float_model, cfg)
    for w in warnings:
        ctx.log(f"  warning: {w}")
    stem = pixels.stem if pixels else None
    log = ctx.workdir / "quantize.log"  # litert-torch's annotators print partition notes
    with captured_output(log):  # its first import prints absl/oneDNN notices from native code
        quantizer = build_quantizer(cfg, table, stem=stem)
    # torch.export's module shares parameter storage with its source: QAT would train the float model too.
    graph = dynamic_batch_export(copy.deepcopy(float_model), torch.from_numpy(calib[:2]))
    depthwise = standalone_batch_norms_to_depthwise(graph)
    if depthwise:
        ctx.log(f"  {len(depthwise)} BatchNorm(s) without a preceding conv quantize as depthwise 1x1 convs")
    control = None
    if cfg.mode == "ptq":
        def ptq(bits: list, float_layers: frozenset[str] = frozenset()) -> torch.nn.Module:
            with captured_output(log):  # prepare folds BatchNorm into the convolutions (of a copy: ptq runs again)
                prepared = prepare_pt2e(copy.deepcopy(graph), build_quantizer(cfg, bits, float_layers, stem))
            calibrate(prepared, calib)
            converted = finish(prepared)
            release_graph_caches()  # accuracy control quantizes once per layer: each graph would stay cached
            return converted

        if cfg.accuracy_control is None:
            converted = ptq(table)
        else:
            converted, table, float_layers, control = controlled_ptq(
                cfg, table, ptq, float_model, ctx, pixels.spec if pixels else state.spec, stem)
            quantizer = build_quantizer(cfg, table, float_layers, stem)
        history = []
    else:
        from edgeship.quant.qat import train_qat

        _fuse_conv_bn_(graph)  # fold BN first: LSQ then learns steps for the weights that will ship
        with captured_output(log):
            prepared = prepare_qat_pt2e(graph, quantizer)
        allow_exported_model_train_eval(prepared)
        with torch.no_grad():  # LSQ initialises its steps on the first batch
            prepared(torch.from_numpy(ctx.splits.train.x[: cfg.qat.batch_size]))
        history = train_qat(prepared, teacher if teacher is not None else float_model, ctx.splits.train.x,
                            ctx.splits.train.y, ctx.splits.validation.x, cfg.qat, ctx.seed, ctx.workdir, ctx.log,
                            resume=ctx.resume, fingerprint=ctx.fingerprint)
        converted = finish(prepared)
    float_val = predict(float_model, ctx.splits.validation.x)
    quant_val = predict(converted, ctx.splits.validation.x)
    new_state = QuantizeStage.quantized_state(state, converted, quantizer, table, pixels)
    metrics = {
        "mode": cfg.mode,
        "pt2e_agreement_with_float": top1_agreement(quant_val, float_val),
        "calibration_samples": int(len(calib)),
        "estimator": cfg.calibration.estimator if cfg.mode == "ptq" else cfg.qat.quantizer,
        "overflow_fix": overflow_fix_enabled(cfg),
        "batch_norms_as_depthwise": depthwise,
        "bits": [vars(b) for b in table],
        "qat": history,
        **({"accuracy_control": control} if control is not None else {}),
        **({"pixel_input": {"stem": pixels.stem, "input_scale": 1 / 255}} if pixels is not None else {}),
    }
    if ctx.splits.validation.y is not None:
        metrics["pt2e_accuracy"] = float(np.mean(quant_val.argmax(1) == ctx.splits.validation.y))
    return StageResult(state=new_state, metrics=metrics, notes=warnings)


@dataclasses.dataclass(frozen=True)
class PixelPlan:
    """A pixel-input run: the model to quantize (normalisation folded), its float reference, spec and stem."""

    model: torch.nn.Module
    float_model: torch.nn.Module
    spec: InputSpec
    stem: str


def pixel_plan(cfg: QuantizeConfig, state: ModelState, ctx: StageContext) -> PixelPlan | None:
    """With ``cfg.pixel_input``: fold the normalisation into the first convolution (``edgeship.quant.pixels``)."""
    if not cfg.pixel_input:
        return None
    from edgeship.quant.pixels import fold_normalization

    spec = state.spec
    folded, stem = fold_normalization(state.model, spec.mean, spec.std,
                                      torch.from_numpy(ctx.splits.calibration.x[:1]))
    channels = len(spec.mean)
    return PixelPlan(model=folded, float_model=PixelInput(copy.deepcopy(state.model), spec.mean, spec.std),
                     spec=dataclasses.replace(spec, mean=(0.0,) * channels, std=(1.0,) * channels), stem=stem)


FALLBACK_FILE = "accuracy_control.json"  # the fallback decision, so a resumed run rebuilds the same quantizer


def controlled_ptq(cfg: QuantizeConfig, table: list, ptq: Any, float_model: torch.nn.Module, ctx: StageContext,
                   spec: InputSpec, stem: str | None) -> tuple[torch.nn.Module, list, frozenset[str], dict[str, Any]]:
    """PTQ under ``cfg.accuracy_control`` on held-out calibration-source rows; the decision is saved for resume.

    With the run's runtime probe (``ctx.probe``), candidates are measured on every gated runtime as well.
    """
    from edgeship.core.io import atomic_write_json
    from edgeship.quant.accuracy import Plan, accuracy_control
    from edgeship.quant.pt2e import build_quantizer

    assert cfg.accuracy_control is not None
    held, trained_on = ctx.splits.held_out_rows(cfg.accuracy_control.rows)
    if len(held) == 0:
        raise DataError("quantize.accuracy_control: the calibration source has no rows left that calibration and "
                        "validation do not use; set data.control_samples or lower data.calibration.samples")
    if trained_on:
        ctx.log("  note: accuracy control measures on rows the model may have been trained on (optimistic); "
                "data.control_samples keeps rows out of training")
    def probe(model: torch.nn.Module, plan: Plan) -> dict[str, dict[str, Any]]:
        return ctx.probe(model, spec, build_quantizer(cfg, plan.table, plan.float_layers, stem), held.x,
                         ctx.workdir)

    converted, plan, report = accuracy_control(cfg.accuracy_control, table, ptq, float_model, held.x, ctx.log,
                                               probe if ctx.probe is not None else None)
    report["rows"] = held.origin + (" (train rows: optimistic after a train stage)" if trained_on else "")
    atomic_write_json(ctx.workdir / FALLBACK_FILE, {"float_layers": sorted(plan.float_layers),
                                                    "bits": [vars(b) for b in plan.table]})
    return converted, plan.table, plan.float_layers, report


def saved_fallback(workdir: Path, table: list) -> tuple[list, frozenset[str]]:
    """The bit table and float layers accuracy control chose (``table`` unchanged when it did not run)."""
    import json

    from edgeship.quant.bits import LayerBits

    path = workdir / FALLBACK_FILE
    if not path.exists():
        return table, frozenset()
    saved = json.loads(path.read_text())
    return [LayerBits(**b) for b in saved["bits"]], frozenset(saved["float_layers"])
