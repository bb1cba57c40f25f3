"""The peer-to-peer layer: libp2p host, signed gossip messages, blob exchange and content-addressed storage.

``p2p`` never imports ``ledger`` or ``training``; membership and other chain facts are passed in by the
caller as plain values or callables.
"""
