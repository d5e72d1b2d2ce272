"""Android phones over ``adb``: LiteRT's own ``benchmark_model`` times the ``.tflite`` there, op by op.

The user gives the binary built for the phone (``device: {adb: SERIAL, benchmark_model: PATH}``); edgeship pushes
it and the model under their content hashes into ``/data/local/tmp/edgeship``, runs it with op profiling and
parses what it prints. ``benchmark_model`` feeds random inputs and prints no outputs, so validation on Android
is reported as not available, never inferred. The parser follows the binary's documented output (TensorFlow's
``lite/tools/benchmark/README.md``) and is tested on captured output (``tests/data/benchmark_model/``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from edgeship.targets.devices import DeviceConfig, DeviceError, content_digest, run_tool

REMOTE = "/data/local/tmp/edgeship"
COUNT_LINE = re.compile(r"count=(\d+) first=(\d+) curr=\d+ min=(\d+) max=(\d+) avg=([\d.]+) std=(\d+)")
INIT_US = re.compile(r"Init: ([\d.]+)")
PEAK_MB = re.compile(r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
                     r"init=[\d.]+ overall=([\d.]+)")
OPS_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"


def benchmark_argv(binary: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
    """The ``benchmark_model`` command line on the phone (every flag as documented in its README)."""
    return [binary, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
            f"--num_runs={runs}", "--enable_op_profiling=true"]


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Latency (ms) and the per-op table of one ``benchmark_model --enable_op_profiling=true`` run.

    The regular runs are the last ``count=`` line (the warm-up's comes first). Ops come from the ``Run Order``
    table of the regular runs: after the ``Operator-wise Profiling Info for Regular Benchmark Runs`` heading in
    newer binaries (whose first ``Run Order`` table is the initialisation's), the only one in older ones.
    ``benchmark_model`` reports a mean, not percentiles: ``p50`` carries the mean and ``statistic`` says so.
    """
    counts = COUNT_LINE.findall(text)
    if not counts:
        raise ValueError("no 'count=... avg=... std=...' line: not the output of a finished benchmark_model run")
    n, first, low, high, avg, std = counts[-1]
    ms = 1e-3
    latency = {"p50": float(avg) * ms, "mean": float(avg) * ms, "min": float(low) * ms, "max": float(high) * ms,
               "std": float(std) * ms, "first": float(first) * ms, "timed_calls": int(n), "runs": int(n),
               "statistic": "mean (benchmark_model prints no percentiles)"}
    answer: dict[str, Any] = {"latency": latency}
    if m := INIT_US.search(text):
        answer["load_seconds"] = round(float(m[1]) * 1e-6, 6)
    if m := PEAK_MB.search(text):
        answer["peak_rss_mb"] = float(m[1])
    body = text.split(OPS_SECTION, 1)[1] if OPS_SECTION in text else text
    ops = _run_order(body)
    answer["op_profile"] = ({"ops": ops, "runs": int(n)} if ops else
                            {"error": "benchmark_model printed no op table (was --enable_op_profiling=true "
                                      "passed and honoured?)"})
    return answer


def _run_order(text: str) -> list[dict[str, Any]]:
    """The rows of the first ``Run Order`` table in ``text``: node type, average ms and name."""
    if "= Run Order =" not in text:
        return []
    ops = []
    for line in text.split("= Run Order =", 1)[1].splitlines()[2:]:  # the rest of the '=' rule, the header
        cells = [c.strip() for c in line.split("\t") if c.strip()]
        if len(cells) < 5 or not cells[-1].startswith("["):
            break  # a blank line or the next section ends the table
        ops.append({"type": cells[0], "ms": float(cells[3]), "name": cells[-1][1:-1]})
    return ops


class AdbDevice:
    """One Android device by serial, through the platform tools' ``adb``; runs LiteRT rows only."""

    runtimes = ("litert",)

    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg, self.serial, self.url = cfg, cfg.adb_serial, cfg.url
        if not cfg.benchmark_model:
            raise DeviceError(f"device {cfg.url}: device.benchmark_model is required: the path of a "
                              "benchmark_model binary built for the phone (bazel build --config=android_arm64 "
                              "//tensorflow/lite/tools/benchmark:benchmark_model)")
        self.binary = Path(cfg.benchmark_model).expanduser()
        if not self.binary.is_file():
            raise DeviceError(f"device {cfg.url}: device.benchmark_model: no file at {self.binary}")

    def argv(self, *args: str) -> list[str]:
        """``adb -s SERIAL ARGS``: every command names the device, so a second phone on the cable is never used."""
        return ["adb", "-s", self.serial, *args]

    def _call(self, args: list[str], what: str) -> str:
        done = run_tool(self.argv(*args), url=self.url, what=what, timeout=self.cfg.timeout,
                        missing="Android platform tools")
        out = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            err = (done.stderr.decode(errors="replace") or out).strip().splitlines()
            raise DeviceError(f"device {self.url}: {what} failed: {err[-1][:300] if err else done.returncode}")
        return out

    def _push(self, local: Path) -> str:
        """The phone's path of ``local``, stored under its content hash (pushed only when not there yet)."""
        remote = f"{REMOTE}/{content_digest([local])}-{local.name}"
        if self._call(["shell", f"ls {shlex.quote(remote)} 2>/dev/null || true"], "listing").strip() != remote:
            self._call(["shell", f"mkdir -p {REMOTE}"], "creating the work folder")
            self._call(["push", str(local), f"{remote}.part"], f"pushing {local.name}")
            self._call(["shell", f"mv {shlex.quote(remote + '.part')} {shlex.quote(remote)}"], "storing the copy")
        return remote

    def execute(self, job: dict[str, Any], model: list[Path], inputs: Any) -> tuple[dict[str, Any], None]:
        """Time ``model`` (a ``.tflite``) with op profiling on the phone; no outputs (validation is not available)."""
        if job["runtime"] not in self.runtimes:
            raise DeviceError(f"device {self.url}: an adb device runs LiteRT through benchmark_model only; "
                              f"{job['runtime']} rows need an ssh:// device")
        binary = self._push(self.binary)
        self._call(["shell", f"chmod +x {shlex.quote(binary)}"], "making benchmark_model executable")
        graph = self._push(model[0])
        props = {"model": "ro.product.model", "cpu": "ro.soc.model", "os": "ro.build.version.release"}
        lines = self._call(["shell", "; ".join(f"getprop {p}" for p in props.values())],
                           "reading the device's properties").splitlines()
        facts = dict(zip(props, [line.strip() for line in lines] + [""] * len(props)))
        argv = benchmark_argv(binary, graph, job["threads"], job["warmup"], job["runs"])
        text = self._call(["shell", shlex.join(argv)], "running benchmark_model")
        try:
            answer = parse_benchmark_output(text)
        except ValueError as e:
            raise DeviceError(f"device {self.url}: benchmark_model's output could not be read: {e}") from None
        answer["latency"].update(threads=job["threads"], batch=job.get("batch"), warmup=job["warmup"])
        answer.update(cpu=facts["cpu"] or facts["model"], os=f"Android {facts['os']}", hostname=facts["model"],
                      runtime_version="benchmark_model (as given)", validation="not available on Android: "
                      "benchmark_model runs random inputs and prints no outputs")
        if not job.get("op_profile"):
            answer.pop("op_profile", None)
        return answer, None
