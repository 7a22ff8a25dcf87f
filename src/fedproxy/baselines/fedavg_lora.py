"""FedAvg-LoRA on the full LLM: clients receive the whole LLM (no IP protection); LoRA rank
``fed.lora_r`` (8 when unset), the merged delta applied to the LLM as it is."""

from ..methods import Recipe, register

register(Recipe("fedavg-lora", clients_get="llm", trains="lora", data="federated", optimization="plain",
                fusion="source-x1"))
