"""Thin Flower app (Message API): the same client/server code as the in-process path.

Run config keys (``[tool.flwr.app.config]``): ``fedproxy-config`` (preset or config file,
on the server), ``out-dir`` (where the server writes ``flower_result.pt``), ``overrides``
(``;``-separated ``key=value`` pairs). Clients get their data partition from node config
(``partition-id``); everything else arrives in messages from the server.

What crosses the wire: server -> client: the proxy (architecture, weights, tokenizer) and
the run config; client -> server: the parameter update and scalar metrics. No LLM block
outside the proxy leaves the server and no text or token id leaves a client.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from . import checkpoint
from .config import RunConfig, load_config
from .errors import ConfigError

log = logging.getLogger("fedproxy.flower")

client_app = ClientApp()
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


# ---- client ---------------------------------------------------------------------------
@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Tell the server which data partition this node holds (and nothing about the data)."""
    pid = int(context.node_config.get("partition-id", 0))
    return Message(content=RecordDict({"info": ConfigRecord({"partition-id": pid})}), reply_to=msg)


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    from transformers import AutoConfig, AutoModelForCausalLM

    from .data import load_benchmark
    from .data.encode import Encoder
    from .federated import local_train
    from .federated.server import client_seed
    from .modeling import load_params, pick_device

    conf = msg.content["config"]
    cfg = RunConfig.from_flat(json.loads(str(conf["run-config"])))
    pid = int(context.node_config.get("partition-id", 0))
    server_round = int(conf["round"])
    bench = load_benchmark(cfg.data, cfg.seed)
    tok = tokenizer_from_payload(str(conf["tokenizer"]))
    encoder = Encoder(tok, bench, cfg.data.max_length)
    arch = json.loads(str(conf["proxy-config"]))
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch)).float().eval()
    device = pick_device(cfg.device)
    load_params(model, _tensors(msg.content["frozen"]))
    model.to(device)
    global_params = _tensors(msg.content["arrays"])
    res = local_train(model, global_params, bench.train[pid], encoder, cfg.fed, device,
                      client_seed(cfg.seed, server_round, pid), cfg.bf16)
    metrics = {k: float(v) for k, v in res.metrics.items()}
    metrics["num-examples"] = res.num_examples
    return Message(content=RecordDict({
        "arrays": _arrays(res.update),
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


def describe(content: RecordDict) -> dict:
    """Names, kinds and dtypes of everything in a message (for the privacy/IP audit)."""
    out = {}
    for name, rec in content.items():
        if isinstance(rec, ArrayRecord):
            out[name] = {"type": "arrays", "keys": sorted(rec.keys()), "dtypes": sorted({a.dtype for a in rec.values()}),
                         "bytes": sum(len(a.data) for a in rec.values())}
        elif isinstance(rec, MetricRecord):
            out[name] = {"type": "metrics", "keys": sorted(rec.keys())}
        else:
            out[name] = {"type": "config", "keys": sorted(rec.keys())}
    return out


def _partitions(grid: Grid, want: int, timeout: float) -> dict[int, int]:
    """partition-id -> node id for the connected SuperNodes (waits for ``want`` nodes)."""
    t0 = time.time()
    nodes: list[int] = []
    while time.time() - t0 < timeout:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= want:
            break
        time.sleep(0.5)
    msgs = [Message(content=RecordDict({}), dst_node_id=n, message_type="query") for n in nodes]
    out = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if not reply.has_error():
            out[int(reply.content["info"]["partition-id"])] = reply.metadata.src_node_id
    return out


def serve(grid: Grid, cfg: RunConfig, out: Path, round_timeout: float = 600.0, resume: bool = False) -> Path:
    """The FedProxy server loop over a Flower Grid; returns the path of the saved result.

    With ``resume`` the server continues after the last round in ``out/flower_server.pt``
    (same final result as an uninterrupted run with the same seed). Clients that fail or do
    not answer within ``round_timeout`` are left out of that round.
    """
    from .compress import compress
    from .context import build_context
    from .federated import ClientResult, FederatedServer, trainable_names
    from .modeling import snapshot

    ctx = build_context(cfg, out, progress=False)
    comp = compress(ctx.llm, ctx.server_text_batches(cfg.compress.distill_batch), cfg.compress, ctx.device,
                    cfg.seed, ctx.bf16, progress=False)
    proxy = comp.proxy
    names = trainable_names(proxy, cfg.fed)
    all_params = snapshot(proxy)
    frozen = {k: v for k, v in all_params.items() if k not in names}
    server = FederatedServer({k: all_params[k] for k in names}, cfg.fed, cfg.seed, len(ctx.bench.train))
    parts = _partitions(grid, len(ctx.bench.train), round_timeout)
    missing = sorted(set(range(len(ctx.bench.train))) - set(parts))
    if missing:
        log.warning("no SuperNode holds partitions %s; they will be skipped", missing)
    static = {"run-config": json.dumps(cfg.to_flat()), "tokenizer": tokenizer_payload(ctx.tokenizer),
              "proxy-config": json.dumps(proxy.config.to_dict())}
    ckpt = out / "flower_server.pt"
    audit_path = out / "message_audit.json"
    audit: list[dict] = []
    if resume and (state := checkpoint.load(ckpt)) is not None:
        server.load_state_dict(state)
        audit = json.loads(audit_path.read_text()) if audit_path.is_file() else []
        log.info("resuming after round %d", server.round)
    while server.round < cfg.fed.rounds:
        r = server.round
        t0 = time.perf_counter()
        msgs = [Message(content=RecordDict({"arrays": _arrays(server.params), "frozen": _arrays(frozen),
                                            "config": ConfigRecord({**static, "round": r})}),
                        dst_node_id=parts[c], message_type="train")
                for c in server.sample(r) if c in parts]
        audit += [{"round": r, "direction": "server->client", "type": m.metadata.message_type,
                   "content": describe(m.content)} for m in msgs]
        results = []
        for reply in grid.send_and_receive(msgs, timeout=round_timeout):
            audit.append({"round": r, "direction": "client->server", "error": reply.has_error(),
                          "content": {} if reply.has_error() else describe(reply.content)})
            if reply.has_error():
                log.warning("round %d: a client failed: %s", r + 1, reply.error.reason)
                continue
            m = dict(reply.content["metrics"])
            info = reply.content["info"]
            results.append((int(info["partition-id"]), ClientResult(
                _tensors(reply.content["arrays"]), int(m.pop("num-examples")), m, str(info["kind"]))))
        rec = server.aggregate(results, extra={"round_seconds": time.perf_counter() - t0})
        log.info("round %d: %d clients, %d rejected", rec["round"], len(rec["clients"]), len(rec["rejected"]))
        checkpoint.save(server.state_dict(), ckpt)
        audit_path.write_text(json.dumps(audit, indent=2))
    result = out / "flower_result.pt"
    checkpoint.save({"params": server.params, "history": server.history, "keep": comp.pmap.keep,
                     "seed": cfg.seed}, result)
    return result


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    try:
        cfg, out, resume = _run_config(context)
    except ConfigError as err:
        log.error("%s", err)
        raise
    serve(grid, cfg, out, resume=resume)


def make_server_app(cfg: RunConfig, out: Path, resume: bool = False, round_timeout: float = 600.0) -> ServerApp:
    """A ServerApp bound to a config object (for the Simulation Engine's Python API)."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        serve(grid, cfg, out, round_timeout=round_timeout, resume=resume)

    return app
