"""Starting a node for one run and looping over its rounds until they are all finalised.

:func:`run_node` connects to the chain and the store, starts the p2p host, fetches and checks the run spec,
joins the run, loads the model and the local data, then loops over :func:`node.protocol.round.step`. The loop
is event-driven: after a step that did something (:class:`node.protocol.context.Step`) it steps again at once;
otherwise it waits for whichever comes first — an update or vote announcement on gossip (``ctx.loop.wake``), a
new block that changes the open round (the head is polled every ``head_poll_s``, the round read once per new
block), or ``poll_interval_s``, the upper bound on any wait.
Any error inside a step (an RPC outage, a revert, a missing artifact) is logged and retried with backoff;
the node never crashes on it and never loses local state. SIGINT / SIGTERM stop it after the current step
(or at once while it is still starting: see :class:`_Interrupt`).

Once per loop iteration it calls the unlearning hook ``node.unlearning.requests.process_pending(ctx)`` when
that module exists (owned by the unlearning engineer); otherwise the hook is a no-op. Its errors are logged
apart and never slow the round loop. After the run's last round the node stays up while the hook reports open
work (``NodeState.unlearning_open``), so a request filed late is still fulfilled.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.reverts import AlreadyMemberError, UnknownRunError
from ledger.types import RunId
from node.config import NodeConfig
from node.console.eventlog import EventLog
from node.console.progress import open_log
from node.errors import NodeError, RunMismatchError
from node.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from node.home import NodeHome
from node.protocol.context import LoopState, NodeContext, Step
from node.protocol.retrieval import Fetcher, Want
from node.protocol.round import observe, step
from node.protocol.state import NodeState
from node.runspec import MAX_SPEC_BYTES, RunSpec, RunSpecError
from p2p.storage import open_store

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ledger.client import RunsClient
    from p2p.host import P2PNode
    from p2p.storage.base import FileStore
    from p2p.storage.ipfs import IpfsStore

MAX_BACKOFF_S = 15.0
MEMBERS_REFRESH_S = 60.0
"""Seconds between two reads of the member list when no ``MemberJoined`` log asked for one sooner."""
MAX_INBOX = 10_000
"""Committee messages kept for the next step at most (the gossip rate limit bounds what arrives)."""


@dataclass(frozen=True)
class Chain:
    """The chain side of a node: a signing ``RunsClient`` and the signing account."""

    client: RunsClient
    account: LocalAccount


def open_chain(home: NodeHome, config: NodeConfig, *, latest: bool = False) -> Chain:
    """Decrypt the node's key and connect a signing ``RunsClient`` to the configured registry.

    It reads state ``[chain] confirmations`` blocks deep, unless ``latest`` (one-shot commands that read
    back what their own transaction just did, like ``fedchain run create``).
    """
    from ledger.chain import connect
    from ledger.client import RunsClient
    from ledger.keys import PassphraseSource, load_account

    if not config.chain.registry:
        raise NodeError("[chain] `registry` is not set: pass --registry or edit config.toml")
    identity = config.identity
    source = (
        PassphraseSource(file=home.resolve(identity.passphrase_file))
        if identity.passphrase_file
        else PassphraseSource(env=identity.passphrase_env)
    )
    account = load_account(home.resolve(identity.keystore), source)
    w3 = connect(config.chain.rpc_url)
    confirmations = 0 if latest else config.chain.confirmations
    client = RunsClient(w3, config.chain.registry, account, confirmations=confirmations)
    return Chain(client, account)


def open_stores(home: NodeHome, config: NodeConfig) -> tuple[FileStore, IpfsStore | None]:
    """Open the node's own store and the IPFS fallback store (or ``None``)."""
    from p2p.storage.ipfs import IpfsStore

    spec = config.storage.store
    own = open_store(home.store_path if spec == "local" else spec)
    same = spec.removeprefix("ipfs:") == config.storage.ipfs_api
    ipfs = IpfsStore(config.storage.ipfs_api) if config.storage.ipfs_api and not same else None
    return own, ipfs


def fetch_spec(client: Any, fetcher: Fetcher, run_id: int) -> RunSpec:
    """Fetch the run's spec by the CID on chain, check its sha256 and parse it.

    Raises
    ------
    RunMismatchError
        If the bytes do not hash to the on-chain ``specSha256``.
    """
    info = client.run_info(run_id)
    want = Want(info.spec_cid, info.spec_sha256.hex(), MAX_SPEC_BYTES, "spec", run_id, None)
    data, _ = fetcher.get(want)
    if hashlib.sha256(data).digest() != info.spec_sha256:
        raise RunMismatchError(f"run {run_id}: spec {info.spec_cid} does not match the on-chain sha256")
    return RunSpec.from_bytes(data)


def _unlearn_hook() -> Callable[[NodeContext], None]:
    """``node.unlearning.requests.process_pending`` if that module exists, else a no-op."""
    try:
        module = importlib.import_module("node.unlearning.requests")
    except ModuleNotFoundError as exc:
        if exc.name != "node.unlearning.requests":
            raise
        return lambda ctx: None
    hook: Callable[[NodeContext], None] = module.process_pending
    return hook


def _join(client: Any, run_id: int, address: str, log: EventLog) -> None:
    if client.member_info(run_id, address).is_member:
        log.event("node.joined", run=run_id, already=True)
        return
    try:
        tx = client.join(run_id)
        log.event("node.joined", run=run_id, tx=bytes(tx.tx_hash).hex())
    except AlreadyMemberError:
        log.event("node.joined", run=run_id, already=True)


def _on_message(ctx: NodeContext) -> Callable[[Any], None]:
    def handle(message: Any) -> None:
        kind = getattr(message, "type", "")
        if kind == "update":
            peers = ctx.loop.providers.setdefault(message.cid, [])
            for peer in message.providers:
                if peer not in peers:
                    peers.append(peer)
        if kind in ("update", "vote"):  # sent after its transaction was mined: the round may have moved on
            ctx.loop.wake.set()
        if kind in ("commit", "proposal", "committee_vote") and ctx.committee_size:
            if len(ctx.loop.inbox) < MAX_INBOX:  # checked by the next step (node.protocol.committee_round)
                ctx.loop.inbox.append(message)
            ctx.loop.wake.set()

    return handle


def _start_p2p(
    ctx_holder: dict[str, NodeContext], config: NodeConfig, key: bytes, store: FileStore
) -> P2PNode:
    from p2p.host import P2PNode

    p2p_config = config.p2p.p2p_config()

    def is_member(run: str, address: str) -> bool:
        ctx = ctx_holder.get("ctx")
        return ctx is not None and address.lower() in ctx.loop.members

    def current_round(run: str) -> int:
        ctx = ctx_holder.get("ctx")
        return ctx.loop.current_round if ctx is not None else 0

    node = P2PNode(p2p_config, key, store, is_member, current_round)
    node.start()
    node.wait_until_ready(30.0)
    return node


def run_node(
    home: NodeHome,
    config: NodeConfig,
    run_id: int,
    data_source: str,
    *,
    console: str = "human",
    stop: threading.Event | None = None,
    byzantine: tuple[str, float | None] | None = None,
) -> int:
    """Take part in run ``run_id`` until its rounds are finalised (or ``stop`` is set); return an exit code.

    Parameters
    ----------
    home, config
        The node home and its (possibly overridden) configuration.
    run_id
        The on-chain run id.
    data_source
        Local data (see :func:`node.protocol.model.load_local_data`).
    console
        ``human``, ``json`` or ``none``: what the event log prints on the terminal.
    stop
        Event that stops the loop (SIGINT / SIGTERM set it too when called from the main thread).
    byzantine
        Testing only: ``(attack, strength)`` this member applies to its own updates.
    """
    stop = stop or threading.Event()
    interrupt = _Interrupt(stop)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, interrupt)
    log = open_log(home.log_path, console=console, name=home.root.name)
    state = NodeState(home.state_path)
    p2p = None
    try:
        chain = open_chain(home, config)
        address = str(chain.account.address)
        # Join first: round 0's eligible set is fixed when it opens, so joining must not wait for imports.
        pending = _unconfirmed_run(chain.client, run_id)
        if _retry(log, stop, lambda: _join(chain.client, run_id, address, log), "join", pending) is None:
            return EXIT_INTERRUPTED
        own, ipfs = open_stores(home, config)
        holder: dict[str, NodeContext] = {}
        p2p = _start_p2p(holder, config, bytes(chain.account.key), own)
        log.event(
            "node.started",
            run=run_id,
            address=address,
            peer_id=p2p.peer_id if p2p is not None else None,
            listen=p2p.listen_addrs if p2p is not None else [],
            store=config.storage.store,
        )
        fetcher = Fetcher(own, state, p2p=p2p, ipfs=ipfs, events=log.event)
        spec = _retry(log, stop, lambda: fetch_spec(chain.client, fetcher, run_id), "fetch run spec", pending)
        if spec is None:
            return EXIT_INTERRUPTED
        # A KeyboardInterrupt raised inside a C extension's import (torch) can abort the process instead of
        # unwinding; so a signal during these imports only sets ``stop``, and is acted on right after them.
        interrupt.starting = False
        import transformers  # noqa: F401  (imported here, under the deferred signal, rather than mid-load)

        from node.protocol.model import ModelRuntime, load_local_data

        if stop.is_set():
            raise KeyboardInterrupt  # the signal came during the imports; starting stays disarmed
        interrupt.starting = True

        seed = int(hashlib.sha256(address.lower().encode()).hexdigest()[:8], 16)
        data = load_local_data(
            data_source,
            held_out_fraction=config.training.held_out_fraction,
            max_examples=config.training.max_examples,
            seed=seed,
            task=spec.train.task,
            model=spec.model.name_or_path,
            block_size=spec.train.max_len,
        )
        others = _eval_others(home, config, spec, seed)
        runtime = ModelRuntime(spec, device=config.training.device, threads=config.training.threads)
        runtime.check_recorded()  # the run's base model and round-0 state, or a RunSpecError naming both
        ctx = NodeContext(
            run_id=RunId(run_id),
            spec=spec,
            client=chain.client,
            address=address,
            fetcher=fetcher,
            p2p=p2p,
            runtime=runtime,
            data=data,
            state=state,
            log=log,
            home=home,
            config=config,
            byzantine=byzantine,
            eval_others=others,
            view_key=bytes(chain.account.key),
            committee_size=int(chain.client.run_info(RunId(run_id)).committee_size),
            loop=LoopState(stop=stop),
        )
        fetcher.providers = ctx.providers_of
        holder["ctx"] = ctx
        if p2p is not None:
            p2p.subscribe(ctx.run_key, _on_message(ctx))
        initial = runtime.initial_state()
        from training.merge import state_hash

        log.event(
            "node.ready",
            run=run_id,
            spec=spec.name,
            model=spec.model.name_or_path,
            params=runtime.flat_spec.numel,
            initial_sha=state_hash(initial),
            train_examples=len(data.train),
            held_out=len(data.held_out),
            eval_others=len(others),
        )
        interrupt.starting = False  # from here on a signal stops the loop after the current step
        if stop.is_set():
            return EXIT_INTERRUPTED
        return _loop(ctx, step, _unlearn_hook(), _round_changed)
    except KeyboardInterrupt:  # a signal while starting (see _Interrupt): nothing to finish, just clean up
        log.event("node.interrupted", run=run_id, stage="starting")
        return EXIT_INTERRUPTED
    except (NodeError, ValueError) as exc:  # configuration, key, spec or data problems: exit 2
        log.event("error", fatal=True, kind=type(exc).__name__, message=str(exc))
        return EXIT_USAGE
    except Exception as exc:  # anything else while starting (the loop itself never raises)
        log.event("error", fatal=True, kind=type(exc).__name__, message=str(exc))
        return EXIT_FAILURE
    finally:
        if p2p is not None:
            with contextlib.suppress(Exception):
                p2p.stop()
        log.event("node.stopped", run=run_id)
        state.close()
        log.close()


class _Interrupt:
    """SIGINT / SIGTERM handler: sets ``stop``; while the node is still starting, also interrupts it.

    Starting can block for long stretches that never look at ``stop`` (importing transformers and loading
    the model take tens of seconds on a loaded machine), so there the first signal raises
    ``KeyboardInterrupt`` and :func:`run_node` cleans up and exits at once. Nothing is half-done then: the
    join is a single transaction checked on chain at the next start, and SQLite rolls back an interrupted
    write. Once the round loop runs, a signal only sets ``stop``, and the loop exits after its current step.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.starting = True

    def __call__(self, signum: int, frame: object) -> None:
        self.stop.set()
        if self.starting:
            self.starting = False  # raise once: the clean-up that follows is not interrupted again
            raise KeyboardInterrupt


def _call_hook(ctx: NodeContext, hook: Callable[[NodeContext], None]) -> None:
    """Run the unlearning hook; its failures are logged and never slow down or stop the round loop."""
    try:
        hook(ctx)
    except Exception as exc:  # the hook retries on its next call
        ctx.log.event("unlearning.error", run=ctx.run_id, kind=type(exc).__name__, message=str(exc)[:500])


def _round_changed(ctx: NodeContext, head: int) -> bool:
    return observe(ctx, head)


def _loop(
    ctx: NodeContext,
    step: Callable[[NodeContext], Step],
    hook: Callable[[NodeContext], None],
    changed: Callable[[NodeContext, int], bool] | None = None,
) -> int:
    backoff = 0.0
    last_members = 0.0
    while not ctx.loop.stop.is_set():
        stepped = Step.WAITED
        try:
            if ctx.loop.watch.members_due or time.monotonic() - last_members > MEMBERS_REFRESH_S:
                ctx.loop.watch.members_due = False  # set again by a MemberJoined log (node watch)
                ctx.loop.members = {m.lower() for m in ctx.client.members(ctx.run_id)}
                last_members = time.monotonic()
            ctx.loop.wake.clear()  # what arrives from here on may be news to this step's successor
            stepped = step(ctx)
            _call_hook(ctx, hook)
            backoff = 0.0
            if stepped is Step.DONE and not ctx.state.unlearning_open(ctx.run_id):
                ctx.log.event("run.done", run=ctx.run_id, rounds=ctx.spec.rounds)
                return EXIT_OK
        except Exception as exc:  # never crash on a step: log, back off, retry from chain + state
            backoff = min(MAX_BACKOFF_S, max(1.0, backoff * 2))
            ctx.log.event(
                "error",
                run=ctx.run_id,
                round=ctx.loop.current_round,
                kind=type(exc).__name__,
                message=str(exc)[:500],
                retry_in_s=backoff,
            )
        if backoff > 0 or changed is None:
            pause = max(backoff, ctx.config.chain.poll_interval_s)
            _count_wait(ctx, pause)
            ctx.loop.stop.wait(pause)
        elif stepped is not Step.ACTED:
            _count_wait(ctx, wait_for_news(ctx, changed))
    return EXIT_INTERRUPTED


def _count_wait(ctx: NodeContext, seconds: float) -> None:
    """Add ``seconds`` to the open round's ``wait`` time, unless the state database refuses the write.

    This runs outside the step's error handling, so a database that cannot take a write (a full disk) must
    not end the loop here: the timing is only a figure, and the step that needs the database fails, is
    logged and retried with back-off like any other.
    """
    with contextlib.suppress(sqlite3.Error):
        ctx.state.add_timing(ctx.run_id, ctx.loop.current_round, "wait", seconds)


def wait_for_news(ctx: NodeContext, changed: Callable[[NodeContext, int], bool]) -> float:
    """Wait until gossip wakes the loop, a new block changes the open round, or the wait's bound passed.

    Returns the seconds waited. The bound is ``poll_interval_s``, or ``idle_poll_s`` while the last step
    found nothing owed (:attr:`node.protocol.watch.ChainWatch.idle`). The head is polled (one
    ``eth_blockNumber``) every ``head_poll_s`` once a block may be due, less often before
    (:class:`ledger.activity.BlockClock`); ``changed`` looks at each new head. A failing read ends the wait
    early: the next step retries it with backoff.
    """
    chain = ctx.config.chain
    started = time.monotonic()
    deadline = started + (chain.idle_poll_s if ctx.loop.watch.idle else chain.poll_interval_s)
    clock = ctx.loop.watch.head_clock(chain.head_poll_s)
    seen: int | None = None
    while not ctx.loop.stop.is_set():
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0 or ctx.loop.wake.wait(min(clock.delay(now), remaining)):
            break
        try:
            head = int(ctx.client.block_number())
            clock.seen(head, time.monotonic())
            if head != seen and changed(ctx, head):
                break
            seen = head
        except Exception:  # an RPC hiccup: let the step see (and report) it
            break
    return time.monotonic() - started


def _unconfirmed_run(client: RunsClient, run_id: int) -> Callable[[], bool]:
    """Whether ``run_id`` exists at the head while the confirmed block does not show it yet.

    With ``confirmations`` > 0 a node started right after ``createRun`` reads a chain on which the run
    does not exist yet: that is a wait, not an unknown run.
    """

    def pending() -> bool:
        if client.confirmations == 0:
            return False
        try:
            return 1 <= run_id <= client.run_count(latest=True)
        except Exception:  # the head cannot be read now: the next try asks again
            return True

    return pending


def _retry(
    log: EventLog,
    stop: threading.Event,
    call: Callable[[], Any],
    what: str,
    pending: Callable[[], bool] = lambda: False,
) -> Any:
    """Call until it succeeds (its value, ``True`` for ``None``), backing off; ``None`` if stopped.

    An unknown run ends the node, unless ``pending()`` says it exists but is not confirmed yet.
    """
    delay = 1.0
    while not stop.is_set():
        try:
            value = call()
            return True if value is None else value
        except (NodeError, ValueError) as exc:
            if isinstance(exc, RunMismatchError | RunSpecError):
                raise
            log.event("chain.retry", what=what, message=str(exc)[:300], retry_in_s=delay)
        except LookupError as exc:
            if isinstance(exc, UnknownRunError) and not pending():
                raise NodeError(f"run does not exist on this registry: {exc}") from exc
            log.event("chain.retry", what=what, message=str(exc)[:300], retry_in_s=delay)
        except Exception as exc:  # RPC / store outages while starting: keep trying
            log.event("chain.retry", what=what, message=str(exc)[:300], retry_in_s=delay)
        stop.wait(delay)
        delay = min(MAX_BACKOFF_S, delay * 2)
    return None


def _eval_others(home: NodeHome, config: NodeConfig, spec: RunSpec, seed: int) -> list[Any]:
    """Load the ``[training] eval_sources`` examples (SFT runs only: DPO runs score preference pairs)."""
    sources = config.training.eval_sources
    if not sources or getattr(spec.train, "task", "sft") != "sft" or not config.training.evaluate:
        return []
    from node.protocol.scoring import load_eval_sources, resolve_source

    return load_eval_sources(
        [resolve_source(s, home.root) for s in sources],
        max_examples=config.training.eval_max_examples,
        seed=seed,
    )
