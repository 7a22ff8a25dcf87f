"""Thin Flower app (Message API): the same client/server code as the in-process path.

Run config keys (``[tool.flwr.app.config]``): ``fedproxy-config`` (preset or config file,
on the server), ``out-dir`` (where the server writes ``flower_result.pt``), ``overrides``
(``;``-separated ``key=value`` pairs). A client gets its data from node config: either a
partition of the run's benchmark (``partition-id``), or its own folder (``data-dir``, holding
``train.jsonl`` and ``test.jsonl``; the folder's name names the client); everything else arrives
in messages from the server.

What crosses the wire: server -> client: the proxy (architecture, weights, tokenizer) and
the run config; client -> server: the parameter update and scalar metrics. No LLM block
outside the proxy leaves the server and no text or token id leaves a client.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from . import checkpoint, frozen_cache
from .config import RunConfig, load_config
from .errors import ConfigError, FedProxyError, ModelError
from .flower_audit import AuditGrid
from .federated.wire import decode, decode_global, encode, encode_global
from .flower_secagg import is_secagg_train, secagg_mod, secagg_round, secagg_train

log = logging.getLogger("fedproxy.flower")

client_app = ClientApp()
OPT_STATE = "fedproxy-optimizer"  # the client's AdamW moments in its context.state (fed.keep_optimizer_state)
server_app = ServerApp()


# ---- payload helpers ------------------------------------------------------------------
def tokenizer_payload(tok) -> str:
    return json.dumps({"tokenizer": tok.backend_tokenizer.to_str(), "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
                       "special": {k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
                                   if getattr(tok, k, None) is not None}})


def tokenizer_from_payload(payload: str):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(payload)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(data["tokenizer"]), **data["special"])
    tok.add_bos_token = data["add_bos_token"]
    return tok


def _arrays(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def _tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in record.to_torch_state_dict().items()}


def _scales(content: RecordDict) -> dict[str, float]:
    """The per-tensor scales of a float16 payload (``fedproxy.federated.wire``); none for float32."""
    return {k: float(v) for k, v in content["scales"].items()} if "scales" in content else {}


def _wire_records(tensors: dict[str, torch.Tensor], scales: dict[str, float]) -> dict:
    return {"arrays": _arrays(tensors), **({"scales": ConfigRecord(scales)} if scales else {})}


# ---- client ---------------------------------------------------------------------------
@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Tell the server which data partition this node holds, or the name of its own data folder
    (node config ``data-dir``), and nothing about the data."""
    pid = int(context.node_config.get("partition-id", 0))
    key = str(msg.content["config"]["frozen-digest"]) if "config" in msg.content else ""
    has = bool(key) and frozen_cache.has(_node_cache(context), key)
    info = {"partition-id": pid, "has-frozen": has}
    if data_dir := _data_dir(context):
        info["client-name"] = data_dir.name
    return Message(content=RecordDict({"info": ConfigRecord(info)}), reply_to=msg)


def _data_dir(context: Context) -> Path | None:
    """This node's own data folder (node config ``data-dir``), if it brings one."""
    raw = str(context.node_config.get("data-dir", "")).strip()
    return Path(raw).expanduser().resolve() if raw else None


def client_partition(context: Context, conf) -> int:
    """This node's client index: the one the server gave its data folder's name (``partition-ids``,
    sorted by name, as ``fedproxy run --data`` orders them), else node config ``partition-id``."""
    given = json.loads(str(conf.get("partition-ids", "{}")))
    if str(context.node_id) in given:
        return int(given[str(context.node_id)])
    return int(context.node_config.get("partition-id", 0))


def _node_cache(context: Context) -> Path:
    """Where this node keeps the frozen proxy tensors: node config ``cache-dir`` or the asset cache."""
    from .assets import cache_dir

    return cache_dir(str(context.node_config.get("cache-dir", "")) or None)


def _frozen_from(msg: Message, context: Context) -> dict[str, torch.Tensor]:
    """The tensors a node keeps for the run (the frozen proxy tensors and, with a float16 wire,
    round 0's trainable ones): from the message (and then cached) or from this node's cache."""
    key, cache = str(msg.content["config"]["frozen-digest"]), _node_cache(context)
    if "frozen" in msg.content:
        frozen = _tensors(msg.content["frozen"])
        frozen_cache.store(cache, key, frozen)
        return frozen
    return frozen_cache.load(cache, key)


def local_update(conf, global_params: dict[str, torch.Tensor], frozen: dict[str, torch.Tensor], context: Context,
                 conflict: dict[str, torch.Tensor] | None = None):
    """Rebuild the proxy from what the server sent and train it on this node's data; returns
    ``(cfg, result, client index)``.

    The data is the node's own folder (node config ``data-dir``, read against the server's task:
    classes and prompt layout) or its partition of the run's benchmark. With
    ``fed.keep_optimizer_state`` the client's AdamW moments live in ``context.state`` between
    rounds (Flower keeps a node's context for the whole run).
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    try:  # transformers >= 5
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights

    from .data import load_benchmark, load_client
    from .data.encode import Encoder
    from .federated import local_train
    from .federated.server import client_seed
    from .modeling import apply_layer_schedule, load_params, pick_device

    cfg = RunConfig.from_flat(json.loads(str(conf["run-config"])))
    server_round = int(conf["round"])
    pid, data_dir = client_partition(context, conf), _data_dir(context)
    if data_dir is not None:
        bench = load_client(data_dir, json.loads(str(conf["task"])))
        train = bench.train[0]
    else:
        bench = load_benchmark(cfg.data, cfg.seed, server_text=False)
        train = bench.train[pid]
    tok = tokenizer_from_payload(str(conf["tokenizer"]))
    encoder = Encoder(tok, bench, cfg.data.max_length, cfg.data.max_answer)
    arch = json.loads(str(conf["proxy-config"]))
    # Every weight is overwritten below, so skip transformers' random init (1.7-2.2 s per
    # message for SmolLM2's proxy on 2 cores, against 8 ms without it).
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch)).float().eval()
    model.tie_weights()  # skipped together with the init; untied, lm_head would stay uninitialised memory
    apply_layer_schedule(model)  # a proxy under layer sharing (compress.share_layers) carries its schedule
    unset = {n for n, _ in model.named_parameters()} - set(frozen) - set(global_params)
    if unset:
        raise ModelError(f"the server sent no values for {len(unset)} proxy tensors (e.g. {sorted(unset)[:2]}); "
                         "server and client run different FedProxy versions")
    device = pick_device(cfg.device)
    load_params(model, frozen)
    model.to(device)
    moments, state = None, context.state
    if cfg.fed.keep_optimizer_state:
        moments = _tensors(state[OPT_STATE]) if OPT_STATE in state else {}
    res = local_train(model, global_params, train, encoder, cfg.fed.for_round(server_round), device,
                      client_seed(cfg.seed, server_round, pid), cfg.bf16, opt_state=moments,
                      conflict=conflict)
    res.metrics["truncated"] = encoder.truncated(train)  # examples cut to data.max_length (counted in the report)
    if moments:
        state[OPT_STATE] = _arrays(moments)
    return cfg, res, pid


def node_threads(node_config) -> None:
    """Apply node config ``threads``: torch CPU threads for this node's training (0 or unset: torch's default).

    A node-level setting because only the node knows its machine: SuperNodes that share cores
    (several on one host) must split them, or each training process spins its threads against
    the others' (measured on 2 cores, 2 SuperNodes: a client step about 9x slower, docs/experiments.md).
    """
    raw = node_config.get("threads", 0)
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise ConfigError(f"node config threads={raw!r} must be a non-negative integer (CPU threads for "
                          "this node's training; 0 = torch's default), e.g. --node-config 'threads=1'")
    if n:
        torch.set_num_threads(n)


@client_app.train(mods=[secagg_mod])
def client_train(msg: Message, context: Context) -> Message:
    node_threads(context.node_config)
    if is_secagg_train(msg):
        return secagg_train(msg, lambda *a: local_update(*a, context), _node_cache(context))
    t_in = time.time()
    conf = msg.content["config"]
    wire_dtype = str(json.loads(str(conf["run-config"])).get("fed.wire_dtype", "float32"))
    kept = _frozen_from(msg, context)
    sent = _tensors(msg.content["arrays"])
    params = decode_global(sent, _scales(msg.content), kept, wire_dtype)
    frozen = {k: v for k, v in kept.items() if k not in sent}
    t_unpacked = time.time()
    # PCR's per-coordinate conflict (fed.pcr_lambda), sent in float16 (the in-process path rounds alike)
    conflict = {k: v.float() for k, v in _tensors(msg.content["conflict"]).items()} if "conflict" in msg.content \
        else None
    _, res, pid = local_update(conf, params, frozen, context, conflict)
    t_trained = time.time()
    update = _wire_records(*encode(res.update, wire_dtype))
    metrics = {k: float(v) for k, v in res.metrics.items()}
    metrics["num-examples"] = res.num_examples
    # Where a Flower round's time goes (benchmarks/perf.py): from the server creating the message to this
    # handler starting (transport, ClientApp process start, imports), and this handler's own work:
    # unpacking the arrays, building the client (model, data, tokenizer), training, packing the reply.
    metrics["queue_seconds"] = max(t_in - msg.metadata.created_at, 0.0)
    metrics["unpack_seconds"] = t_unpacked - t_in
    metrics["setup_seconds"] = t_trained - t_unpacked - res.metrics["train_seconds"]
    metrics["handler_seconds"] = time.time() - t_in
    return Message(content=RecordDict({
        **update,
        "metrics": MetricRecord(metrics),
        "info": ConfigRecord({"kind": res.kind, "partition-id": pid}),
    }), reply_to=msg)


# ---- server ---------------------------------------------------------------------------
def _run_config(context: Context) -> tuple[RunConfig, Path, bool]:
    rc = context.run_config
    spec = str(rc.get("fedproxy-config", "")) or "tiny"
    overrides = [o for o in str(rc.get("overrides", "")).split(";") if o.strip()]
    out = Path(str(rc.get("out-dir", "")) or "runs/flower")
    return load_config(spec).with_overrides(overrides), out, bool(rc.get("resume", False))


def _partitions(grid: Grid, want: int, timeout: float, frozen_key: str = "") -> tuple[dict[int, int], set[int],
                                                                                     list[str]]:
    """partition-id -> node id for the connected SuperNodes (waits for ``want`` nodes), the nodes
    that already hold the frozen tensors named ``frozen_key``, and the clients' names when the
    nodes bring their own data folders (then the ids follow the sorted names, as in-process)."""
    t0 = time.time()
    nodes: list[int] = []
    while time.time() - t0 < timeout:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= want:
            break
        time.sleep(0.5)
    query = {"frozen-digest": frozen_key}
    msgs = [Message(content=RecordDict({"config": ConfigRecord(query)}), dst_node_id=n, message_type="query")
            for n in nodes]
    by_id, by_name, cached = {}, {}, set()
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if reply.has_error():
            continue
        info, node = reply.content["info"], reply.metadata.src_node_id
        if "client-name" in info:
            name = str(info["client-name"])
            if name in by_name:
                raise ConfigError(f"two SuperNodes bring a data folder named '{name}'; each client's folder "
                                  "needs its own name (it names the client in the report)")
            by_name[name] = node
        else:
            by_id[int(info["partition-id"])] = node
        if bool(info.get("has-frozen", False)):
            cached.add(node)
    if by_name and by_id:
        raise ConfigError(f"{len(by_name)} SuperNodes bring their own data (node config data-dir) and {len(by_id)} "
                          "a partition-id; give every SuperNode of a run the same kind of node config")
    names = sorted(by_name)
    return (by_id or {i: by_name[n] for i, n in enumerate(names)}), cached, names


def serve(grid: Grid, cfg: RunConfig, out: Path, resume: bool = False, context: Context | None = None) -> Path:
    """The stand-alone ServerApp: all three stages, resumable, on what the server owns.

    Compresses the proxy (or loads ``compress.proxy_dir``), federates it over ``grid`` with the
    server's round checks, fuses it into the LLM under the do-no-harm rule on server validation,
    and writes ``out/fused_llm`` (a Hugging Face checkpoint with ``fusion_recipe.json``),
    ``out/report.json`` and ``out/report.md`` (validation scores: the server holds no client test
    data) and ``out/flower_result.pt`` (global proxy parameters, history, proxy map, seed), whose
    path it returns.
    """
    from .context import build_context
    from .eval import headline
    from .fuse import save_fused
    from .modeling import load_params
    from .proxies import choose_plugin, make_proxy, round_monitor

    t0 = time.perf_counter()
    ctx = build_context(cfg, out, resume=resume, progress=False, server_only=True)
    proxy, pmap, comp_info = make_proxy(ctx, cfg.compress, out)
    server = federate_over_grid(grid, cfg, proxy, ctx.tokenizer, len(ctx.bench.train) or cfg.data.num_clients,
                                out, resume, context, task=ctx.bench.task_spec(),
                                monitor=round_monitor(ctx, proxy, pmap, cfg.fed),
                                guard=ctx.acceptance())
    result = out / "flower_result.pt"
    checkpoint.save({"params": server.params, "history": server.history, "keep": pmap.keep, "seed": cfg.seed},
                    result)
    recipe, trials = choose_plugin(ctx, server.total_delta(), pmap, cfg.fuse.variants, cfg.fuse.scales)
    save_fused(ctx.llm, ctx.tokenizer, {**recipe, "proxy_map": pmap.keep, "method": "fedproxy"}, out / "fused_llm")
    ctx.restore_llm()
    load_params(proxy, server.result())
    shipped = next(t for t in trials if (t["variant"], t["scale"], t["aligned"]) ==
                   (recipe["variant"], recipe["scale"], recipe["aligned"]))
    report = {"seed": cfg.seed, "config": cfg.to_dict(), "metric": ctx.bench.metric,
              "server_val_examples": len(ctx.bench.server_val), "compression": comp_info,
              "llm_val_score": headline(ctx.llm_eval("val")), "fused_val_score": shipped["val_accuracy"],
              "proxy_val_score": headline(ctx.val_eval(proxy)), "fusion": {**recipe, "trials": trials},
              "federation": server.summary(), "total_seconds": time.perf_counter() - t0}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    d = recipe["decision"]
    (out / "report.md").write_text("\n".join([
        f"# FedProxy deployment report (seed {cfg.seed})", "",
        f"{len(server.history)} rounds over Flower; server validation, {report['server_val_examples']} examples "
        f"({report['metric']}): unchanged LLM {report['llm_val_score']:.3f}, fused LLM as shipped "
        f"{report['fused_val_score']:.3f}, proxy alone {report['proxy_val_score']:.3f}.", "",
        *([f"Clients: {', '.join(server.client_names)}."] if server.client_names else []),
        *([f"Training inputs cut to data.max_length={cfg.data.max_length} per client: "
           + ", ".join(f"{c} {n}" for c, n in cut.items()) + "."]
          if any((cut := report["federation"].get("truncated_train_examples", {})).values()) else []), "",
        f"**{d.get('shipped', 'plug-in')}** shipped. {d.get('why', d.get('rule', ''))}.",
        *[f"- rejected x{t['scale']:g} {t['variant']}: {t['reason'].removeprefix('rejected: ')}"
          for t in d.get("rejected", [])], ""]))
    return result


def federate_over_grid(grid: Grid, cfg: RunConfig, proxy: torch.nn.Module, tokenizer, num_clients: int, out: Path,
                       resume: bool = False, context: Context | None = None, blocks_only: list[int] | None = None,
                       monitor=None, guard=None, task: dict | None = None):
    """FedProxy rounds over a Flower Grid; returns the :class:`FederatedServer` after the last round.

    With ``resume`` the server continues after the last round in ``out/flower_server.pt``
    (same final result as an uninterrupted run with the same seed). Clients that fail or do
    not answer within ``fed.round_timeout`` seconds are left out of that round. With
    ``fed.secagg`` each round runs Flower's SecAgg+ protocol (needs the ServerApp ``context``).
    ``monitor`` and ``guard`` are the server's round checks (:class:`fedproxy.federated.FederatedServer`).
    ``task`` (:meth:`fedproxy.data.Benchmark.task_spec`) goes to the clients: SuperNodes that bring
    their own data folder read it with these classes and this prompt layout. Every message is
    recorded in ``out/message_audit.json``.
    """
    from .federated import ClientResult, FederatedServer, trainable_names
    from .modeling import snapshot

    round_timeout = cfg.fed.round_timeout
    names = trainable_names(proxy, cfg.fed, blocks_only)
    all_params = snapshot(proxy)
    frozen = {k: v for k, v in all_params.items() if k not in names}
    server = FederatedServer({k: all_params[k] for k in names}, cfg.fed, cfg.seed, num_clients, monitor, guard)
    # What nodes keep for the whole run: the frozen tensors, and round 0's trainable ones when
    # the global model travels as its float16 change since then (SecAgg+ rounds send float32).
    if cfg.fed.wire_dtype != "float32" and not cfg.fed.secagg:
        frozen = {**frozen, **server.initial}
    frozen_key = frozen_cache.digest(frozen)
    parts, cached, server.client_names = _partitions(grid, num_clients, round_timeout, frozen_key)
    missing = sorted(set(range(num_clients)) - set(parts))
    if missing:
        log.warning("no SuperNode holds partitions %s; they will be skipped", missing)
    static = {"run-config": json.dumps(cfg.to_flat()), "tokenizer": tokenizer_payload(tokenizer),
              "proxy-config": json.dumps(proxy.config.to_dict()), "frozen-digest": frozen_key,
              **({"task": json.dumps(task)} if task else {}),
              **({"partition-ids": json.dumps({str(n): i for i, n in parts.items()})}
                 if server.client_names else {})}
    ckpt = out / "flower_server.pt"
    audit_path = out / "message_audit.json"
    audit: list[dict] = []
    if resume and (state := checkpoint.load(ckpt)) is not None:
        server.load_state_dict(state)
        audit = json.loads(audit_path.read_text()) if audit_path.is_file() else []
        log.info("resuming after round %d", server.round)
    if cfg.fed.secagg and context is None:
        raise ConfigError("fed.secagg needs the ServerApp context; call serve(..., context=context)")
    wire = AuditGrid(grid, audit)
    while not server.done():
        r = wire.round = server.round
        t0 = time.perf_counter()
        sampled = {c: parts[c] for c in server.sample(r) if c in parts}
        if cfg.fed.secagg:
            wire.bytes_from = {}
            mean, metrics = secagg_round(wire, context, cfg.fed, r, sampled, server.params, frozen,
                                         {**static, "round": r}, round_timeout, cached)
            # Nodes that finished stored the frozen tensors; one that failed may have lost them.
            cached = (cached | {sampled[p] for p in metrics}) - {sampled[p] for p in sampled if p not in metrics}
            for pid, m in metrics.items():  # what each client uploaded over all four SecAgg+ stages
                m["bytes_up"] = wire.bytes_from.get(sampled[pid], 0)
            rec = server.apply_secure_mean(mean, list(metrics) if mean else [], metrics,
                                           extra={"round_seconds": time.perf_counter() - t0})
        else:
            # Frozen tensors go only to nodes that do not hold them yet (frozen_cache).
            down = _wire_records(*encode_global(server.params, server.initial, cfg.fed.wire_dtype))
            if (conflict := server.conflict()) is not None:
                down["conflict"] = _arrays({k: v.half() for k, v in conflict.items()})
            msgs = [Message(content=RecordDict({**down,
                                                **({} if node in cached else {"frozen": _arrays(frozen)}),
                                                "config": ConfigRecord({**static, "round": r})}),
                            dst_node_id=node, message_type="train") for node in sampled.values()]
            results = []
            for reply in wire.send_and_receive(msgs, timeout=round_timeout):
                if reply.has_error():
                    log.warning("round %d: a client failed: %s", r + 1, reply.error.reason)
                    cached.discard(reply.metadata.src_node_id)  # it may have lost its cache: resend next time
                    continue
                cached.add(reply.metadata.src_node_id)
                m = dict(reply.content["metrics"])
                info = reply.content["info"]
                update = decode(_tensors(reply.content["arrays"]), _scales(reply.content))
                results.append((int(info["partition-id"]), ClientResult(
                    update, int(m.pop("num-examples")), m, str(info["kind"]))))
            rec = server.aggregate(results, extra={"round_seconds": time.perf_counter() - t0})
        rec["missing"] = sorted(set(sampled) - set(rec["clients"]) - {x["client"] for x in rec["rejected"]})
        log.info("round %d: %d clients, %d rejected, %d missing%s", rec["round"], len(rec["clients"]),
                 len(rec["rejected"]), len(rec["missing"]), " (SecAgg+)" if cfg.fed.secagg else "")
        checkpoint.save(server.state_dict(), ckpt)
        audit_path.write_text(json.dumps(audit, indent=2))
    return server


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    try:
        cfg, out, resume = _run_config(context)
    except ConfigError as err:
        log.error("%s", err)
        raise
    serve(grid, cfg, out, resume=resume, context=context)


def simulate(cfg: RunConfig, proxy: torch.nn.Module, tokenizer, num_clients: int, out: Path,
             resume: bool = False, blocks_only: list[int] | None = None, monitor=None, guard=None):
    """Federate ``proxy`` in Flower's Simulation Engine (one Ray actor per client at a time).

    Same rounds, same result as the in-process path for the same seed, but every update
    crosses Flower's message layer (and SecAgg+ can run). Returns the FederatedServer.
    """
    from flwr.simulation import run_simulation

    done = {}
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        done["server"] = federate_over_grid(grid, cfg, proxy, tokenizer, num_clients, out, resume, context,
                                            blocks_only, monitor, guard)

    cpus = os.cpu_count() or 1  # one client at a time with all cores, like the in-process path
    run_simulation(server_app=app, client_app=client_app, num_supernodes=num_clients,
                   backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": 1.0 if proxy.device.type ==
                                                        "cuda" else 0.0},
                                   "init_args": {"num_cpus": cpus, "include_dashboard": False}})
    if "server" not in done:
        raise FedProxyError(f"the Flower simulation stopped before the last round; see the log above. "
                            f"Rerun with --resume to continue from {out / 'flower_server.pt'}")
    return done["server"]


def make_server_app(cfg: RunConfig, out: Path, resume: bool = False) -> ServerApp:
    """A ServerApp bound to a config object (for the Simulation Engine's Python API)."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        serve(grid, cfg, out, resume=resume, context=context)

    return app
