"""Recompute a run's models from the chain and the stored artifacts: rounds and unlearning replays.

The auditor and the unlearning hook share these pure steps:

* :func:`fetch_checked` / :func:`fetch_checked_file` — an artifact by CID from a store, as bytes or streamed
  into a file, checked against the sha256 on chain;
* :func:`named_included_set` — the ``(member, sha256)`` set a finalised round's winning vote named: the
  chain stores only its hash, so it is read from the ``ContributionAccepted`` events when someone recorded
  them, else found among the round's commits by hash (the full set first, then smaller subsets);
* :func:`merge_round` — ``training.merge.merge`` of a base state over exactly a given set of commits;
* :func:`replay_unlearning` — an unlearning request's model: from the model its first round started from,
  every finalised round it covers is merged again without the forgotten subjects' updates.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from eth_utils.address import to_checksum_address

from ledger.types import Submission, included_set_hash
from node.protocol.history import (
    INITIAL,
    ModelRef,
    RoundRecord,
    RunHistory,
    base_of_round,
    exclusions,
    replay_window,
)
from node.protocol.retrieval import file_sha256
from p2p.envelope import is_envelope
from p2p.errors import StorageError
from p2p.storage import Cid
from training.merge import MergeError, MergeSpec, ModelState, UpdateInput, decode_state, merge, state_hash

log = logging.getLogger(__name__)

MAX_SUBSET_SEARCH = 16
"""Most commits in a round for which the included set is searched by hash (2**n candidate subsets)."""

DEFAULT_MAX_ARTIFACT_BYTES = 1 << 30


class ArtifactReader(Protocol):
    """Where artifacts are read: any ``p2p.storage`` store, or a node's fetcher (store -> peers -> IPFS)."""

    def get(self, cid: Cid, max_size: int | None = None) -> bytes:
        """Return the bytes named by ``cid`` (verified against it), or raise."""
        ...

    def get_file(self, cid: Cid, dest: Path, max_size: int | None = None) -> int:
        """Write the content named by ``cid`` (verified against it) to ``dest``; return its size, or raise."""
        ...


class ReplayError(RuntimeError):
    """A model cannot be recomputed (an artifact is missing or wrong, or the named set cannot be found)."""


class ArtifactError(ReplayError):
    """An artifact is unavailable or its bytes do not match the hash the chain records."""


class ArtifactUnavailable(ArtifactError):  # noqa: N818 - a kind of ArtifactError, named for what it is
    """The store could not return an artifact at all (as opposed to returning other bytes)."""


@dataclass(frozen=True)
class RunSetup:
    """What recomputing a run's models needs besides the chain: its merge rules and initial state.

    Attributes
    ----------
    merge_spec
        The run's merge rules (from its run spec).
    initial
        The round-0 state (the run-seeded adapter initialisation).
    run_label
        The run id as written in every update's header (``training.codec.encode(run=...)``).
    clients_per_round
        The run's client sampling (:mod:`node.protocol.sampling`); ``None``: every eligible member submits.
    opener
        For a run whose artifacts are envelopes (``artifacts = "members"``):
        ``opener(data, round, kind, what) -> plaintext`` (``kind`` ``update`` or ``merged``, ``round``
        ``None`` for an unlearning result), raising ``ValueError`` when it cannot open them; ``None``: public.
    sealed
        The artifacts are envelopes and this reader has no key: nothing that needs plaintext can be checked.
    scratch
        Folder under which a replay streams a round's public updates and models into files (decoded through
        a memory map, removed when the round is merged); ``None``: the system's temporary folder.
    """

    merge_spec: MergeSpec
    initial: ModelState
    run_label: str
    clients_per_round: int | None = None
    opener: Callable[[bytes, int | None, str, str], bytes] | None = None
    sealed: bool = False
    scratch: Path | None = None

    @contextmanager
    def files(self) -> Iterator[Path]:
        """Yield a fresh folder under :attr:`scratch` for one round's artifact files; remove it on exit."""
        with tempfile.TemporaryDirectory(prefix="fedchain-replay-", dir=self.scratch) as tmp:
            yield Path(tmp)


_READ_ERRORS = (StorageError, ValueError, LookupError, OSError)
"""What a store raises when it cannot return content (a node's fetcher: ``ArtifactUnavailableError``)."""


def fetch_checked(
    store: ArtifactReader, cid: str, sha256: bytes, max_size: int = DEFAULT_MAX_ARTIFACT_BYTES
) -> bytes:
    """Return the bytes at ``cid``, checked to hash to ``sha256``.

    Raises
    ------
    ArtifactError
        If the store cannot return the content or its sha256 differs.
    """
    try:
        data = store.get(Cid(cid), max_size=max_size)
    except _READ_ERRORS as exc:
        raise ArtifactUnavailable(f"artifact {cid} is unavailable: {exc}") from exc
    found = hashlib.sha256(data).digest()
    if found != sha256:
        raise ArtifactError(f"artifact {cid} has sha256 {found.hex()}, the chain records {sha256.hex()}")
    return data


def fetch_checked_file(
    store: ArtifactReader,
    cid: str,
    sha256: bytes | None,
    dest: Path,
    max_size: int = DEFAULT_MAX_ARTIFACT_BYTES,
) -> Path:
    """Like :func:`fetch_checked`, but stream the content into ``dest`` and return it (never held whole).

    ``sha256`` ``None``: only the CID is checked (the store does that). A file whose sha256 differs is
    removed before the error is raised.
    """
    try:
        store.get_file(Cid(cid), dest, max_size=max_size)
    except _READ_ERRORS as exc:
        dest.unlink(missing_ok=True)
        raise ArtifactUnavailable(f"artifact {cid} is unavailable: {exc}") from exc
    if sha256 is not None:
        found, _ = file_sha256(dest)
        if found != sha256.hex():
            dest.unlink(missing_ok=True)
            raise ArtifactError(f"artifact {cid} has sha256 {found}, the chain records {sha256.hex()}")
    return dest


def load_state(store: ArtifactReader, ref: ModelRef, setup: RunSetup) -> ModelState:
    """Return the model ``ref`` names: the initial state, or fetched by CID and checked by state hash.

    A public model is streamed into a file of :meth:`RunSetup.files` and decoded from it; an envelope
    (``setup.opener``) is opened in memory.

    Raises
    ------
    ArtifactError
        If the artifact is unavailable, malformed or its state hash is not the one on chain.
    """
    if ref.kind == "initial" or ref.cid is None or ref.sha256 is None:
        return setup.initial
    try:
        if setup.opener is None:
            with setup.files() as tmp:
                path = fetch_checked_file(store, ref.cid, None, tmp / "state.safetensors")
                state = decode_state(path, flat_spec=setup.initial.spec, merge_spec=setup.merge_spec)
        else:
            data = store.get(Cid(ref.cid), max_size=DEFAULT_MAX_ARTIFACT_BYTES)
            if is_envelope(data):
                source = ref.source if ref.kind == "round" else None
                data = setup.opener(data, source, "merged", ref.describe())
            state = decode_state(data, flat_spec=setup.initial.spec, merge_spec=setup.merge_spec)
    except _READ_ERRORS as exc:
        raise ArtifactError(f"model of {ref.describe()} at {ref.cid}: {exc}") from exc
    if state_hash(state) != ref.sha256.hex():
        raise ArtifactError(
            f"model of {ref.describe()} at {ref.cid} hashes to {state_hash(state)}, "
            f"the chain records {ref.sha256.hex()}"
        )
    return state


def named_included_set(rec: RoundRecord) -> list[Submission]:
    """Return the commits a finalised round's winning vote included, in ascending member order.

    Raises
    ------
    ReplayError
        If the round is not finalised, or no set of its commits hashes to its ``includedSetHash``.
    """
    if rec.result is None:
        raise ReplayError(f"round {rec.round} is not finalised")
    target = rec.result.included_set_hash
    by_member: dict[str, Submission] = {to_checksum_address(s.member): s for s in rec.submissions}
    if rec.info.contributions_recorded:
        pairs = list(rec.accepted)
        if included_set_hash(pairs) != target or any(
            m not in by_member or by_member[m].sha256 != h for m, h in pairs
        ):
            raise ReplayError(f"round {rec.round}: recorded contributions do not match its commits")
        return [by_member[m] for m, _ in sorted(pairs, key=lambda p: int(p[0], 16))]
    subs = sorted(by_member.values(), key=lambda s: int(to_checksum_address(s.member), 16))
    if len(subs) > MAX_SUBSET_SEARCH:
        candidates: Sequence[Sequence[Submission]] = [subs]
    else:
        candidates = (list(c) for k in range(len(subs), -1, -1) for c in itertools.combinations(subs, k))  # type: ignore[assignment]
    for subset in candidates:
        if included_set_hash([(s.member, s.sha256) for s in subset]) == target:
            return list(subset)
    raise ReplayError(
        f"round {rec.round}: no set of its {len(subs)} commits hashes to includedSetHash {target.hex()}"
    )


def update_inputs(
    store: ArtifactReader,
    subs: Sequence[Submission],
    on_error: Callable[[Submission, str], None] | None = None,
    *,
    opener: Callable[[bytes, int | None, str, str], bytes] | None = None,
    files: Path | None = None,
) -> list[UpdateInput]:
    """Fetch and hash-check the updates of ``subs``; report unusable ones to ``on_error`` and skip them.

    With ``files`` (a folder, e.g. from :meth:`RunSetup.files`) and no ``opener`` each update is streamed
    into a file there and merged from it through a memory map, so a round's updates are never all in
    memory; else they are read as bytes. With an ``opener`` (:attr:`RunSetup.opener`) each update is an
    envelope: its ciphertext is checked against the chain's sha256 first, then it is opened in memory
    (which checks the plaintext's committed sha256). Without ``on_error`` the first bad artifact raises
    :class:`ArtifactError`.
    """
    out: list[UpdateInput] = []
    for sub in subs:
        data: bytes | Path
        try:
            if files is not None and opener is None:
                data = fetch_checked_file(store, sub.cid, sub.sha256, files / f"{len(out)}-{sub.cid}")
            else:
                data = fetch_checked(store, sub.cid, sub.sha256)
            if opener is not None and isinstance(data, bytes):
                what = f"update of {to_checksum_address(sub.member)} in round {int(sub.round)}"
                try:
                    data = opener(data, int(sub.round), "update", what)
                except ValueError as exc:
                    raise ArtifactError(str(exc)) from exc
        except ArtifactError as exc:
            if on_error is None:
                raise
            on_error(sub, str(exc))
            continue
        out.append(UpdateInput(to_checksum_address(sub.member), data, int(sub.num_samples)))
    return out


def merge_round(
    state: ModelState, inputs: Sequence[UpdateInput], setup: RunSetup, round: int, eligible: int
) -> tuple[ModelState, tuple[str, ...], Mapping[str, str]]:
    """Merge ``inputs`` into ``state`` for ``round`` with the run's rules: ``(state, included, rejected)``.

    ``eligible`` is the round's eligible member count as the chain records it (``RoundInfo.eligible``):
    SCAFFOLD's ``N``.
    """
    outcome = merge(state, inputs, setup.merge_spec, run=setup.run_label, round=round, eligible=eligible)
    return outcome.state, outcome.included, outcome.rejected


@dataclass(frozen=True)
class ReplayStep:
    """One round of an unlearning replay: who was merged and who was left out."""

    round: int
    included: tuple[str, ...]
    excluded: tuple[str, ...]
    state_sha256: str
    note: str = ""


@dataclass(frozen=True)
class ReplayResult:
    """An unlearning request's recomputed model and how it was obtained."""

    request_id: int
    base: ModelRef
    state: ModelState
    steps: tuple[ReplayStep, ...]

    @property
    def sha256(self) -> str:
        """Hex state hash of the recomputed model (what peers vote)."""
        return state_hash(self.state)


def replay_unlearning(
    history: RunHistory,
    request_id: int,
    store: ArtifactReader,
    setup: RunSetup,
    resolve: Callable[[ModelRef], ModelState] | None = None,
) -> ReplayResult:
    """Recompute an unlearning request's model: ``M(from-1) -> ... -> M(last)`` without the subjects.

    Starts from the model the request's first round started from (:func:`node.protocol.history.base_of_round`)
    and merges every finalised round of :func:`node.protocol.history.replay_window` again over the set its
    winning vote named minus the updates of every subject forgotten so far
    (:func:`node.protocol.history.exclusions`). A round whose remaining set the aggregator refuses (e.g. too
    few for Krum) keeps the state unchanged. ``resolve`` maps the starting model's reference to a state
    (default: fetched from ``store`` and hash-checked; the auditor passes its own recomputed models).

    Raises
    ------
    ReplayError
        If a needed artifact is missing or does not match the chain, or a round's set cannot be found.
    """
    first, rounds = replay_window(history, request_id)
    forgotten = exclusions(history, request_id)
    base = base_of_round(history, first) if first < len(history.rounds) else INITIAL
    state = resolve(base) if resolve is not None else load_state(store, base, setup)
    steps: list[ReplayStep] = []
    for r in rounds:
        rec = history.round(r)
        named = named_included_set(rec)
        keep = [s for s in named if forgotten.get(to_checksum_address(s.member), r + 1) > r]
        dropped = tuple(to_checksum_address(s.member) for s in named if s not in keep)
        note = ""
        try:
            with setup.files() as tmp:
                inputs = update_inputs(store, keep, opener=setup.opener, files=tmp)
                # N stays the round's eligible count: the subjects were members, their updates are left out
                state, included, _ = merge_round(state, inputs, setup, r, rec.info.eligible)
        except MergeError as exc:
            included, note = (), f"state kept: {exc}"
            log.warning("unlearning request %s, round %s: %s", request_id, r, note)
        steps.append(ReplayStep(r, included, dropped, state_hash(state), note))
    return ReplayResult(request_id, base, state, tuple(steps))
