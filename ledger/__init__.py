"""The chain layer: typed clients for fedchain's contracts, keys, and an event indexer.

``ledger`` never imports ``p2p`` or ``training``; the node passes plain data between them.
"""
