from __future__ import annotations

import pytest

from p2p.config import P2PConfig
from p2p.fetch import FetchRequest
from p2p.storage.base import Cid

PEER = "16Uiu2HAm4Ms862Gnqafssgvik4JJ1LuqWMcKNipq4nm2UaoLRbeP"


def test_defaults_listen_on_loopback_with_no_bootstrap() -> None:
    config = P2PConfig()

    assert config.listen_multiaddr == "/ip4/127.0.0.1/tcp/0"
    assert config.bootstrap == ()


def test_bootstrap_multiaddr_with_peer_id_is_accepted() -> None:
    addr = f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"

    assert P2PConfig(bootstrap=(addr,)).bootstrap == (addr,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("listen_host", "localhost"),
        ("listen_port", 70000),
        ("bootstrap", ("/ip4/127.0.0.1/tcp/4001",)),
        ("bootstrap", ("not a multiaddr",)),
        ("fetch_timeout_s", 0),
        ("fetch_parallelism", 0),
        ("max_blob_size", 0),
        ("reconnect_min_s", 0),
        ("call_timeout_s", -1),
    ],
)
def test_bad_values_are_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        P2PConfig(**{field: value})  # type: ignore[arg-type]


def test_fetch_request_needs_providers() -> None:
    with pytest.raises(ValueError, match="`providers`"):
        FetchRequest(Cid("bafkreiabc"), (), 10)
