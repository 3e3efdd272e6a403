"""``make demo``: compile the specs, then show the proxy carrying real traffic.

Starts three ``protoc-x serve`` upstreams (two bolt, one dubbo) and ``protoc-x run`` with one
listener that detects bolt and dubbo per connection; its routes send each service to its
cluster, bolt split 20/80 between the two bolt upstreams. Clients built from the generated
codecs send requests through it; the demo prints what went where and stops everything."""

from __future__ import annotations

import asyncio
import re
import signal
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protoc_x.runtime.api import StreamType

from .compiler import compile_all, write_all
from .diagnostics import SpecError
from .samples import SAMPLES

ROOT = Path(__file__).resolve().parent.parent
#: the built-in specs, wherever protoc-x is installed (specs/ in a checkout)
SPECS = Path(__file__).resolve().parent / "specs"

CONFIG = """\
drain_timeout_ms: 2000
listeners:
  - name: ingress
    address: 127.0.0.1:{listen}
    protocol: [bolt, dubbo]            # detected per connection from the first bytes
    route_config: main
route_configs:
  - name: main
    virtual_hosts:
      - name: hello                    # bolt: service header "com.acme.HelloService:1.0"
        domains: ["com.acme.HelloService:1.0"]
        routes:
          - match: {{prefix: /}}
            route:
              weighted_clusters: [{{name: hello_blue, weight: 20}}, {{name: hello_green, weight: 80}}]
      - name: echo                     # dubbo: interface from the hessian2 body
        domains: ["com.acme.HelloService"]
        routes:
          - match: {{path: /sayHello}}
            route: {{cluster: echo_dubbo}}
clusters:
  - name: hello_blue
    endpoints: [127.0.0.1:{blue}]
  - name: hello_green
    endpoints: [127.0.0.1:{green}]
  - name: echo_dubbo
    endpoints: [127.0.0.1:{dubbo}]
"""


_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on, below the kernel's ephemeral range: a port
    the kernel hands out (bind to 0) may become a client socket's local port before whoever
    asked binds it ("address already in use"), and a port from below that range never does.
    Never the same port twice in one process."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    while True:
        port = random.randrange(max(1024, low - 20000), low)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "protoc_x.cli", *args], cwd=tempfile.gettempdir(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


async def traffic(port: int, n_bolt: int, n_dubbo: int) -> list[str]:
    from protoc_x.runtime.client import Client
    from .loader import protocols as load_protocols

    protos = load_protocols()
    bolt, dubbo = protos["bolt"], protos["dubbo"]
    bolt_req = next(
        s.data for s in SAMPLES if s.protocol == "bolt" and s.name.startswith("request")
    )
    dubbo_req = next(
        s.data for s in SAMPLES if s.protocol == "dubbo" and s.name.startswith("request")
    )
    lines = []
    bc = await Client.connect(bolt, "127.0.0.1", port)
    dc = await Client.connect(dubbo, "127.0.0.1", port)
    pending = []
    for i in range(n_bolt):
        frame = bolt.decode(bolt_req)
        frame.set_request_id(i + 1)
        frame.set_body(b"bolt request %d" % i)
        pending.append(("bolt", frame, bc.send(frame)))
    for i in range(n_dubbo):
        frame = dubbo.decode(dubbo_req)
        frame.set_request_id(1000 + i)
        frame.set_header("x-demo", str(i))
        pending.append(("dubbo", frame, dc.send(frame)))
    ok = 0
    for name, request, fut in pending:
        answer = await asyncio.wait_for(fut, 10)
        good = (
            answer.get_stream_type() is StreamType.RESPONSE
            and answer.get_request_id() == request.get_request_id()
            and bytes(answer.get_body()) == bytes(request.get_body())
        )
        ok += good
        if len(lines) < 2 or (name == "dubbo" and len(lines) < 4):
            lines.append(
                f"  {name:5} id={answer.get_request_id():<5} status={answer.get_status()} "
                f"service={request.get_service()} method={request.get_method()} "
                f"body echoed={'yes' if good else 'NO'}"
            )
    lines.append(f"  {ok} of {len(pending)} answers matched their request by id and body")
    bc.close()
    dc.close()
    return lines if ok == len(pending) else lines + ["  FAILED"]


def main() -> int:
    t0 = time.perf_counter()
    checkout = (ROOT / "specs").is_dir() and (ROOT / "generated").is_dir()
    specs = ROOT / "specs" if checkout else SPECS
    try:
        compiled = compile_all([specs])
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return 1
    if checkout:  # a clone: refresh generated/ as `make build` would
        write_all(compiled, ROOT / "generated")
        where = "specs/ → generated/"
    else:  # installed: the package's generated modules are used; compile to show it works
        where = f"{specs} (built-in specs, compiled in memory)"
    names = ", ".join(c.name for c in compiled)
    print(
        f"protoc-x build {where}: {len(compiled)} codecs ({names}) in {time.perf_counter() - t0:.2f} s"
    )

    ports = {k: free_port() for k in ("listen", "blue", "green", "dubbo")}
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "demo.yaml"
            cfg.write_text(CONFIG.format(**ports))
            procs.append(
                (
                    "blue",
                    start(
                        [
                            "serve",
                            "bolt",
                            "--listen",
                            f"127.0.0.1:{ports['blue']}",
                            "--name",
                            "hello_blue",
                        ]
                    ),
                )
            )
            procs.append(
                (
                    "green",
                    start(
                        [
                            "serve",
                            "bolt",
                            "--listen",
                            f"127.0.0.1:{ports['green']}",
                            "--name",
                            "hello_green",
                        ]
                    ),
                )
            )
            procs.append(
                (
                    "dubbo",
                    start(
                        [
                            "serve",
                            "dubbo",
                            "--listen",
                            f"127.0.0.1:{ports['dubbo']}",
                            "--name",
                            "echo_dubbo",
                        ]
                    ),
                )
            )
            for key in ("blue", "green", "dubbo"):
                wait_port(ports[key])
            proxy = start(["run", str(cfg)])
            procs.append(("proxy", proxy))
            try:
                wait_port(ports["listen"])
            except RuntimeError:
                proxy.kill()
                print(proxy.communicate()[0], file=sys.stderr)
                raise
            print(
                f"upstreams: 2 × bolt (hello_blue :{ports['blue']}, hello_green :{ports['green']}), "
                f"1 × dubbo (echo_dubbo :{ports['dubbo']})"
            )
            print(f"proxy: one listener on 127.0.0.1:{ports['listen']} detecting bolt and dubbo")
            print(
                "sending 200 bolt requests (HelloService, split 20/80) and 30 dubbo requests through it:"
            )
            for line in asyncio.run(traffic(ports["listen"], 200, 30)):
                print(line)
            outputs = {}
            for name, proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
                out, _ = proc.communicate(timeout=10)
                outputs[name] = (proc.returncode, out)
            print("what went where (counted by each upstream):")
            served = {}
            for name in ("blue", "green", "dubbo"):
                m = re.search(r"served (\d+) requests", outputs[name][1])
                served[name] = int(m.group(1)) if m else -1
            total_bolt = served["blue"] + served["green"]
            print(
                f"  hello_blue  (bolt)  {served['blue']:4}  {100 * served['blue'] / max(total_bolt, 1):5.1f}%  (weight 20)"
            )
            print(
                f"  hello_green (bolt)  {served['green']:4}  {100 * served['green'] / max(total_bolt, 1):5.1f}%  (weight 80)"
            )
            print(f"  echo_dubbo  (dubbo) {served['dubbo']:4}")
            rc = outputs["proxy"][0]
            print(f"proxy drained on SIGTERM and exited with {rc}")
            procs.clear()
            if rc != 0 or total_bolt != 200 or served["dubbo"] != 30:
                print(outputs["proxy"][1], file=sys.stderr)
                return 1
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
    print("\nNext: `make test`; `protoc-x run CONFIG`; `protoc-x decode bolt FILE --roundtrip`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
