"""In-process federated simulation: N clients, any algorithm, aggregator and codec, Byzantine clients.

Each round every client loads the global adapter state, trains with the algorithm's client side
(:func:`training.sft.train_sft`, or :func:`training.dpo.train_dpo` when ``[train] task = "dpo"``), and
sends ``delta = local - global``. Byzantine clients' deltas are then
rewritten by their attack (:mod:`training.attacks`; a data-level attack poisoned their data instead).
Every update goes through the codec's bytes (``encode`` then ``decode`` with its checks), exactly as over
the network; rejected updates are left out. The accepted updates are robustly aggregated and the server
optimiser takes its step; SCAFFOLD's server control variate is updated from the control deltas carried in
the same bytes. After every round the model is evaluated on each client's held-out data and on their union
(all clients' genuine held-out data, also for Byzantine clients, so clean and attacked runs are scored on
the same examples).

With ``[train] task = "pretrain"`` the run is handed to :mod:`training.simulate_pretrain` (DiLoCo-style
pre-training of every parameter on plain text).

With DPO the clients hold preference pairs and the scores are held-out DPO loss (in the ``*_loss``
fields) and reward accuracy (:func:`training.dpo.evaluate_dpo`).

Round ``r`` (1-based here) trains at the local learning rate of round ``r - 1`` of ``[train]
lr_schedule`` (:mod:`training.schedule`: constant, or the reference's cosine decay over rounds).

The local-only baseline trains every client alone from the same initial adapter for
``rounds * local_steps`` steps (with the cosine schedule: round by round at the same rates) and scores it
on the same union.

Configuration: :mod:`training.simconfig`; command line: ``fedchain simulate``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from training.attacks import attack_rows, flip_answers, get_attack
from training.data import split_held_out
from training.errors import ConfigError
from training.simconfig import SimulationConfig

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""``progress(what, done, total)``: called after each client's local training (``what`` names it)."""


@dataclass(frozen=True)
class ClientData:
    """One simulated client's examples: what it trains on and what it is evaluated on."""

    name: str
    train: list[Any]  # Example (SFT) or PreferencePair (DPO)
    held_out: list[Any]


@dataclass(frozen=True)
class EvalMetrics:
    """Held-out evaluation of one model.

    Attributes
    ----------
    union_loss, union_perplexity
        Per-token loss (and its exp) on the union of every client's held-out data.
    per_client
        Held-out loss on each client's own data.
    exact_match
        Greedy exact-match accuracy on the union, when the task has one answer (``None`` otherwise).
    reward_accuracy
        DPO only: fraction of the union's held-out pairs whose chosen reward beats the rejected one (the
        losses are then held-out DPO losses).
    """

    union_loss: float
    union_perplexity: float
    per_client: dict[str, float]
    exact_match: float | None = None
    reward_accuracy: float | None = None


@dataclass(frozen=True)
class RoundMetrics:
    """What happened in one round (round 0 is the initial model, before any training)."""

    round: int
    eval: EvalMetrics
    train_loss: float | None = None
    update_norm: float | None = None
    aggregate_norm: float | None = None
    accepted: int = 0
    rejected: tuple[str, ...] = ()
    seconds: float = 0.0
    sampled: tuple[str, ...] = ()
    """The clients that trained this round (all of them unless ``clients_per_round`` is set)."""
    epsilon: float | None = None
    """With ``[privacy]``: the largest epsilon any client has spent so far (``training.privacy``)."""
    lr: float | None = None
    """The local learning rate every client trained at this round (``[train] lr_schedule``)."""
    update_bytes: int = 0
    """Encoded bytes of the round's updates, summed over the clients that sent one (the codec's cost)."""


@dataclass(frozen=True)
class BaselineMetrics:
    """Local-only training: each client alone for the same number of steps, scored on the union."""

    per_client_union_loss: dict[str, float]
    per_client_own_loss: dict[str, float]

    @property
    def mean_union_loss(self) -> float:
        """Mean over clients of the union held-out loss of their local-only models."""
        return sum(self.per_client_union_loss.values()) / len(self.per_client_union_loss)

    @property
    def best_union_loss(self) -> float:
        """The best single local-only model's union held-out loss."""
        return min(self.per_client_union_loss.values())


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of :func:`run_simulation`: per-round metrics and, if asked for, the local-only baseline."""

    config: SimulationConfig
    byzantine: tuple[str, ...]
    rounds: list[RoundMetrics]
    baseline: BaselineMetrics | None = None
    seconds: float = 0.0

    @property
    def final(self) -> RoundMetrics:
        """Metrics after the last round."""
        return self.rounds[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (config, Byzantine clients, rounds, baseline)."""
        out: dict[str, Any] = {
            "config": _jsonable(dataclasses.asdict(self.config)),
            "byzantine": list(self.byzantine),
            "rounds": [_jsonable(dataclasses.asdict(r)) for r in self.rounds],
            "final_union_loss": self.final.eval.union_loss,
            "seconds": round(self.seconds, 3),
        }
        if self.baseline is not None:
            out["local_baseline"] = {
                "mean_union_loss": self.baseline.mean_union_loss,
                "best_union_loss": self.baseline.best_union_loss,
                "per_client_union_loss": self.baseline.per_client_union_loss,
                "per_client_own_loss": self.baseline.per_client_own_loss,
            }
        return out


def _epsilon(cfg: SimulationConfig, releases: list[int]) -> float | None:
    """Return the largest epsilon of any client with ``releases`` privatised updates (``None``: no DP)."""
    if cfg.privacy is None:
        return None
    from training.privacy import epsilon_spent

    return round(epsilon_spent(cfg.privacy, max(releases)), 4)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def load_clients(cfg: SimulationConfig) -> list[ClientData]:
    """Build the clients' train / held-out splits from ``cfg.data`` (seeded, non-IID by source)."""
    from training.data import load_preference_jsonl, load_sft_jsonl
    from training.datasets.chatterbot import chatterbot_categories, chatterbot_clients
    from training.datasets.synthetic import synthetic_clients, synthetic_preference_clients

    data = cfg.data
    dpo = cfg.train.task == "dpo"
    raw: dict[str, list[Any]]
    if data.source == "synthetic":
        make = synthetic_preference_clients if dpo else synthetic_clients
        raw = dict(make(cfg.clients, data.examples_per_client, cfg.seed, data.categories))
    elif data.source == "chatterbot":
        names = list(data.categories) or chatterbot_categories()[: cfg.clients]
        if len(names) < cfg.clients:
            raise ConfigError(f"`clients` is {cfg.clients} but chatterbot has only {len(names)} categories")
        raw = chatterbot_clients(names)
    elif data.source == "hf":
        from training.datasets.hf import load_hf_records

        task = cfg.train.task
        raw = {
            f"client-{i}": load_hf_records(p, task=task, columns=data.columns, split=data.split)
            for i, p in enumerate(data.paths)
        }
    else:
        load = load_preference_jsonl if dpo else load_sft_jsonl
        raw = {f"client-{i}": list(load(p)) for i, p in enumerate(data.paths)}
    clients = []
    for i, (name, examples) in enumerate(sorted(raw.items())):
        if data.source != "synthetic" and data.examples_per_client:
            examples = random.Random(cfg.seed * 7919 + i).sample(
                examples, min(len(examples), data.examples_per_client)
            )
        train, held = split_held_out(examples, data.held_out_fraction, cfg.seed + i)
        if not train or not held:
            raise ConfigError(f"client {name!r} has {len(examples)} examples: too few to train and hold out")
        if data.max_eval_examples:
            held = held[: data.max_eval_examples]
        clients.append(ClientData(name=name, train=train, held_out=held))
    return clients


def byzantine_indices(cfg: SimulationConfig) -> list[int]:
    """Seeded choice of the Byzantine clients; a larger count extends a smaller one's set."""
    order = list(range(cfg.clients))
    random.Random(f"fedchain-byzantine:{cfg.seed}").shuffle(order)
    return sorted(order[: cfg.num_byzantine])


@dataclass
class Session:
    """A loaded base model with its adapter and the clients' data, reusable across runs that share them.

    Create with :func:`prepare`; :func:`run_simulation` creates one when not given.
    """

    model: Any
    tokenizer: Any
    clients: list[ClientData]
    initial: dict[str, Tensor]
    key: tuple[Any, ...] = field(default=())


def _session_key(cfg: SimulationConfig) -> tuple[Any, ...]:
    return (cfg.model, cfg.adapter, cfg.data, cfg.clients, cfg.seed)


def prepare(cfg: SimulationConfig) -> Session:
    """Load the model and tokenizer, attach the run-seeded adapter and build the clients' data."""
    from training.adapters import attach_adapter, trainable_state
    from training.models import load_model

    model, tokenizer = load_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device)
    peft_model = attach_adapter(model, cfg.adapter, cfg.seed)
    return Session(peft_model, tokenizer, load_clients(cfg), trainable_state(peft_model), _session_key(cfg))


def _uses_exact_match(cfg: SimulationConfig) -> bool:
    if cfg.train.task == "dpo":
        return False
    return cfg.data.source == "synthetic" if cfg.data.exact_match is None else cfg.data.exact_match


def _train(session: Session, records: list[Any], cfg: Any, controls: Any = None) -> Any:
    """Local training of the task of ``cfg`` (a TrainConfig): SFT on examples or DPO on pairs."""
    from training.dpo import train_dpo
    from training.sft import train_sft

    fn = train_dpo if cfg.task == "dpo" else train_sft
    return fn(session.model, session.tokenizer, records, cfg, controls=controls)


def _held_out_losses(session: Session, cfg: SimulationConfig) -> tuple[dict[str, float], float | None]:
    """Held-out loss per client and on the union (SFT loss or DPO loss), and DPO's union reward accuracy."""
    from training.dpo import evaluate_dpo_clients
    from training.evaluate import UNION, evaluate_clients

    held = {c.name: c.held_out for c in session.clients}
    if cfg.train.task == "dpo":
        scores = evaluate_dpo_clients(
            session.model,
            session.tokenizer,
            held,
            beta=cfg.train.dpo_beta,
            max_len=cfg.train.max_len,
            template=cfg.train.template,
        )
        return {k: v.loss for k, v in scores.items()}, scores[UNION].reward_accuracy
    results = evaluate_clients(
        session.model, session.tokenizer, held, max_len=cfg.train.max_len, template=cfg.train.template
    )
    return {k: v.loss for k, v in results.items()}, None


def evaluate_model(session: Session, cfg: SimulationConfig) -> EvalMetrics:
    """Score the session's model as it stands: per-client and union held-out loss, exact match if any."""
    from training.evaluate import UNION, LossResult, exact_match

    if cfg.train.task == "dpo":
        losses, reward_accuracy = _held_out_losses(session, cfg)
        union_loss = losses.pop(UNION)
        return EvalMetrics(
            union_loss=union_loss,
            union_perplexity=LossResult(union_loss, 0, 0).perplexity,
            per_client=losses,
            reward_accuracy=reward_accuracy,
        )
    from training.evaluate import evaluate_clients

    held = {c.name: c.held_out for c in session.clients}
    results = evaluate_clients(
        session.model, session.tokenizer, held, max_len=cfg.train.max_len, template=cfg.train.template
    )
    union = results.pop(UNION)
    accuracy = None
    if _uses_exact_match(cfg):
        everything = [e for c in session.clients for e in c.held_out]
        accuracy = exact_match(session.model, session.tokenizer, everything, template=cfg.train.template)
    return EvalMetrics(
        union_loss=union.loss,
        union_perplexity=union.perplexity,
        per_client={k: v.loss for k, v in results.items()},
        exact_match=accuracy,
    )


def _train_config(
    cfg: SimulationConfig,
    client_algorithm: str,
    seed: int,
    steps_factor: int = 1,
    *,
    current_round: int | None = None,
) -> Any:
    """Return the TrainConfig of one local training; ``current_round`` (0-based) applies the lr schedule."""
    train = cfg.train
    changes: dict[str, Any] = {
        "client_algorithm": client_algorithm,
        "seed": seed,
        "convention": cfg.convention,
    }
    if steps_factor != 1:
        if train.local_steps is not None:
            changes["local_steps"] = train.local_steps * steps_factor
        else:
            changes["epochs"] = train.epochs * steps_factor
    out = dataclasses.replace(train, **changes)
    return out if current_round is None else out.for_round(current_round, cfg.rounds)


def train_local_only(session: Session, records: list[Any], cfg: SimulationConfig, seed: int) -> None:
    """Train the session's model (already at the initial adapter) as one client's local-only model.

    With a constant learning rate: one training of ``rounds * local_steps`` steps (one optimiser). With
    ``lr_schedule = "cosine"``: ``rounds`` trainings of ``local_steps`` steps in a row, round ``r`` at the
    federated round's rate, each with a fresh optimiser as in a federated round (the reference's local
    baseline runs the same round loop without aggregation).
    """
    if cfg.train.lr_schedule == "constant":
        _train(session, records, _train_config(cfg, "local", seed, steps_factor=cfg.rounds))
        return
    for rnd in range(cfg.rounds):
        _train(session, records, _train_config(cfg, "local", seed + rnd * 1009, current_round=rnd))


def run_local_baseline(
    cfg: SimulationConfig, *, session: Session | None = None, progress: ProgressFn | None = None
) -> BaselineMetrics:
    """Train each client alone for ``rounds * local_steps`` steps; score it on the union and its own data."""
    from training.adapters import load_trainable_state
    from training.evaluate import UNION

    session = session if session is not None and session.key == _session_key(cfg) else prepare(cfg)
    union: dict[str, float] = {}
    own: dict[str, float] = {}
    for i, client in enumerate(session.clients):
        load_trainable_state(session.model, session.initial)
        train_local_only(session, client.train, cfg, cfg.seed * 1_000_003 + i)
        results, _ = _held_out_losses(session, cfg)
        union[client.name], own[client.name] = results[UNION], results[client.name]
        if progress is not None:
            progress(f"local-only {client.name}", i + 1, len(session.clients))
    load_trainable_state(session.model, session.initial)
    return BaselineMetrics(per_client_union_loss=union, per_client_own_loss=own)


def _server_config(name: str, overrides: Mapping[str, float]) -> Any:
    """Return the server optimiser's config for ``name`` with the simulation's ``[server]`` overrides."""
    from training import server_opt

    return server_opt.make_config(name, **dict(overrides))


def run_simulation(
    cfg: SimulationConfig, *, session: Session | None = None, progress: ProgressFn | None = None
) -> SimulationResult:
    """Run ``cfg.rounds`` federated rounds in this process (see the module docstring).

    Parameters
    ----------
    cfg
        The simulation.
    session
        A prepared :class:`Session` to reuse (must match ``cfg``'s model, adapter, data and seed);
        otherwise one is created.
    progress
        Called after every client's local training.

    Returns
    -------
    SimulationResult
        Round-0 and per-round metrics, and the local-only baseline when ``cfg.local_baseline``.

    Raises
    ------
    ConfigError
        If a name in ``cfg`` is unknown or the aggregator rejects its parameters for this many clients.
    """
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        if cfg.train.task == "pretrain":  # every parameter of a model built from a config, on plain text
            from training.simulate_pretrain import run_pretrain

            result: SimulationResult = run_pretrain(cfg, progress)
            return result
        return _run(cfg, session, progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: SimulationConfig, session: Session | None, progress: ProgressFn | None) -> SimulationResult:
    import training.codec as codec
    from training import server_opt
    from training.adapters import load_trainable_state
    from training.aggregate import AGGREGATORS
    from training.algorithms import get_algorithm
    from training.attacks import flip_preferences
    from training.client import ScaffoldControls
    from training.flat import flatten
    from training.merge import MergeError, MergeSpec, ModelState, UpdateInput, merge
    from training.sampling import sample_clients

    started = time.perf_counter()
    algorithm = get_algorithm(cfg.algorithm)
    if cfg.aggregator not in AGGREGATORS:
        raise ConfigError(
            f"`aggregator` must be one of {', '.join(sorted(AGGREGATORS))}, got {cfg.aggregator!r}"
        )
    attack = get_attack(cfg.byzantine.attack)
    session = session if session is not None and session.key == _session_key(cfg) else prepare(cfg)
    clients = session.clients
    bad = byzantine_indices(cfg)
    if attack.level == "data":

        def poison(records: list[Any], i: int) -> list[Any]:
            if cfg.train.task == "dpo":
                return flip_preferences(records)
            return flip_answers(records, seed=cfg.seed + i)

        clients = [
            ClientData(c.name, poison(c.train, i), c.held_out) if i in bad else c
            for i, c in enumerate(clients)
        ]
    honest = [i for i in range(len(clients)) if i not in bad]
    params, spec = flatten(session.initial)
    _server_config(algorithm.server_optimizer, cfg.server)  # check the overrides before any training
    merge_spec = MergeSpec(
        aggregator=cfg.aggregator,
        aggregator_params=cfg.aggregator_params,
        server_optimizer=algorithm.server_optimizer,
        server_params=cfg.server,
        codec=cfg.codec,
        codec_params=cfg.codec_params(),
        max_norm=cfg.max_update_norm,
        scaffold=algorithm.control_variates,
        convention=cfg.convention,
    )
    residuals: dict[int, Tensor] = {}  # top-k error feedback: what each client has not sent yet
    server_state = server_opt.init_state(
        algorithm.server_optimizer,
        spec.numel,
        _server_config(algorithm.server_optimizer, cfg.server),
        convention=cfg.convention,
    )
    control = torch.zeros(spec.numel) if algorithm.control_variates else None
    client_controls: dict[int, dict[str, Tensor]] = {}
    releases = [0] * len(clients)  # privatised updates per client (the node's accounting: docs/privacy.md)
    if cfg.privacy is not None:
        from training.privacy import PrivacyError, check_norm_bound

        try:
            check_norm_bound(cfg.privacy, cfg.max_update_norm, spec.numel)
        except PrivacyError as exc:
            raise ConfigError(f"[privacy] {str(exc).replace('`max_norm`', '`max_update_norm`')}") from exc
    run_id = f"simulation-{cfg.seed}"
    per_round = cfg.clients_per_round or len(clients)
    total = cfg.rounds * per_round

    load_trainable_state(session.model, spec.unflatten(params))
    history = [RoundMetrics(round=0, eval=evaluate_model(session, cfg))]
    for rnd in range(1, cfg.rounds + 1):
        round_start = time.perf_counter()
        deltas: list[Tensor] = []
        control_deltas: list[Tensor | None] = []
        losses: list[float] = []
        chosen = sample_clients(len(clients), cfg.clients_per_round, cfg.seed, rnd)
        for j, i in enumerate(chosen):
            client = clients[i]
            load_trainable_state(session.model, spec.unflatten(params))
            controls = None
            if control is not None:
                controls = ScaffoldControls(server=spec.unflatten(control), client=client_controls.get(i))
            seed = cfg.seed * 1_000_003 + rnd * 1009 + i
            train_cfg = _train_config(cfg, algorithm.client, seed, current_round=rnd - 1)
            update = _train(session, client.train, train_cfg, controls)
            deltas.append(flatten(update.delta)[0])
            if cfg.privacy is not None:  # clipped and noised before encoding, as every node does
                from training.privacy import privatize

                deltas[-1] = privatize(deltas[-1], cfg.privacy).delta
                releases[i] += 1
            if update.control is not None and update.control_delta is not None:
                client_controls[i] = update.control
                control_deltas.append(flatten(update.control_delta)[0])
            else:
                control_deltas.append(None)
            if i in honest:
                losses.append(update.metrics.mean_loss)
            if progress is not None:
                progress(f"round {rnd}/{cfg.rounds} {client.name}", (rnd - 1) * per_round + j + 1, total)
        sent = torch.stack(deltas)  # row j: client chosen[j]
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
            own_control = control_deltas[j]
            extra = None if own_control is None else {"control_delta": own_control}
            blob, residual = codec.encode_with_feedback(
                sent[j],
                residuals.get(i),
                spec,
                run=run_id,
                round=rnd,
                codec=cfg.codec,
                extra=extra,
                params=merge_spec.codec_params,
            )
            if residual is not None and cfg.error_feedback:
                residuals[i] = residual
            updates.append(UpdateInput(clients[i].name, blob, len(clients[i].train)))
        try:  # the very merge every node runs (decode + checks, robust aggregate, server step, SCAFFOLD c)
            outcome = merge(
                ModelState(params, server_state, control, spec),
                updates,
                merge_spec,
                run=run_id,
                round=rnd,
                eligible=len(clients),  # SCAFFOLD's N: every client of the federation
            )
        except MergeError as exc:
            raise ConfigError(str(exc)) from exc
        for name, reason in outcome.rejected.items():
            log.warning("round %d: update of %s rejected: %s", rnd, name, reason)
        params, control = outcome.state.params, outcome.state.control
        server_state = dict(outcome.state.server_state)
        accepted, rejected = outcome.included, sorted(outcome.rejected)
        aggregate_norm = outcome.aggregate_norm
        load_trainable_state(session.model, spec.unflatten(params))
        history.append(
            RoundMetrics(
                round=rnd,
                eval=evaluate_model(session, cfg),
                train_loss=sum(losses) / len(losses) if losses else None,
                update_norm=float(sent[honest_rows].norm(dim=1).mean()) if honest_rows else None,
                aggregate_norm=aggregate_norm,
                accepted=len(accepted),
                rejected=tuple(rejected),
                seconds=time.perf_counter() - round_start,
                sampled=tuple(clients[i].name for i in chosen),
                epsilon=_epsilon(cfg, releases),
                lr=cfg.train.for_round(rnd - 1, cfg.rounds).lr,
                update_bytes=sum(u.size for u in updates),
            )
        )
    baseline = run_local_baseline(cfg, session=session) if cfg.local_baseline else None
    load_trainable_state(session.model, session.initial)
    names = tuple(clients[i].name for i in bad)
    return SimulationResult(cfg, names, history, baseline, time.perf_counter() - started)
