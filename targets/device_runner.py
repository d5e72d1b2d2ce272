"""The program edgeship runs on a device: validate and time one artifact on one runtime, answer in JSON.

Self-contained on purpose: it is copied to the device and needs only Python 3.9+, numpy and the runtime's own
package (onnxruntime, ai-edge-litert or openvino); no torch, no edgeship. It imports nothing of edgeship, and
edgeship never imports it (it is read as a file and sent). Each call is a fresh process, so one runtime's
thread pool never disturbs another's timing.

    python3 device_runner.py JOB.json      (JOB.json: see ``main``; the answer goes to job["result"])

Exit codes: 0 answered (the answer may carry an "error"), 2 a job it cannot read.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time

PACKAGES = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert", "openvino": "openvino"}


def _onnxruntime(model, threads, options):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), ort.__version__


def _litert(model, threads, options):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x):
        scale, zero = inp["quantization"]
        if inp["dtype"] != np.float32 and scale:
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        scale, zero = out["quantization"]
        return (y.astype(np.float32) - zero) * scale if out["dtype"] != np.float32 and scale else y

    from importlib.metadata import version

    return run, version("ai-edge-litert")


def _openvino(model, threads, options):
    import numpy as np
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if options.get("precision", "f32") == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()

    def run(x):
        request.infer({0: x}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, copy=True)

    return run, ov.get_version()


RUNTIMES = {"onnxruntime": _onnxruntime, "litert": _litert, "openvino": _openvino}


def _cpu():
    # edgeship.core.environment.cpu_model's twin, on purpose: this program runs where edgeship is not installed.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def _latency(run, sample, warmup, runs, max_rounds, cv_max):
    """Rounds of ``runs`` timed calls after ``warmup``, until the rounds' p50s vary by less than ``cv_max``."""
    import numpy as np

    for _ in range(warmup):
        run(sample)
    samples, medians = [], []
    for _ in range(max_rounds):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            run(sample)
            times.append((time.perf_counter() - t0) * 1e3)
        samples += times
        medians.append(float(np.median(times)))
        cv = float(np.std(medians) / np.mean(medians)) if len(medians) > 1 else None
        if cv is not None and cv <= cv_max:
            break
    s = np.array(samples)
    return {"p50": float(np.percentile(s, 50)), "p90": float(np.percentile(s, 90)),
            "p99": float(np.percentile(s, 99)), "mean": float(s.mean()), "std": float(s.std()),
            "min": float(s.min()), "max": float(s.max()), "runs": runs, "warmup": warmup, "rounds": len(medians),
            "timed_calls": len(s), "round_p50_cv": cv, "stable": cv is not None and cv <= cv_max}


def answer(job):
    """Validate and/or time ``job["model"]`` on ``job["runtime"]``; the answer as a dict (never raises)."""
    facts = {"python": platform.python_version(), "os": platform.platform(), "cpu": _cpu(),
             "hostname": platform.node(), "load_average_start": list(os.getloadavg())}
    runtime = job["runtime"]
    try:
        import numpy as np
    except ImportError:
        return {**facts, "error": "missing_package", "package": "numpy"}
    try:
        start = time.perf_counter()
        run, version = RUNTIMES[runtime](job["model"], job.get("threads", 2), job.get("options", {}))
        facts.update(runtime_version=version, load_seconds=round(time.perf_counter() - start, 4))
    except ImportError as e:
        return {**facts, "error": "missing_package", "package": PACKAGES[runtime], "detail": str(e)}
    except Exception as e:  # a file the runtime refuses: the answer says so, the host decides
        return {**facts, "error": "load_failed", "detail": f"{type(e).__name__}: {e}"[:2000]}
    x = np.load(job["inputs"]).astype(np.float32)
    step = job.get("batch") or len(x)
    if job.get("validate", True):
        out = np.concatenate([np.asarray(run(np.ascontiguousarray(x[i:i + step]))) for i in range(0, len(x), step)])
        np.save(job["outputs"], out.reshape(len(x), -1).astype(np.float32))
    if job.get("profile", True):
        facts["latency"] = _latency(run, np.ascontiguousarray(x[:step]), job.get("warmup", 10), job.get("runs", 50),
                                    job.get("max_rounds", 5), job.get("cv_max", 0.05))
        facts["latency"].update(threads=job.get("threads", 2), batch=step)
    facts.update(peak_rss_mb=_peak_rss_mb(), load_average_end=list(os.getloadavg()))
    return facts


def main(argv):
    """Read the job named on the command line, write the answer where the job says."""
    if len(argv) != 2:
        print("usage: device_runner.py JOB.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as f:
            job = json.load(f)
    except (OSError, ValueError) as e:
        print(f"device_runner: cannot read {argv[1]}: {e}", file=sys.stderr)
        return 2
    result = answer(job)
    with open(job["result"] + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(job["result"] + ".tmp", job["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
