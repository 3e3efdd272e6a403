"""What ``protoc-x run`` and ``protoc-x check CONFIG`` do before the runtime starts: read the
config, compile the specs it names, and check everything the proxy would refuse, with nothing
opened. The runtime never imports the compiler; this module hands it a checked config and its
protocols."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .diagnostics import SpecError
from .loader import installed_protocols, load_path
from .runtime.api import PluginError
from .runtime.config import Config, ConfigError, read_config
from .runtime.filters import filters

#: what :func:`prepare` raises: every problem, each with its YAML path and line
StartError = ConfigError

CONFIG_SUFFIXES = (".yaml", ".yml")


def _load_protocols(installed: tuple[dict, dict], paths: list[tuple[str, Path]]):
    """(name → protocol, [(yaml_path, message)]): the ``installed`` protocols (built-in and
    plug-in ones, and where each comes from) and those of each spec or module, or why one
    could not be loaded (a spec's own file:line:col included)."""
    found, origin = dict(installed[0]), dict(installed[1])
    problems = []
    for where, path in paths:
        try:
            loaded = load_path(path)
        except SpecError as e:
            problems.append((where, f"does not compile:\n{e.render()}"))
            continue
        except Exception as e:  # a user's module may raise anything: say what, no traceback
            problems.append((where, f"cannot load {path}: {type(e).__name__}: {e}"))
            continue
        for proto in loaded:
            if proto.name in found:
                problems.append(
                    (where, f"protocol {proto.name!r} is defined twice ({origin[proto.name]})")
                )
            else:
                found[proto.name] = proto
                origin[proto.name] = str(path)
    return found, problems


def prepare(path: str | Path) -> tuple[Config, dict]:
    """(config, protocols) or :class:`ConfigError` with every problem — everything checked,
    nothing opened. :class:`PluginError` first when an installed plug-in (a protocol or a
    filter) is refused: it is not the config's fault, and every config would meet it."""
    filters()
    installed = installed_protocols()
    document = read_config(path)
    protocols, problems = _load_protocols(installed, document.protocol_paths())
    # A spec that failed to load defines names nobody knows: listener protocols are checked
    # only when every spec loaded.
    config = document.parse(None if problems else protocols, problems)
    return config, protocols


def report(error: ConfigError) -> None:
    for line in error.lines():
        print(line, file=sys.stderr)


def check(path: str) -> int:
    """``protoc-x check CONFIG``: ``FILE: ok`` and 0, or every error and 2."""
    try:
        prepare(path)
    except ConfigError as e:
        report(e)
        return 2
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


def watched(path: str | Path) -> list[Path]:
    """The files whose change ``protoc-x run --watch`` reloads for: the config, and the specs
    and modules it names (as the file says now)."""
    try:
        return [Path(path)] + [p for _, p in read_config(path).protocol_paths()]
    except ConfigError:
        return [Path(path)]


def main(path: str, workers: int = 1, watch: bool = False, log_level: str = "info") -> int:
    """``protoc-x run CONFIG``: check, then serve until SIGINT/SIGTERM and drain; SIGHUP (and
    with ``watch``, a change of the files) checks the config again and serves it if valid."""
    from .runtime.run import main as serve_main

    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, log_level.upper()), format="protoc-x: %(message)s"
    )
    if workers < 1:
        print("error: --workers: must be at least 1", file=sys.stderr)
        return 2
    try:
        config, protocols = prepare(path)
    except ConfigError as e:
        report(e)
        return 2
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return serve_main(
        config,
        protocols,
        workers,
        reload=lambda: prepare(path),
        watch=(lambda: watched(path)) if watch else None,
    )
