"""redis-py (PyPI) → `protoc-x run` → two Debian redis-server processes, on 127.0.0.1.

The redis spec has no request id: the proxy's pipeline pool shares one upstream connection per
server among every client and matches answers by their place in line. A `hash:key` cluster
sends each command to the server its keys hash to (ketama, checked against uhashring, an
independent implementation); a command whose keys hash to both servers is answered with a Redis
error, never split."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
import redis
from uhashring import HashRing

from tests.peers.redis_peer import redis_server

from .peer_proxy import free_port, proxy_process

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def servers():
    with contextlib.ExitStack() as stack:
        yield [f"{h}:{p}" for h, p in (stack.enter_context(redis_server()) for _ in range(2))]


def config(port: int, endpoints: list[str], **cluster: object) -> dict:
    return {
        "drain_timeout_ms": 1000,
        "listeners": [
            {"name": "redis", "address": f"127.0.0.1:{port}", "protocol": "redis",
             "route_config": "main"}
        ],
        "route_configs": [
            {"name": "main", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "cache"}}]}]}
        ],
        "clusters": [
            {"name": "cache", "endpoints": endpoints, "lb_policy": "hash:key",
             "request_timeout_ms": 10000, **cluster}
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def proxy(servers, tmp_path_factory):
    port = free_port()
    with proxy_process(config(port, servers), tmp_path_factory.mktemp("redis")):
        yield port


@pytest.fixture
def client(proxy, servers):
    for endpoint in servers:
        direct(endpoint).flushall()
    c = redis.Redis(host="127.0.0.1", port=proxy, socket_timeout=20, protocol=2)
    yield c
    c.close()


_DIRECT: dict[str, redis.Redis] = {}


def direct(endpoint: str) -> redis.Redis:
    """A client of the server itself (one per server, kept for the module)."""
    if endpoint not in _DIRECT:
        host, _, port = endpoint.rpartition(":")
        _DIRECT[endpoint] = redis.Redis(host=host, port=int(port), socket_timeout=10, protocol=2)
    return _DIRECT[endpoint]


@pytest.fixture(scope="module", autouse=True)
def close_direct_clients():
    yield
    for c in _DIRECT.values():
        c.close()
    _DIRECT.clear()


def ring(servers: list[str]) -> HashRing:
    return HashRing(nodes=servers, hash_fn="ketama")


def keys_on(servers: list[str], endpoint: str, count: int, prefix: str) -> list[str]:
    """``count`` keys that hash to ``endpoint``."""
    r, out, i = ring(servers), [], 0
    while len(out) < count:
        key = f"{prefix}{i}"
        if r.get_node(key) == endpoint:
            out.append(key)
        i += 1
    return out


def test_commands_of_every_kind_and_each_key_on_the_server_its_hash_names(client, servers):
    assert client.ping() is True
    keys = [f"user:{i}" for i in range(60)]
    for i, key in enumerate(keys):
        assert client.set(key, f"value {i}") is True
    assert [client.get(k) for k in keys] == [f"value {i}".encode() for i in range(len(keys))]
    assert client.get("never set") is None
    assert client.incr("counter") == 1 and client.incr("counter", 41) == 42
    assert client.delete(keys[0]) == 1 and client.get(keys[0]) is None
    # lists and hashes
    assert client.rpush("list", "a", "b", "c") == 3
    assert client.lrange("list", 0, -1) == [b"a", b"b", b"c"]
    assert client.hset("hash", mapping={"f1": "1", "f2": "two"}) == 2
    assert client.hgetall("hash") == {b"f1": b"1", b"f2": b"two"}
    # a nested array in a reply, and a null inside it
    assert client.eval("return {1, {2, 'x'}, false}", 0) == [1, [2, b"x"], None]
    # an error reply of the server's own goes back as it came
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE "):
        client.lpush(keys[1], "x")
    # every key lives on exactly the server its hash names (asked of each server directly)
    r = ring(servers)
    for key in keys[1:] + ["counter", "list", "hash"]:
        held = [e for e in servers if direct(e).exists(key)]
        assert held == [r.get_node(key)], key
    assert {r.get_node(k) for k in keys} == set(servers)  # both servers were used


def test_multi_key_commands_on_one_server_and_refused_across_servers(client, servers):
    first, second = servers
    mine = keys_on(servers, first, 4, "a:")
    assert client.mset({k: k.upper() for k in mine}) is True
    assert client.mget(mine) == [k.upper().encode() for k in mine]
    assert all(direct(first).get(k) == k.upper().encode() for k in mine)
    assert client.exists(*mine) == 4
    # keys of both servers: refused with an error reply, nothing split or written
    theirs = keys_on(servers, second, 1, "b:")
    with pytest.raises(redis.ResponseError, match="different endpoints"):
        client.mget(mine[:1] + theirs)
    with pytest.raises(redis.ResponseError, match="different endpoints"):
        client.mset({mine[0]: "changed", theirs[0]: "new"})
    assert direct(first).get(mine[0]) == mine[0].upper().encode()
    assert direct(second).get(theirs[0]) is None
    with pytest.raises(redis.ResponseError, match="different endpoints"):
        client.delete(mine[1], theirs[0])
    assert client.delete(*mine[1:]) == 3  # all of one server: fine
    assert client.mget(mine) == [mine[0].upper().encode(), None, None, None]


def test_pipelines_of_a_thousand_commands_from_several_clients_at_once(proxy, client, servers):
    """Four clients, each a pipeline of 1,000 commands (no MULTI: keys of both servers), at
    once: every answer is the one its own command asked for, in order."""
    clients, per = 4, 1000
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(clients, timeout=30)

    def run(n: int) -> None:
        c = redis.Redis(host="127.0.0.1", port=proxy, socket_timeout=30, protocol=2)
        try:
            pipe = c.pipeline(transaction=False)
            for i in range(per // 2):
                pipe.set(f"p{n}:{i}", f"{n}/{i}")
                pipe.get(f"p{n}:{i}")
            start.wait()
            results[n] = pipe.execute()
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    for n in range(clients):
        expected = []
        for i in range(per // 2):
            expected += [True, f"{n}/{i}".encode()]
        assert results[n] == expected
    # each pipeline's keys went to the server their hash names, and one pipeline used both
    r = ring(servers)
    for n in range(clients):
        for i in range(0, per // 2, 25):
            key = f"p{n}:{i}"
            assert [e for e in servers if direct(e).exists(key)] == [r.get_node(key)], key
    assert {r.get_node(f"p0:{i}") for i in range(per // 2)} == set(servers)


def test_inline_commands_and_raw_pipelines_on_a_socket(proxy, client):
    """Inline commands (a line of words, as telnet sends them) are routed like arrays; many
    requests in one segment are answered in order."""
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as s:
        s.sendall(
            b"PING\r\nSET inline:k hello\r\nGET inline:k\r\n*2\r\n$3\r\nGET\r\n$8\r\ninline:k\r\n"
        )
        want = b"+PONG\r\n+OK\r\n$5\r\nhello\r\n$5\r\nhello\r\n"
        got = b""
        while len(got) < len(want):
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
        assert got == want


def commands_run(endpoint: str) -> dict[str, int]:
    """Calls of each command the server has run (INFO commandstats), by command name."""
    stats = direct(endpoint).info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def test_commands_that_would_change_a_shared_connection_are_answered_by_the_proxy(
    proxy, client, servers
):
    """The spec's ``answer when``: HELLO 3 (redis-py 8's default) gets Redis's own NOPROTO,
    so the client knows to speak RESP2; AUTH, SELECT, transactions, blocking commands and
    pub/sub get an error; QUIT gets OK. None reaches a server, and the clients sharing the
    upstream connections go on as before."""
    for endpoint in servers:
        direct(endpoint).config_resetstat()
    default = redis.Redis(host="127.0.0.1", port=proxy, socket_timeout=10)  # (protocol 3)
    with pytest.raises(redis.ResponseError, match="^NOPROTO protoc-x speaks RESP2"):
        default.ping()
    default.close()
    assert client.execute_command("HELLO", "2")[:2] == [b"server", b"redis"]  # sent on
    assert client.execute_command("SELECT", "0") is True  # the database it has: sent on
    refused = {
        ("AUTH", "secret"): "would change the connection",
        ("HELLO", "2", "SETNAME", "mine"): "would change the connection",
        ("SELECT", "1"): "would change the connection",
        ("CLIENT", "SETNAME", "mine"): "would change the connection",
        ("MULTI",): "transactions need a connection of their own",
        ("WATCH", "k"): "transactions need a connection of their own",
        ("BLPOP", "queue", "1"): "blocking commands",
        ("XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "events", "$"): "blocking commands",
        ("SUBSCRIBE", "news"): "pub/sub",
    }
    for command, why in refused.items():
        with pytest.raises(redis.ResponseError, match=f"^protoc-x: .*{why}"):
            client.execute_command(*command)
    # a transaction: MULTI is answered and its connection closed, so the commands the client
    # sent after it (at once, in one write) do not run outside the transaction
    with pytest.raises((redis.ResponseError, redis.ConnectionError)):
        with client.pipeline() as pipe:  # (MULTI/EXEC by default)
            pipe.set("t", "1").get("t").execute()
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as s:
        s.sendall(b"GET t\r\nMULTI\r\nSET t 1\r\nEXEC\r\n")
        got = b""
        while chunk := s.recv(4096):  # until the proxy closes the connection
            got += chunk
        assert (
            got
            == b"$-1\r\n-ERR protoc-x: transactions need a connection of their own; connections to redis are shared\r\n"
        )
    assert client.get("t") is None  # nothing of the transaction ran
    ran = {}
    for endpoint in servers:
        for name, calls in commands_run(endpoint).items():
            ran[name] = ran.get(name, 0) + calls
    assert ran.get("hello") == 1  # HELLO 2 alone
    for name in ("auth", "client|setname", "multi", "exec", "watch", "blpop", "xread", "subscribe"):
        assert name not in ran, name
    assert client.set("after", "all") is True and client.get("after") == b"all"
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as s:
        s.sendall(b"*1\r\n$4\r\nQUIT\r\n")
        assert s.recv(100) == b"+OK\r\n"
        assert s.recv(100) == b""  # and the proxy closed the connection
