"""A plug-in package as its author makes it and a user installs it: scaffolded by `protoc-x new`,
built into a wheel beside protoc-x's, both installed into a fresh venv outside the repository,
its own tests run there, its protocol loaded by `protoc-x run` through its entry point and
proxied to `protoc-x serve`, all as real processes on 127.0.0.1 started from an empty
directory; then the installed plug-in declaring a newer minor API, and another major, is refused.

The fresh venv gets the two wheels only (``--no-deps``): installing protoc-x's dependencies from
an index would take minutes. A ``.pth`` file in its site-packages appends the repository venv's
site-packages to ``sys.path`` for them. That directory also holds the checkout's editable
install, but Python runs the ``.pth`` files of site directories only, not of directories a
``.pth`` file adds, so its editable finder never activates: the ``protoc_x`` imported is the
wheel's (checked below), and importlib.metadata finds the wheel's dist-info first, sys.path
being in that order (checked too)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from protoc_x.demo import free_port, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).parents[2]
PLUGIN = (
    "plug-in 'demo' (protoc-x-demo 0.1.0) is refused: built for API {}; this protoc-x has API 1.0"
)

CONFIG = """\
drain_timeout_ms: 1000
listeners:
  - name: demo
    address: 127.0.0.1:{listen}
    protocol: demo
    route_config: main
route_configs:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes: [{{match: {{prefix: /}}, route: {{cluster: demo_servers}}}}]
clusters:
  - name: demo_servers
    endpoints: [127.0.0.1:{serve}]
"""


def run(
    cmd: list, cwd: Path, env: dict, code: int = 0, timeout: float = 240
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert (
        result.returncode == code
    ), f"{cmd}: exit {result.returncode}, not {code}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """(venv, its site-packages, the scaffold, an empty work dir, env) with protoc-x and the
    demo plug-in installed from their wheels."""
    base = tmp_path_factory.mktemp("plugin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("PROTOC_X_PURE", None)
    pip = [sys.executable, "-m", "pip"]
    # protoc-x's wheel, from a copy of its sources (a build in the checkout leaves build/ and
    # egg-info there), pure Python: the compiled build is tests/cli/test_wheel.py's
    source = base / "protoc-x"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "node_modules", ".hypothesis", "__pycache__", "*.so",
        "*.egg-info", "tests", "benchmarks"))  # fmt: skip
    dist = base / "dist"
    build_env = dict(env, PROTOC_X_PURE="1", PIP_CONSTRAINT=str(ROOT / "constraints.txt"))
    run(pip + ["wheel", "-q", "--no-deps", "-w", dist, source], base, build_env)
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], base, env)
    site = Path(
        run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            base, env).stdout.strip()
    )  # fmt: skip
    (site / "zz_protoc_x_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = dist.glob("protoc_x-*.whl")
    run(pip + ["--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel], base, env)
    env = dict(env, PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    # the installed protoc-x scaffolds the plug-in; its wheel is built and installed
    made = run(["protoc-x", "new", "demo", "-o", base / "protoc-x-demo"], base, env)
    scaffold = Path(made.stdout.strip())
    assert scaffold == base / "protoc-x-demo"
    run(pip + ["wheel", "-q", "--no-deps", "-w", dist, scaffold], base, env)
    (plugin_wheel,) = dist.glob("protoc_x_demo-*.whl")
    run(pip + ["--python", venv / "bin" / "python", "install", "-q", "--no-deps", plugin_wheel],
        base, env)  # fmt: skip
    work = base / "work"
    work.mkdir()
    return venv, site, scaffold, work, env


def test_the_venv_runs_the_wheels_not_the_checkout(fresh):
    venv, site, _, work, env = fresh
    script = (
        "import sys, importlib.metadata as m, protoc_x, protoc_x.runtime, protoc_x_demo\n"
        "(point,) = [p for p in m.entry_points(group='protoc_x.protocols')]\n"
        "print(protoc_x.__file__, protoc_x.runtime.__file__, protoc_x_demo.__file__)\n"
        "print(point.name, point.value, point.dist.name, point.dist._path)\n"
        "print(m.distribution('protoc-x')._path)\n"
        "print(*[f.__module__ for f in sys.meta_path])\n"
    )
    out = run([venv / "bin" / "python", "-c", script], work, env).stdout.split("\n")
    assert "__editable__" not in out[3], out[3]  # (the checkout's finder is not installed)
    for path in out[0].split():
        assert path.startswith(str(site)), out[0]
    name, value, dist, where = out[1].split()
    assert (name, value, dist) == ("demo", "protoc_x_demo.demo", "protoc-x-demo")
    assert where.startswith(str(site)), where
    assert out[2].startswith(str(site)), out[2]  # (not the checkout's editable dist-info)


def test_the_scaffolds_own_tests_pass_where_it_is_installed(fresh):
    venv, _, scaffold, _, env = fresh
    result = run(
        [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        scaffold,
        dict(env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"),
    )
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s", last), result.stdout


def test_run_loads_the_plugin_through_its_entry_point_and_proxies_it(fresh):
    _, _, scaffold, work, env = fresh
    ports = {"listen": free_port(), "serve": free_port()}
    (work / "proxy.yaml").write_text(CONFIG.format(**ports))
    assert run(["protoc-x", "check", "proxy.yaml"], work, env).stdout == "proxy.yaml: ok\n"
    request = bytes.fromhex((scaffold / "samples" / "request.hex").read_text())
    response = bytes.fromhex((scaffold / "samples" / "response.hex").read_text())
    decoded = run(["protoc-x", "decode", "demo", scaffold / "samples" / "request.hex", "--hex"],
                  work, env)  # fmt: skip
    assert '"method":"echo"' in decoded.stdout and '"request_id":1' in decoded.stdout
    procs = []
    try:
        for cmd in (
            ["protoc-x", "serve", "demo", "--listen", f"127.0.0.1:{ports['serve']}"],
            ["protoc-x", "run", "proxy.yaml"],
        ):
            procs.append(subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))  # fmt: skip
        wait_port(ports["serve"])
        wait_port(ports["listen"])
        with socket.create_connection(("127.0.0.1", ports["listen"]), timeout=10) as sock:
            for _ in range(3):  # (the same id again: each answered before the next is sent)
                sock.sendall(request)
                got = b""
                while len(got) < len(response):
                    chunk = sock.recv(len(response) - len(got))
                    assert chunk, f"the proxy closed the connection after {got!r}"
                    got += chunk
                assert got == response
        proxy = procs[1]
        proxy.send_signal(signal.SIGTERM)
        _, err = proxy.communicate(timeout=15)
        assert proxy.returncode == 0, err
        assert "listener demo on 127.0.0.1:%d (demo)" % ports["listen"] in err, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


def test_doc_and_dissector_of_the_plugins_name_take_the_spec_it_ships(fresh):
    """From an empty directory, `protoc-x dissector demo` finds demo.xproto beside the plug-in's
    installed codec: the same text the scaffold has, so the same dissector and page."""
    _, _, scaffold, work, env = fresh
    spec = scaffold / "src" / "protoc_x_demo" / "demo.xproto"
    for command, made in (("dissector", ["demo.lua"]), ("doc", ["demo.md", "demo.svg"])):
        shipped = run(["protoc-x", command, "demo", "-o", "by_name"], work, env)
        assert shipped.stdout.split() == [f"by_name/{m}" for m in made]
        run(["protoc-x", command, spec, "-o", "by_path"], work, env)
        for m in made:
            assert (work / "by_name" / m).read_bytes() == (work / "by_path" / m).read_bytes()
    missing = run(["protoc-x", "dissector", "nodemo", "-o", "x"], work, env, code=1)
    assert missing.stderr == "error: nodemo: no such file or directory\n"


@pytest.mark.parametrize("declared,shown", [("(1, 99)", "1.99"), ("(2, 0)", "2.0")])
def test_the_plugin_built_for_a_newer_minor_or_another_major_is_refused(fresh, declared, shown):
    _, site, _, work, env = fresh
    codec = site / "protoc_x_demo" / "demo.py"
    original = codec.read_text()
    ports = {"listen": free_port(), "serve": free_port()}
    (work / "refused.yaml").write_text(CONFIG.format(**ports))
    try:
        assert "API_VERSION = (1, 0)\n" in original
        codec.write_text(original.replace("API_VERSION = (1, 0)\n", f"API_VERSION = {declared}\n"))
        shutil.rmtree(codec.parent / "__pycache__", ignore_errors=True)
        want = "error: " + PLUGIN.format(shown)
        # (a proxy that starts instead would serve until killed: 30 s is plenty to refuse)
        refused = run(["protoc-x", "run", "refused.yaml"], work, env, code=2, timeout=30)
        assert refused.stderr.startswith(want), refused.stderr
        checked = run(["protoc-x", "check", "refused.yaml"], work, env, code=2)
        assert checked.stderr.startswith(want), checked.stderr
        served = run(["protoc-x", "serve", "demo", "--listen", f"127.0.0.1:{ports['serve']}"],
                     work, env, code=1)  # fmt: skip
        assert served.stderr.startswith(want), served.stderr
        for port in ports.values():  # (refused before anything listened)
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        codec.write_text(original)
        shutil.rmtree(codec.parent / "__pycache__", ignore_errors=True)
