"""What a person (or a test) sees of a node: its event log, the live terminal view and a run's status.

Modules
-------
events
    Event records and the listener interface the log emits to and the views consume; the terminal line.
eventlog
    :class:`~node.console.eventlog.EventLog`: one JSON object per line in ``<home>/node.jsonl``, plus the
    terminal console; :func:`~node.console.eventlog.read_events` reads a log back.
view
    :class:`~node.console.view.NodeView`: what a watcher should see, folded from event records.
progress
    The live terminal view of ``fedchain node start`` (rich) and the choice of console for its flags.
status
    A run's state as one JSON-ready dict, read from the chain only (``fedchain status``).
"""
