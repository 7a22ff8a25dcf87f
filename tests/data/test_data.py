from fedproxy.config import DataConfig
from fedproxy.data import load_benchmark
from fedproxy.data.benchmark import Example
from fedproxy.data.encode import Encoder
from fedproxy.data.partition import dirichlet_partition


def test_synthetic_benchmark_is_seeded_and_disjoint_by_client():
    cfg = DataConfig(benchmark="tiny-synthetic", num_clients=3, train_per_client=20, test_per_client=5)
    a, b = load_benchmark(cfg, seed=1), load_benchmark(cfg, seed=1)
    assert a.train == b.train and a.test == b.test
    assert load_benchmark(cfg, seed=2).train != a.train
    assert [len(t) for t in a.train] == [20, 20, 20]


def test_client_side_load_leaves_only_the_server_text_out():
    cfg = DataConfig(benchmark="tiny-synthetic", num_clients=3, train_per_client=20, test_per_client=5)
    full, client = load_benchmark(cfg, seed=1), load_benchmark(cfg, seed=1, server_text=False)
    assert full.server_text and client.server_text == []
    assert (client.train, client.test, client.server_val) == (full.train, full.test, full.server_val)


def test_balanced_batches_draw_a_rare_class_as_often_as_a_common_one():
    import random
    from collections import Counter

    from fedproxy.data.encode import balanced_batches

    common = [Example(f"c{i}", 0, "d") for i in range(90)]
    rare = [Example(f"r{i}", 2, "d") for i in range(10)]
    stream = balanced_batches(common + rare, 8, random.Random(0))
    drawn = [e for _ in range(100) for e in next(stream)]
    counts = Counter(e.label for e in drawn)
    assert set(counts) == {0, 2} and 0.4 < counts[2] / len(drawn) < 0.6  # 10% of the data, half the draws
    assert set(rare) <= set(drawn)  # every rare example is used, not one of them over and over


def test_dirichlet_partition_skews_labels():
    pool = [Example(f"t{i}", i % 4, "x") for i in range(400)]
    parts = dirichlet_partition(pool, 4, alpha=0.1, seed=0)
    assert sum(len(p) for p in parts) == 400
    majority = [max((sum(e.label == k for e in p) for k in range(4))) / max(1, len(p)) for p in parts]
    assert max(majority) > 0.5  # at alpha=0.1 at least one client is dominated by one label


def test_encoder_truncates_and_marks_label_position(tiny_ctx):
    enc: Encoder = tiny_ctx.encoder
    long = Example(" ".join(["w1"] * 500), 2, "d0")
    batch = enc.batch([long, tiny_ctx.bench.train[0][0]], with_label=True)
    assert batch.input_ids.shape[1] <= enc.max_length
    for i, lab in enumerate(batch.label_ids):
        p = int(batch.label_pos[i])
        assert batch.input_ids[i, p + 1 : p + 1 + len(lab)].tolist() == lab


def test_describe_counts_the_labels_of_every_split():
    cfg = DataConfig(benchmark="tiny-synthetic", num_clients=3, train_per_client=20, test_per_client=5)
    bench = load_benchmark(cfg, seed=0)
    info = bench.describe()
    assert sum(info["server_val_label_counts"].values()) == len(bench.server_val)
    for c, tr, te in zip(info["clients"], bench.train, bench.test):
        assert sum(c["train_label_counts"].values()) == len(tr)
        assert sum(c["test_label_counts"].values()) == len(te)
        assert set(c["test_label_counts"]) <= set(bench.labels)
