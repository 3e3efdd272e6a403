"""python-binary-memcached through the proxy to two real memcached servers chosen by
consistent hashing on the key: get_multi's quiet GETKQs land on both servers and its final
GETK on one, so the proxy must send a NOOP barrier to the other for the batch to complete."""

from __future__ import annotations

import contextlib
import time

import bmemcached

from tests.peers.captures import memcached_server

from .harness import free_port, proxy_in_thread, simple_config


def test_get_multi_across_two_endpoints_completes():
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(memcached_server()) for _ in range(2)]
        port = free_port()
        cfg = simple_config(
            "memcached", port, [f"{h}:{p}" for h, p in servers],
            cluster_extra={"lb_policy": "hash:key", "request_timeout_ms": 5000},
        )  # fmt: skip
        with proxy_in_thread(cfg):
            client = bmemcached.Client([f"127.0.0.1:{port}"])
            keys = [f"key-{i}" for i in range(40)]
            for k in keys[:30]:
                assert client.set(k, f"value-of-{k}")
            # the keys really are spread over both servers
            direct = [bmemcached.Client([f"{h}:{p}"]) for h, p in servers]
            held = [sum(1 for k in keys[:30] if d.get(k) is not None) for d in direct]
            assert all(n > 0 for n in held) and sum(held) == 30, held
            t0 = time.monotonic()
            got = client.get_multi(keys)
            assert time.monotonic() - t0 < 2, "get_multi waited for a timeout: no barrier"
            assert got == {k: f"value-of-{k}" for k in keys[:30]}
            # the same again with every key a miss on one server and hits on the other
            assert client.get_multi(keys[30:]) == {}
            assert client.delete(keys[0]) and client.get(keys[0]) is None
            assert client.set("counter", 5)
            assert client.incr("counter", 2) == 7
            client.disconnect_all()


def test_consistent_hash_is_ketama_as_an_independent_implementation_computes_it():
    """ConsistentHash says it is ketama (libketama's ring, as memcached clients build it):
    uhashring's ketama mode (a separate implementation, from PyPI) must pick the same endpoint
    for every key, and a ring walked past an excluded endpoint must equal uhashring's ring
    without it."""
    from uhashring import HashRing

    from protoc_x.runtime.router import ConsistentHash

    endpoints = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211", "cache-4.acme:11211"]
    keys = [f"user:{i}" for i in range(5000)] + ["", "ключ", "🚀" * 40]
    ours = ConsistentHash(endpoints)
    theirs = HashRing(nodes=endpoints, hash_fn="ketama")
    assert [ours.pick(k) for k in keys] == [theirs.get_node(k) for k in keys]
    without = HashRing(nodes=[e for e in endpoints if e != "10.0.0.2:11211"], hash_fn="ketama")
    assert [ours.pick(k, exclude={"10.0.0.2:11211"}) for k in keys] == [
        without.get_node(k) for k in keys
    ]
