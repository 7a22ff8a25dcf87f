"""FedProxy: federated fine-tuning of an LLM through a compressed proxy small LM.

Stages: ``compress`` (LLM -> proxy), ``federated`` + ``aggregate`` (train the proxy on
clients), ``fuse`` (plug the learned proxy deltas back into the LLM).
"""

__version__ = "0.1.0"
