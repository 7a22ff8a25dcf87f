"""Loading LLMs and tokenizers, block access and device helpers."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch
from torch import nn

from . import assets
from .config import ModelConfig, RunConfig
from .errors import AssetError, ModelError

# Decoder families whose blocks live in ``model.model.layers`` with per-layer config lists
# we know how to subset; anything else is refused with a clear message.
SUPPORTED_MODEL_TYPES = ("llama", "gemma3_text", "gemma3", "qwen2", "qwen3", "mistral", "gemma2")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but no CUDA GPU is visible; use device='auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # AVX512-BF16 / AMX make CPU bf16 autocast a real speed-up; elsewhere it is emulated and slow.
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def adamw(params, lr: float) -> torch.optim.AdamW:
    """AdamW without weight decay, fused into one kernel where torch has one for these tensors.

    Profiling a proxy client step on CPU (benchmarks/diagnostics/profile_step.py) showed the default
    multi-tensor AdamW taking about as long as forward + backward; the fused kernel makes one
    pass over parameters, gradients and moments instead of several.
    """
    params = list(params)
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) and p.device.type in ("cpu", "cuda")
                for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused or None)


def autocast(device: torch.device, enabled: bool):
    if enabled and bf16_supported(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        inner_lm = getattr(inner, "language_model", None)
        layers = getattr(inner_lm, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ModelError(
            f"{type(model).__name__} has no decoder block list at model.layers; FedProxy supports "
            f"decoder-only models of type {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return layers


# A proxy whose blocks run in a schedule keeps it in its config, so every copy (a checkpoint, a
# Flower client's rebuild from the config) runs the same way: config[LAYER_SCHEDULE][i] is the
# proxy block that runs at depth i.
LAYER_SCHEDULE = "fedproxy_layer_schedule"


class ScheduledLayers(nn.ModuleList):
    """Decoder blocks that run in ``schedule`` order, a block possibly at several depths (layer
    sharing, as CRaSh's emulators: a kept block also stands in for the dropped blocks after it).

    Parameters, state dicts and iteration see each block once, under its own index, so whatever
    reads a model's tensors (federation, aggregation, fusion, checkpoints) is unchanged; only the
    decoder's forward, which runs ``layers[:num_hidden_layers]``, gets the schedule. A block that
    runs twice would write two entries into one KV-cache slot, so a scheduled model runs without a
    cache (``use_cache`` off; generation recomputes the prefix, slower but exact)."""

    def __init__(self, layers, schedule: list[int]):
        super().__init__(layers)
        if not schedule or any(not 0 <= j < len(self) for j in schedule):
            raise ModelError(f"layer schedule {schedule} refers to blocks outside the model's {len(self)}")
        self.schedule = list(schedule)

    def __getitem__(self, idx):
        if isinstance(idx, slice):  # the decoder's forward: the blocks the slice keeps, in schedule order
            picked = set(range(len(self))[idx])
            return [super(ScheduledLayers, self).__getitem__(j) for j in self.schedule if j in picked]
        return super().__getitem__(idx)


def set_blocks(model: nn.Module, layers: nn.ModuleList) -> None:
    """Put ``layers`` where :func:`blocks` finds the decoder blocks."""
    inner = model.model
    (inner.language_model if hasattr(inner, "language_model") else inner).layers = layers


def apply_layer_schedule(model: nn.Module, schedule: list[int] | None = None) -> nn.Module:
    """Run ``model``'s blocks in ``schedule`` order (recorded in its config), or in the schedule its
    config records (a reloaded or rebuilt proxy); a model without one is returned unchanged."""
    schedule = schedule if schedule is not None else getattr(model.config, LAYER_SCHEDULE, None)
    if schedule is None:
        return model
    text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if isinstance(getattr(text_cfg, "layer_types", None), list):  # the decoder reads layer_types[depth]
        raise ModelError(f"layer sharing (compress.share_layers) needs a decoder without per-layer attention "
                         f"types; {model.config.model_type} has them (its forward looks each depth's type up, and "
                         f"the config allows one per block). Use compress.share_layers=false with this model")
    set_blocks(model, ScheduledLayers(list(blocks(model)), schedule))
    setattr(model.config, LAYER_SCHEDULE, list(schedule))
    model.config.use_cache = False
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = False
    return model


def check_supported(model: nn.Module) -> None:
    mtype = getattr(model.config, "model_type", "?")
    if mtype not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"model type '{mtype}' is not supported for block compression; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    blocks(model)


def tiny_tokenizer(words: list[str]):
    """A word-level tokenizer over a fixed vocabulary, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words) - set(specials)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )


def tiny_model(cfg: ModelConfig, vocab_size: int, seed: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    h = cfg.tiny_hidden
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=h,
        intermediate_size=2 * h,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float().eval()


def _gguf_arch(path: Path) -> str:
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as err:  # noqa: BLE001 - any parse failure means the file is not usable GGUF
        raise AssetError(f"{path} is not a readable GGUF file ({type(err).__name__}: {err})") from None


# GGUF architecture names that transformers can de-quantize into a supported model type.
GGUF_ARCHES = {"llama": "llama", "gemma3": "gemma3_text", "qwen2": "qwen2", "qwen3": "qwen3", "mistral": "mistral"}


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantize a GGUF into a normal fp32 Hugging Face checkpoint (done once, then cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = _gguf_arch(gguf_path)
    if arch not in GGUF_ARCHES:
        raise ModelError(
            f"GGUF {gguf_path.name} has architecture '{arch}', which FedProxy does not support; "
            f"supported GGUF architectures: {', '.join(GGUF_ARCHES)}"
        )
    print(f"[fedproxy] converting {gguf_path.name} to an fp32 checkpoint (once) ...", file=sys.stderr, flush=True)
    kw = {"gguf_file": gguf_path.name}
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    # A de-quantized model is a plain fp32 model; dropping the GGUF marker makes it saveable.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


def resolve_checkpoint(source: str, cache: Path | None = None) -> Path:
    """Map a model source (built-in name, GGUF file, or HF directory) to an HF checkpoint dir."""
    if source in assets.KNOWN_LLMS:
        gguf = assets.fetch_gguf(source, cache)
        out = assets.cache_dir(cache) / "models" / f"{source}-hf"
        return out if (out / "config.json").is_file() else convert_gguf(gguf, out)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        out = assets.cache_dir(cache) / "models" / f"{path.stem}-hf"
        return out if (out / "config.json").is_file() else convert_gguf(path, out)
    if not path.exists():
        raise AssetError(
            f"model '{source}' is not a built-in ({', '.join(assets.KNOWN_LLMS)}, tiny), "
            "a .gguf file or an existing checkpoint directory"
        )
    if not (path / "config.json").is_file():
        raise AssetError(f"{path} has no config.json; point model.source at a Hugging Face checkpoint directory")
    return path


def load_pretrained(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise AssetError(f"could not load a causal LM from {path}: {str(err).splitlines()[0]}") from None
    tok = AutoTokenizer.from_pretrained(path) if (Path(path) / "tokenizer_config.json").is_file() else None
    check_supported(model)
    return apply_layer_schedule(model).eval(), tok


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_threads(cfg: RunConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def load_params(model: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy ``params`` into ``model`` by parameter name.

    Goes through ``named_parameters`` (which lists tied weights once) rather than
    ``load_state_dict``, where a stale tied alias such as ``lm_head.weight`` could win.
    """
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in params.items():
            if name in own:
                own[name].copy_(value.to(own[name].device, own[name].dtype))


def unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model itself, under a peft wrapper if there is one."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (its outputs end with the final norm); peft wrappers unwrapped."""
    return unwrapped(model).model


def snapshot(model: nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached CPU fp32 copies of (a subset of) the model's parameters."""
    own = dict(model.named_parameters())
    return {n: own[n].detach().float().cpu().clone() for n in (names or list(own))}
