"""The LLM as shipped, no fine-tuning."""

from ..methods import Recipe, register

register(Recipe("zero-shot", clients_get="nothing", trains="nothing", data="none", fusion="none"))
