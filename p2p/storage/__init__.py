"""Content-addressed storage: one :class:`~p2p.storage.base.Store` interface, two backends.

Modules
-------
base
    The ``Store`` protocol and the ``Cid`` type.
"""
