"""Serve a checked config (``protoc-x run``; protoc_x.start loads and checks it): open the
listeners, serve until SIGINT/SIGTERM, then drain. SIGHUP (and, with ``--watch``, a change of the
config file or of a spec it names) reloads the config: checked whole first, refused whole when
invalid, with the running config kept. SIGUSR1 reopens the access log files (log rotation)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

log = logging.getLogger("protoc_x")


def install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve_config(config, protocols, ready=None, worker: int = 0, workers: int = 1,
                       shared: str | None = None, reload=None, watch=None) -> int:  # fmt: skip
    """Run one proxy until SIGINT/SIGTERM. With several workers, each process runs this on
    SO_REUSEPORT listeners; each publishes its metrics into prometheus-client multiprocess
    files in ``shared`` and worker 0 serves the admin endpoint, summing them; rate limits take
    1/workers each. ``reload()`` gives the config and protocols to serve on SIGHUP (checked:
    it raises ConfigError); ``watch()`` gives the files whose change reloads too."""

    from .config import ConfigError

    watched = _stats(watch()) if watch is not None else None  # (before a port opens)
    try:
        proxy = await open_proxy(config, protocols, worker=worker, workers=workers, shared=shared)
    except ConfigError as e:
        for line in e.lines():
            log.error("%s", line)
        return 2
    except OSError as e:
        log.error("%s", e.strerror or e)
        return 2
    except RuntimeError as e:  # (a part the config asks for cannot load: tracing's exporter)
        log.error("%s", e)
        return 2

    async def apply(config, protocols) -> None:
        """Serve a new config file's config (SIGHUP): through the xDS client when there is
        or will be a control plane, which composes it with what it sent."""
        if proxy.xds is None and config.dynamic_resources is not None:
            from .xds import XdsClient

            client = XdsClient(config, protocols)
            client.proxy = proxy
            await proxy.reload(client.compose(), protocols)
            proxy.xds = client
            client.start(proxy)
        elif proxy.xds is not None:
            await proxy.xds.reconfigure(config, protocols)
            if config.dynamic_resources is None:
                proxy.xds = None
        else:
            await proxy.reload(config, protocols)

    if worker == 0:
        for listener in proxy.listeners:
            log.info("listener %s on %s (%s)%s", listener.name, listener.config.address,
                     ", ".join(p.name for p in listener.protocols),
                     f", {workers} workers" if workers > 1 else "")  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, proxy.reopen_logs)  # (log rotation)
    reloader = Reloader(proxy, reload, apply) if reload is not None else None
    watching = None
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
        if watch is not None:
            watching = asyncio.ensure_future(watch_files(watch, reloader.request, stop, watched))
    if ready is not None:
        ready(proxy)
    await stop.wait()
    if reloader is not None:
        loop.remove_signal_handler(signal.SIGHUP)
        await reloader.idle()
    if watching is not None:
        await watching
    if proxy.xds is not None:
        await proxy.xds.stop()
    if worker == 0:
        log.info("draining (up to %d ms)", proxy.config.drain_timeout_ms)
    await proxy.drain(proxy.config.drain_timeout_ms / 1000)
    if workers > 1:
        codes = " ".join(f"{code}={n}" for code, n in sorted(proxy.metrics.answered().items()))
        log.info("worker %d stopped; requests answered by code: %s", worker, codes or "none")
    if worker == 0:
        log.info("stopped")
    return 0


async def open_proxy(config, protocols, **kw):
    """The proxy of ``config``, started: its listeners open and, when the config names a
    control plane, its xDS client asking (what it sends adds to the file's resources). Raises
    OSError (an address taken) or ConfigError (static resources that cannot be composed)."""
    from .proxy import Proxy

    xds = None
    if config.dynamic_resources is not None:
        from .xds import XdsClient

        xds = XdsClient(config, protocols)
        config = xds.compose()
    proxy = Proxy(config, protocols, **kw)
    proxy.xds = xds
    await proxy.start()
    if xds is not None:
        xds.start(proxy)
    return proxy


class Reloader:
    """Reloads one at a time: a request while one runs makes one more run after it (a burst
    of SIGHUPs, or of file events, is one or two reloads)."""

    def __init__(self, proxy, load, apply=None) -> None:
        self.proxy = proxy
        self.load = load  # () -> (config, protocols), or raises ConfigError
        self.apply = apply or proxy.reload  # (config, protocols) -> serve them
        self.task: asyncio.Task | None = None
        self.again = False

    def request(self) -> None:
        if self.task is not None:
            self.again = True
            return
        self.task = asyncio.ensure_future(self.run())

    async def idle(self) -> None:
        self.again = False
        if self.task is not None:
            await self.task

    async def run(self) -> None:
        try:
            while True:
                self.again = False
                await self.reload_once()
                if not self.again or self.proxy.draining:
                    break
        finally:
            self.task = None

    async def reload_once(self) -> None:
        from .config import ConfigError

        loop = asyncio.get_running_loop()
        try:  # (compiling specs takes a while: the requests go on meanwhile)
            config, protocols = await loop.run_in_executor(None, self.load)
        except ConfigError as e:
            log.error("reload refused, the running config stays; the new one is invalid:")
            for line in e.lines():
                log.error("%s", line)
            return
        except Exception as e:  # (an unreadable file, a plug-in module raising)
            log.error("reload refused, the running config stays: %s: %s", type(e).__name__, e)
            return
        try:
            await self.apply(config, protocols)
        except ConfigError as e:  # (the file's and the control plane's resources disagree)
            log.error("reload refused, the running config stays; with the control plane's "
                      "resources, the new one is invalid:")  # fmt: skip
            for line in e.lines():
                log.error("%s", line)
            return
        except RuntimeError as e:  # (draining)
            log.error("reload refused: %s", e)
            return
        except OSError as e:
            log.error("reload refused, the running config stays: %s", e.strerror or e)
            return
        log.info(
            "reloaded: listeners %s; clusters %s",
            ", ".join(f"{l.name} on {l.config.address}" for l in self.proxy.listeners),
            ", ".join(self.proxy.clusters),
        )


async def watch_files(files, changed, stop: asyncio.Event, before=None) -> None:
    """Call ``changed()`` when one of ``files()`` (the config and the specs it names, asked
    again after each change) is written, replaced or removed, until ``stop`` is set; ``before``:
    their :func:`_stats` when the running config was read. The
    directories are watched, not the files: an editor or a ConfigMap replaces a file by
    renaming another onto it."""
    import watchfiles

    before = _stats(files()) if before is None else before
    while not stop.is_set():
        paths = {Path(f).resolve() for f in files()}
        dirs = sorted({str(p if p.is_dir() else p.parent) for p in paths})

        def relevant(_change, path: str) -> bool:
            p = Path(path).resolve()
            return p in paths or any(d in p.parents for d in paths if d.is_dir())

        # a change made before the watcher is live (it starts in a thread) is seen by the
        # files' stats, compared whenever it yields: on a change, or each half second
        async for changes in watchfiles.awatch(
            *dirs, watch_filter=relevant, stop_event=stop, debounce=200, step=50,
            rust_timeout=500, yield_on_timeout=True,
        ):  # fmt: skip
            if changes or _stats(paths) != before:
                before = _stats(paths)  # (what the reload reads, or newer: seen next time)
                changed()
                break


def _stats(paths) -> list:
    """Each file's (path, mtime, size, inode), or (path, None) if it is gone."""
    out = []
    for p in sorted(Path(f).resolve() for f in paths):
        try:
            st = p.stat()
            out.append((p, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((p, None))
    return out


def run_workers(config, protocols, workers: int, reload=None, watch=None) -> int:
    """Fork ``workers`` processes sharing each listener (SO_REUSEPORT); signals go to all
    (SIGHUP: each worker reloads; SIGUSR1: each reopens its access logs); exit 0 when all drained, 2 when one could not start (the
    others are stopped)."""
    import os
    import shutil
    import tempfile

    shared = tempfile.mkdtemp(prefix="protocx-metrics-")  # the workers' metrics, new each run
    pids = []
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)  # (until a worker's loop takes it)
    try:
        for i in range(workers):
            pid = os.fork()
            if pid == 0:
                code = 2
                try:
                    install_loop()
                    code = asyncio.run(
                        serve_config(config, protocols, worker=i, workers=workers, shared=shared,
                                     reload=reload, watch=watch)  # fmt: skip
                    )
                finally:
                    os._exit(code)
            pids.append(pid)
        stopping = False

        def send(signum, _frame=None):
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

        def forward(signum, _frame):
            nonlocal stopping
            stopping = True
            send(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGHUP, send)
        signal.signal(signal.SIGUSR1, send)
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


def main(config, protocols, workers: int = 1, reload=None, watch=None) -> int:
    """Serve a checked config with its protocols (the CLI loads both, and gives ``reload``
    to load them again: the runtime never compiles specs) until SIGINT/SIGTERM; ``workers`` >
    1 forks."""
    raise_open_files_limit()
    if workers > 1:
        return run_workers(config, protocols, workers, reload, watch)
    install_loop()
    return asyncio.run(serve_config(config, protocols, reload=reload, watch=watch))


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
