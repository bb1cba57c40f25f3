"""The chain layer: typed clients for fedchain's contracts, keys, and an event indexer.

Modules: ``chain`` (connect, dev accounts), ``deploy``, ``client`` (``RunsClient``), ``types``, ``tx``
(signing, nonces, retries), ``rpc`` (lean HTTP reads), ``reverts`` (typed custom errors), ``errors``, ``keys``
(keystores), ``pubkeys``, ``indexer`` (events into SQLite), ``eip712`` (committee-run digests, signing and
recovery) and ``committee`` (committee draw, quorum, bitmaps).

``ledger`` never imports ``p2p`` or ``training``; the node passes plain data between them.
"""
