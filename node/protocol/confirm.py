"""A member's own transactions under chain reorganisations: still on chain, or dropped and due again.

The node records a transaction's hash once it is mined (``submit_tx``, ``vote_tx`` in the state database)
and reads chain state ``[chain] confirmations`` blocks deep (:class:`ledger.client.RunsClient`). Until the
confirmed state shows the transaction's effect, each step asks the endpoint where it stands: mined or
pending, the member waits; dropped (a reorganisation removed its block and the pool did not take it back,
as anvil does), the nonce is resynchronised from the chain and the caller sends it again. The contract
refuses a second commit or vote of a member in a round, so a resend can never double one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.protocol.context import NodeContext

if TYPE_CHECKING:
    from ledger.types import TxResult

ON_CHAIN = "on-chain"
"""``submit_tx`` / ``vote_tx`` value when the chain showed the action done without a hash of ours."""


def tx_hex(result: TxResult) -> str:
    """Return a sent transaction's hash in hex, as the state database and the event log keep it."""
    return bytes(result.tx_hash).hex()


def still_on_chain(ctx: NodeContext, tx_hex: str | None, rnd: int, what: str) -> bool:
    """Whether the transaction ``tx_hex`` this member sent for ``what`` in round ``rnd`` still counts.

    ``True`` when it is mined or pending (wait for it to be confirmed) or when there is no hash to check
    (``ON_CHAIN``); ``False`` when there is none at all (``None``) or the endpoint no longer knows it, which
    is logged as ``round.tx_dropped`` and resynchronises this account's nonce for the resend.
    """
    if tx_hex is None:
        return False
    if tx_hex == ON_CHAIN:
        return True
    if ctx.client.transaction_state(bytes.fromhex(tx_hex)) != "dropped":
        return True
    ctx.log.event("round.tx_dropped", run=ctx.run_id, round=rnd, what=what, tx=tx_hex)
    ctx.client.resync_nonce()
    return False
