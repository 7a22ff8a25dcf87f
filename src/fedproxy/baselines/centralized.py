"""Centralized fine-tuning of the LLM on pooled client data: the upper bound (:mod:`fedproxy.pooled`).

``centralized-kept`` trains only the LLM blocks the proxy keeps (and the final norm): fusion with
variant ``source`` changes exactly these tensors, so this is what they reach when trained directly
on the pooled data, the practical ceiling of a fused proxy delta. Its gap to ``centralized`` is
what leaving the dropped blocks untouched costs.
"""

from ..methods import Recipe, register

register(Recipe("centralized", clients_get="llm", trains="all", data="pooled", optimization="plain", fusion="none"))
register(Recipe("centralized-kept", clients_get="llm", trains="kept-blocks", data="pooled", optimization="plain",
                fusion="none"))
