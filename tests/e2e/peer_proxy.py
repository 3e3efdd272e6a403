"""`protoc-x run CONFIG` as a real process, for end-to-end tests with third-party peers.

`proxy_process(config, tmp_path)` writes the config dict as YAML, starts the console script
installed next to the running interpreter (`.venv/bin/protoc-x`), waits until every listener
accepts connections, and on exit sends SIGTERM and checks the graceful exit (code 0). Its
stderr (the proxy's log) is kept in a file: `ProxyProcess.log()` reads it, and it is printed
when the proxy is stopped, so a failing test shows it in pytest's captured output.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from protoc_x.demo import free_port  # noqa: F401 (also for the modules importing it from here)

ROOT = Path(__file__).parents[2]


def protoc_x_command() -> list[str]:
    script = Path(sys.executable).with_name("protoc-x")
    if script.exists():
        return [str(script)]
    found = shutil.which("protoc-x")
    if found:
        return [found]
    return [sys.executable, "-m", "protoc_x.cli"]


@dataclass
class ProxyProcess:
    process: subprocess.Popen
    stderr_path: Path
    ports: list[int]

    @property
    def port(self) -> int:
        return self.ports[0]

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def _wait_listening(proxy: ProxyProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for port in proxy.ports:
        while True:
            if proxy.process.poll() is not None:
                raise RuntimeError(
                    f"protoc-x run exited with {proxy.process.returncode}:\n{proxy.log()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"protoc-x run: nothing on port {port}:\n{proxy.log()}")
                time.sleep(0.03)


@contextlib.contextmanager
def proxy_process(config: dict, tmp_path: Path, name: str = "proxy") -> Iterator[ProxyProcess]:
    """Run `protoc-x run` on `config` (a dict in the contract's YAML shape)."""
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    stderr_path = tmp_path / f"{name}.stderr"
    ports = [int(l["address"].rpartition(":")[2]) for l in config.get("listeners", ())]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            protoc_x_command() + ["run", str(config_path)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    proxy = ProxyProcess(process, stderr_path, ports)
    body_failed = True
    try:
        _wait_listening(proxy)
        yield proxy
        body_failed = False
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=5)
        print(f"--- protoc-x run {config_path.name}: exit {code}\n{proxy.log()}")
        if not body_failed:
            assert code == 0, f"protoc-x run did not exit cleanly ({code}):\n{proxy.log()}"
