"""The lean JSON-RPC read path against a real loopback HTTP server that answers what each test scripts."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address

from contracts import load_artifact
from ledger.errors import ContractRevertError
from ledger.reverts import UnknownRunError
from ledger.rpc import MAX_REPLY_BYTES, ChainReads, JsonRpc, RpcReplyError

Reply = Callable[[dict[str, object]], bytes]
ADDRESS = "0x" + "11" * 20


@pytest.fixture
def server() -> Iterator[tuple[str, list[Reply], list[dict[str, object]]]]:
    """An HTTP server on 127.0.0.1; each request pops the next scripted reply (default: echo a result)."""
    replies: list[Reply] = []
    seen: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            out = (
                replies.pop(0)(body) if replies else json.dumps({"id": body["id"], "result": "0x1"}).encode()
            )
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", replies, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def answer(payload: object) -> Reply:
    return lambda body: json.dumps({"jsonrpc": "2.0", "id": body["id"], **payload}).encode()  # type: ignore[dict-item]


def test_block_number_and_a_view_are_decoded_like_web3(
    server: tuple[str, list[Reply], list[dict[str, object]]],
) -> None:
    url, replies, seen = server
    reads = ChainReads(JsonRpc(url), ADDRESS, load_artifact("Runs").abi)
    members = ["0x" + "ab" * 20, "0x" + "cd" * 20]
    replies += [
        answer({"result": "0x2a"}),
        answer({"result": "0x" + abi_encode(["address[]"], [members]).hex()}),
    ]

    assert reads.block_number() == 42
    got = reads.call("members", 7)

    assert got == [to_checksum_address(m) for m in members]  # a list of checksummed addresses, as web3 gives
    call = seen[1]
    assert call["method"] == "eth_call"
    params = call["params"]
    assert isinstance(params, list) and params[1] == "latest"
    assert params[0]["to"].lower() == ADDRESS and params[0]["data"].endswith(f"{7:064x}")


def test_a_revert_becomes_its_typed_error(server: tuple[str, list[Reply], list[dict[str, object]]]) -> None:
    url, replies, _ = server
    reads = ChainReads(JsonRpc(url), ADDRESS, load_artifact("Runs").abi)
    data = revert_data("RunsUnknownRun")
    replies.append(answer({"error": {"code": 3, "message": "execution reverted", "data": data}}))

    with pytest.raises(UnknownRunError):
        reads.call("runInfo", 9)


def revert_data(name: str) -> str:
    """The ABI-encoded custom error ``name`` of the Runs contract, its arguments all zero."""
    error = next(e for e in load_artifact("Runs").abi if e.get("type") == "error" and e["name"] == name)
    types = [collapse_if_tuple(i) for i in error["inputs"]]
    selector = function_abi_to_4byte_selector(dict(error, type="function"))  # type: ignore[arg-type]
    return "0x" + (selector + abi_encode(types, [0] * len(types))).hex()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (lambda body: b"<html>not json</html>", "not JSON"),
        (lambda body: b"[1, 2]", "not a JSON-RPC object"),
        (answer({"error": {"code": -32602, "message": "invalid params"}}), "invalid params"),
        (answer({}), "neither result nor error"),
        (answer({"result": 12}), "not hex data"),
        (answer({"result": "0x1234"}), "cannot decode"),
    ],
)
def test_malformed_answers_are_clear_errors(
    server: tuple[str, list[Reply], list[dict[str, object]]], reply: Reply, match: str
) -> None:
    url, replies, _ = server
    reads = ChainReads(JsonRpc(url), ADDRESS, load_artifact("Runs").abi)
    replies.append(reply)
    with pytest.raises(RpcReplyError, match=match):
        reads.call("runCount")
    replies.append(answer({"result": "0x" + abi_encode(["uint256"], [5]).hex()}))
    assert reads.call("runCount") == 5  # the next call on the same client still works


def test_an_oversized_answer_is_refused(server: tuple[str, list[Reply], list[dict[str, object]]]) -> None:
    url, replies, _ = server
    replies.append(lambda body: b" " * (MAX_REPLY_BYTES + 10))
    with pytest.raises(RpcReplyError, match="larger than"):
        JsonRpc(url).request("eth_blockNumber", [])


def test_a_dropped_keepalive_connection_is_reopened(
    server: tuple[str, list[Reply], list[dict[str, object]]],
) -> None:
    url, replies, seen = server
    rpc = JsonRpc(url)
    assert rpc.request("eth_blockNumber", []) == "0x1"
    conn = rpc._connection()  # the server forgets the connection: the next request must reconnect once
    assert conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)
    replies.append(answer({"result": "0x5"}))
    assert rpc.request("eth_blockNumber", []) == "0x5"
    assert len(seen) == 2
    rpc.close()


def test_an_unreachable_endpoint_is_a_transient_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ConnectionError):
            JsonRpc(f"http://127.0.0.1:{port}", timeout=2.0).request("eth_blockNumber", [])


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http"):
        JsonRpc("ws://127.0.0.1:8545")
    assert issubclass(RpcReplyError, Exception) and not issubclass(RpcReplyError, ConnectionError)
    assert not issubclass(ContractRevertError, ConnectionError)


def test_logs_are_filtered_by_topics_and_a_foreign_log_is_refused(
    server: tuple[str, list[Reply], list[dict[str, object]]],
) -> None:
    url, replies, seen = server
    reads = ChainReads(JsonRpc(url), ADDRESS, load_artifact("Runs").abi)
    replies += [answer({"result": []}), answer({"result": [{"topics": ["0x" + "00" * 32], "data": "0x"}]})]

    assert reads.logs("UpdateSubmitted", {"runId": 3, "round": 1}, 5, 9) == []
    params = seen[0]["params"]
    assert isinstance(params, list)
    query = params[0]
    assert (query["fromBlock"], query["toBlock"]) == ("0x5", "0x9")
    assert query["topics"][1:] == [f"0x{3:064x}", f"0x{1:064x}"]  # member (not filtered) is left out
    with pytest.raises(RpcReplyError, match="cannot decode a log"):
        reads.logs("UpdateSubmitted", {"runId": 3}, 0)
