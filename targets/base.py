"""What every runtime provides (the ``Runtime`` record) and what a loaded session does: run, time, list its ops."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgeship.core.artifact import Artifact
from edgeship.core.errors import ArtifactError, ConfigError

MIN_PROFILE_RUNS = 10


@dataclass
class LatencyStats:
    """Latency of one forward pass in milliseconds, over ``runs`` timed calls after ``warmup``."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    runs: int
    warmup: int
    threads: int
    batch: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with values rounded to microseconds."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def time_callable(fn: Callable[[], object], warmup: int, runs: int, threads: int, batch: int) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed with a monotonic clock."""
    if runs < MIN_PROFILE_RUNS:
        raise ConfigError(f"profile.runs must be >= {MIN_PROFILE_RUNS} for meaningful percentiles; got {runs}")
    for _ in range(warmup):
        fn()
    samples = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        samples[i] = (time.perf_counter() - t0) * 1e3
    return LatencyStats(
        p50=float(np.percentile(samples, 50)), p90=float(np.percentile(samples, 90)),
        p99=float(np.percentile(samples, 99)), mean=float(samples.mean()), std=float(samples.std()),
        min=float(samples.min()), max=float(samples.max()), runs=runs, warmup=warmup, threads=threads, batch=batch,
    )


@dataclass
class OpInfo:
    """One executed operation (or group of identical ones) and the precision it ran at."""

    op: str
    precision: str
    count: int = 1
    device: str = "CPU"
    compute: bool = False  # a Conv/MatMul/Gemm/FullyConnected kernel: what "precision" is about

INTEGER_PRECISIONS = {"int8", "uint8", "u8", "i8", "int4", "u4", "i4", "int16", "i16", "int16x8"}


def summarize_precision(ops: list[OpInfo]) -> str:
    """One word for what the compute kernels ran at: ``int8``, ``fp32``, ``bf16`` or ``mixed (k/n int8)``."""
    compute = [o for o in ops if o.compute]
    if not compute:
        return "unknown"
    total = sum(o.count for o in compute)
    integer = sum(o.count for o in compute if o.precision in INTEGER_PRECISIONS)
    if integer == total:
        return "int16x8" if any(o.precision == "int16x8" for o in compute) else "int8"
    if integer == 0:
        kinds = {o.precision for o in compute}
        names = {"float32": "fp32", "f32": "fp32", "bf16": "bf16", "f16": "fp16", "float16": "fp16"}
        return "/".join(sorted(names.get(k, k) for k in kinds))
    return f"mixed ({integer}/{total} int8)"


class InputMismatch(ConfigError):
    """A batch handed to a runtime does not fit the artifact's input (same wording on every runtime)."""


@dataclass(frozen=True)
class Variant:
    """A named setting of a runtime, validated as its own row (``openvino@default``)."""

    options: dict[str, Any]
    gated: bool  # False: reported, never a reason to fail the run
    why: str


@dataclass(frozen=True)
class Runtime:
    """One runtime as a registered unit: the formats it reads, the session class that runs them, its settings.

    ``session`` is ``"module:Class"`` of a ``RuntimeSession`` subclass, imported only when the runtime is used.
    ``options`` are the session options of its plain (gated) row; each ``variants`` entry is another row,
    named ``<runtime>@<variant>`` in ``validate.runtimes`` and in the report.
    """

    name: str
    formats: tuple[str, ...]
    session: str
    library: str  # the distribution whose version the report records
    options: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)


class RuntimeSession(ABC):
    """One artifact loaded in one runtime on a device (``local`` for now).

    Subclasses implement ``_load`` and ``_run_chunk``; the base class owns input checks, batch
    chunking for static-batch artifacts and the timing loop, so every runtime behaves the same.
    """

    name: ClassVar[str]

    def __init__(self, artifact: Artifact, threads: int = 2, **options: Any) -> None:
        self.artifact = artifact
        self.threads = threads
        self.options = options
        self.precision = "unknown"
        self.precision_hint: str | None = None  # a precision the runtime was told to use, read back when it says
        self._loaded = False

    def load(self) -> RuntimeSession:
        """Open the artifact in the runtime; wrap runtime errors with the file name."""
        for f in self.artifact.files:
            if not f.is_file():
                raise ArtifactError(f"{self.name}: artifact file missing: {f}")
        try:
            self._load()
        except (ArtifactError, ConfigError):
            raise
        except Exception as e:
            raise ArtifactError(f"{self.name} could not load {self.artifact.path}: {type(e).__name__}: {e}") from e
        self._loaded = True
        self._ops = self._op_report()
        self.precision = summarize_precision(self._ops)
        return self

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch (N, *sample_shape) float32 and return float32 logits (N, num_classes)."""
        if not self._loaded:
            self.load()
        x = self._check_input(x)
        step = self.artifact.batch if self.artifact.batch > 0 else x.shape[0]
        if x.shape[0] % step:
            raise InputMismatch(f"{self.name}: input 'input' has static batch {step}; got {x.shape[0]} samples, "
                                f"which is not a multiple of it")
        outs = [self._run_chunk(np.ascontiguousarray(x[i:i + step])) for i in range(0, x.shape[0], step)]
        return np.concatenate(outs).astype(np.float32, copy=False).reshape(x.shape[0], -1)

    def latency(self, sample: np.ndarray, warmup: int, runs: int) -> LatencyStats:
        """Latency of one call on ``sample`` (one static batch) with this session's thread count."""
        if not self._loaded:
            self.load()
        x = np.ascontiguousarray(self._check_input(sample))
        return time_callable(lambda: self._run_chunk(x), warmup, runs, self.threads, x.shape[0])

    def op_report(self) -> list[OpInfo]:
        """What ran at which precision, read once from the loaded runtime (loads it if needed)."""
        if not self._loaded:
            self.load()
        return self._ops

    def _op_report(self) -> list[OpInfo]:
        """Runtime-specific op listing (runtimes that cannot tell return an empty list)."""
        return []

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        expected = self.artifact.input_spec.sample_shape
        if not isinstance(x, np.ndarray):
            raise InputMismatch(f"{self.name}: input 'input' must be a numpy array; got {type(x).__name__}")
        if x.dtype != np.float32:
            raise InputMismatch(f"{self.name}: input 'input' expects float32; got {x.dtype}")
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
            raise InputMismatch(f"{self.name}: input 'input' expects shape (N>=1, {', '.join(map(str, expected))}) "
                                f"in NCHW; got {tuple(x.shape)}")
        return x

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _run_chunk(self, x: np.ndarray) -> np.ndarray: ...
