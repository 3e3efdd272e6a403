"""dubbo-ssl-python calls with Java-object arguments, in this process or as a separate client
process.

dubbo-ssl-python keeps one process-wide connection per "host:port" string, so every DubboClient of
a process shares one TCP connection. Several client *connections* therefore need several
processes:

    python -m tests.e2e.peer_dubbo_client HOST:PORT TAG THREADS CALLS

runs THREADS threads, each making CALLS calls (one DubboClient per thread, all at once), and
prints one JSON line per call: {"method": ..., "result": ...} or {"method": ..., "error": ...}.
Every call has its own method name (`call_method(tag)`), and sofa-rpc-node's test server answers
"ok:<method>:<argument count>", so each answer says which request it belongs to.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

SERVICE = "com.acme.DemoService"  # what tests/peers' sofa-rpc-node server serves
VERSION = "1.0.0"
GROUP = "protocx"
CONTEXT = {"timeout": "4000", "x-trace": "e2e"}


def call_method(tag: str) -> str:
    return "register_" + tag.replace("-", "_")


def java_args(tag: str) -> list[Any]:
    """Arguments for the call `tag`: Java objects (nested, with a class-definition reuse), a
    typed list of objects, a long, non-ASCII text, a double, a boolean. Deterministic in tag."""
    from dubbo_ssl.codec.encoder import Object

    seed = sum(tag.encode())

    def user(name: str, age: int, city: str) -> Any:
        return Object(
            "com.acme.User",
            {
                "name": name,
                "age": age,
                "home": Object("com.acme.Address", {"city": city, "zip": 310000 + age}),
                "tags": ["e2e", tag],
                "score": age / 4,
                "active": age % 2 == 0,
            },
        )

    owner = user(f"alice-{tag}", 20 + seed % 50, "杭州")
    team = [owner, user(f"bob-{tag}", 30 + seed % 40, "上海")]
    return [owner, team, (1 << 40) + seed, f"Grüße {tag} 世界", seed / 8, seed % 2 == 1]


def call(client: Any, tag: str, timeout: float = 5.0) -> dict[str, Any]:
    method = call_method(tag)
    try:
        result = client.call(method, java_args(tag), context=dict(CONTEXT), timeout=timeout)
    except Exception as exc:  # noqa: BLE001 (the library's error answers are exceptions)
        return {"method": method, "error": f"{type(exc).__name__}: {exc}"}
    return {"method": method, "result": result}


def run_threads(host: str, prefix: str, threads: int, calls: int) -> list[dict[str, Any]]:
    """THREADS DubboClients making CALLS calls each, all at the same time."""
    from dubbo_ssl.client import DubboClient

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        client = DubboClient(SERVICE, GROUP, version=VERSION, host=host)
        start.wait()
        for i in range(calls):
            outcome = call(client, f"{prefix}-{index}-{i}")
            with lock:
                results.append(outcome)

    workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    return results


def main(argv: list[str]) -> int:
    import logging

    logging.disable(logging.CRITICAL)  # the library logs every error answer with a traceback
    host, prefix, threads, calls = argv[0], argv[1], int(argv[2]), int(argv[3])
    for outcome in run_threads(host, prefix, threads, calls):
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
