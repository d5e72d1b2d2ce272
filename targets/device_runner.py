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


def _onnxruntime_options(threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def _onnxruntime(model, threads, options):
    import onnxruntime as ort

    session = ort.InferenceSession(model, _onnxruntime_options(threads), providers=["CPUExecutionProvider"])
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


def _openvino_config(threads, options):
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if options.get("precision", "f32") == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return config


def _openvino(model, threads, options):
    import numpy as np
    import openvino as ov

    request = ov.Core().compile_model(model, "CPU", _openvino_config(threads, options)).create_infer_request()

    def run(x):
        request.infer({0: x}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, copy=True)

    return run, ov.get_version()


RUNTIMES = {"onnxruntime": _onnxruntime, "litert": _litert, "openvino": _openvino}


# Per-op profiles, each from the runtime's own instrumentation, in a session of their own after the end-to-end
# timing (a profiler slows what it watches). Each op: name, type, ms per inference; the host maps names to modules.


def _ops_onnxruntime(model, threads, options, x, warmup, runs):
    """The onnxruntime session profiler: every node's kernel time, over the runs after warm-up."""
    import tempfile

    import onnxruntime as ort

    so = _onnxruntime_options(threads)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(warmup + runs):
            session.run(None, {name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first = starts[warmup] if len(starts) > warmup else 0
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first:
            node = e["name"][: -len("_kernel_time")]
            op = ops.setdefault(node, {"name": node, "type": e.get("args", {}).get("op_name", "?"), "ms": 0.0})
            op["ms"] += e["dur"] / 1e3 / runs
    return list(ops.values())


def _ops_openvino(model, threads, options, x, warmup, runs):
    """OpenVINO's per-node performance counters (real time, the kernel that ran), averaged over ``runs``."""
    import openvino as ov

    config = {**_openvino_config(threads, options), "PERF_COUNT": True}
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    for _ in range(warmup):
        request.infer({0: x})
    ops = {}
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                op = ops.setdefault(info.node_name, {"name": info.node_name, "type": info.node_type,
                                                     "exec_type": info.exec_type, "ms": 0.0})
                op["ms"] += info.real_time.total_seconds() * 1e3 / runs
    return list(ops.values())


def _ops_litert(model, threads, options, x, warmup, runs):
    """Each op of the main subgraph cut out into a model of its own and timed alone on the same interpreter.

    The Python interpreter has no op profiler (benchmark_model has one); an op alone keeps its kernel and
    delegate (XNNPACK takes it as it takes the whole graph) but not the cache state its neighbours leave, so the
    sum of the ops is compared with the end-to-end time rather than assumed to equal it.
    """
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fb

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = fb.read_model(model)
    graph, buffers = m.subgraphs[0], m.buffers
    whole = (graph.operators, graph.inputs, graph.outputs)
    rng = np.random.default_rng(0)
    ops = []
    for op in whole[0]:
        used = [t for t in [*op.inputs, *op.outputs] if t >= 0]
        const = {t for t in used if graph.tensors[t].buffer and buffers[graph.tensors[t].buffer].data is not None
                 and len(buffers[graph.tensors[t].buffer].data)}
        keep = {graph.tensors[t].buffer for t in used}
        graph.operators, graph.inputs, graph.outputs = [op], [t for t in op.inputs if t >= 0 and t not in const], \
            list(op.outputs)
        m.buffers = [b if i in keep or i == 0 else type(b)() for i, b in enumerate(buffers)]  # only its weights
        try:
            content = bytes(fb.convert_object_to_bytearray(m))
        finally:
            (graph.operators, graph.inputs, graph.outputs), m.buffers = whole, buffers
        name = graph.tensors[op.outputs[0]].name
        entry = {"name": name.decode() if isinstance(name, bytes) else name,
                 "type": builtin.get(fb.get_builtin_code_from_operator_code(m.operatorCodes[op.opcodeIndex]),
                                     "CUSTOM")}
        try:
            interpreter = Interpreter(model_content=content, num_threads=threads)
            interpreter.allocate_tensors()
            for d in interpreter.get_input_details():
                if np.issubdtype(d["dtype"], np.floating):
                    value = rng.standard_normal(d["shape"]).astype(d["dtype"])
                else:
                    value = rng.integers(-64, 64, d["shape"]).astype(d["dtype"])
                interpreter.set_tensor(d["index"], value)
            times = _timed(lambda _, it=interpreter: it.invoke(), None, warmup, runs)
        except Exception as e:  # an op that cannot run on random inputs (a computed shape): listed, not timed
            ops.append({**entry, "ms": None, "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        ops.append({**entry, "ms": float(np.median(times)),
                    **{side: [np.dtype(tensors[t]["dtype"]).name for t in ids if t >= 0 and t in tensors]
                       for side, ids in (("inputs", op.inputs), ("outputs", op.outputs))}})
    return ops


OP_PROFILERS = {"onnxruntime": _ops_onnxruntime, "litert": _ops_litert, "openvino": _ops_openvino}


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


def _timed(run, sample, warmup, runs):
    """``runs`` wall-clock times of ``run(sample)`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run(sample)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(sample)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _latency(run, sample, warmup, runs, max_rounds, cv_max):
    """Rounds of ``runs`` timed calls after ``warmup``, until the rounds' p50s vary by less than ``cv_max``."""
    import numpy as np

    samples, medians = [], []
    for r in range(max_rounds):
        times = _timed(run, sample, warmup if r == 0 else 0, runs)
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
             "hostname": platform.node(), "cores": os.cpu_count(), "load_average_start": list(os.getloadavg())}
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
    if job.get("op_profile"):
        try:
            start = time.perf_counter()
            ops = OP_PROFILERS[runtime](job["model"], job.get("threads", 2), job.get("options", {}),
                                       np.ascontiguousarray(x[:step]), job.get("warmup", 10), job.get("runs", 50))
            facts["op_profile"] = {"ops": ops, "runs": job.get("runs", 50),
                                   "seconds": round(time.perf_counter() - start, 3)}
        except Exception as e:  # a profile informs: its failure is reported, the row's figures stand
            facts["op_profile"] = {"error": f"{type(e).__name__}: {e}"[:500]}
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
