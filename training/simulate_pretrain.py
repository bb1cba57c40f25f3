"""In-process federated pre-training (``[train] task = "pretrain"``): DiLoCo rounds over text shards.

:func:`training.simulate.run_simulation` hands a pre-training config here. The model is built from its config
with the simulation seed (:func:`training.pretrain.build_model`), every parameter trains. Each client's
text (``[data] source = "text"``: one UTF-8 file or ``save_to_disk`` folder per client in ``paths``;
``"chatterbot"``: one chatterbot-corpus category per client, its conversations as lines of text) is
tokenised with the model's tokenizer and packed into blocks of ``[train] max_len`` tokens; the last
``held_out_fraction`` of each client's blocks is held out.

Each round every (sampled) client loads the global parameters, runs ``local_steps`` AdamW steps (resuming
its own AdamW state from its previous round, as DiLoCo does) and sends ``delta = end - start`` through the
codec's bytes (``topk`` clients keep their error-feedback residual across rounds); the very merge every node
runs aggregates the accepted
updates and applies the server optimiser (``algorithm = "diloco"``: Nesterov outer SGD). Update-level
Byzantine attacks rewrite the Byzantine clients' deltas first. After every round the model is scored on each
client's held-out blocks and on their union (token-weighted mean loss; perplexity is its exp).

The local-only baseline trains every client alone from the same initial model for ``rounds * local_steps``
steps with one AdamW and scores it on the same union.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from training.errors import ConfigError
from training.simconfig import SimulationConfig

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TextClient:
    """One client's packed text: training blocks and held-out blocks, ``[n, max_len]`` int64."""

    name: str
    train: Tensor
    held_out: Tensor


def load_text_clients(cfg: SimulationConfig, tokenizer: Any) -> list[TextClient]:
    """Every client's blocks, split into train and held out (see the module docstring).

    Raises
    ------
    DataFormatError
        If a text file is empty or not UTF-8, or a dataset folder has no ``text`` column.
    ConfigError
        If the source does not apply to pre-training or a client has too little text.
    """
    from training.datasets.chatterbot import chatterbot_categories
    from training.pretrain import split_blocks
    from training.text import chatterbot_texts, load_blocks, pack_blocks, tokenize_documents

    data, block = cfg.data, cfg.train.max_len
    raw: dict[str, Tensor] = {}
    if data.source == "text":
        for i, path in enumerate(data.paths):
            raw[f"client-{i}"] = load_blocks([path], tokenizer, block)
    elif data.source == "chatterbot":
        names = list(data.categories) or chatterbot_categories()[: cfg.clients]
        if len(names) < cfg.clients:
            raise ConfigError(f"`clients` is {cfg.clients} but chatterbot has only {len(names)} categories")
        for name, text in chatterbot_texts(names).items():
            raw[name] = pack_blocks(tokenize_documents([text], tokenizer), block, where=f"chatterbot {name}")
    else:
        raise ConfigError(
            f"[data] `source` {data.source!r} has no plain text for [train] task = 'pretrain'; "
            "use 'text' (files in `paths`) or 'chatterbot'"
        )
    clients = []
    for name, blocks in sorted(raw.items()):
        train, held = split_blocks(blocks, data.held_out_fraction, where=f"client {name!r}")
        if data.max_eval_examples:
            held = held[: data.max_eval_examples]
        clients.append(TextClient(name, train, held))
    return clients


@dataclass
class PretrainSession:
    """The model (built once), tokenizer, clients' blocks and the initial flat parameters."""

    model: torch.nn.Module
    tokenizer: Any
    clients: list[TextClient]
    initial: Tensor
    spec: Any


def prepare_pretrain(cfg: SimulationConfig) -> PretrainSession:
    """Build the model from its config with the simulation seed and load the clients' text."""
    from training.pretrain import build_model, flat_params, load_pretrain_tokenizer

    tokenizer = load_pretrain_tokenizer(cfg.model.name_or_path)
    model = build_model(cfg.model.name_or_path, tokenizer, cfg.seed, max_len=cfg.train.max_len)
    model.to(cfg.model.device)
    params, spec = flat_params(model)
    return PretrainSession(model, tokenizer, load_text_clients(cfg, tokenizer), params, spec)


def evaluate_pretrain(session: PretrainSession) -> Any:
    """Held-out loss per client and the token-weighted union loss and perplexity of the model as it is."""
    from training.pretrain import block_loss, perplexity
    from training.simulate import EvalMetrics

    per_client: dict[str, float] = {}
    total = count = 0.0
    for client in session.clients:
        loss, n = block_loss(session.model, client.held_out)
        per_client[client.name] = loss
        total, count = total + loss * n, count + n
    union = total / count
    return EvalMetrics(union_loss=union, union_perplexity=perplexity(union), per_client=per_client)


def _seed(cfg: SimulationConfig, rnd: int, i: int) -> int:
    return cfg.seed * 1_000_003 + rnd * 1009 + i


def run_pretrain_baseline(cfg: SimulationConfig, session: PretrainSession) -> Any:
    """Each client alone: ``rounds * local_steps`` AdamW steps from the initial model, scored on the union."""
    from training.client import make_optimizer
    from training.pretrain import load_flat, train_blocks
    from training.simulate import BaselineMetrics

    union: dict[str, float] = {}
    own: dict[str, float] = {}
    steps = cfg.rounds * (cfg.train.local_steps or 1)
    for i, client in enumerate(session.clients):
        load_flat(session.model, session.initial, session.spec)
        train_cfg = replace(cfg.train, seed=_seed(cfg, 0, i))
        params = [p for _, p in sorted(session.model.named_parameters())]
        train_blocks(
            session.model, client.train, train_cfg, steps=steps, optimizer=make_optimizer(params, train_cfg)
        )
        scores = evaluate_pretrain(session)
        union[client.name], own[client.name] = scores.union_loss, scores.per_client[client.name]
    load_flat(session.model, session.initial, session.spec)
    return BaselineMetrics(per_client_union_loss=union, per_client_own_loss=own)


def run_pretrain(
    cfg: SimulationConfig,
    progress: ProgressFn | None = None,
    *,
    keep_inner_state: bool = True,
    warmup_steps: int = 0,
) -> Any:
    """Run ``cfg.rounds`` federated pre-training rounds in this process; a :class:`SimulationResult`.

    ``keep_inner_state`` (default) resumes each client's AdamW from its previous round; ``False`` makes a
    new one every round. ``warmup_steps`` ramps each client's local rate linearly over its first steps
    (:func:`training.pretrain.train_blocks`).

    Raises
    ------
    ConfigError
        If a name in ``cfg`` is unknown or the aggregator refuses the round's updates.
    """
    import training.codec as codec
    from training import server_opt
    from training.algorithms import get_algorithm
    from training.attacks import attack_rows, get_attack
    from training.merge import MergeError, MergeSpec, ModelState, UpdateInput, merge
    from training.pretrain import load_flat, local_update
    from training.sampling import sample_clients
    from training.simulate import RoundMetrics, SimulationResult, byzantine_indices

    started = time.perf_counter()
    algorithm = get_algorithm(cfg.algorithm)
    if algorithm.control_variates:
        raise ConfigError(f"`algorithm` {cfg.algorithm!r} does not apply to task = 'pretrain'")
    attack = get_attack(cfg.byzantine.attack)
    bad = byzantine_indices(cfg)
    if bad and attack.level != "update":
        raise ConfigError(f"[byzantine] `attack` {attack.name!r} poisons examples; pre-training has none")
    merge_spec = MergeSpec(
        aggregator=cfg.aggregator,
        aggregator_params=cfg.aggregator_params,
        server_optimizer=algorithm.server_optimizer,
        server_params=cfg.server,
        codec=cfg.codec,
        codec_params=cfg.codec_params(),
        max_norm=cfg.max_update_norm,
        convention=cfg.convention,
    )
    residuals: dict[int, Tensor] = {}  # top-k error feedback: what each client has not sent yet
    inner: dict[int, Any] = {}  # each client's AdamW state after its latest round
    session = prepare_pretrain(cfg)
    clients, spec = session.clients, session.spec
    honest = [i for i in range(len(clients)) if i not in bad]
    server_cfg = server_opt.make_config(algorithm.server_optimizer, **dict(cfg.server))
    state = ModelState(
        session.initial.clone(),
        server_opt.init_state(algorithm.server_optimizer, spec.numel, server_cfg, convention=cfg.convention),
        None,
        spec,
    )
    run_id = f"simulation-{cfg.seed}"
    per_round = cfg.clients_per_round or len(clients)
    history = [RoundMetrics(round=0, eval=evaluate_pretrain(session))]
    for rnd in range(1, cfg.rounds + 1):
        round_start = time.perf_counter()
        chosen = sample_clients(len(clients), cfg.clients_per_round, cfg.seed, rnd)
        deltas, losses = [], []
        train_cfg = cfg.train.for_round(rnd - 1, cfg.rounds)
        for j, i in enumerate(chosen):
            load_flat(session.model, state.params, spec)
            delta, metrics = local_update(
                session.model,
                clients[i].train,
                replace(train_cfg, seed=_seed(cfg, rnd, i)),
                inner_state=inner.get(i) if keep_inner_state else None,
                warmup_steps=warmup_steps,
            )
            if metrics.inner_state is not None:
                inner[i] = metrics.inner_state
            deltas.append(delta)
            if i in honest:
                losses.append(metrics.mean_loss)
            if progress is not None:
                progress(
                    f"round {rnd}/{cfg.rounds} {clients[i].name}",
                    (rnd - 1) * per_round + j + 1,
                    cfg.rounds * per_round,
                )
        sent = torch.stack(deltas)
        honest_rows = [j for j, i in enumerate(chosen) if i in honest]
        bad_rows = [j for j, i in enumerate(chosen) if i not in honest]
        attack_rows(
            sent,
            honest_rows,
            bad_rows,
            attack.name,
            seed=cfg.seed * 7_919 + rnd,
            strength=cfg.byzantine.strength,
        )
        updates = []
        for j, i in enumerate(chosen):
            blob, residual = codec.encode_with_feedback(
                sent[j],
                residuals.get(i),
                spec,
                run=run_id,
                round=rnd,
                codec=cfg.codec,
                params=merge_spec.codec_params,
            )
            if residual is not None and cfg.error_feedback:
                residuals[i] = residual
            updates.append(UpdateInput(clients[i].name, blob, int(clients[i].train.shape[0])))
        try:
            outcome = merge(state, updates, merge_spec, run=run_id, round=rnd, eligible=len(clients))
        except MergeError as exc:
            raise ConfigError(str(exc)) from exc
        for name, reason in outcome.rejected.items():
            log.warning("round %d: update of %s rejected: %s", rnd, name, reason)
        state = outcome.state
        load_flat(session.model, state.params, spec)
        history.append(
            RoundMetrics(
                round=rnd,
                eval=evaluate_pretrain(session),
                train_loss=sum(losses) / len(losses) if losses else None,
                update_norm=float(sent[honest_rows].norm(dim=1).mean()) if honest_rows else None,
                aggregate_norm=outcome.aggregate_norm,
                accepted=len(outcome.included),
                rejected=tuple(sorted(outcome.rejected)),
                seconds=time.perf_counter() - round_start,
                sampled=tuple(clients[i].name for i in chosen),
                lr=train_cfg.lr,
                update_bytes=sum(u.size for u in updates),
            )
        )
    baseline = run_pretrain_baseline(cfg, session) if cfg.local_baseline else None
    names = tuple(clients[i].name for i in bad)
    return SimulationResult(cfg, names, history, baseline, time.perf_counter() - started)
