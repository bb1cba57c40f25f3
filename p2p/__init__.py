"""The peer-to-peer layer: libp2p host, signed gossip messages, blob exchange and content-addressed storage.

``p2p`` never imports ``ledger`` or ``training``; membership and other chain facts are passed in by the
caller as plain values or callables.

Modules
-------
identity
    A member's secp256k1 Ethereum key as its libp2p identity; peer id -> Ethereum address.
messages
    The versioned, strictly validated gossip messages (update, vote, heartbeat), at most 1 KiB each.
gossip
    One topic per run, the gossipsub parameters, and the topic validator (membership, freshness, replay).
guard
    Abuse control: per-peer rate limits, penalties and graylisting, admission of run members only.
router
    py-libp2p's pubsub and gossipsub with the guard wired in.
blob
    The ``/fedchain/blob/1.0.0`` stream protocol: framing, serving from a store, CID-verified receiving.
direct
    The ``/fedchain/direct/1.0.0`` stream protocol: one message to one chosen peer, checked as gossip is.
fetch
    Fetching one artifact from a list of providers, or a round's artifacts in parallel, with fallback.
reconnect
    Keeping bootstrap members connected, with bounded backoff.
config
    ``P2PConfig``: listen address, bootstrap peers, timeouts.
noise
    Noise sessions that read and write the socket in large chunks (py-libp2p's handshake, same wire format).
buffers
    ``ByteQueue``: the receive queue of both, which copies only what a read returns.
yamux
    A yamux muxer with a lean frame loop, 16 MiB windows and batched writes (same protocol).
host
    ``P2PNode``: the libp2p host behind a synchronous, thread-bridged API.
peer_process
    A standalone peer driven over stdin/stdout, for multi-process tests and ``bench/transfer.py``.
envelope
    Confidential artifacts: ChaCha20-Poly1305 payload, content key wrapped per reader (secp256k1 ECDH).
storage
    Content-addressed storage: the embedded store and the IPFS backend, with the same CIDs.
"""
