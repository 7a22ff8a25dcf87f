"""Server side: sampling, validation, aggregation, checkpoints. Shared by the in-process
runner below and the Flower ServerApp, so both compute the same result for the same seed."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import checkpoint
from ..aggregate import AGGREGATORS, AggOptions, add_gaussian_noise, clip_update, dp_epsilon, validate_update
from ..aggregate.base import Delta
from ..aggregate.hties import conflicts
from ..config import SECURE_AGGREGATORS, FedConfig
from ..data.benchmark import Example
from ..data.encode import Encoder
from ..errors import ConfigError, UpdateRejected
from ..eval import headline
from ..eval.guard import Acceptance, clearly_worse
from .client import ClientResult, local_train
from .lora import lora_to_dense
from .wire import decode_global, encode_global, nbytes, roundtrip

log = logging.getLogger("fedproxy.server")


def client_seed(seed: int, round_idx: int, client: int) -> int:
    return seed * 1_000_003 + round_idx * 1009 + client


# What a server-side round check returns for the new global parameters: ``val`` (an evaluation
# of them on server validation, :func:`fedproxy.eval.evaluate`), optionally ``score`` (what
# ``fed.patience`` watches; default the validation accuracy) and any curve figures to record.
# Called as ``monitor(params, full=False)`` it need return only ``val`` (the round-0 baseline).
Monitor = Callable[[Delta], dict]


class FederatedServer:
    """Holds the global proxy parameters and turns client results into rounds.

    With a ``monitor`` every round's new global model is scored on server validation: a round
    that collapses it (``guard``) or leaves it clearly below the round before is flagged in the
    history and, with ``fed.rollback``, discarded. With ``fed.patience`` the server tracks the
    best round, :meth:`converged` says when to stop, and :meth:`result` is the best round's model.
    """

    def __init__(self, global_params: Delta, cfg: FedConfig, seed: int, num_clients: int,
                 monitor: Monitor | None = None, guard: Acceptance | None = None) -> None:
        if cfg.dp_noise > 0 and cfg.aggregator != "fedavg":
            raise ConfigError(
                f"client-level DP is calibrated for fedavg; set fed.aggregator='fedavg' (got '{cfg.aggregator}')"
            )
        self.cfg, self.seed, self.num_clients = cfg, seed, num_clients
        self.aggregate_fn = AGGREGATORS.get(cfg.aggregator)
        self.opts = AggOptions(density=cfg.ties_density, server_lr=cfg.server_lr, seed=seed)
        self.initial = {k: v.detach().float().cpu().clone() for k, v in global_params.items()}
        self.params = {k: v.clone() for k, v in self.initial.items()}
        self.shapes = {k: v.shape for k, v in self.params.items()}
        self.agg_state: dict = {}
        self.round = 0
        self.history: list[dict] = []
        self.monitor, self.guard = monitor, guard or Acceptance()
        self.last_val: dict | None = None  # the accepted global model's validation evaluation
        self.best: dict = {"round": 0, "score": None, "params": None}
        self._before: tuple[Delta, dict] | None = None
        self.client_names: list[str] = []  # by client index, when the clients name themselves (own data folders)

    # ---- rounds ---------------------------------------------------------------------
    def sample(self, round_idx: int) -> list[int]:
        k = min(self.num_clients, max(self.cfg.min_clients, math.ceil(self.cfg.fraction * self.num_clients)))
        return sorted(random.Random(self.seed * 7919 + round_idx).sample(range(self.num_clients), k))

    def aggregate(self, results: list[tuple[int, ClientResult]], extra: dict | None = None) -> dict:
        """Validate, (optionally) privatise and merge client results into the global params."""
        t0 = time.perf_counter()
        deltas, sizes, accepted, rejected, metrics = [], [], [], [], {}
        for cid, res in sorted(results, key=lambda r: r[0]):
            try:
                delta = self._dense(res)
                norm = validate_update(delta, self.shapes, self.cfg.max_update_norm)
            except (UpdateRejected, KeyError) as err:
                log.warning("round %d: rejected update from client %d: %s", self.round + 1, cid, err)
                rejected.append({"client": cid, "reason": str(err)})
                continue
            if self.cfg.dp_clip > 0:
                delta = clip_update(delta, self.cfg.dp_clip)
            deltas.append(delta)
            sizes.append(res.num_examples)
            accepted.append(cid)
            metrics[cid] = {**res.metrics, "update_norm": norm, "bytes_up": nbytes(res.update, self.cfg.wire_dtype)}
        record = {"round": self.round + 1, "clients": accepted, "rejected": rejected, "client_metrics": metrics,
                  "bytes_down_per_client": nbytes(self.params, self.cfg.wire_dtype), **(extra or {})}
        self._keep_previous()
        agg = self.aggregate_fn(deltas, sizes, self.opts, self.agg_state) if deltas else None
        if self.cfg.pcr_lambda > 0 and deltas:  # the clients' PCR weights next round (fed.pcr_lambda)
            self.agg_state["conflict"] = conflicts(deltas)
        return self._apply(agg, record, len(deltas), t0)

    def apply_secure_mean(self, mean: Delta, clients: list[int], metrics: dict[int, dict],
                          extra: dict | None = None) -> dict:
        """Finish a round from an already-averaged update (SecAgg+ reveals only that).

        Individual updates are never seen, so they cannot be validated or clipped here:
        clients clip their own updates (``fed.dp_clip``) and only the mean is checked.
        """
        t0 = time.perf_counter()
        if self.cfg.aggregator not in SECURE_AGGREGATORS:
            raise ConfigError(f"secure aggregation supports {SECURE_AGGREGATORS}, not '{self.cfg.aggregator}'")
        record = {"round": self.round + 1, "clients": sorted(clients), "rejected": [], "client_metrics": metrics,
                  # SecAgg+ rounds send float32 whatever fed.wire_dtype says
                  "bytes_down_per_client": nbytes(self.params, "float32"), "secure_aggregation": True,
                  **(extra or {})}
        agg = None
        self._keep_previous()
        if clients:
            try:
                validate_update(mean, self.shapes, 0.0)
                # fedavg of one pre-averaged update is that update; fedavgm adds its server momentum.
                agg = self.aggregate_fn([mean], [1], self.opts, self.agg_state)
            except UpdateRejected as err:
                log.warning("round %d: rejected the securely aggregated update: %s", self.round + 1, err)
                record["rejected"].append({"client": "aggregate", "reason": str(err)})
        return self._apply(agg, record, len(clients), t0)

    def _apply(self, agg: Delta | None, record: dict, num_clients: int, t0: float) -> dict:
        metrics = record["client_metrics"]
        if agg is not None:
            if self.cfg.dp_noise > 0:
                gen = torch.Generator().manual_seed(self.seed * 31 + self.round)
                agg = add_gaussian_noise(agg, self.cfg.dp_noise, self.cfg.dp_clip, num_clients, gen)
            self.params = {k: self.params[k] + agg[k].to(self.params[k].dtype) for k in self.params}
            if metrics:
                record["train_loss"] = sum(m["train_loss"] for m in metrics.values()) / len(metrics)
            if "last_weights" in self.agg_state:
                record["client_weights"] = self.agg_state["last_weights"]
            if "server_steps" in self.agg_state:
                record["server_step"] = self.agg_state["server_steps"][-1]
        else:
            log.warning("round %d: no valid client update; global model unchanged", self.round + 1)
        record["aggregate_seconds"] = time.perf_counter() - t0
        self.round += 1
        if self.monitor is not None:
            record["check"] = self._check(record)
        self._before = None
        self.history.append(record)
        return record

    # ---- round checks (do no harm, convergence) --------------------------------------
    def _keep_previous(self) -> None:
        """What a rollback restores: the global model and the aggregator's state before this round."""
        if self.monitor is not None and self.cfg.rollback:
            self._before = (self.params, copy.deepcopy(self.agg_state))

    def _check(self, record: dict) -> dict:
        t0 = time.perf_counter()
        if self.last_val is None:  # the model the clients started from (round 0), scored once
            self.last_val = self.monitor(self.initial, full=False)["val"]
        out = self.monitor(self.params)
        val = out.pop("val")
        score = float(out.pop("score", headline(val)))
        collapse = self.guard.collapse(val, self.last_val)
        drop = clearly_worse(val, self.last_val, self.guard.alpha)
        check = {"val_score": headline(val), "score": score, **out, "collapse": collapse,
                 "change": -drop["diff"], "drop_p": drop["p"], "flagged": bool(collapse or drop["better"]),
                 "rolled_back": False}
        if check["flagged"]:
            why = "; ".join(collapse) or f"fell {drop['diff']:.3f} on validation (p = {drop['p']:.3g})"
            log.warning("round %d: the global proxy %s%s", self.round, why,
                        "; rolled back" if self.cfg.rollback else "")
        if check["flagged"] and self.cfg.rollback and self._before is not None:
            self.params, self.agg_state = self._before
            check["rolled_back"] = True
        else:
            self.last_val = val
            if self.best["score"] is None or score > self.best["score"]:
                self.best = {"round": self.round, "score": score,
                             "params": {k: v.clone() for k, v in self.params.items()} if self.cfg.patience else None}
        check["seconds"] = time.perf_counter() - t0
        return check

    def converged(self) -> bool:
        """With ``fed.patience``: the score has not improved for that many rounds."""
        return bool(self.cfg.patience and self.monitor is not None and self.best["score"] is not None
                    and self.round - self.best["round"] >= self.cfg.patience)

    def done(self) -> bool:
        return self.round >= self.cfg.rounds or self.converged()

    def result(self) -> Delta:
        """The global model that the run keeps: the best round's with ``fed.patience``, else the last."""
        if self.cfg.patience and self.best["params"] is not None:
            return self.best["params"]
        return self.params

    def _dense(self, res: ClientResult) -> Delta:
        return lora_to_dense(res.update, self.params) if res.kind == "lora" else res.update

    def conflict(self) -> Delta | None:
        """The last round's per-coordinate sign conflict, for the clients' PCR term (``fed.pcr_lambda``),
        as clients receive it: in float16, in-process as over Flower."""
        conflict = self.agg_state.get("conflict") if self.cfg.pcr_lambda > 0 else None
        return None if conflict is None else {k: v.half().float() for k, v in conflict.items()}

    def global_as_received(self) -> Delta:
        """The global parameters as a client gets them over ``fed.wire_dtype``."""
        return decode_global(*encode_global(self.params, self.initial, self.cfg.wire_dtype), self.initial,
                             self.cfg.wire_dtype)

    # ---- results & persistence ------------------------------------------------------
    def total_delta(self) -> Delta:
        """What federation changed in the kept global model (:meth:`result`)."""
        final = self.result()
        return {k: final[k] - self.initial[k] for k in final}

    def summary(self) -> dict:
        """Per-round accounting averaged over rounds and clients, and the round checks (a run's report)."""
        hist = self.history
        ups = [m["bytes_up"] for r in hist for m in r["client_metrics"].values()]
        tps = [m["tokens_per_s"] for r in hist for m in r["client_metrics"].values()]
        rss = [m["peak_rss_mb"] for r in hist for m in r["client_metrics"].values()]
        return {
            "rounds": len(hist),
            "bytes_down_per_client_per_round": hist[0]["bytes_down_per_client"] if hist else 0,
            "bytes_up_per_client_per_round": sum(ups) / max(1, len(ups)),
            "client_tokens_per_s": sum(tps) / max(1, len(tps)),
            "client_peak_rss_mb": max(rss, default=0.0),
            "rejected_updates": sum(len(r["rejected"]) for r in hist),
            "round_clients": [r["clients"] for r in hist],
            "round_seconds": [r.get("round_seconds") for r in hist],
            "secure_aggregation": any(r.get("secure_aggregation", False) for r in hist),
            "round_train_loss": [r.get("train_loss") for r in hist],
            # Server checks of each round's global proxy: validation score, collapse, drop, rollback,
            # and with fed.curve the learning curve (:meth:`_check`).
            "round_checks": [r["check"] for r in hist if "check" in r],
            "flagged_rounds": [r["round"] for r in hist if r.get("check", {}).get("flagged")],
            "rolled_back_rounds": [r["round"] for r in hist if r.get("check", {}).get("rolled_back")],
            "best_round": self.best["round"] if self.cfg.patience else len(hist),
            "examples_seen": sum(m.get("examples_seen", 0) for r in hist for m in r["client_metrics"].values()),
            **({"client_names": self.client_names} if self.client_names else {}),
            **({"truncated_train_examples": cut} if (cut := self._truncated()) else {}),
            "privacy": self.privacy(),
        }

    def _truncated(self) -> dict:
        """Training examples each Flower client cut to ``data.max_length``, as its last round reported."""
        name = lambda c: self.client_names[int(c)] if self.client_names else str(c)  # noqa: E731
        return {name(c): int(m["truncated"]) for r in self.history for c, m in r["client_metrics"].items()
                if "truncated" in m}

    def privacy(self, delta: float = 1e-5) -> dict | None:
        if self.cfg.dp_noise <= 0:
            return None
        q = len(self.sample(0)) / self.num_clients
        return {"epsilon": dp_epsilon(self.cfg.dp_noise, q, self.round, delta), "delta": delta,
                "noise_multiplier": self.cfg.dp_noise, "clip": self.cfg.dp_clip, "rounds": self.round,
                "accountant": "opacus.RDPAccountant"}

    def state_dict(self) -> dict:
        return {"params": self.params, "initial": self.initial, "agg_state": self.agg_state,
                "round": self.round, "history": self.history, "seed": self.seed, "last_val": self.last_val,
                "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ConfigError(f"checkpoint was made with seed {state['seed']}, this run uses {self.seed}")
        self.params, self.initial = state["params"], state["initial"]
        self.agg_state, self.round, self.history = state["agg_state"], state["round"], state["history"]
        self.last_val = state.get("last_val")
        self.best = state.get("best", self.best)


def run_federation(model: torch.nn.Module, global_params: Delta, clients: list[list[Example]], encoder: Encoder,
                   cfg: FedConfig, device: torch.device, seed: int, bf16: bool = False,
                   ckpt_dir: Path | None = None, resume: bool = False, progress: bool = True,
                   desc: str = "federated rounds", monitor: Monitor | None = None,
                   guard: Acceptance | None = None) -> FederatedServer:
    """The in-process path: same client and server code as the Flower app, no transport.

    ``monitor`` and ``guard`` are the server's round checks (:class:`FederatedServer`).
    """
    if cfg.secagg:
        raise ConfigError("fed.secagg needs Flower's engines (the masking protocol runs between SuperNodes); "
                          "set fed.engine=simulation, use the Flower app (docs/flower.md), or set fed.secagg=false")
    server = FederatedServer(global_params, cfg, seed, len(clients), monitor, guard)
    ckpt = ckpt_dir / "federation.pt" if ckpt_dir else None
    if ckpt and resume and (state := checkpoint.load(ckpt)) is not None:
        server.load_state_dict(state)
        log.info("resumed federation after round %d", server.round)
    bar = tqdm(total=cfg.rounds, initial=server.round, desc=desc, disable=not progress)
    # Each client's own optimizer moments (``fed.keep_optimizer_state``); they live on the
    # clients, so a resumed run restarts them.
    opt_states: dict[int, dict] | None = {} if cfg.keep_optimizer_state else None
    while not server.done():
        r = server.round
        t0 = time.perf_counter()
        round_cfg = cfg.for_round(r)
        start = server.global_as_received()
        results = []
        for c in server.sample(r):  # both ways through fed.wire_dtype, as over Flower
            res = local_train(model, start, clients[c], encoder, round_cfg, device, client_seed(seed, r, c), bf16,
                              opt_state=None if opt_states is None else opt_states.setdefault(c, {}),
                              conflict=server.conflict())
            res.update = roundtrip(res.update, cfg.wire_dtype)
            results.append((c, res))
        rec = server.aggregate(results, extra={"round_seconds": time.perf_counter() - t0})
        bar.update(1)
        bar.set_postfix(loss=f"{rec.get('train_loss', float('nan')):.3f}")
        if ckpt:
            checkpoint.save(server.state_dict(), ckpt)
    bar.close()
    return server
