"""The serving engine itself for tests: vLLM (the CPU build, in the engine venv that
scripts/engine_venv.sh builds) serving a model over the OpenAI API on 127.0.0.1.

``engine_python()`` is the venv's interpreter; where the venv is absent the calling test is skipped,
unless DEEPSPEC_REQUIRE_ENGINE=1 (CI sets it after building the venv), which makes its absence a
failure. ``VllmServer`` starts ``vllm.entrypoints.openai.api_server`` with the flags
docs/data.md gives for CPU regeneration, waits until the model is listed, and stops the server
(and its engine processes) on exit; its log is kept for a failing test to show.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from servers.openai_server import free_port

ENGINE_PY = (Path(os.environ.get("DEEPSPEC_ENGINE_VENV", Path.home() / ".cache" / "deepspec" / "engine-venv"))
             / "bin" / "python")


def engine_python() -> Path:
    if ENGINE_PY.is_file():
        return ENGINE_PY
    if os.environ.get("DEEPSPEC_REQUIRE_ENGINE") == "1":
        pytest.fail(f"DEEPSPEC_REQUIRE_ENGINE=1 but there is no engine venv at {ENGINE_PY.parent.parent}")
    pytest.skip("no engine venv: run `bash scripts/engine_venv.sh` to test against vLLM")


class VllmServer:
    """``with VllmServer(model_dir, name, log) as srv:`` → ``srv.url`` answers chat completions."""

    def __init__(self, model: Path, name: str, log: Path, dtype: str = "float32", startup_s: float = 600):
        self.model, self.name, self.log, self.dtype, self.startup_s = model, name, log, dtype, startup_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> VllmServer:
        cmd = [str(engine_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
               "--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", self.dtype, "--max-model-len", "1024", "--max-num-seqs", "16",
               "--no-enable-chunked-prefill"]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=5) as r:
                    if any(m["id"] == self.name for m in json.load(r)["data"]):
                        return self
            except OSError:
                pass
            time.sleep(2)
        self.__exit__()
        raise RuntimeError(f"vLLM did not answer within {self.startup_s:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the API server and its engine-core processes
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
