"""Members' public keys recovered from their signed join transactions, on py-evm and on anvil."""

from __future__ import annotations

import coincurve
import pytest

from ledger.pubkeys import PublicKeyError, member_public_key, recover_sender_key
from tests.fixtures.chain import ChainEnv


def test_join_transaction_yields_each_members_key(chain: ChainEnv) -> None:
    run = chain.new_run(members=2)
    for i in (1, 2):
        want = coincurve.PrivateKey(bytes(chain.accounts[i].key)).public_key.format(compressed=True)
        assert member_public_key(chain.client(0), run, chain.address(i)) == want


def test_stranger_and_tampered_transaction_are_refused(chain: ChainEnv) -> None:
    run = chain.new_run(members=1)
    with pytest.raises(PublicKeyError, match="not a member"):
        member_public_key(chain.client(0), run, chain.address(5))
    info = chain.client(0).member_info(run, chain.address(1))
    block = chain.w3.eth.get_block(int(info.join_block), full_transactions=True)
    tx = dict(next(t for t in block["transactions"] if t["from"] == chain.address(1)))
    assert len(recover_sender_key(tx)) == 33
    tx["nonce"] = int(tx["nonce"]) + 1  # a relay that misreports a field cannot substitute another key
    with pytest.raises(PublicKeyError, match="does not rebuild"):
        recover_sender_key(tx)
