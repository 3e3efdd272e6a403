"""protoc-x as a user installs it: the built wheel in a fresh venv outside the repository, used
from an empty directory. An editable install hides packaging bugs (a subpackage left out of the
wheel, data files read from the checkout, generic top-level names in site-packages); this does not.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from protoc_x.demo import wait_port
from protoc_x.loader import protocols
from protoc_x.runtime import COMPILED_MODULES
from protoc_x.runtime.api import StreamType
from protoc_x.runtime.client import Client
from protoc_x.samples import SAMPLES
from tests.runtime.harness import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).parents[2]

CONFIG = """\
drain_timeout_ms: 2000
protocols: [acme.xproto]               # a user's spec, compiled at start
admin: {{address: 127.0.0.1:{admin}}}
listeners:
  - name: ingress
    address: 127.0.0.1:{listen}
    protocol: [bolt, dubbo]
    route_config: main
    stream_filters:
      - name: local_rate_limit
        config: {{tokens_per_second: 100000, burst: 100000}}
      - name: fault
        config: {{delay: {{fixed_delay_ms: 1, percent: 10}}}}
      - name: header_mutation
        config: {{request_headers_to_add: [{{key: x-via, value: protoc-x}}]}}
      - name: node_labels
        config: {{labels_file: labels}}
  - name: acme
    address: 127.0.0.1:{acme}
    protocol: [acme]
    route_config: main
route_configs:
  - name: main
    virtual_hosts:
      - name: hello
        domains: ["com.acme.HelloService:1.0"]
        routes:
          - match: {{prefix: /, headers: [{{name: zone, exact: gz01}}]}}
            route: {{cluster: bolt_up}}
      - name: echo
        domains: ["com.acme.HelloService"]
        routes:
          - match: {{path: /sayHello}}
            route: {{cluster: dubbo_up}}
clusters:
  - name: bolt_up
    endpoints: [127.0.0.1:{bolt}]
  - name: dubbo_up
    endpoints: [127.0.0.1:{dubbo}]
"""


async def traffic(port: int, n: int) -> list[str]:
    """``n`` bolt and ``n`` dubbo requests through the proxy; what was wrong with each answer."""
    protos = protocols()
    problems = []
    for name in ("bolt", "dubbo"):
        proto = protos[name]
        sample = next(
            s.data for s in SAMPLES if s.protocol == name and s.name.startswith("request")
        )
        client = await Client.connect(proto, "127.0.0.1", port)
        pending = []
        for i in range(n):
            frame = proto.decode(sample)
            frame.set_request_id(i + 1)
            if name == "bolt":  # a dubbo body is hessian2 the server decodes: keep the sample's
                frame.set_body(b"bolt request %d" % i)
            pending.append((frame, client.send(frame)))
        for request, answer in pending:
            answer = await asyncio.wait_for(answer, 10)
            body = bytes(answer.get_body())
            if answer.get_stream_type() is not StreamType.RESPONSE:
                problems.append(f"{name}: {answer.get_stream_type()}")
            elif answer.get_request_id() != request.get_request_id():
                problems.append(f"{name}: id {answer.get_request_id()}")
            elif name == "bolt" and bytes(request.get_body()) != body:  # serve echoes the body
                problems.append(f"{name}: body {body!r}")
            elif name == "dubbo" and not (b"gz01" in body and b"protoc-x" in body):
                # dubbo's attachments travel in its body: the echo shows the filters' headers
                problems.append(f"dubbo: no node label or added header upstream: {body!r}")
        client.close()
    return problems


def run(cmd: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert (
        result.returncode == 0
    ), f"{cmd}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, an empty work dir, env): the wheel installed with the pinned dependencies."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # (Cython, which compiles the hot modules, at the pinned version in pip's build environment)
    env["PIP_CONSTRAINT"] = str(ROOT / "constraints.txt")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT], base, env)
    (wheel,) = dist.glob("protoc_x-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    if not os.environ.get("PROTOC_X_PURE"):  # the runtime's hot modules, compiled
        for module in COMPILED_MODULES:
            path = "protoc_x/runtime/" + module.replace(".", "/")
            assert any(
                n.startswith(path + ".") and n.endswith(".so") for n in names
            ), f"{module} is not compiled in the wheel"
        for spec in sorted((ROOT / "specs").glob("*.xproto")):  # every codec's typed scan
            path = f"protoc_x/typed/{spec.stem}."
            assert any(n.startswith(path) and n.endswith(".so") for n in names), path
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {
        "protoc_x",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }, tops
    for must in (
        "protoc_x/runtime/filters/fault.py",
        "protoc_x/runtime/filters/local_rate_limit.py",
        "protoc_x/runtime/fieldtypes/tars.py",
        "protoc_x/generated/bolt.py",
        "protoc_x/grammars/xproto.lark",
        "protoc_x/backends/python/templates/module.py.j2",
        "protoc_x/specs/dubbo.xproto",
        "protoc_x/backends/lua/core.lua",
        "protoc_x/runtime/fieldtypes/hessian2.lua",
    ):
        assert must in names, f"{must} is not in the wheel"
    venv = base / "venv"
    run([sys.executable, "-m", "venv", venv], base, env)
    bin_dir = venv / "bin"
    run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel],
        base,
        env,
    )
    work = base / "work"
    work.mkdir()
    env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return bin_dir, work, env


def test_site_packages_holds_only_the_project(installed):
    bin_dir, work, env = installed
    out = run(
        [
            bin_dir / "python",
            "-c",
            "import importlib.metadata as m; d = m.distribution('protoc-x');"
            "print('\\n'.join(str(f) for f in d.files))",
        ],
        work,
        env,
    ).stdout.split()
    tops = {f.split("/", 1)[0] for f in out if not f.startswith("..")}
    assert tops == {"protoc_x", "protoc_x-0.1.0.dist-info"}, tops
    # the installed package, not the checkout, is what runs
    where = run(
        [bin_dir / "python", "-c", "import protoc_x.runtime; print(protoc_x.runtime.__file__)"],
        work,
        env,
    )
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout, where.stdout
    # and its runtime is the compiled one (unless the suite runs on the Python source)
    running = run(
        [bin_dir / "python", "-c", "import protoc_x.runtime as r; print(r.compiled())"], work, env
    )
    assert running.stdout.strip() == str(not os.environ.get("PROTOC_X_PURE")), running.stdout
    # with every built-in protocol's typed scan in use
    typed = run(
        [bin_dir / "python", "-c", "from protoc_x.loader import builtin_protocols as b;"
         "print(sorted(n for n, p in b().items() if hasattr(p.scan, '__func__')))"],
        work, env,
    )  # fmt: skip
    expected = (
        []
        if os.environ.get("PROTOC_X_PURE")
        else sorted(p.stem for p in (ROOT / "specs").glob("*.xproto"))
    )
    assert typed.stdout.strip() == str(expected), typed.stdout


def test_build_a_spec_from_an_empty_directory(installed):
    bin_dir, work, env = installed
    spec = (
        (ROOT / "specs" / "xexample.xproto")
        .read_text()
        .replace("protocol xexample", "protocol acme")
    )
    (work / "acme.xproto").write_text(spec)
    run([bin_dir / "protoc-x", "build", "acme.xproto", "-o", "out"], work, env)
    check = run(
        [
            bin_dir / "python",
            "-c",
            "import sys; sys.path.insert(0, 'out'); import acme; print(acme.PROTOCOL.name)",
        ],
        work,
        env,
    )
    assert check.stdout.strip() == "acme"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_a_dissector_from_the_install_loads_in_tshark(installed):
    """`protoc-x dissector dubbo` of the installed package (the shipped spec and the Lua files
    are package data) writes a dissector tshark loads, whose hessian2 readers come from the
    field-type library; the same file as from the checkout's spec."""
    bin_dir, work, env = installed
    run([bin_dir / "protoc-x", "dissector", "dubbo", "-o", "lua"], work, env)
    shutil.copy(ROOT / "specs" / "dubbo.xproto", work / "dubbo.xproto")
    run([bin_dir / "protoc-x", "dissector", "dubbo.xproto", "-o", "copy"], work, env)
    assert (work / "lua/dubbo.lua").read_bytes() == (work / "copy/dubbo.lua").read_bytes()
    listed = run(
        ["tshark", "-G", "protocols", "-X", "lua_script:lua/dubbo.lua"], work, env
    )  # fmt: skip
    assert "dubbo (protoc-x)\tDUBBO\tdubbo" in listed.stdout, listed.stderr


def test_a_user_spec_with_its_request_id_in_a_json_header_builds_and_remaps(installed):
    """The json field type and a request id inside it, as the installed package has them."""
    bin_dir, work, env = installed
    (work / "remoting.xproto").write_text((ROOT / "tests" / "codec" / "remoting.xproto").read_text())  # fmt: skip
    run([bin_dir / "protoc-x", "build", "remoting.xproto", "-o", "out"], work, env)
    script = (
        "import sys, json; sys.path.insert(0, 'out'); import remoting\n"
        "h = json.dumps({'code': 10, 'flag': 0, 'opaque': 7, 'extFields': {'topic': 'T'}}).encode()\n"
        "rest = bytes([0]) + len(h).to_bytes(3, 'big') + h + b'body'\n"
        "f = remoting.PROTOCOL.decode(len(rest).to_bytes(4, 'big') + rest)\n"
        "print(f.get_request_id(), f.get_service())\n"
        "f.set_request_id(123456)\n"
        "g = remoting.PROTOCOL.decode(f.encode())\n"
        "print(g.get_request_id(), g.head_len, g.total)\n"
    )
    out = run([bin_dir / "python", "-c", script], work, env).stdout.split("\n")
    assert out[0] == "7 T"
    head = b'{"code":10,"flag":0,"opaque":123456,"extFields":{"topic":"T"}}'
    assert out[1].split() == ["123456", str(len(head)), str(4 + len(head) + 4)]


def test_check_and_run_every_filter_carrying_bolt_and_dubbo(installed):
    bin_dir, work, env = installed
    if not (work / "acme.xproto").exists():
        spec = (ROOT / "specs" / "xexample.xproto").read_text()
        (work / "acme.xproto").write_text(spec.replace("protocol xexample", "protocol acme"))
    (work / "labels").write_text('zone="gz01"\n')
    ports = {k: free_port() for k in ("listen", "acme", "admin", "bolt", "dubbo")}
    (work / "proxy.yaml").write_text(CONFIG.format(**ports))
    checked = run([bin_dir / "protoc-x", "check", "proxy.yaml"], work, env)
    assert checked.stdout.strip() == "proxy.yaml: ok", checked.stdout
    procs = []
    try:
        for name in ("bolt", "dubbo"):
            procs.append(
                subprocess.Popen(
                    [bin_dir / "protoc-x", "serve", name, "--listen", f"127.0.0.1:{ports[name]}"],
                    cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
            )
        for name in ("bolt", "dubbo"):
            wait_port(ports[name])
        proxy = subprocess.Popen(
            [bin_dir / "protoc-x", "run", "proxy.yaml"],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(proxy)
        wait_port(ports["listen"])
        # bolt reaches its cluster only through the route on node_labels' zone header
        assert asyncio.run(traffic(ports["listen"], 40)) == []
        proxy.send_signal(signal.SIGTERM)
        out, _ = proxy.communicate(timeout=15)
        assert proxy.returncode == 0, out
        assert "Traceback" not in out, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_demo_runs_from_the_install(installed):
    bin_dir, work, env = installed
    result = run([bin_dir / "python", "-m", "protoc_x.demo"], work, env)
    assert "230 of 230 answers matched" in result.stdout, result.stdout
    assert "built-in specs" in result.stdout, result.stdout


def test_without_a_c_compiler_the_wheel_is_the_python_runtime(tmp_path):
    """A machine with no working compiler still builds protoc-x: the compile is skipped with a
    warning and the wheel holds the runtime as Python only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("PROTOC_X_PURE", None)
    env.update(PIP_CONSTRAINT=str(ROOT / "constraints.txt"), CC="false", CXX="false")
    # a copy of the sources: pip builds in the tree, where build/ may hold an earlier compile
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "node_modules", ".hypothesis", "__pycache__", "*.so",
        "*.egg-info"))  # fmt: skip
    dist = tmp_path / "dist"
    result = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", dist, source],
                 tmp_path, env)  # fmt: skip
    (wheel,) = dist.glob("protoc_x-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith(".so")], names
    for module in COMPILED_MODULES:
        assert f"protoc_x/runtime/{module.replace('.', '/')}.py" in names
    assert "protoc-x: not compiled" in result.stdout + result.stderr
