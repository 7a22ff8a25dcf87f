"""Client partitions: natural domains, or Dirichlet label skew via flwr-datasets."""

from __future__ import annotations

from .benchmark import Example


def dirichlet_partition(pool: list[Example], num_clients: int, alpha: float, seed: int) -> list[list[Example]]:
    """Split ``pool`` into label-skewed client shards with flwr-datasets' DirichletPartitioner."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    ds = Dataset.from_dict({"idx": list(range(len(pool))), "label": [e.label for e in pool]})
    part = DirichletPartitioner(
        num_partitions=num_clients, partition_by="label", alpha=alpha, seed=seed,
        min_partition_size=1, self_balancing=True,
    )
    part.dataset = ds
    return [[pool[i] for i in part.load_partition(c)["idx"]] for c in range(num_clients)]
