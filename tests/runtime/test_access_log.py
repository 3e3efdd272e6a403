"""Access logs as operators write them: Envoy-style format strings and JSON objects of them,
parsed back line by line against the requests sent; "-" is stdout, never the proxy's stderr;
SIGUSR1 reopens the file for rotation and loses no line."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from protoc_x.runtime.config import ConfigError, parse_config

from .harness import PROTOCOLS, client, free_port, proxy_running, run, simple_config, upstream
from .harness import no_errors_logged  # noqa: F401 (autouse: a test fails on any logged error)
from .test_pool import status
from .test_proxy_behaviour import bolt_request

ROOT = Path(__file__).parents[2]
BOLT = PROTOCOLS["bolt"]

EVERY = ("%START_TIME(%Y)% %LISTENER% %PROTOCOL% %SERVICE% %METHOD% %UPSTREAM_CLUSTER% "
         "%UPSTREAM_HOST% %RESPONSE_CODE% %PROTOCOL_STATUS% %DURATION% "
         "%DOWNSTREAM_REMOTE_ADDRESS% %BYTES_RECEIVED% %BYTES_SENT% %REQUEST_ID% "
         "%REQ(x-n)% %REQ(missing)% %SERVICE:3% [%START_TIME%]")  # fmt: skip


def with_log(port: int, up: int, log: dict) -> dict:
    return simple_config("bolt", port, [f"127.0.0.1:{up}"], listener_extra={"access_log": log})


@pytest.mark.parametrize(
    "log, message",
    [
        ({"text_format": "%NOPE%"}, "text_format: unknown command operator %NOPE%"),
        ({"text_format": "50% %SERVICE%"}, "text_format: '%' that starts no command operator"),
        ({"text_format": "%REQ%"}, "text_format: %REQ%: REQ needs a header name"),
        ({"text_format": "%SERVICE(x)%"}, "text_format: %SERVICE%: takes no argument"),
        ({"json_format": {"a": "%NOPE%"}}, "json_format.a: unknown command operator %NOPE%"),
        ({"json_format": {"a": 1}}, "json_format.a: expected a string"),
        ({"text_format": "%SERVICE%", "json_format": {"a": "%SERVICE%"}}, "not both"),
        ({"text_format": "%SERVICE%", "format": "json"}, "format json takes json_format"),
        ({"json_format": {"a": "%SERVICE%"}, "format": "text"}, "format text takes text_format"),
    ],
)
def test_bad_formats_are_refused_at_their_yaml_path(log, message, tmp_path):
    data = with_log(free_port(), free_port(), {"path": str(tmp_path / "a.log"), **log})
    with pytest.raises(ConfigError) as e:
        parse_config(data, tmp_path)
    text = "\n".join(e.value.lines())
    assert "listeners[0].access_log" in text and message in text, text


def test_text_format_with_every_operator_matches_the_requests(tmp_path):
    path = tmp_path / "a.log"
    up, port = free_port(), free_port()
    cfg = with_log(port, up, {"path": str(path), "text_format": EVERY})
    sent = []

    async def scenario():
        async with upstream("bolt", up), proxy_running(cfg):
            c = await client("bolt", port)
            local = c.conn.transport.get_extra_info("sockname")
            for n in range(1, 21):
                request = bolt_request(n, b"b" * n, service=f"svc.S{n % 3}", method=f"m{n}",
                                       **{"x-n": str(n)})  # fmt: skip
                answer = await c.call(request)
                assert status(answer) == 200
                sent.append((n, request, answer))
            return local

    local = run(scenario())
    lines = path.read_text().splitlines()
    assert len(lines) == len(sent)
    year = str(datetime.datetime.now(datetime.timezone.utc).year)
    for line, (n, request, answer) in zip(lines, sent):
        fields = line.split(" ")
        assert fields[:10] == [
            year, "main", "bolt", f"svc.S{n % 3}", f"m{n}", "up", f"127.0.0.1:{up}", "200", "0",
            fields[9],
        ], line  # fmt: skip
        assert 0 < float(fields[9]) < 5000
        assert fields[10] == f"{local[0]}:{local[1]}"
        assert int(fields[11]) == len(request.encode())  # the bytes the client sent
        assert int(fields[12]) == len(answer.encode())  # the bytes it got back
        assert fields[13] == str(n)  # the client's own id
        assert fields[14:17] == [str(n), "-", "svc"]
        stamp = re.fullmatch(r"\[(.*)\]", fields[17]).group(1)
        assert datetime.datetime.fromisoformat(stamp).tzinfo is not None


def test_json_format_keeps_types_and_parses_back(tmp_path):
    path = tmp_path / "a.jsonl"
    up, port = free_port(), free_port()
    fmt = {"svc": "%SERVICE%", "code": "%RESPONSE_CODE%", "ms": "%DURATION%", "n": "%REQ(x-n)%",
           "in": "%BYTES_RECEIVED%", "route": "%UPSTREAM_CLUSTER%/%METHOD%",
           "nothing": "%REQ(missing)%", "text": "code %RESPONSE_CODE%"}  # fmt: skip
    cfg = with_log(port, up, {"path": str(path), "json_format": fmt})
    sent = []

    async def scenario():
        async with upstream("bolt", up), proxy_running(cfg):
            c = await client("bolt", port)
            for n in range(1, 11):
                request = bolt_request(n, method=f"m{n}", **{"x-n": f"v{n}"})
                assert status(await c.call(request)) == 200
                sent.append((n, request))

    run(scenario())
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == len(sent)
    for record, (n, request) in zip(records, sent):
        assert record["svc"] == "com.acme.HelloService:1.0"
        assert record["code"] == 200 and isinstance(record["ms"], float)
        assert record["n"] == f"v{n}" and record["in"] == len(request.encode())
        assert record["route"] == f"up/m{n}" and record["nothing"] is None
        assert record["text"] == "code 200"


def proxy_process(cfg: dict, tmp_path: Path):
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.Popen(
        [sys.executable, "-m", "protoc_x.cli", "run", str(path)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_accepting(port: int) -> None:
    import socket

    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)


def test_sigusr1_reopens_the_log_and_rotation_loses_no_line(tmp_path):
    """Requests go on from several clients while the file is moved away and SIGUSR1 sent,
    three times (logrotate's create mode): every request is in exactly one of the files."""
    path = tmp_path / "access.log"
    up, port = free_port(), free_port()
    cfg = with_log(
        port, up, {"path": str(path), "json_format": {"n": "%REQ(x-n)%", "code": "%RESPONSE_CODE%"}}
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "protoc_x.cli", "serve", "bolt", "--listen", f"127.0.0.1:{up}"],
        cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    proxy = proxy_process(cfg, tmp_path)
    sent: list[str] = []
    stop = threading.Event()

    def load(k: int) -> None:
        async def calls():
            c = await client("bolt", port)
            i = 0
            while not stop.is_set():
                tag = f"{k}-{i}"
                assert status(await c.call(bolt_request(i + 1, **{"x-n": tag}))) == 200
                sent.append(tag)
                i += 1

        asyncio.run(calls())

    try:
        wait_accepting(port)
        wait_accepting(up)
        threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for rotation in range(3):
            time.sleep(0.3)
            path.rename(tmp_path / f"access.log.{rotation}")
            proxy.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        proxy.send_signal(signal.SIGTERM)
        out, err = proxy.communicate(timeout=20)
        server.terminate()
        server.wait(timeout=10)
    assert proxy.returncode == 0, err
    files = [tmp_path / f"access.log.{r}" for r in range(3)] + [path]
    per_file = [[json.loads(x) for x in f.read_text().splitlines()] for f in files]
    assert all(per_file), [len(p) for p in per_file]  # each file got lines
    logged = [r["n"] for records in per_file for r in records]
    assert len(sent) > 100
    assert sorted(logged) == sorted(sent), "every request logged once"
    assert all(r["code"] == 200 for records in per_file for r in records)
    assert out == "" and '"n":' not in err, "no access log line elsewhere"


def test_dash_is_stdout_and_never_the_proxys_own_log(tmp_path):
    up, port = free_port(), free_port()
    cfg = with_log(port, up, {"path": "-", "text_format": "ACCESS %REQ(x-n)% %RESPONSE_CODE%"})
    proxy = proxy_process(cfg, tmp_path)
    try:
        wait_accepting(port)

        async def calls():
            async with upstream("bolt", up):
                c = await client("bolt", port)
                for n in range(5):
                    assert status(await c.call(bolt_request(n + 1, **{"x-n": str(n)}))) == 200

        run(calls())
    finally:
        proxy.send_signal(signal.SIGTERM)
        out, err = proxy.communicate(timeout=20)
    assert out.splitlines() == [f"ACCESS {n} 200" for n in range(5)]
    assert "ACCESS" not in err and "listener main" in err
