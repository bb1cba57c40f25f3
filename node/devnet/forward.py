"""A TCP port forward from 127.0.0.1 in the root network namespace to a service inside another namespace.

Run as root by :meth:`node.devnet.wan.WanNetwork.forward` (``python -m node.devnet.forward NETNS HOST PORT
PARENT_PID MAX_LIFETIME_S``): it listens on ``127.0.0.1`` and a free port in the namespace it starts in,
prints ``{"event": "forward.ready", "port": P}``, then enters ``NETNS`` (``setns(2)``; the listening socket
stays where it was made) and relays each accepted connection to ``HOST:PORT`` there, one thread per
direction. The harness uses it to deploy contracts and to probe and read the services that run inside the
services namespace; the nodes themselves reach those services over the emulated links. It exits when its
parent dies, after ``MAX_LIFETIME_S`` seconds, or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


def enter_netns(name: str) -> None:
    """Move the calling thread (and the threads it starts later) into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _serve(client: socket.socket, host: str, port: int) -> None:
    try:
        upstream = socket.create_connection((host, port), timeout=10.0)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
    _pipe(upstream, client)
    client.close()
    upstream.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point (module docstring)."""
    netns, host, port, parent, lifetime = sys.argv[1:] if argv is None else argv
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    enter_netns(netns)
    print(json.dumps({"event": "forward.ready", "port": listener.getsockname()[1]}), flush=True)
    deadline = time.monotonic() + float(lifetime)
    listener.settimeout(0.5)
    while time.monotonic() < deadline and os.getppid() == int(parent):
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        client.settimeout(None)
        threading.Thread(target=_serve, args=(client, host, int(port)), daemon=True).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
