"""A standalone p2p peer driven over stdin/stdout, for multi-process tests and ``bench/transfer.py``.

Run ``python -m p2p.peer_process --key-hex … --run r --members 0xA,0xB …``. The peer prints one JSON
object per line on stdout: ``{"event": "ready", "peer_id", "address", "addrs"}`` once it listens, then
``{"event": "message", …}`` for every gossip message that passed the validator, and one reply per command.
Commands arrive as JSON lines on stdin:

``publish``  ``{"cmd": "publish", "type": "heartbeat"|"update"|"vote", "round": r, …fields}``
``put``      ``{"cmd": "put", "size": n, "seed": s}`` stores n pseudo-random bytes, replies with the CID
``fetch``    ``{"cmd": "fetch", "cid", "providers": [...], "max_size"}``, replies ``fetched``/``fetch_failed``
``fetch_many`` ``{"cmd": "fetch_many", "requests": [{"cid", "providers", "max_size"}, ...]}`` in parallel
``series``   ``{"cmd": "series", "count": n, "interval": s, "type": …, "fields": {…}}`` publishes n messages
             (fresh nonces), one every s seconds in the background: a ``published`` event each, then
             ``series_done``
``peers``, ``stats`` (validator drop counters, the peer guard's drops and graylistings, the Noise bytes
received and sent, this process's CPU seconds), ``exit``

With ``--adversary`` three more commands exist, used only by tests and benchmarks of the defences:
``inject`` publishes raw bytes bypassing this peer's own validator (optionally with a forged signature),
``corrupt`` makes the store serve altered bytes for a CID, and ``flood`` (``{"cmd": "flood", "rate": r,
"seconds": s, "round": n, "distinct_s": d}``) signs r*d distinct heartbeats first (d defaults to s), then
sends r*s of them, cycling, at r per second straight to every connected peer (``flooding`` when it starts,
``flooded`` when done).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import trio
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from p2p.blob import default_cid_of
from p2p.config import P2PConfig
from p2p.errors import P2PError, StorageError
from p2p.fetch import FetchRequest
from p2p.gossip import topic_for
from p2p.host import P2PNode
from p2p.identity import normalize_address
from p2p.messages import AnyMessage, Heartbeat, UpdateAnnouncement, VoteAnnouncement, encode
from p2p.noise import TRAFFIC
from p2p.storage.base import Cid

_out_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one JSON event line to stdout."""
    line = json.dumps({"event": event, **fields}, separators=(",", ":"))
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class MemoryStore:
    """An in-memory content-addressed store (the harness's; nodes use ``p2p.storage``'s backends)."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._pins: set[str] = set()

    def put(self, data: bytes) -> Cid:  # noqa: D102
        cid = default_cid_of(data)
        self._blobs[cid] = bytes(data)
        return cid

    def get(self, cid: Cid, max_size: int | None = None) -> bytes:  # noqa: D102
        if cid not in self._blobs:
            raise StorageError(f"{cid} not in the store")
        data = self._blobs[cid]
        if max_size is not None and len(data) > max_size:
            raise StorageError(f"{cid} is {len(data)} bytes, over {max_size}")
        return data

    def has(self, cid: Cid) -> bool:  # noqa: D102
        return cid in self._blobs

    def pin(self, cid: Cid) -> None:  # noqa: D102
        self._pins.add(cid)

    def unpin(self, cid: Cid) -> None:  # noqa: D102
        self._pins.discard(cid)

    def list(self) -> Iterator[Cid]:  # noqa: D102
        return iter(Cid(c) for c in sorted(self._pins))

    def corrupt(self, cid: str) -> None:
        """Flip one byte of the content served under ``cid`` (adversarial tests only)."""
        data = bytearray(self._blobs[cid])
        data[len(data) // 2] ^= 0xFF
        self._blobs[cid] = bytes(data)


def pseudo_random_bytes(size: int, seed: int) -> bytes:
    """Deterministic incompressible test content."""
    return random.Random(seed).randbytes(size)


def _build_message(cmd: dict[str, Any], run: str, sender: str) -> AnyMessage:
    kind, fields = cmd["type"], dict(cmd.get("fields", {}))
    # JSON has only lists; the strict message models want tuples (an update's ``providers``)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    fields.update(run=fields.get("run", run), round=cmd.get("round", 0), sender=fields.get("sender", sender))
    if kind == "heartbeat":
        return Heartbeat(**fields)
    if kind == "update":
        return UpdateAnnouncement(**fields)
    if kind == "vote":
        return VoteAnnouncement(**fields)
    raise ValueError(f"unknown message type {kind!r}")


def _signed(node: P2PNode, run: str, data: bytes, forge_signature: bool = False) -> rpc_pb2.Message:
    """Build a pubsub message carrying ``data`` on ``run``'s topic, signed by this node (or forged)."""
    pubsub = node._pubsub
    if pubsub is None:
        raise P2PError("node not running")
    msg = rpc_pb2.Message(
        data=data, topicIDs=[topic_for(run)], from_id=pubsub.my_id.to_bytes(), seqno=pubsub._next_seqno()
    )
    signature = node.identity.key_pair.private_key.sign(
        PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString()
    )
    if forge_signature:
        msg.data = data + b" "  # the signature now covers different bytes than the ones sent
    msg.key = node.identity.key_pair.public_key.serialize()
    msg.signature = signature
    return msg


async def _inject(node: P2PNode, run: str, data: bytes, forge_signature: bool) -> None:
    """Publish ``data`` on ``run``'s topic straight to the router, skipping our own validator."""
    msg = _signed(node, run, data, forge_signature)
    pubsub = node._pubsub
    if pubsub is None:
        raise P2PError("node not running")
    await pubsub.router.publish(pubsub.my_id, msg)


async def _flood(node: P2PNode, messages: list[rpc_pb2.Message], rate: float, total: int) -> int:
    """Send ``total`` of ``messages`` (cycling) at ``rate`` per second to every pubsub peer, 10 ms apart."""
    pubsub = node._pubsub
    if pubsub is None or not isinstance(pubsub.router, GossipSub):
        raise P2PError("node not running")
    router = pubsub.router
    start, sent = trio.current_time(), 0
    while sent < total:
        due = min(total, int((trio.current_time() - start) * rate) + 1)
        if due > sent:
            rpc = rpc_pb2.RPC(publish=[messages[i % len(messages)] for i in range(sent, due)])
            for peer_id in list(pubsub.peers):
                router.send_rpc(peer_id, rpc)
            sent = due
        await trio.sleep(0.01)
    return sent


class Peer:
    """The command loop around one :class:`P2PNode`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id: str = args.run
        self.members = {normalize_address(a) for a in args.members.split(",") if a}
        self.round = args.round
        self.store = MemoryStore()
        config = P2PConfig(
            listen_port=args.port, bootstrap=tuple(args.bootstrap), fetch_timeout_s=args.fetch_timeout
        )
        self.node = P2PNode(
            config, bytes.fromhex(args.key_hex), self.store, self._is_member, lambda _run: self.round
        )

    def _is_member(self, run_id: str, address: str) -> bool:
        return run_id == self.run_id and address in self.members

    def _on_message(self, message: AnyMessage) -> None:
        emit(
            "message",
            type=message.type,
            sender=message.sender,
            round=message.round,
            nonce=message.nonce,
            ts_ms=message.ts_ms,
            recv_ms=time.time_ns() // 1_000_000,
        )

    def handle(self, cmd: dict[str, Any]) -> bool:
        """Execute one command; returns ``False`` on ``exit``."""
        name = cmd.get("cmd")
        if name == "exit":
            return False
        if name == "publish":
            message = _build_message(cmd, self.run_id, self.node.address)
            self.node.publish(message)
            emit("published", nonce=message.nonce, type=message.type, id=cmd.get("id"))
        elif name == "put":
            data = pseudo_random_bytes(int(cmd["size"]), int(cmd.get("seed", 0)))
            cid = self.store.put(data)
            emit("stored", cid=cid, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        elif name == "fetch":
            start = time.perf_counter()
            try:
                data = self.node.fetch(Cid(cmd["cid"]), cmd["providers"], cmd.get("max_size"))
            except P2PError as exc:
                emit("fetch_failed", cid=cmd["cid"], error=str(exc))
            else:
                seconds = time.perf_counter() - start
                sha = hashlib.sha256(data).hexdigest()
                emit("fetched", cid=cmd["cid"], size=len(data), sha256=sha, seconds=seconds)
        elif name == "fetch_many":
            requests = [
                FetchRequest(Cid(r["cid"]), tuple(r["providers"]), int(r["max_size"]))
                for r in cmd["requests"]
            ]
            start = time.perf_counter()
            results = self.node.fetch_many(requests)
            summary = {
                cid: {"sha256": hashlib.sha256(v).hexdigest()} if isinstance(v, bytes) else {"error": str(v)}
                for cid, v in results.items()
            }
            emit("fetched_many", results=summary, seconds=time.perf_counter() - start)
        elif name == "peers":
            emit("peers", peers=self.node.peers())
        elif name == "stats":
            validator = self.node.validators.get(self.run_id)
            dropped = dict(validator.dropped) if validator else {}
            accepted = validator.accepted if validator else 0
            traffic = {"received": TRAFFIC.received, "sent": TRAFFIC.sent}
            emit(
                "stats",
                dropped=dropped,
                accepted=accepted,
                guard=self.node.guard.stats(),
                traffic=traffic,
                cpu_s=time.process_time(),
            )
        elif name == "series":
            threading.Thread(target=self._series, args=(cmd,), daemon=True).start()
        elif name == "set_round":
            self.round = int(cmd["round"])
            emit("round", round=self.round)
        elif name in ("inject", "corrupt", "flood") and self.args.adversary:
            if name == "flood":
                threading.Thread(target=self._flood, args=(cmd,), daemon=True).start()
            elif name == "corrupt":
                self.store.corrupt(cmd["cid"])
                emit("corrupted", cid=cmd["cid"])
            else:
                payload = cmd["data"].encode()
                self.node._call(_inject, self.node, self.run_id, payload, bool(cmd.get("forge_signature")))
                emit("injected", size=len(payload))
        else:
            emit("error", error=f"unknown command {name!r}")
        return True

    def _series(self, cmd: dict[str, Any]) -> None:
        count, interval = int(cmd["count"]), float(cmd["interval"])
        start = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, start + i * interval - time.monotonic()))
            try:
                message = _build_message(
                    {**cmd, "fields": dict(cmd.get("fields", {}))}, self.run_id, self.node.address
                )
                self.node.publish(message)
            except (P2PError, ValueError) as exc:
                emit("error", error=f"series: {type(exc).__name__}: {exc}")
                continue
            emit("published", nonce=message.nonce, type=message.type, id=cmd.get("id"), sent_ms=message.ts_ms)
        emit("series_done", id=cmd.get("id"), count=count)

    def _flood(self, cmd: dict[str, Any]) -> None:
        rate, seconds = float(cmd["rate"]), float(cmd["seconds"])
        total = int(rate * seconds)
        pool = min(total, int(rate * float(cmd.get("distinct_s", seconds))))
        round_ = int(cmd.get("round", self.round))
        messages = [
            _signed(
                self.node,
                self.run_id,
                encode(Heartbeat(run=self.run_id, round=round_, sender=self.node.address, phase="flood")),
            )
            for _ in range(max(1, pool))
        ]
        emit("flooding", start_ms=time.time_ns() // 1_000_000, count=total, distinct=len(messages), rate=rate)
        started = time.monotonic()
        sent = self.node._call(_flood, self.node, messages, rate, total, timeout=seconds * 3 + 30)
        emit("flooded", sent=sent, seconds=time.monotonic() - started)

    def serve(self) -> None:
        """Start the node, announce readiness, and run commands from stdin until ``exit`` or EOF."""
        self.node.start()
        self.node.wait_until_ready(60)
        self.node.subscribe(self.run_id, self._on_message)
        emit("ready", peer_id=self.node.peer_id, address=self.node.address, addrs=self.node.listen_addrs)
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                if not self.handle(json.loads(line)):
                    break
            except (P2PError, ValueError, KeyError, TypeError) as exc:  # bad command: report, keep serving
                emit("error", error=f"{type(exc).__name__}: {exc}")


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m p2p.peer_process``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--key-hex", required=True, help="32-byte private key, hex")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bootstrap", action="append", default=[], help="multiaddr of a member (repeatable)")
    parser.add_argument("--run", default="run-1")
    parser.add_argument("--members", default="", help="comma-separated member addresses")
    parser.add_argument("--round", type=int, default=0)
    parser.add_argument("--fetch-timeout", type=float, default=30.0)
    parser.add_argument("--adversary", action="store_true", help="enable the inject/corrupt test commands")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _raise_exit)
    peer = Peer(args)
    try:
        peer.serve()
    except KeyboardInterrupt:
        pass
    finally:
        peer.node.stop(timeout=5)
        emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
