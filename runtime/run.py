"""Serve a checked config (``protoc-x run``; protoc_x.start loads and checks it): open the
listeners, serve until SIGINT/SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger("protoc_x")


def install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve_config(config, protocols, ready=None, worker: int = 0, workers: int = 1,
                       shared: str | None = None) -> int:  # fmt: skip
    """Run one proxy until SIGINT/SIGTERM. With several workers, each process runs this on
    SO_REUSEPORT listeners; each publishes its metrics into prometheus-client multiprocess
    files in ``shared`` and worker 0 serves the admin endpoint, summing them; rate limits take
    1/workers each."""
    from .proxy import Proxy

    proxy = Proxy(config, protocols, worker=worker, workers=workers, shared=shared)
    try:
        await proxy.start()
    except OSError as e:
        log.error("%s", e.strerror or e)
        return 2
    if worker == 0:
        for listener in proxy.listeners:
            log.info("listener %s on %s (%s)%s", listener.name, listener.config.address,
                     ", ".join(p.name for p in listener.protocols),
                     f", {workers} workers" if workers > 1 else "")  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(proxy)
    await stop.wait()
    if worker == 0:
        log.info("draining (up to %d ms)", config.drain_timeout_ms)
    await proxy.drain(config.drain_timeout_ms / 1000)
    if workers > 1:
        codes = " ".join(f"{code}={n}" for code, n in sorted(proxy.metrics.answered().items()))
        log.info("worker %d stopped; requests answered by code: %s", worker, codes or "none")
    if worker == 0:
        log.info("stopped")
    return 0


def run_workers(config, protocols, workers: int) -> int:
    """Fork ``workers`` processes sharing each listener (SO_REUSEPORT); signals go to all;
    exit 0 when all drained, 2 when one could not start (the others are stopped)."""
    import os
    import shutil
    import tempfile

    shared = tempfile.mkdtemp(prefix="protocx-metrics-")  # the workers' metrics, new each run
    pids = []
    try:
        for i in range(workers):
            pid = os.fork()
            if pid == 0:
                code = 2
                try:
                    install_loop()
                    code = asyncio.run(
                        serve_config(config, protocols, worker=i, workers=workers, shared=shared)
                    )
                finally:
                    os._exit(code)
            pids.append(pid)
        stopping = False

        def forward(signum, _frame):
            nonlocal stopping
            stopping = True
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        codes = []
        remaining = set(pids)
        while remaining:
            pid, status = os.wait()
            remaining.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            codes.append(code)
            if code != 0 and not stopping:  # a worker could not start: stop them all
                forward(signal.SIGTERM, None)
        return 0 if all(c == 0 for c in codes) else 2
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def main(config, protocols, workers: int = 1) -> int:
    """Serve a checked config with its protocols (the CLI loads both: the runtime never
    compiles specs) until SIGINT/SIGTERM; ``workers`` > 1 forks."""
    raise_open_files_limit()
    if workers > 1:
        return run_workers(config, protocols, workers)
    install_loop()
    return asyncio.run(serve_config(config, protocols))


def raise_open_files_limit() -> None:
    """A sidecar holds a descriptor per connection: take the hard limit on open files, not
    the soft one (often 1024), as nginx's worker_rlimit_nofile or a systemd unit would."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:  # a container may refuse it: keep the soft limit
            log.warning("open files limit stays at %d: %s", soft, e)
