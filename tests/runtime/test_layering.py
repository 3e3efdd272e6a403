"""The runtime never imports the compiler: protoc_x.start (the CLI) compiles specs and hands the
runtime its protocols, so a proxy process carries no parser, templates or formatter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
COMPILER = ("lark", "jinja2", "black", "protoc_x.parser", "protoc_x.compiler", "protoc_x.backends")


def test_runtime_sources_import_only_the_runtime_and_generated():
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            if module.startswith("protoc_x"):
                assert module.startswith(
                    ("protoc_x.runtime", "protoc_x.generated")
                ), f"{path.relative_to(ROOT)}:{node.lineno}: imports {module}"


def test_importing_every_runtime_module_loads_no_compiler():
    code = (
        "import pkgutil, sys, importlib, protoc_x.runtime as r\n"
        "for m in pkgutil.walk_packages(r.__path__, 'protoc_x.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "import protoc_x.generated.bolt\n"
        f"print(sorted(n for n in sys.modules if n.startswith({COMPILER!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, relative ones as ``.name``, under TYPE_CHECKING too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_the_stream_layer_knows_neither_the_proxy_nor_the_pool():
    """stream.py is what proxy.py and pool.py hand each other: it imports neither (the
    interfaces it needs of them are its own Protocols), and pool.py does not import proxy.py."""
    runtime = ROOT / "runtime"
    assert not imports_of(runtime / "stream.py") & {".proxy", ".pool"}
    assert ".proxy" not in imports_of(runtime / "pool.py")


def test_the_runtimes_objects_are_what_the_stream_layer_expects():
    import asyncio

    from protoc_x.runtime import stream
    from protoc_x.runtime.pool import UpstreamConnection
    from protoc_x.runtime.proxy import DownstreamConnection

    from .harness import PROTOCOLS, proxy_running, run, simple_config

    async def scenario():
        async with proxy_running(simple_config("bolt", 0, ["127.0.0.1:1"])) as proxy:
            cluster = proxy.clusters["up"]
            pool = cluster.pool(PROTOCOLS["bolt"], "127.0.0.1:1")
            down = DownstreamConnection(proxy.listeners[0])
            up = UpstreamConnection(pool, PROTOCOLS["bolt"])
            assert isinstance(down, stream.Downstream)
            assert isinstance(cluster, stream.Target)
            assert isinstance(pool, stream.Endpoint)
            assert isinstance(up, stream.Upstream)
            await asyncio.sleep(0)

    run(scenario())
