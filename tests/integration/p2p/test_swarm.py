"""Multi-process libp2p tests: four member peers (and adversaries) on loopback, real Noise/yamux/gossipsub."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.fixtures.p2p import PeerHandle, Swarm, member_address

pytestmark = pytest.mark.integration

SHA = "ab" * 32
CID = "bafkrei" + "a" * 52


def update_fields(nonce: str, providers: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"sha256": SHA, "cid": CID, "size": 1234, "nonce": nonce, "providers": list(providers)}


def wait_for_nonces(peer: PeerHandle, nonces: set[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not nonces <= {m["nonce"] for m in peer.messages()}:
        if time.monotonic() > deadline:
            missing = nonces - {m["nonce"] for m in peer.messages()}
            raise AssertionError(f"{peer.name} did not receive {sorted(missing)}\n{peer.tail()}")
        time.sleep(0.05)


def publish_until_received(sender: PeerHandle, receivers: list[PeerHandle], attempts: int = 15) -> str:
    """Publish heartbeats until every receiver got one (the mesh may still be forming); return its nonce."""
    for _ in range(attempts):
        nonce = secrets.token_hex(8)
        reply = sender.command(
            {"cmd": "publish", "type": "heartbeat", "fields": {"phase": "idle", "nonce": nonce}}, "published"
        )
        assert reply["event"] == "published", reply
        try:
            for receiver in receivers:
                wait_for_nonces(receiver, {nonce}, timeout=2.0)
        except AssertionError:
            continue
        return nonce
    raise AssertionError(f"no heartbeat from {sender.name} reached {[r.name for r in receivers]}")


def test_mesh_forms_and_every_announcement_reaches_every_node(p2p_swarm: Swarm) -> None:
    peers = p2p_swarm.peers
    publish_until_received(peers[0], peers)  # the mesh is usable end to end
    nonces = {peer.name: secrets.token_hex(8) for peer in peers}

    for peer, other in zip(peers, peers[1:] + peers[:1], strict=True):
        fields = update_fields(nonces[peer.name], providers=(other.ready["peer_id"],))
        reply = peer.command({"cmd": "publish", "type": "update", "round": 0, "fields": fields}, "published")
        assert reply["event"] == "published", reply

    for peer in peers:
        wait_for_nonces(peer, set(nonces.values()))
        received = {m["nonce"]: m for m in peer.messages()}
        for index, sender in enumerate(peers):
            assert received[nonces[sender.name]]["sender"] == member_address(index)
            assert received[nonces[sender.name]]["type"] == "update"


def test_non_member_and_tampered_messages_reach_no_handler(p2p_swarm: Swarm) -> None:
    peers = p2p_swarm.peers
    member_adversary = peers[3]
    outsider = p2p_swarm.spawn(9, adversary=True)  # a valid key that is not in the run's member list
    bad: dict[str, str] = {}

    def body(sender: str, nonce: str, round_: int = 0) -> str:
        bad[nonce] = sender
        fields = {"v": 1, "run": "run-1", "round": round_, "sender": sender, "nonce": nonce}
        fields.update(ts_ms=int(time.time() * 1000), type="heartbeat", phase="idle")
        return json.dumps(fields)

    outsider_addr = member_address(9)
    adversary_addr = member_address(3)
    # A non-member's correctly signed messages are dropped by the members' guards before validation.
    deadline = time.monotonic() + 30
    while not sum(guard_drops(peers[:3], "non-member peer")):
        assert time.monotonic() < deadline, "no member saw the outsider's messages"
        reply = outsider.command(
            {"cmd": "inject", "data": body(outsider_addr, secrets.token_hex(8))}, "injected"
        )
        assert reply["event"] == "injected", reply
        time.sleep(0.5)
    injections = [
        (member_adversary, body(member_address(0), secrets.token_hex(8)), False),  # claims another address
        (member_adversary, body(adversary_addr, secrets.token_hex(8)), True),  # signature does not match
        (member_adversary, body(adversary_addr, secrets.token_hex(8), round_=7), False),  # stale round
        (member_adversary, '{"v":1,"type":"heartbeat","run":"run-1"', False),  # malformed
        (member_adversary, body(adversary_addr, secrets.token_hex(8))[:-1] + ',"extra":1}', False),
    ]
    for sender, data, forge in injections:
        reply = sender.command({"cmd": "inject", "data": data, "forge_signature": forge}, "injected")
        assert reply["event"] == "injected", reply

    # A legitimate message from the same adversary arrives everywhere afterwards...
    marker = publish_until_received(member_adversary, peers[:3])
    # ...and the honest neighbours' validators report the drops by reason.
    deadline = time.monotonic() + 20
    wanted = {"sender mismatch", "stale round", "malformed message"}
    while True:
        reasons = set()
        for peer in peers[:3]:
            reasons |= set(peer.command({"cmd": "stats"}, "stats")["dropped"])
        if wanted <= reasons or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert wanted <= reasons

    for peer in peers[:3]:
        seen = {m["nonce"] for m in peer.messages()}
        assert marker in seen
        assert not seen & set(bad), f"{peer.name} handled dropped messages {seen & set(bad)}"
    assert outsider.messages() == []  # connected to every member, but no member sends it anything
    outsider.stop()


def guard_drops(peers: list[PeerHandle], reason: str) -> list[int]:
    """Each peer's count of messages its guard dropped for ``reason``."""
    return [int(peer.command({"cmd": "stats"}, "stats")["guard"]["dropped"].get(reason, 0)) for peer in peers]


def test_restarted_node_rejoins_and_receives_later_announcements(p2p_swarm: Swarm) -> None:
    peers = p2p_swarm.peers
    restarted = peers[2]
    port = int(restarted.ready["addrs"][0].split("/tcp/")[1].split("/")[0])
    restarted.stop()
    publish_until_received(peers[0], [peers[1], peers[3]])  # the mesh goes on without it

    restarted.argv[restarted.argv.index("--port") + 1] = str(port)  # same key, same address
    restarted.start()
    restarted.ready = restarted.wait_for(lambda e: e["event"] == "ready", 60)

    later = publish_until_received(peers[1], [restarted, peers[0], peers[3]])
    assert later in {m["nonce"] for m in restarted.messages()}
    # the others redial it: peer 0 bootstrapped nobody, yet its connection to the restarted peer is back
    deadline = time.monotonic() + 30
    while restarted.ready["peer_id"] not in peers[3].command({"cmd": "peers"}, "peers")["peers"]:
        assert time.monotonic() < deadline, "peer 3 did not reconnect to the restarted peer"
        time.sleep(0.2)


def test_corrupt_provider_is_detected_and_another_provider_used(p2p_swarm: Swarm) -> None:
    honest, corrupt, fetcher = p2p_swarm.peers[0], p2p_swarm.peers[3], p2p_swarm.peers[1]
    stored = honest.command({"cmd": "put", "size": 3_000_000, "seed": 11}, "stored")
    assert corrupt.command({"cmd": "put", "size": 3_000_000, "seed": 11}, "stored")["cid"] == stored["cid"]
    assert corrupt.command({"cmd": "corrupt", "cid": stored["cid"]}, "corrupted")["event"] == "corrupted"
    providers = [corrupt.ready["peer_id"], honest.ready["peer_id"]]

    only_corrupt = fetcher.command(
        {"cmd": "fetch", "cid": stored["cid"], "providers": providers[:1]}, "fetch_failed", timeout=60
    )
    fetched = fetcher.command(
        {"cmd": "fetch", "cid": stored["cid"], "providers": providers}, "fetched", timeout=60
    )

    assert only_corrupt["event"] == "fetch_failed"
    assert "hash to" in only_corrupt["error"]
    assert fetched["event"] == "fetched", fetched
    assert fetched["sha256"] == stored["sha256"]


def test_non_member_is_not_served(p2p_swarm: Swarm) -> None:
    provider = p2p_swarm.peers[0]
    stored = provider.command({"cmd": "put", "size": 1000, "seed": 5}, "stored")
    outsider = p2p_swarm.spawn(8)

    reply = outsider.command(
        {"cmd": "fetch", "cid": stored["cid"], "providers": [provider.ready["peer_id"]]}, "fetch_failed"
    )

    assert reply["event"] == "fetch_failed"
    assert "FORBIDDEN" in reply["error"]
    outsider.stop()


@pytest.mark.slow
def test_64_mib_blob_is_fetched_and_verified(p2p_swarm: Swarm) -> None:
    provider, fetcher = p2p_swarm.peers[0], p2p_swarm.peers[2]
    stored = provider.command({"cmd": "put", "size": 64 << 20, "seed": 64}, "stored", timeout=60)

    fetched = fetcher.command(
        {
            "cmd": "fetch",
            "cid": stored["cid"],
            "providers": [provider.ready["peer_id"]],
            "max_size": 64 << 20,
        },
        "fetched",
        timeout=120,
    )

    assert fetched["event"] == "fetched", fetched
    assert fetched["size"] == 64 << 20
    assert fetched["sha256"] == stored["sha256"]


def test_a_rounds_artifacts_are_fetched_in_parallel_with_fallback(p2p_swarm: Swarm) -> None:
    peers = p2p_swarm.peers
    fetcher, corrupt = peers[2], peers[3]
    stored = [
        peers[i].command({"cmd": "put", "size": 500_000 + i, "seed": 100 + i}, "stored") for i in (0, 1)
    ]
    bad = corrupt.command({"cmd": "put", "size": 500_000, "seed": 100}, "stored")
    corrupt.command({"cmd": "corrupt", "cid": bad["cid"]}, "corrupted")
    gone = "16Uiu2HAm4Ms862Gnqafssgvik4JJ1LuqWMcKNipq4nm2UaoLRbeP"  # a peer that is not on the network
    requests = [
        {"cid": stored[0]["cid"], "providers": [corrupt.ready["peer_id"], peers[0].ready["peer_id"]]},
        {"cid": stored[1]["cid"], "providers": [gone, peers[1].ready["peer_id"]]},
        {
            "cid": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
            "providers": [peers[0].ready["peer_id"]],
        },
    ]
    for request in requests:
        request["max_size"] = 1 << 20

    reply = fetcher.command({"cmd": "fetch_many", "requests": requests}, "fetched_many", timeout=120)

    results = reply["results"]
    assert results[stored[0]["cid"]] == {"sha256": stored[0]["sha256"]}
    assert results[stored[1]["cid"]] == {"sha256": stored[1]["sha256"]}
    assert "NOT_FOUND" in results[requests[2]["cid"]]["error"]
