"""What ``protoc-x run`` does before the runtime starts: load the config, compile the specs it
names, and check everything the proxy would refuse, with nothing opened. The runtime never
imports the compiler; this module hands it a checked config and its protocols."""

from __future__ import annotations

import logging
import sys

from .diagnostics import SpecError
from .loader import protocols as load_all
from .runtime.config import ConfigError, check_protocols, load_config
from .runtime.engine import check_detectable
from .runtime.filters import filters


class StartError(Exception):
    """The proxy cannot start; the message says where (YAML path or file:line:col)."""


def prepare(path: str):
    """(config, protocols) or StartError — everything checked, nothing opened."""
    try:
        config = load_config(path)
    except ConfigError as e:
        raise StartError(str(e)) from None
    try:
        protocols = load_all(config.protocols)
    except SpecError as e:
        raise StartError(e.render()) from None
    except (ValueError, OSError, ImportError, AttributeError) as e:
        raise StartError(f"protocols: {e}") from None
    try:
        check_protocols(config, set(protocols))
    except ConfigError as e:
        raise StartError(str(e)) from None
    problems = []
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


def main(path: str, workers: int = 1) -> int:
    """``protoc-x run CONFIG``: check, then serve until SIGINT/SIGTERM and drain."""
    from .runtime.run import main as serve_main

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="protoc-x: %(message)s")
    if workers < 1:
        print("error: --workers: must be at least 1", file=sys.stderr)
        return 2
    try:
        config, protocols = prepare(path)
    except StartError as e:
        text = str(e)
        print(
            f"error: {path}:\n{text}" if "\n" in text else f"error: {path}: {text}", file=sys.stderr
        )
        return 2
    return serve_main(config, protocols, workers)
