"""The LLM as shipped, no fine-tuning."""

import time

from ..methods import METHODS


@METHODS.register("zero-shot")
def zero_shot(ctx) -> dict:
    t0 = time.perf_counter()
    return {**ctx.llm_eval("test"), "wall_seconds": time.perf_counter() - t0, "trainable_params": 0}
