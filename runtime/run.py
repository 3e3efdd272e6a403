"""``protoc-x run CONFIG``: load and check everything, open the listeners, serve until
SIGINT/SIGTERM, then drain. Nothing listens unless the whole config is valid."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .config import ConfigError, check_protocols, load_config
from .engine import EngineError, check_detectable, load_protocols

log = logging.getLogger("protoc_x")


def install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class StartError(Exception):
    """The proxy cannot start; the message says where (YAML path or file:line:col)."""


def prepare(path: str):
    """(config, protocols) or StartError — everything checked, nothing opened."""
    from protoc_x.diagnostics import SpecError

    try:
        config = load_config(path)
    except ConfigError as e:
        raise StartError(str(e)) from None
    try:
        protocols = load_protocols(config.protocols)
    except SpecError as e:
        raise StartError(e.render()) from None
    except (EngineError, OSError, ImportError, AttributeError) as e:
        raise StartError(f"protocols: {e}") from None
    try:
        check_protocols(config, set(protocols))
    except ConfigError as e:
        raise StartError(str(e)) from None
    problems = []
    from .filters import filters

    registry = filters()
    for i, listener in enumerate(config.listeners):
        why = check_detectable([protocols[name] for name in listener.protocol])
        if why:
            problems.append(f"listeners[{i}].protocol: {why}")
        for j, entry in enumerate(listener.stream_filters):
            cls = registry[entry.name]
            f = cls(cls.Config.model_validate(entry.config))
            for name in listener.protocol:
                why = f.check(protocols[name])
                if why:
                    problems.append(f"listeners[{i}].stream_filters[{j}]: {entry.name}: {why}")
    if problems:
        raise StartError("\n".join(problems))
    return config, protocols


async def serve_config(config, protocols, ready=None) -> int:
    from .proxy import Proxy

    proxy = Proxy(config, protocols)
    try:
        await proxy.start()
    except OSError as e:
        log.error("%s", e.strerror or e)
        return 2
    for listener in proxy.listeners:
        log.info("listener %s on %s (%s)", listener.name, listener.config.address,
                 ", ".join(p.name for p in listener.protocols))  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(proxy)
    await stop.wait()
    log.info("draining (up to %d ms)", config.drain_timeout_ms)
    await proxy.drain(config.drain_timeout_ms / 1000)
    log.info("stopped")
    return 0


def main(path: str, workers: int = 1) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="protoc-x: %(message)s")
    if workers != 1:
        print("error: --workers: more than one worker is not supported yet", file=sys.stderr)
        return 2
    try:
        config, protocols = prepare(path)
    except StartError as e:
        text = str(e)
        print(
            f"error: {path}:\n{text}" if "\n" in text else f"error: {path}: {text}", file=sys.stderr
        )
        return 2
    install_loop()
    return asyncio.run(serve_config(config, protocols))
