"""A node peer script (tests/peers/node/*.js) run as a long-lived process that speaks JSON lines
on stdout and stops when its stdin closes: the one way the dubbo, TARS and bolt v2 peers are started, and the check that their npm
packages are installed."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

NODE_DIR = Path(__file__).with_name("node")
NODE = shutil.which("node") or "node"
NPM_INSTALL = "npm ci --prefix tests/peers/node"


class NodePeerMissing(RuntimeError):
    pass


def check_node(peer: str, *packages: str) -> None:
    """Raise NodePeerMissing, naming the command that installs them, unless every npm package
    the ``peer`` needs is installed."""
    if not all((NODE_DIR / "node_modules" / package).is_dir() for package in packages):
        raise NodePeerMissing(
            f"npm packages for the {peer} peer are not installed: run `{NPM_INSTALL}`"
        )


@contextlib.contextmanager
def node_process(
    args: list[str], name: str
) -> Iterator[tuple[subprocess.Popen, "queue.Queue[dict[str, Any]]", list[str], dict[str, Any]]]:
    """(process, its events, its stderr lines, its first event) for ``node ARGS`` run in
    NODE_DIR; RuntimeError if it says nothing within 15 s. Stopped on exit."""
    process = subprocess.Popen(
        [NODE, *args],
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    events: "queue.Queue[dict[str, Any]]" = queue.Queue()
    stderr: list[str] = []

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with contextlib.suppress(ValueError):
                events.put(json.loads(line))

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            stderr.append(line)

    threads = [
        threading.Thread(target=read_stdout, daemon=True, name=f"{name}-stdout"),
        threading.Thread(target=read_stderr, daemon=True, name=f"{name}-stderr"),
    ]
    for thread in threads:
        thread.start()
    try:
        try:
            first = events.get(timeout=15)
        except queue.Empty:
            raise RuntimeError(f"{name} did not start: {''.join(stderr)}")
        yield process, events, stderr, first
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()  # the script exits when stdin closes
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=3)
        for thread in threads:
            thread.join(timeout=2)
