"""Flower SecAgg+ for FedProxy rounds (``fed.secagg``): glue only, the protocol is Flower's.

In Flower 1.42 SecAgg+ is reachable only through the legacy server API: the
``SecAggPlusWorkflow`` asks a legacy ``Strategy`` for fit instructions and hands it the
unmasked *weighted mean* of the clients' parameters, and the client-side
``secaggplus_mod`` expects the legacy FitIns/FitRes message layout. This module adapts
one FedProxy round to that API: the server learns only the example-weighted mean of the
clients' updates (plus each client's scalar metrics), never an individual update.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from . import frozen_cache
from .aggregate import clip_update
from .config import FedConfig

FITINS_KEY = "fitins.parameters"


# ---- client ---------------------------------------------------------------------------
def is_secagg_train(msg: Message) -> bool:
    return FITINS_KEY in msg.content.array_records


def secagg_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages; plain FedProxy messages pass through."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def secagg_train(msg: Message, local_update: Callable, cache: Path) -> Message:
    """Train from a legacy FitIns and answer with a FitRes carrying the (clipped) update.

    The frozen proxy tensors come in the FitIns the first time a node sees them and from the
    node's ``cache`` (:mod:`fedproxy.frozen_cache`) after that, as on the plain path;
    ``local_update(config, trainable, frozen)`` trains this node's client as on the plain path
    and returns ``(cfg, result, client index)``.
    """
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    conf = fitins.config
    names, frozen_names = json.loads(str(conf["trainable"])), json.loads(str(conf["frozen"]))
    arrays = [torch.from_numpy(np.array(a, copy=True)) for a in parameters_to_ndarrays(fitins.parameters)]
    trainable = dict(zip(names, arrays[: len(names)], strict=True))
    key = str(conf["frozen-digest"])
    if bool(conf["frozen-sent"]):
        frozen = dict(zip(frozen_names, arrays[len(names):], strict=True))
        frozen_cache.store(cache, key, frozen)
    else:
        frozen = frozen_cache.load(cache, key)
    cfg, res, pid = local_update(conf, trainable, frozen)
    update = res.update
    if cfg.fed.dp_clip > 0:  # the server cannot clip what it cannot see: clients bound their own updates
        update = clip_update(update, cfg.fed.dp_clip)
    metrics = {k: float(v) for k, v in res.metrics.items()} | {"partition-id": pid}
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([update[n].numpy() for n in names]),
                    res.num_examples, metrics)
    return Message(content=compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


# ---- server ---------------------------------------------------------------------------
class _OneRound(Strategy):
    """The legacy Strategy face that SecAggPlusWorkflow needs, for a single round."""

    def __init__(self, fitins: dict[int, FitIns], grid: Grid, run_id: int) -> None:
        self.fitins, self.grid, self.run_id = fitins, grid, run_id
        self.mean: list[np.ndarray] | None = None
        self.metrics: dict[int, dict] = {}

    def configure_fit(self, server_round, parameters, client_manager):
        return [(GridClientProxy(nid, self.grid, self.run_id), ins) for nid, ins in self.fitins.items()]

    def aggregate_fit(self, server_round, results, failures):
        for _, res in results:
            m = dict(res.metrics)
            self.metrics[int(m.pop("partition-id"))] = m
        if results:  # the workflow put the unmasked weighted mean into every result
            self.mean = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    # Not used by the fit workflow; a Strategy must still define them.
    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secagg_round(grid: Grid, context: Context, cfg: FedConfig, round_idx: int, nodes: dict[int, int],
                 params: dict[str, torch.Tensor], frozen: dict[str, torch.Tensor], config: dict,
                 timeout: float, cached: set[int] = frozenset()) -> tuple[dict[str, torch.Tensor], dict[int, dict]]:
    """One SecAgg+ round over ``nodes`` (partition id -> node id).

    Nodes in ``cached`` already hold the frozen tensors (``config["frozen-digest"]``) and get
    only the trainable ones. Returns the example-weighted mean update (empty if the protocol
    could not finish) and each surviving client's scalar metrics.
    """
    names, frozen_names = list(params), list(frozen)
    trainable = [params[n].numpy() for n in names]

    def fitins(with_frozen: bool) -> FitIns:
        extra = [frozen[n].numpy() for n in frozen_names] if with_frozen else []
        return FitIns(ndarrays_to_parameters(trainable + extra), {
            **config, "trainable": json.dumps(names), "frozen": json.dumps(frozen_names), "frozen-sent": with_frozen})

    by_need = {need: fitins(need) for need in {nid not in cached for nid in nodes.values()}}
    strategy = _OneRound({nid: by_need[nid not in cached] for nid in nodes.values()}, grid, context.run_id)
    legacy = LegacyContext(context, strategy=strategy)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: round_idx + 1})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    # Every client holds a share of every other's key (num_shares=1.0); half of them can rebuild
    # a dropped client's mask, so the round survives up to half the clients failing mid-protocol.
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.5, clipping_range=cfg.secagg_clip,
                                  timeout=timeout)
    if len(nodes) >= 2:  # SecAgg+ needs at least two clients to hide each one
        workflow(grid, legacy)
    mean = {} if strategy.mean is None else {
        n: torch.from_numpy(np.asarray(a, dtype=np.float32)).reshape(params[n].shape)
        for n, a in zip(names, strategy.mean, strict=True)}
    return mean, strategy.metrics
