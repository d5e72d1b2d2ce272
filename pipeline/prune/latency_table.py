"""Latency lookup tables: each prunable layer's time on a runtime, as a function of its kept channels.

Fewer MACs is not less time: a lone convolution timed by itself measured 30 % faster than the same convolution
inside its network on onnxruntime (kernels and layouts are chosen in context), and the layers a pruner removes
decide the speed-up as much as how many. So the table is measured in the graph, on the runtime itself: a few
pruned variants of the model (uniform keep fractions and random per-group ones, channel counts in multiples of
``round_to``) are exported and profiled by the runtime's own op profiler (``targets.hotspots``) in fresh
processes; each op's time is scaled to the variant's end-to-end p50 (so the profiler's own overhead is not
counted as latency) and credited to its PyTorch layer.

The fit: each layer signature (kind, kernel, stride, groups, input size) by non-negative least squares on
``[1, weights, cin, cout, weights x miss]``, where ``miss`` is the fraction of the model's weights beyond a
last-level cache size fitted with it (weights that stream from memory on every inference); what no layer owns
(pooling, adds, layout changes) on ``[1, activation elements]``; and per model a line from the layers' sum to
the measured p50 of all its variants, which corrects what per-op profiles misstate. The prediction never grows
when a channel goes.

Points are keyed by layer signature, not name, so layers of the same shape share them and a later model with
that shape reuses them. A table file holds one (runtime, runtime version, device, threads) and is cached on disk
(``EDGESHIP_CACHE``, else ``~/.cache/edgeship``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeship.core.artifact import InputSpec
from edgeship.core.io import atomic_write_text

TABLE_VERSION = 1
# The format each runtime's table is measured on: OpenVINO reads the ONNX file itself, whose node names lead
# back to the PyTorch layers (an IR converted from torch.export renames them).
TABLE_FORMAT = {"onnxruntime": "onnx", "openvino": "onnx", "litert": "tflite"}
SAMPLE_KEEP = (1.0, 0.75, 0.5, 0.3, 0.15)  # uniform variants; random per-group ones follow


@dataclass(frozen=True)
class Layer:
    """One conv/linear layer of a model as the table sees it."""

    name: str
    signature: str  # kind, kernel, stride, groups and input size: what fixes its cost besides the channels
    cin: int
    cout: int
    groups: int
    kernel: int  # kernel area (1 for a linear layer)
    out_elements: int  # output activation elements per sample

    def weights(self, cin: int | None = None, cout: int | None = None) -> int:
        """Weight elements at ``cin``/``cout`` kept channels."""
        ci, co = cin or self.cin, cout or self.cout
        g = ci if self.depthwise else self.groups  # depthwise stays depthwise
        return ci * co // g * self.kernel

    @property
    def depthwise(self) -> bool:
        """A depthwise conv: its groups follow its channels when pruned."""
        return 1 < self.groups == self.cin

    def features(self, cin: int | None = None, cout: int | None = None, miss: float = 0.0) -> np.ndarray:
        """The fit's regressors at ``cin``/``cout``; ``miss``: the fraction of the model's weights not in cache."""
        ci, co = cin or self.cin, cout or self.cout
        w = self.weights(ci, co) / 1e4
        return np.array([1.0, w, ci / 100, co / 100, w * miss])


def model_layers(model: nn.Module, spec: InputSpec) -> dict[str, Layer]:
    """Every Conv2d and Linear layer of ``model`` with its signature, read with forward hooks on one sample."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            shapes.setdefault(name, (tuple(args[0].shape), tuple(out.shape)))
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *spec.shape[1:])))
    finally:
        for h in hooks:
            h.remove()
    layers = {}
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        (inp, out) = shapes[name]
        if isinstance(m, nn.Conv2d):
            dw = m.groups > 1 and m.groups == m.in_channels
            sig = (f"conv{m.kernel_size[0]}x{m.kernel_size[1]}/s{m.stride[0]}/d{m.dilation[0]}/"
                   f"{'dw' if dw else f'g{m.groups}'}/in{inp[-2]}x{inp[-1]}")
            layers[name] = Layer(name, sig, m.in_channels, m.out_channels, m.groups,
                                 m.kernel_size[0] * m.kernel_size[1], int(np.prod(out[1:])))
        else:
            tokens = int(np.prod(inp[1:-1])) if len(inp) > 2 else 1
            layers[name] = Layer(name, f"linear/tokens{tokens}", m.in_features, m.out_features, 1, 1,
                                 int(np.prod(out[1:])))
    return layers


def model_key(layers: dict[str, Layer], spec: InputSpec) -> str:
    """What identifies one architecture at one input size: its layers' signatures and unpruned widths."""
    text = json.dumps([list(spec.shape[1:])] + [[n, x.signature, x.cin, x.cout] for n, x in layers.items()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LatencyTable:
    """Measured in-graph layer times on one runtime/device/thread count, and the fit that predicts a model's p50."""

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data, self.path = data, path
        self._fits: dict[str, Any] = {}

    @classmethod
    def empty(cls, runtime: str, runtime_version: str, device: str, threads: int, path: Path | None) -> LatencyTable:
        """A table with no points yet."""
        return cls({"version": TABLE_VERSION, "runtime": runtime, "runtime_version": runtime_version,
                    "device": device, "threads": threads, "layers": {}, "models": {}}, path)

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        """A table written by ``save``."""
        return cls(json.loads(path.read_text()), path)

    def save(self) -> None:
        """Write the table atomically to its cache path."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1))

    # -- points -------------------------------------------------------------------------------------------

    def add_sample(self, key: str, layers: dict[str, Layer], profile: Profile, label: str) -> None:
        """Record one profiled variant: each layer's share of its p50, the rest, and the variant's weight size."""
        mb = weight_mb(layers)
        for name, layer in layers.items():
            self.data["layers"].setdefault(layer.signature, []).append(
                [layer.cin, layer.cout, layer.groups, layer.kernel, round(profile.layer_ms.get(name, 0.0), 5),
                 round(mb, 3)])
        model = self.data["models"].setdefault(key, {"rest": [], "samples": []})
        model["rest"].append([sum(x.out_elements for x in layers.values()), round(profile.rest_ms, 5)])
        model["samples"].append({"label": label, "p50_ms": round(profile.p50, 5), "weights_mb": round(mb, 3),
                                 "process_p50s": [round(r, 5) for r in profile.runs],
                                 "channels": {n: [x.cin, x.cout] for n, x in layers.items()}})
        self._fits.clear()

    def knows(self, key: str) -> bool:
        """Whether variants of this architecture were measured (its non-layer time is fitted per model)."""
        return bool(self.data["models"].get(key, {}).get("rest"))

    # -- fitting --------------------------------------------------------------------------------------------

    def _layer_fits(self) -> tuple[float, dict[str, np.ndarray]]:
        """The cache size (MB) that explains the points best, and each signature's coefficients under it.

        A model whose weights outgrow the last-level cache streams them from memory on every inference (resnet18
        at 64x64 on onnxruntime: 3.1 ms at 45 MB of weights, 0.4 ms at 11 MB, for 4x fewer MACs): that share
        of a layer's time scales with its weights times the fraction of the model's weights that miss the cache.
        """
        if "layers" not in self._fits:
            from scipy.optimize import nnls

            best: tuple[float, float, dict[str, np.ndarray]] | None = None
            for cache in CACHE_GRID_MB:
                residual, fits = 0.0, {}
                for sig, points in self.data["layers"].items():
                    x = np.stack([_point_features(p, cache) for p in points])
                    y = np.array([p[4] for p in points])
                    fits[sig], r = nnls(x, y)
                    residual += r * r
                if best is None or residual < best[0] - 1e-12:
                    best = (residual, cache, fits)
            assert best is not None
            self._fits["layers"] = (best[1], best[2])
        return self._fits["layers"]

    def _rest_fit(self, key: str) -> np.ndarray:
        if "rest:" + key not in self._fits:
            from scipy.optimize import nnls

            pts = np.array(self.data["models"][key]["rest"], dtype=float)
            self._fits["rest:" + key] = nnls(np.stack([np.ones(len(pts)), pts[:, 0] / 1e5], 1), pts[:, 1])[0]
        return self._fits["rest:" + key]

    @property
    def cache_mb(self) -> float:
        """The fitted last-level cache size: weights beyond it stream from memory."""
        return self._layer_fits()[0]

    # -- prediction ---------------------------------------------------------------------------------------

    def predict(self, key: str, layers: dict[str, Layer],
                changed: dict[str, tuple[int, int]] | None = None) -> float:
        """Predicted p50 (ms) of the architecture ``key`` with these layers (``changed``: name -> (cin, cout)).

        The layers' sum goes through the model's link: a line fitted from that sum to the measured p50 of every
        variant of this model in the table. Where each op's profiled time misstates its share (a profiler whose
        own overhead is several times a µs-sized model's p50, a cache that holds a smaller model whole), the
        measured variants, and each refinement the pruner adds, correct it.
        """
        a, b = self._link(key, layers)
        return a + b * sum(self.breakdown(key, layers, changed).values())

    def _link(self, key: str, layers: dict[str, Layer]) -> np.ndarray:
        if "link:" + key not in self._fits:
            from scipy.optimize import nnls

            samples = self.data["models"][key]["samples"]
            raw = [sum(self.breakdown(key, layers, {n: tuple(c) for n, c in s["channels"].items()}).values())
                   for s in samples]
            self._fits["link:" + key] = nnls(np.stack([np.ones(len(raw)), raw], 1),
                                             np.array([s["p50_ms"] for s in samples]))[0]
        return self._fits["link:" + key]

    def breakdown(self, key: str, layers: dict[str, Layer],
                  changed: dict[str, tuple[int, int]] | None = None) -> dict[str, float]:
        """Predicted ms per layer, and ``""`` for what no layer owns."""
        changed = changed or {}
        cache, fits = self._layer_fits()
        sizes = {n: changed.get(n, (x.cin, x.cout)) for n, x in layers.items()}
        miss = _miss(sum(x.weights(*sizes[n]) for n, x in layers.items()) * 4 / 1e6, cache)
        out = {n: float(fits[x.signature] @ x.features(*sizes[n], miss=miss)) for n, x in layers.items()}
        elements = sum(x.out_elements * sizes[n][1] // x.cout for n, x in layers.items())
        a, b = self._rest_fit(key)
        out[""] = float(a + b * elements / 1e5)
        return out

    def summary(self, key: str, layers: dict[str, Layer]) -> dict[str, Any]:
        """What ``edgeship latency-table`` shows: each layer's predicted time, each measured variant's p50 and fit.

        Per layer: signature, channels, points measured and the predicted time at full and half width.
        """
        full = self.breakdown(key, layers)
        first = next(iter(layers))  # the input's channels stay
        half = self.breakdown(key, layers, {n: (x.cin if n == first else max(1, x.cin // 2), max(1, x.cout // 2))
                                            for n, x in layers.items()})
        link = self._link(key, layers)
        samples = [{**{k: v for k, v in s.items() if k != "channels"},
                    "predicted_ms": round(self.predict(key, layers, {n: tuple(c) for n, c in s["channels"].items()}),
                                          5)} for s in self.data["models"].get(key, {}).get("samples", [])]
        return {"runtime": self.data["runtime"], "runtime_version": self.data["runtime_version"],
                "device": self.data["device"], "threads": self.data["threads"], "cache_mb": self.cache_mb,
                "link": [round(float(v), 4) for v in link], "samples": samples,
                "predicted_ms": round(self.predict(key, layers), 4),
                "predicted_half_ms": round(float(link[0] + link[1] * sum(half.values())), 4),
                "layers": [{"layer": n, "signature": x.signature, "cin": x.cin, "cout": x.cout,
                            "points": len(self.data["layers"].get(x.signature, [])),
                            "ms": round(full[n], 4), "ms_half_width": round(half[n], 4)}
                           for n, x in layers.items()],
                "rest_ms": round(full[""], 4)}


CACHE_GRID_MB = (0.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 1e9)


def weight_mb(layers: dict[str, Layer]) -> float:
    """The layers' float32 weights in MB (what an inference reads)."""
    return sum(x.weights() for x in layers.values()) * 4 / 1e6


def _miss(mb: float, cache: float) -> float:
    return max(0.0, 1.0 - cache / mb) if mb > 0 else 0.0


def _point_features(point: list[Any], cache: float) -> np.ndarray:
    cin, cout, groups, kernel, _, mb = point
    return Layer("", "", cin, cout, groups, kernel, 0).features(miss=_miss(mb, cache))


# -- where tables live ----------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """``EDGESHIP_CACHE`` or ``~/.cache/edgeship``: measured tables outlive a run."""
    return Path(os.environ.get("EDGESHIP_CACHE") or Path.home() / ".cache" / "edgeship")


def table_path(runtime: str, runtime_version: str, device: str, threads: int) -> Path:
    """One file per (runtime, version, device, threads); ``device`` is the URL, or this CPU's model when local."""
    slug = re.sub(r"[^\w.-]+", "_", device).strip("_")[:80]
    return cache_dir() / "latency" / f"{runtime}-{runtime_version}-{slug}-t{threads}.json"


def local_device_name() -> str:
    """The local machine as a table's device: its CPU model (the CPU, not the host name, decides the speed)."""
    from edgeship.core.environment import cpu_model

    return f"local {cpu_model()}"


# -- building one ---------------------------------------------------------------------------------------------

Executor = Callable[[dict[str, Any], list[Path], np.ndarray], tuple[dict[str, Any], Any]]


@dataclass(frozen=True)
class TimingTarget:
    """Where and how latency is measured, as the report's rows are.

    The device runner's ``execute``, the device's name for the cache, and the recipe's threads, warm-up and runs.
    """

    execute: Executor
    device: str
    threads: int
    warmup: int = 10
    runs: int = 50

    @classmethod
    def of(cls, device: Any, threads: int, warmup: int = 10, runs: int = 50) -> TimingTarget:
        """The recipe's device (``targets.devices.connect``'s answer), or a fresh local process when None."""
        if device is None:
            from edgeship.targets.devices import LocalProcess

            return cls(LocalProcess().execute, local_device_name(), threads, warmup, runs)
        return cls(device.execute, device.url, threads, warmup, runs)

    def table(self, runtime: str, rebuild: bool = False) -> LatencyTable:
        """The cached table for ``runtime`` here (empty when there is none, or ``rebuild``)."""
        from edgeship.core.environment import library_versions
        from edgeship.targets import RUNTIMES

        version = library_versions().get(RUNTIMES[runtime].library, "unknown") if self.device.startswith(
            "local") else "device"  # a device's own version is recorded inside the table by what it answers
        path = table_path(runtime, version, self.device, self.threads)
        if path.is_file() and not rebuild:
            try:
                table = LatencyTable.load(path)
                if table.data.get("version") == TABLE_VERSION:
                    return table
            except (ValueError, KeyError):
                pass  # a cache written by another version, or cut short: measured again, then replaced
        return LatencyTable.empty(runtime, version, self.device, self.threads, path)


def prunable_groups(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]) -> tuple[Any, Iterator[Any]]:
    """torch-pruning's dependency graph, and its groups rooted at convs and linears (what goes together)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    return graph, graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear])


def shrink(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module], keep: Callable[[int, int], int],
           ) -> None:
    """Prune every group of ``model`` to ``keep(index, channels)`` channels (the smallest L1 norms go)."""
    import torch_pruning as tp

    importance = tp.importance.GroupMagnitudeImportance(p=1)
    graph, groups = prunable_groups(model, example, ignored)
    for i, group in enumerate(list(groups)):
        n = len(group[0].idxs)
        k = keep(i, n)
        if k >= n:
            continue
        scores = importance(group)
        drop = torch.argsort(scores)[: n - k].tolist()
        root = group[0].dep.target.module
        graph.get_pruning_group(root, group[0].dep.handler, drop).prune()


def sample_plan(groups: int, samples: int, round_to: int, seed: int) -> list[tuple[str, Callable[[int, int], int]]]:
    """Uniform keep fractions first, then random per-group ones: the variants a table is measured on."""
    rng = random.Random(seed)

    def rounded(n: int, fraction: float) -> int:
        return min(n, max(round_to, int(round(n * fraction / round_to)) * round_to))

    plan: list[tuple[str, Callable[[int, int], int]]] = [
        (f"uniform {k:g}", lambda i, n, k=k: rounded(n, k)) for k in SAMPLE_KEEP[:samples]]
    while len(plan) < samples:
        fractions = [rng.uniform(0.1, 1.0) for _ in range(groups)]
        plan.append((f"random {len(plan) - len(SAMPLE_KEEP) + 1}",
                     lambda i, n, f=fractions: rounded(n, f[i] if i < len(f) else 1.0)))
    return plan


def export_for(runtime: str, model: nn.Module, spec: InputSpec, folder: Path) -> Any:
    """``model`` exported into ``folder`` in the format ``runtime``'s table is measured on."""
    from edgeship.exporters import FORMATS
    from edgeship.exporters.base import ExportContext

    fmt = FORMATS[TABLE_FORMAT[runtime]]
    folder.mkdir(parents=True, exist_ok=True)
    return fmt.exporter(model, spec, ExportContext(out_dir=folder, log_dir=folder), fmt.options())


def profile_artifact(artifact: Any, layer_names: list[str], spec: InputSpec, runtime: str,
                     timing: TimingTarget) -> tuple[float, dict[str, float], float]:
    """Time and profile an exported model in a fresh process: (p50, ms per layer, rest ms).

    Each op's profiled time is scaled so that the ops sum to the measured p50.
    """
    from edgeship.targets import runtime_options
    from edgeship.targets.hotspots import hot_spots

    job = {"runtime": runtime, "options": runtime_options(runtime)[0], "batch": 1, "threads": timing.threads,
           "warmup": timing.warmup, "runs": timing.runs, "validate": False, "profile": True, "op_profile": True}
    x = np.random.default_rng(0).random((1, *spec.shape[1:]), dtype=np.float32)
    answer, _ = timing.execute(job, artifact.files, x)
    p50 = answer["latency"]["p50"]
    spots = hot_spots(runtime, artifact, answer.get("op_profile", {"error": "no op profile"}), p50)
    if "error" in spots or not spots["total_ms"]:
        from edgeship.core.errors import RuntimeUnavailableError

        why = spots.get("error", "no ops timed")
        raise RuntimeUnavailableError(f"latency table: {runtime} gave no op profile ({why})")
    scale = p50 / spots["total_ms"]
    per: dict[str, float] = {}
    rest = 0.0
    for op in spots["ops"]:
        if op["module"] in layer_names:
            per[op["module"]] = per.get(op["module"], 0.0) + op["ms"] * scale
        else:
            rest += op["ms"] * scale
    return p50, per, rest


@dataclass
class Profile:
    """One model's medians over interleaved fresh-process profiles: p50, ms per layer, the rest."""

    p50: float
    layer_ms: dict[str, float]
    rest_ms: float
    runs: list[float]  # each process's p50

    def scaled(self, factor: float) -> Profile:
        """The same profile on a machine ``factor`` times as fast (a drift correction)."""
        return Profile(self.p50 * factor, {n: v * factor for n, v in self.layer_ms.items()}, self.rest_ms * factor,
                       [r * factor for r in self.runs])


def profile_interleaved(models: list[tuple[str, nn.Module]], spec: InputSpec, runtime: str, timing: TimingTarget,
                        *, repeats: int, seed: int, workdir: Path,
                        log: Callable[[str], None] = print) -> list[Profile]:
    """Profile each model ``repeats`` times, in fresh processes, the rounds interleaving the models.

    A machine that slows down for a minute (a neighbour's memory traffic on a shared host) then slows every
    model a little, not one model a lot; each figure kept is the median over the rounds.
    """
    got: list[list[tuple[float, dict[str, float], float]]] = [[] for _ in models]
    names = [[n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)] for _, model in models]
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="latency-table-", dir=workdir) as tmp:
        artifacts = [export_for(runtime, model, spec, Path(tmp) / str(i)) for i, (_, model) in enumerate(models)]
        for r in range(repeats):
            order = list(range(len(models)))
            rng.shuffle(order)
            for i in order:
                got[i].append(profile_artifact(artifacts[i], names[i], spec, runtime, timing))
                log(f"  latency table: {models[i][0]} round {r + 1}/{repeats}: p50 {got[i][-1][0]:.3f} ms")
    return [Profile(float(np.median([x[0] for x in g])),
                    {n: float(np.median([x[1].get(n, 0.0) for x in g])) for n in layer_names},
                    float(np.median([x[2] for x in g])), [x[0] for x in g])
            for layer_names, g in zip(names, got, strict=True)]


def measure_table(table: LatencyTable, model: nn.Module, spec: InputSpec, ignored: list[nn.Module],
                  timing: TimingTarget, *, samples: int, round_to: int, repeats: int, seed: int, workdir: Path,
                  log: Callable[[str], None] = print) -> None:
    """Profile ``samples`` pruned variants of ``model`` (the first one unpruned) and add them to ``table``."""
    import copy

    example = torch.zeros((1, *spec.shape[1:]))
    key = model_key(model_layers(model, spec), spec)
    _, groups = prunable_groups(model, example, ignored)
    names = {m: n for n, m in model.named_modules()}
    ignored_names = [names[m] for m in ignored]
    variants = []
    for label, keep in sample_plan(len(list(groups)), samples, round_to, seed):
        variant = copy.deepcopy(model)
        by_name = dict(variant.named_modules())
        shrink(variant, example, [by_name[n] for n in ignored_names], keep)
        variants.append((label, variant))
    profiles = profile_interleaved(variants, spec, table.data["runtime"], timing, repeats=repeats, seed=seed,
                                   workdir=workdir, log=log)
    for (label, variant), prof in zip(variants, profiles, strict=True):
        table.add_sample(key, model_layers(variant, spec), prof, label)
