"""A lean read path for the views and logs a node reads many times a second: raw JSON-RPC plus eth_abi.

A waiting node polls the head every ``head_poll_s`` and reads the open round on every new block. Through
web3 each such read walks the middleware stack, re-validates the ABI call and hashes signatures (about 5 ms
of CPU on this 2-core machine); eight node processes polling together spent most of their round's
non-training CPU there. :class:`ChainReads` encodes each view's call data with the selector computed once,
sends one ``eth_call`` over a kept-alive HTTP connection (one per thread: ``http.client`` connections are
not thread-safe) and decodes the answer with eth_abi, normalised the way web3 returns it (checksummed
addresses, lists for arrays, tuples for structs, ``bytes`` for fixed bytes). Event logs (``eth_getLogs``)
are filtered by precomputed topics and decoded the same way. The answers are the same values; only the
CPU per call changes. Transactions and receipts still go through web3.

Failures keep the meaning the rest of :mod:`ledger` gives them: a connection failure or timeout is a
``ConnectionError`` (so :func:`ledger.tx.with_retry` retries it); a revert is decoded into its typed
:class:`~ledger.errors.ContractRevertError`; any other JSON-RPC error is a :class:`RpcReplyError`.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.errors import LedgerConfigError, LedgerError
from ledger.reverts import decode_revert

MAX_REPLY_BYTES = 16 << 20
"""Largest JSON-RPC answer read (a view's answer is a few KiB; a longer one is an endpoint fault)."""


class RpcReplyError(LedgerError):
    """The endpoint answered with a JSON-RPC error that is not a revert (or with a malformed reply)."""


@dataclass(frozen=True)
class MethodCalls:
    """Requests of one JSON-RPC method: how many, and their JSON bodies' bytes each way."""

    calls: int
    sent: int
    received: int


class CallCounter:
    """The JSON-RPC requests this process sent through :mod:`ledger`, by method (thread-safe).

    One per process, :data:`CALLS`: :class:`JsonRpc` and the web3 provider of :func:`ledger.chain.connect`
    record every request into it, so a node can say what it asked its endpoint per round. Bytes are the
    JSON bodies; HTTP headers (about 130 bytes a request and 200 an answer with anvil) are not counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, list[int]] = {}

    def record(self, method: str, sent: int, received: int) -> None:
        """Count one request of ``method`` with ``sent`` and ``received`` body bytes."""
        with self._lock:
            row = self._calls.setdefault(method, [0, 0, 0])
            row[0] += 1
            row[1] += sent
            row[2] += received

    def snapshot(self) -> dict[str, MethodCalls]:
        """Totals so far, by method."""
        with self._lock:
            return {m: MethodCalls(*row) for m, row in sorted(self._calls.items())}

    def since(self, earlier: dict[str, MethodCalls]) -> dict[str, MethodCalls]:
        """Totals since the :meth:`snapshot` ``earlier``, by method (methods without a request left out)."""
        out: dict[str, MethodCalls] = {}
        for method, now in self.snapshot().items():
            was = earlier.get(method, MethodCalls(0, 0, 0))
            if now.calls > was.calls:
                out[method] = MethodCalls(
                    now.calls - was.calls, now.sent - was.sent, now.received - was.received
                )
        return out


CALLS = CallCounter()
"""Every JSON-RPC request this process sent through :mod:`ledger` (:class:`CallCounter`)."""


class JsonRpc:
    """Minimal JSON-RPC 2.0 client over HTTP(S) with one kept-alive connection per thread.

    Parameters
    ----------
    url
        ``http://`` or ``https://`` endpoint.
    timeout
        Seconds for connecting and for each answer.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LedgerConfigError(f"`rpc_url` must be an http(s):// URL, got {url!r}")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ids = itertools.count(1)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []  # every thread's connection, for close()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.remove(conn)
            conn.close()

    def close(self) -> None:
        """Close every thread's connection (a later request opens a new one)."""
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the sockets go anyway
            self.close()

    def request(self, method: str, params: Sequence[Any]) -> Any:
        """Send one request and return its ``result``.

        Raises
        ------
        ConnectionError
            The endpoint could not be reached or did not answer (transient: retried by callers).
        ContractRevertError
            The call reverted (typed by its revert data).
        RpcReplyError
            Any other JSON-RPC error, or an answer that is not JSON-RPC.
        """
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        headers = {"Content-Type": "application/json"}
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile fails once: reconnect
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body.encode(), headers=headers)
                response = conn.getresponse()
                raw = response.read(MAX_REPLY_BYTES + 1)
                status = response.status
                break
            except (http.client.HTTPException, OSError) as exc:
                self._drop()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise ConnectionError(f"{method} to {self.url} failed: {exc}") from exc
        CALLS.record(method, len(body), len(raw))
        if len(raw) > MAX_REPLY_BYTES:
            self._drop()
            raise RpcReplyError(f"{method}: answer larger than {MAX_REPLY_BYTES} bytes")
        return _result(method, status, raw)


def _result(method: str, status: int, raw: bytes) -> Any:
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        if status >= 500:
            raise ConnectionError(f"{method}: HTTP {status}") from exc
        raise RpcReplyError(f"{method}: answer is not JSON (HTTP {status})") from exc
    if not isinstance(reply, dict):
        raise RpcReplyError(f"{method}: answer is not a JSON-RPC object")
    error = reply.get("error")
    if error is not None:
        data = error.get("data") if isinstance(error, dict) else None
        message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        if isinstance(data, str) and data.startswith("0x") or "revert" in message.lower():
            raise decode_revert(data if isinstance(data, str) else None)
        raise RpcReplyError(f"{method}: {message[:300]}")
    if "result" not in reply:
        raise RpcReplyError(f"{method}: answer has neither result nor error")
    return reply["result"]


def _normalise(abi: dict[str, Any], value: Any) -> Any:
    """Return an eth_abi value as web3 does: checksummed addresses, lists for arrays, tuples for structs."""
    kind: str = abi["type"]
    if kind.endswith("]"):
        inner = dict(abi, type=kind[: kind.rindex("[")])
        return [_normalise(inner, v) for v in value]
    if kind == "tuple":
        return tuple(_normalise(c, v) for c, v in zip(abi["components"], value, strict=True))
    if kind == "address":
        return to_checksum_address(value)
    return value


class ChainReads:
    """Calls a contract's view functions and reads its event logs through :class:`JsonRpc` (module docstring).

    Parameters
    ----------
    rpc
        The endpoint.
    address
        The contract address.
    abi
        The contract ABI (its ``view``/``pure`` functions are callable).
    """

    def __init__(self, rpc: JsonRpc, address: str, abi: Sequence[dict[str, Any]]) -> None:
        self.rpc = rpc
        self.address = to_checksum_address(address)
        self._views: dict[str, tuple[bytes, list[str], list[str], list[dict[str, Any]]]] = {}
        for fn in abi:
            if fn.get("type") == "function" and fn.get("stateMutability") in ("view", "pure"):
                self._views[fn["name"]] = (
                    function_abi_to_4byte_selector(fn),  # type: ignore[arg-type]
                    [collapse_if_tuple(i) for i in fn["inputs"]],
                    [collapse_if_tuple(o) for o in fn["outputs"]],
                    list(fn["outputs"]),
                )
        self._events: dict[str, _EventLayout] = {}
        for ev in abi:
            if ev.get("type") == "event":
                inputs = list(ev["inputs"])
                signature = f"{ev['name']}({','.join(collapse_if_tuple(i) for i in inputs)})"
                plain = [i for i in inputs if not i.get("indexed")]
                self._events[ev["name"]] = _EventLayout(
                    "0x" + keccak(text=signature).hex(),
                    [i for i in inputs if i.get("indexed")],
                    plain,
                    [collapse_if_tuple(i) for i in plain],
                )

    def call(self, name: str, *args: Any, block: str = "latest") -> Any:
        """Call view ``name`` with ``args``; one output is returned as itself, several as a list."""
        selector, inputs, outputs, output_abi = self._views[name]
        data = "0x" + (selector + abi_encode(inputs, list(args))).hex()
        result = self.rpc.request("eth_call", [{"to": self.address, "data": data}, block])
        if not isinstance(result, str) or not result.startswith("0x"):
            raise RpcReplyError(f"eth_call {name}: result is not hex data: {str(result)[:80]!r}")
        try:
            values = abi_decode(outputs, bytes.fromhex(result[2:]))
        except Exception as exc:  # a short or malformed answer (wrong address, no code there)
            raise RpcReplyError(f"eth_call {name}: cannot decode the answer: {exc}") from exc
        out = [_normalise(a, v) for a, v in zip(output_abi, values, strict=True)]
        return out[0] if len(out) == 1 else out

    def logs(
        self, event: str, filters: dict[str, Any], from_block: int, to_block: int | str = "latest"
    ) -> list[dict[str, Any]]:
        """Return ``event``'s logs in chain order as ``{"blockNumber", "args"}`` (web3's ``get_logs`` shape).

        ``filters`` gives values of indexed arguments (by name) that logs must match. Only events whose
        indexed arguments are static types are supported (all of ``Runs``'s are).
        """
        layout = self._events[event]
        topics: list[str | None] = [layout.topic0]
        for arg in layout.indexed:
            value = filters.get(arg["name"])
            topics.append(None if value is None else "0x" + abi_encode([arg["type"]], [value]).hex())
        while topics[-1] is None:
            topics.pop()
        params = {
            "address": self.address,
            "fromBlock": hex(from_block),
            "toBlock": to_block if isinstance(to_block, str) else hex(to_block),
            "topics": topics,
        }
        result = self.rpc.request("eth_getLogs", [params])
        if not isinstance(result, list):
            raise RpcReplyError(f"eth_getLogs {event}: result is not a list")
        return [_decode_log(event, layout, entry) for entry in result]

    def block_number(self) -> int:
        """``eth_blockNumber`` as an int."""
        result = self.rpc.request("eth_blockNumber", [])
        if not isinstance(result, str):
            raise RpcReplyError(f"eth_blockNumber: result is not a hex quantity: {str(result)[:80]!r}")
        try:
            return int(result, 16)
        except ValueError as exc:
            raise RpcReplyError(f"eth_blockNumber: result is not a hex quantity: {result[:80]!r}") from exc


@dataclass(frozen=True)
class _EventLayout:
    """An event's first topic and its indexed and plain (data) arguments, worked out once from the ABI."""

    topic0: str
    indexed: list[dict[str, Any]]
    plain: list[dict[str, Any]]
    plain_types: list[str]


def _decode_log(event: str, layout: _EventLayout, entry: Any) -> dict[str, Any]:
    """Decode one ``eth_getLogs`` entry of ``event`` into ``{"blockNumber", "args"}``."""
    try:
        topics = [bytes.fromhex(t[2:]) for t in entry["topics"]]
        if not topics or "0x" + topics[0].hex() != layout.topic0:
            raise ValueError("first topic is not the event's signature")
        args: dict[str, Any] = {}
        for arg, topic in zip(layout.indexed, topics[1:], strict=True):
            args[arg["name"]] = _normalise(arg, abi_decode([arg["type"]], topic)[0])
        values = abi_decode(layout.plain_types, bytes.fromhex(entry["data"][2:]))
        for arg, value in zip(layout.plain, values, strict=True):
            args[arg["name"]] = _normalise(arg, value)
        return {"blockNumber": int(entry["blockNumber"], 16), "args": args}
    except Exception as exc:  # a log that is not this event's shape: an endpoint fault
        raise RpcReplyError(f"eth_getLogs {event}: cannot decode a log: {exc}") from exc
