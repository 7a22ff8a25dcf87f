"""Offsite-Tuning (Xiao et al., 2023): train a bottom/top adapter around a lossy emulator.

Adapter = the first and last ``ADAPTER`` LLM blocks; emulator = the middle blocks with a
uniform layer drop at the run's keep ratio, distilled towards the LLM (logit KL + hidden-state
matching) on the same server text and with the same step budget as FedProxy's proxy, the
adapter held fixed, as the paper runs it. Clients train only the adapter (FedAvg); its deltas
are plugged back into the same LLM blocks. ``offsite-tuning-raw`` keeps the emulator an
undistilled layer drop (the baseline before distillation: perplexity in the millions).
"""


from ..methods import Recipe, register

register(Recipe("offsite-tuning", clients_get="emulator", trains="adapter", data="federated", optimization="plain",
                fusion="scale", distilled=True))
register(Recipe("offsite-tuning-raw", clients_get="emulator", trains="adapter", data="federated",
                optimization="plain", fusion="scale", distilled=False))
