"""Export a finalised merged adapter as a standard PEFT folder (``PeftModel.from_pretrained`` loads it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.confidential import ConfidentialError, merged_label, open_artifact
from node.errors import NodeError, RunMismatchError
from node.protocol.retrieval import Fetcher, Want
from p2p.envelope import is_envelope


def export_adapter(
    client: Any,
    fetcher: Fetcher,
    run_id: int,
    round: int | None,
    out: Path,
    view_key: Callable[[], bytes] | None = None,
) -> dict[str, Any]:
    """Write the merged adapter of ``round`` (default: the latest finalised round) of ``run_id`` to ``out``.

    The state is fetched by its on-chain CID (own store -> peers -> IPFS), decoded strictly and checked
    against the on-chain ``mergedSha256`` before anything is written. A merged state that is an envelope
    (a run with ``encrypt_merged``) is opened with ``view_key()`` (the node's own key, read only then).

    Raises
    ------
    NodeError
        If the round is not finalised (or no round is), or the artifact does not match the chain.
    """
    from ledger.types import RoundStatus
    from node.protocol.model import ModelRuntime
    from node.protocol.runner import fetch_spec
    from training.merge import StateFormatError, decode_state, state_hash

    spec = fetch_spec(client, fetcher, run_id)
    if round is None:
        current = int(client.run_info(run_id).current_round)
        finalized = [
            r for r in range(current + 1) if client.round_info(run_id, r).status == RoundStatus.FINALIZED
        ]
        if not finalized:
            raise NodeError(f"run {run_id} has no finalised round yet")
        round = finalized[-1]
    result = client.round_result(run_id, round)
    if result is None:
        raise NodeError(f"round {round} of run {run_id} is not finalised")
    runtime = ModelRuntime(spec)
    data, source = fetcher.get(
        Want(result.merged_cid, None, 16 * runtime.flat_spec.numel + (1 << 22), "merged", run_id, round)
    )
    if is_envelope(data):
        try:
            key = view_key() if view_key is not None else None
            data = open_artifact(
                data, key, merged_label(str(run_id), round), what=f"merged model {result.merged_cid}"
            )
        except ConfidentialError as exc:
            raise RunMismatchError(str(exc)) from exc
    try:
        state = decode_state(data, flat_spec=runtime.flat_spec, merge_spec=spec.merge_spec())
    except StateFormatError as exc:
        raise RunMismatchError(f"merged model {result.merged_cid}: {exc}") from exc
    sha = state_hash(state)
    if sha != result.merged_sha256.hex():
        raise RunMismatchError(
            f"merged model {result.merged_cid} hashes to {sha}, the chain says {result.merged_sha256.hex()}"
        )
    runtime.load(state)
    out.mkdir(parents=True, exist_ok=True)
    runtime.model.save_pretrained(str(out))
    if spec.train.task == "pretrain":  # a whole model: a `from_pretrained` folder needs its tokenizer too
        runtime.tokenizer.save_pretrained(str(out))
    return {
        "run_id": run_id,
        "round": round,
        "merged_sha256": sha,
        "merged_cid": result.merged_cid,
        "source": source,
        "out": str(out),
        "base_model": spec.model.name_or_path,
    }
