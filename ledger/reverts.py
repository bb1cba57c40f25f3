"""Decode contract reverts into typed exceptions, one per custom error of ``IRuns``.

The 4-byte selector at the start of the revert data picks the class; the arguments are ABI-decoded with
the error's signature from the committed ABI. Works with revert data from anvil (JSON-RPC ``data``) and
from py-evm (web3's ``ContractCustomError.data``).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

from contracts import load_artifact
from ledger.errors import ContractRevertError


class UnknownRunError(ContractRevertError, LookupError):
    """``RunsUnknownRun``: no run has this id."""


class InvalidRunParamsError(ContractRevertError, ValueError):
    """``RunsInvalidQuorum`` / ``RunsInvalidWindow`` / ``RunsStartInPast`` / ``RunsZeroHash``."""


class NotGovernanceError(ContractRevertError, PermissionError):
    """``RunsNotGovernance``: only the run's governance may do this."""


class NotAllowedError(ContractRevertError, PermissionError):
    """``RunsNotAllowed``: the run is allowlisted and the account is not on the list."""


class AlreadyMemberError(ContractRevertError):
    """``RunsAlreadyMember``."""


class NotMemberError(ContractRevertError, PermissionError):
    """``RunsNotMember``: the account is not a member of the run."""


class NotEligibleError(ContractRevertError, PermissionError):
    """``RunsNotEligible`` / ``RunsNotEligibleForRequest``: joined after the round/request began."""


class MemberBannedError(ContractRevertError, PermissionError):
    """``RunsMemberBanned``: the member is the subject of an unlearning request."""


class RoundClosedError(ContractRevertError):
    """``RunsRoundClosed``: the round is already finalised or failed."""


class RoundNotOpenError(ContractRevertError):
    """``RunsRoundNotOpen``: the round has not opened yet."""


class WindowError(ContractRevertError):
    """Base of the window errors: the action is outside its window."""


class SubmitWindowNotOpenError(WindowError):
    """``RunsSubmitWindowNotOpen``."""


class SubmitWindowClosedError(WindowError):
    """``RunsSubmitWindowClosed``: a late submission."""


class VoteWindowNotOpenError(WindowError):
    """``RunsVoteWindowNotOpen``."""


class VoteWindowClosedError(WindowError):
    """``RunsVoteWindowClosed``."""


class AlreadySubmittedError(ContractRevertError):
    """``RunsAlreadySubmitted``: one update per member per round."""


class AlreadyVotedError(ContractRevertError):
    """``RunsAlreadyVoted`` / ``RunsAlreadyVotedUnlearning``: one vote per member."""


class LaterRoundVotedError(AlreadyVotedError):
    """``RunsLaterRoundVoted``: a late vote from a member that already voted in a later round."""


class RunCompletedError(ContractRevertError):
    """``RunsRunCompleted``: the run is complete; no round opens and nothing but a late vote is taken."""


class TooFewUpdatesError(ContractRevertError):
    """``RunsTooFewUpdates``: the round has fewer updates than the run's minimum."""


class RoundStillOpenError(ContractRevertError):
    """``RunsRoundStillOpen``: the round can still finalise, so it cannot be closed as failed."""


class RoundNotFinalizedError(ContractRevertError):
    """``RunsRoundNotFinalized``."""


class ContributionsError(ContractRevertError, ValueError):
    """``RunsContributionsAlreadyRecorded`` / ``RunsIncludedSet*`` / ``RunsIncludedNotSubmitter``."""


class NotSubjectOrGovernanceError(ContractRevertError, PermissionError):
    """``RunsNotSubjectOrGovernance``: unlearning is requested by the subject or governance only."""


class InvalidFromRoundError(ContractRevertError, ValueError):
    """``RunsInvalidFromRound``."""


class UnknownRequestError(ContractRevertError, LookupError):
    """``RunsUnknownRequest``."""


class RequestNotPendingError(ContractRevertError):
    """``RunsRequestNotPending``: the request is already fulfilled."""


class NotCommitteeRunError(ContractRevertError):
    """``RunsNotCommitteeRun``: the call needs a committee run and the run is an ordinary one."""


class CommitteeRunError(ContractRevertError):
    """``RunsCommitteeRun``: the run is a committee run; rounds close with ``finalizeCommitteeRound`` only."""


class CommitteeNotDrawnError(ContractRevertError):
    """``RunsCommitteeNotDrawn``: the round's start block is not mined yet, or its hash is too old."""


class SignersMalformedError(ContractRevertError, ValueError):
    """``RunsSignersMalformed``: signers not strictly ascending, or not one signature per signer."""


class NotCommitteeError(ContractRevertError, PermissionError):
    """``RunsNotCommittee``: a signer is not on the round's committee."""


class BadSignatureError(ContractRevertError, ValueError):
    """``RunsBadSignature``: a committee signature is malformed, high-s, or not by that member."""


class NoQuorumError(ContractRevertError):
    """``RunsNoQuorum``: fewer committee signatures than the committee's quorum."""


ERROR_CLASSES: dict[str, type[ContractRevertError]] = {
    "RunsUnknownRun": UnknownRunError,
    "RunsInvalidQuorum": InvalidRunParamsError,
    "RunsInvalidWindow": InvalidRunParamsError,
    "RunsStartInPast": InvalidRunParamsError,
    "RunsZeroHash": InvalidRunParamsError,
    "RunsNotGovernance": NotGovernanceError,
    "RunsNotAllowed": NotAllowedError,
    "RunsAlreadyMember": AlreadyMemberError,
    "RunsNotMember": NotMemberError,
    "RunsNotEligible": NotEligibleError,
    "RunsNotEligibleForRequest": NotEligibleError,
    "RunsMemberBanned": MemberBannedError,
    "RunsRoundClosed": RoundClosedError,
    "RunsRoundNotOpen": RoundNotOpenError,
    "RunsSubmitWindowNotOpen": SubmitWindowNotOpenError,
    "RunsSubmitWindowClosed": SubmitWindowClosedError,
    "RunsVoteWindowNotOpen": VoteWindowNotOpenError,
    "RunsVoteWindowClosed": VoteWindowClosedError,
    "RunsAlreadySubmitted": AlreadySubmittedError,
    "RunsAlreadyVoted": AlreadyVotedError,
    "RunsAlreadyVotedUnlearning": AlreadyVotedError,
    "RunsLaterRoundVoted": LaterRoundVotedError,
    "RunsRunCompleted": RunCompletedError,
    "RunsTooFewUpdates": TooFewUpdatesError,
    "RunsRoundStillOpen": RoundStillOpenError,
    "RunsRoundNotFinalized": RoundNotFinalizedError,
    "RunsContributionsAlreadyRecorded": ContributionsError,
    "RunsIncludedSetMismatch": ContributionsError,
    "RunsIncludedSetMalformed": ContributionsError,
    "RunsIncludedNotSubmitter": ContributionsError,
    "RunsNotSubjectOrGovernance": NotSubjectOrGovernanceError,
    "RunsInvalidFromRound": InvalidFromRoundError,
    "RunsUnknownRequest": UnknownRequestError,
    "RunsRequestNotPending": RequestNotPendingError,
    "RunsNotCommitteeRun": NotCommitteeRunError,
    "RunsCommitteeRun": CommitteeRunError,
    "RunsCommitteeNotDrawn": CommitteeNotDrawnError,
    "RunsSignersMalformed": SignersMalformedError,
    "RunsNotCommittee": NotCommitteeError,
    "RunsBadSignature": BadSignatureError,
    "RunsNoQuorum": NoQuorumError,
}

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)


@cache
def _selectors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for entry in load_artifact("Runs").abi:
        if entry["type"] != "error":
            continue
        types = [_abi_type(i) for i in entry["inputs"]]
        names = [i["name"] for i in entry["inputs"]]
        signature = f"{entry['name']}({','.join(types)})"
        table[keccak(text=signature)[:4]] = (entry["name"], types, names)
    return table


def _abi_type(param: dict[str, Any]) -> str:
    # Enums appear as uint8 in the ABI; tuples are not used in IRuns errors.
    return str(param["type"])


def decode_revert(data: bytes | str | None) -> ContractRevertError:
    """Turn revert data into its typed exception (never raises; unknown data gives the base class)."""
    raw = _to_bytes(data)
    if raw is None or len(raw) < 4:
        return ContractRevertError("", {}, "contract reverted without reason data")
    selector, body = raw[:4], raw[4:]
    known = _selectors().get(selector)
    if known is not None:
        name, types, names = known
        try:
            values = abi_decode(types, body)
        except Exception:  # malformed data from a foreign contract: keep the name, drop the arguments
            values = ()
        return ERROR_CLASSES.get(name, ContractRevertError)(name, dict(zip(names, values, strict=False)))
    if selector == _ERROR_STRING:
        (reason,) = abi_decode(["string"], body)
        return ContractRevertError("Error", {"reason": reason}, f"contract reverted: {reason}")
    if selector == _PANIC:
        (code,) = abi_decode(["uint256"], body)
        return ContractRevertError("Panic", {"code": code}, f"contract panicked with code {code:#x}")
    return ContractRevertError("", {"data": raw}, f"contract reverted with unknown error 0x{raw.hex()}")


def revert_data_of(exc: BaseException) -> bytes | None:
    """Extract revert data from a web3/provider exception (anvil and py-evm shapes), or ``None``.

    anvil's answer carries the data as a hex string (``exc.data``); py-evm raises with the raw bytes as an
    argument of an exception further down the ``__cause__`` chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (getattr(current, "data", None), *getattr(current, "args", ())):
            if isinstance(candidate, dict):
                candidate = candidate.get("data")
            raw = _to_bytes(candidate)
            if raw is not None:
                return raw
        current = current.__cause__ or current.__context__
    text = str(exc)
    literal = re.search(r"""b(['"]).*\1""", text)  # py-evm's eth_call puts repr(bytes) in the message
    if literal is not None:
        try:
            value = ast.literal_eval(literal.group(0))
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, bytes) and len(value) >= 4:
            return value
    match = re.search(r"0x[0-9a-fA-F]{8,}", text)
    return bytes.fromhex(match.group(0)[2:]) if match else None


def _to_bytes(value: object) -> bytes | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x") and len(value) >= 10:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None
