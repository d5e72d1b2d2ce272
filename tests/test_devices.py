"""SSH devices against a real OpenSSH server (Debian's openssh-server) started on 127.0.0.1 by the test.

The "device" is this machine seen through sshd: the artifacts, the inputs and the device runner travel by scp,
validation and timing run in a fresh process there, and the answer comes back. `.ci/run` installs the server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgeship
from edgeship.cli import main
from tests.conftest import tiny_recipe, write_recipe

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A running sshd on a free port, a client key it accepts, and an ssh config naming the host ``board``."""
    assert Path(SSHD).is_file(), "the device tests need Debian's openssh-server (.ci/run installs it)"
    root = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    (root / "authorized_keys").write_text((root / "client.pub").read_text())
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nUsePAM no\nPidFile {root / 'sshd.pid'}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    client = ("Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n"
              "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    (root / "ssh_config").write_text(client.format(name="board", port=port, key=root / "client")
                                     + client.format(name="stranger", port=port, key=root / "stranger"))
    yield {"root": root, "port": port, "config": str(root / "ssh_config"), "pid": server.pid}
    server.terminate()
    server.wait(timeout=10)


def device(sshd: dict, url: str = "ssh://board", **extra: object) -> dict:
    return {"url": url, "ssh_config": sshd["config"], "python": sys.executable,
            "workdir": str(sshd["root"] / "device-work"), "connect_timeout": 5, **extra}


def test_a_run_over_ssh_agrees_with_the_local_run_and_is_timed_on_the_device(sshd, tmp_path):
    trained = edgeship.run(tiny_recipe(tmp_path, **{"export.formats": ["onnx"], "latency.enabled": False,
                                                    "check.enabled": False}), out=tmp_path / "trained")
    weights = str(tmp_path / "trained" / "stages" / "01-train" / "model.safetensors")
    recipe = tiny_recipe(tmp_path, **{"stages": [], "model.weights": weights, "check.enabled": False,
                                      "export.formats": ["onnx", "tflite", "openvino"]})
    local = edgeship.run(recipe, out=tmp_path / "local")
    remote = edgeship.run({**recipe, "device": device(sshd)}, out=tmp_path / "remote")
    assert local.status == remote.status == "pass" and trained.status == "pass"
    rows = {r["runtime"]: r for r in remote.report["results"]}
    for r in local.report["results"]:
        there = rows[r["runtime"]]
        assert there["metrics"]["top1_agreement"] == r["metrics"]["top1_agreement"] == 1.0
        assert there["metrics"]["differing_labels"] == r["metrics"]["differing_labels"]
        assert there["device"]["url"] == "ssh://board" and there["device"]["cpu"] and there["device"]["python"]
        if r.get("latency"):
            assert there["latency"]["p50"] > 0 and there["latency"]["rounds"] >= 1 and "stable" in there["latency"]
            assert there["device"]["peak_rss_mb"] > 0 and there["device"]["load_seconds"] >= 0
            # Hot spots from the runtime's own profiler, run on the device; convolutions named by their module.
            prof = there["op_profile"]
            assert prof["ops"] and prof["coverage"] > 0 and prof["method"] == r["op_profile"]["method"]
            convs = [o for o in prof["ops"] if "onv" in o["type"] or o["type"] == "CONV_2D"]
            assert convs and all(o["precision"] == {"bf16": "bfloat16"}.get(r["precision"], "float32") for o in convs)
            if r["runtime"] in ("onnxruntime", "litert"):
                assert all(o["module"] for o in convs), convs
    assert remote.report["device"] == "ssh://board"
    work = sshd["root"] / "device-work"
    stored = sorted(p.name for p in work.iterdir() if p.name != "runs")
    again = edgeship.run({**recipe, "device": device(sshd)}, out=tmp_path / "again", phases=("export", "validate"))
    assert again.status == "pass"
    # Stored by content: only a file that changed travels again (OpenVINO's IR is not byte-identical across exports).
    before = remote.report["artifacts"]
    changed = [f for f, a in again.report["artifacts"].items() if a["sha256"] != before[f]["sha256"]]
    new = sorted(set(p.name for p in work.iterdir() if p.name != "runs") - set(stored))
    assert len(new) == len(changed) < len(again.report["artifacts"])
    assert not list((work / "runs").iterdir())  # each job's folder is removed


def dropping_python(path: Path, listener: int) -> str:
    """A "Python" that kills the sshd process serving its session: the device drops the connection mid-run."""
    path.write_text("#!/bin/sh\np=$PPID\n"
                    f"while [ \"$(awk '{{print $4}}' /proc/$p/stat)\" != {listener} ]; do "
                    "p=$(awk '{print $4}' /proc/$p/stat); done\nkill -9 $p\nsleep 30\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def full_disk(sshd, tmp_path):
    """A 64 KiB tmpfs as the device's work folder: the copy of the inputs (92 KiB) runs out of space."""
    folder = tmp_path / "full"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    assert done.returncode == 0, f"the full-disk test mounts a tmpfs (as root): {done.stderr.decode()}"
    yield str(folder)
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("case", ["unreachable", "refused key", "missing runtime package", "dropped connection",
                                  "full disk"])
def test_device_faults_are_clear_errors_with_exit_2(sshd, tmp_path, capsys, case, request):
    if case == "missing runtime package":  # a Python with nothing installed: no numpy, no runtime
        subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv", "--without-pip",
                        str(tmp_path / "bare")], check=True)
    cfg = {"unreachable": lambda: device(sshd, f"ssh://root@127.0.0.1:{free_port()}"),
           "refused key": lambda: device(sshd, "ssh://stranger"),
           "missing runtime package": lambda: device(sshd, python=str(tmp_path / "bare" / "bin" / "python")),
           "dropped connection": lambda: device(sshd, python=dropping_python(tmp_path / "py", sshd["pid"])),
           "full disk": lambda: device(sshd, workdir=request.getfixturevalue("full_disk"))}[case]()
    recipe = tiny_recipe(tmp_path, **{"stages": [], "export.formats": ["onnx"], "check.enabled": False,
                                      "device": cfg, "validate.gates.reference_accuracy_min": None})
    start = time.monotonic()
    rc = main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - start < 120
    expected = {"unreachable": "connection refused", "refused key": "the key was refused",
                "missing runtime package": "has no numpy; install it on the device",
                "dropped connection": "the device closed the connection mid-run",
                "full disk": "no space left on the device"}[case]
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run" / "report.json").exists()  # nothing half-written: no report of a run that broke


def test_noisy_or_busy_timing_is_said_in_the_report():
    """A p50 that never settled, or a machine busier than its own timing explains, gets a note; an idle one none."""
    from edgeship.runner.assemble import timing_notes

    def row(name: str, stable: bool, load: float) -> dict:
        return {"runtime": name, "latency": {"stable": stable, "rounds": 5, "runs": 50, "round_p50_cv": 0.071,
                                             "threads": 2}, "timing_process": {"cores": 2,
                                                                               "load_average_start": [load, 0, 0]}}

    notes = timing_notes([row("quiet", True, 1.9), row("noisy", False, 1.0), row("busy", True, 10.0)])
    assert len(notes) == 2
    assert notes[0].startswith("noisy: latency noisy") and "7.1%" in notes[0]
    assert notes[1].startswith("busy: the machine was busy") and "load average 10.0 on 2 cores" in notes[1]
