"""Where a runtime runs: this machine, in process (``local``), or a board reached with the user's own OpenSSH.

An SSH device gets the artifact, the validation inputs and ``device_runner.py`` (numpy and the runtime package
only: no torch, no edgeship on the board), runs validation and timing there in a fresh process per row, and
sends back the outputs and a JSON answer; agreement is computed here against the same PyTorch reference as a
local run. Files are stored on the device under their content hash, so a repeated run copies nothing again.
``ssh`` runs in batch mode (no password prompt) with connect and command timeouts, and read the user's
``~/.ssh/config`` (keys, jump hosts) or the ``ssh_config`` the recipe names.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgeship.core.errors import ConfigError
from edgeship.core.validation import Strict

RUNNER = Path(__file__).with_name("device_runner.py")
SSH_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+)(?::(?P<port>\d+))?/?$")
ADB_URL = re.compile(r"^adb://(?P<serial>[\w.:-]+)$")


class DeviceError(ConfigError):
    """A device that cannot be reached or cannot run the job: the user's environment, exit 2."""


class DeviceConfig(Strict):
    """``device:`` in a recipe: ``local``, ``ssh://[user@]host[:port]`` or ``adb://SERIAL``, and how to use it."""

    url: str = Field(default="local", description="local | ssh://[user@]host[:port] (a Host of your ssh config "
                                                  "works) | adb://SERIAL")
    adb: str | None = Field(default=None, description="an Android device's serial (adb devices): the same as "
                                                      "url: adb://SERIAL")
    benchmark_model: str | None = Field(default=None, description="adb devices: this host's path of LiteRT's "
                                                                  "benchmark_model binary built for the phone")
    python: str = Field(default="python3", description="the Python on the device (numpy + the runtime package)")
    ssh_config: str | None = Field(default=None, description="passed to ssh as -F")
    workdir: str = Field(default=".edgeship-device", description="folder on the device (relative: in its home)")
    connect_timeout: int = Field(default=10, ge=1, description="seconds to wait for the connection")
    timeout: int = Field(default=900, ge=1, description="seconds one command on the device may take")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != "local" and not SSH_URL.match(v) and not ADB_URL.match(v):
            msg = f"expected local, ssh://[user@]host[:port] or adb://SERIAL; got {v!r}"
            raise ValueError(msg)
        return v

    @model_validator(mode="before")
    @classmethod
    def _adb(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("adb") is not None:
            url, serial = data.get("url", "local"), data["adb"]
            if url not in ("local", f"adb://{serial}"):
                msg = f"device.adb ({serial!r}) and device.url ({url!r}) name two devices; give one"
                raise ValueError(msg)
            data = {**data, "url": f"adb://{serial}"}
        return data

    @property
    def local(self) -> bool:
        """True for this machine (rows run in process, as always)."""
        return self.url == "local"

    @property
    def adb_serial(self) -> str | None:
        """The Android serial of an ``adb://`` device, else None."""
        m = ADB_URL.match(self.url)
        return m["serial"] if m else None


def connect(cfg: DeviceConfig) -> Any:
    """The device ``cfg`` names: ``SshDevice``, ``AdbDevice``, or None for this machine."""
    if cfg.local:
        return None
    if cfg.adb_serial:
        from edgeship.targets.adb import AdbDevice  # adb builds on this module

        return AdbDevice(cfg)
    return SshDevice(cfg)


def run_tool(argv: list[str], *, url: str, what: str, timeout: int, missing: str,
             stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a device tool here (``ssh``, ``adb``); a tool not installed or a call past ``timeout`` is a DeviceError.

    The exit status is the caller's to read: each tool says why it failed in its own words.
    """
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise DeviceError(f"device {url}: {argv[0]} is not installed here ({missing})") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"device {url}: {what} did not finish within {timeout} s (device.timeout)") from None


def content_digest(paths: list[Path]) -> str:
    """A short hash of the files' names and bytes: what a device stores them under."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:20]


class SshDevice:
    """One SSH device, used through the user's ``ssh`` (files travel through it too: no sftp or scp needed)."""

    def __init__(self, cfg: DeviceConfig) -> None:
        m = SSH_URL.match(cfg.url)
        assert m is not None  # DeviceConfig validated it
        self.cfg, self.url = cfg, cfg.url
        self.target = f"{m['user']}@{m['host']}" if m["user"] else m["host"]
        self.port = m["port"]
        self._listing: set[str] | None = None

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.cfg.connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.cfg.ssh_config:
            opts = ["-F", self.cfg.ssh_config, *opts]
        return opts + (["-p", self.port] if self.port else [])

    def _call(self, argv: list[str], what: str, stdin: bytes | None = None) -> bytes:
        done = run_tool(argv, url=self.url, what=what, timeout=self.cfg.timeout, missing="the OpenSSH client",
                        stdin=stdin)
        if done.returncode != 0:
            why = self._why(done.stderr.decode(errors="replace"))
            raise DeviceError(f"device {self.cfg.url}: {what} failed: {why}")
        return done.stdout

    @staticmethod
    def _why(stderr: str) -> str:
        known = (("Permission denied", "the key was refused (Permission denied): check the user, the key and the "
                                       "device's authorized_keys"),
                 ("Connection refused", "connection refused: is sshd running, on that port?"),
                 ("timed out", "the connection timed out: is the host up and reachable?"),
                 ("Could not resolve", "the host name does not resolve"),
                 ("No space left", "no space left on the device (free some, or point device.workdir elsewhere)"),
                 ("closed by remote host", "the device closed the connection mid-run"),
                 ("Broken pipe", "the connection dropped mid-run"))
        reason = next((text for word, text in known if word in stderr), None)
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no message")
        return f"{reason} ({last[:200]})" if reason else last[:300]

    def ssh(self, command: str, what: str, stdin: bytes | None = None) -> bytes:
        """Run ``command`` (a shell line) on the device."""
        return self._call(["ssh", *self._options(), self.target, command], what, stdin)

    def _put(self, files: list[Path]) -> str:
        """The device folder holding ``files`` (copied under their content hash unless already there)."""
        wd = self.cfg.workdir
        if self._listing is None:
            self._listing = set(self.ssh(f"mkdir -p {shlex.quote(wd)} && ls -1 {shlex.quote(wd)}",
                                         "listing the work folder").decode().split())
        name = content_digest(files)
        if name not in self._listing:
            partial = f"{wd}/{name}.part-{uuid.uuid4().hex[:8]}"
            self.ssh(f"mkdir -p {shlex.quote(partial)}", "creating a folder")
            for f in files:  # through ssh itself: a board with sshd and a shell needs no sftp or scp
                self.ssh(f"cat > {shlex.quote(f'{partial}/{f.name}')}", f"copying {f.name}", f.read_bytes())
            # Renamed only once complete: a copy cut short is never taken for the file.
            self.ssh(f"mv {shlex.quote(partial)} {shlex.quote(f'{wd}/{name}')}", "storing the copy")
            self._listing.add(name)
        return f"{wd}/{name}"

    def execute(self, job: dict[str, Any], model: list[Path], inputs: np.ndarray) -> tuple[dict[str, Any],
                                                                                          np.ndarray | None]:
        """Run ``job`` (see ``device_runner.main``) on ``model``'s files and ``inputs``; the answer and outputs."""
        with tempfile.TemporaryDirectory(prefix=".edgeship-tmp-") as tmp:
            local_inputs = Path(tmp) / "inputs.npy"
            np.save(local_inputs, np.ascontiguousarray(inputs, dtype=np.float32))
            runner_dir = self._put([RUNNER])
            model_dir = self._put(model)
            inputs_dir = self._put([local_inputs])
            run = f"{self.cfg.workdir}/runs/{uuid.uuid4().hex}"
            full = {**job, "model": f"{model_dir}/{model[0].name}", "inputs": f"{inputs_dir}/inputs.npy",
                    "outputs": f"{run}/outputs.npy", "result": f"{run}/result.json"}
            try:
                self.ssh(f"mkdir -p {shlex.quote(run)} && cat > {shlex.quote(run + '/job.json')}", "sending the job",
                         json.dumps(full).encode())
                self.ssh(f"{shlex.quote(self.cfg.python)} {shlex.quote(runner_dir + '/device_runner.py')} "
                         f"{shlex.quote(run + '/job.json')}", f"running {job['runtime']}")
                answer = json.loads(self.ssh(f"cat {shlex.quote(run + '/result.json')}", "reading the answer"))
                outputs = None
                if job.get("validate") and "error" not in answer:
                    outputs = np.load(io.BytesIO(self.ssh(f"cat {shlex.quote(run + '/outputs.npy')}",
                                                          "reading the outputs")))
            finally:
                try:
                    self.ssh(f"rm -rf {shlex.quote(run)}", "cleaning up")
                except DeviceError:  # the run's own error says more; a leftover folder on the device is harmless
                    pass
        return _checked(answer, self.url, self.cfg.python, job["runtime"]), outputs


def _checked(answer: dict[str, Any], url: str, python: str, runtime: str) -> dict[str, Any]:
    """The runner's answer, or the ``DeviceError`` it reports (a missing package is named with this host's version)."""
    if answer.get("error") == "missing_package":
        from edgeship.core.environment import library_versions

        package = answer["package"]
        version = library_versions().get(package)
        pin = f"=={version}" if version and version != "missing" else ""
        raise DeviceError(f"device {url}: {python} there has no {package}; install it on the device "
                          f"(pip install {package}{pin}, the version this host validated with)")
    if "error" in answer:
        raise DeviceError(f"device {url}: {runtime} could not run the artifact there: "
                          f"{answer.get('detail', answer['error'])}")
    return answer


class LocalProcess:
    """The local machine through the same runner, in a fresh process per call: how every local row is timed.

    One runtime's thread pool, or the PyTorch and runtime libraries this process has loaded, never disturb
    another's timing; the answer carries the process's load time and peak resident memory too.
    """

    url = "local"

    def __init__(self, python: str = sys.executable, timeout: int = 900) -> None:
        self.python, self.timeout = python, timeout

    def execute(self, job: dict[str, Any], model: list[Path], inputs: np.ndarray) -> tuple[dict[str, Any],
                                                                                          np.ndarray | None]:
        """Run ``job`` on ``model``'s files and ``inputs`` in a child process; the answer and the outputs."""
        with tempfile.TemporaryDirectory(prefix=".edgeship-tmp-") as tmp:
            folder = Path(tmp)
            np.save(folder / "inputs.npy", np.ascontiguousarray(inputs, dtype=np.float32))
            full = {**job, "model": str(model[0]), "inputs": str(folder / "inputs.npy"),
                    "outputs": str(folder / "outputs.npy"), "result": str(folder / "result.json")}
            (folder / "job.json").write_text(json.dumps(full))
            # Run from a folder of its own, as on a device: beside edgeship's targets/onnxruntime.py, openvino.py
            # and litert.py, Python would import those instead of the runtimes.
            runner = shutil.copy(RUNNER, folder / RUNNER.name)
            try:
                done = subprocess.run([self.python, str(runner), str(folder / "job.json")], capture_output=True,
                                      timeout=self.timeout, check=False)
            except subprocess.TimeoutExpired:
                raise DeviceError(f"{job['runtime']} did not finish timing within {self.timeout} s") from None
            if done.returncode != 0 or not (folder / "result.json").is_file():
                from edgeship.core.errors import plain

                raise DeviceError(f"{job['runtime']}: the timing process failed: "
                                  f"{plain(done.stderr.decode(errors='replace'), 3) or done.returncode}")
            answer = json.loads((folder / "result.json").read_text())
            outputs = np.load(folder / "outputs.npy") if job.get("validate") and "error" not in answer else None
        return _checked(answer, self.url, self.python, job["runtime"]), outputs
