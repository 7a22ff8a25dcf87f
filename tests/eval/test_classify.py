"""Evaluation counts every (gold, predicted) pair, per client and pooled."""


def test_evaluation_confusion_matches_accuracy_and_pools_the_clients(tiny_ctx):
    res = tiny_ctx.evaluate(tiny_ctx.llm)
    n_cls = len(tiny_ctx.bench.labels)
    pooled = res["confusion"]
    assert len(pooled) == n_cls and all(len(r) == n_cls for r in pooled)
    per = list(res["per_client"].values())
    assert sum(map(sum, pooled)) == sum(m["n"] for m in per)
    assert sum(pooled[i][i] for i in range(n_cls)) == round(res["accuracy"] * sum(m["n"] for m in per))
    for g in range(n_cls):
        assert [sum(m["confusion"][g][p] for m in per) for p in range(n_cls)] == pooled[g]
        golds = sum(1 for t in tiny_ctx.bench.test for e in t if e.label == g)
        assert sum(pooled[g]) == golds


def test_confusion_rows_are_gold_and_columns_predicted(tiny_ctx, monkeypatch):
    import torch

    import fedproxy.eval.classify as classify

    n_cls = len(tiny_ctx.bench.labels)

    def always_last(model, batch, first_tokens, packed=True):
        n = batch.input_ids.shape[0]
        return torch.arange(n_cls, dtype=torch.float).expand(n, n_cls), torch.zeros(n)

    monkeypatch.setattr(classify, "score_first_tokens", always_last)
    examples = tiny_ctx.bench.test[0]
    res = classify.evaluate(tiny_ctx.llm, tiny_ctx.encoder, examples, torch.device("cpu"))
    golds = [sum(1 for e in examples if e.label == g) for g in range(n_cls)]
    assert res["confusion"] == [[0] * (n_cls - 1) + [golds[g]] for g in range(n_cls)]
    assert res["accuracy"] == golds[-1] / len(examples)


def test_examples_packed_into_rows_together_get_what_each_gets_alone(tiny_ctx):
    """Scoring packs a batch's examples end to end into rows: an example of any length gets the
    prediction and loss it gets scored on its own, in data order."""
    import torch

    from fedproxy.eval.classify import evaluate

    examples = [e for part in tiny_ctx.bench.test for e in part][:24]
    lengths = [len(tiny_ctx.encoder.prompt_ids(e.text)) for e in examples]
    assert len(set(lengths)) > 1, "the fixture's examples must differ in length"
    cpu = torch.device("cpu")
    together = evaluate(tiny_ctx.llm, tiny_ctx.encoder, examples, cpu, batch_size=5)
    alone = [evaluate(tiny_ctx.llm, tiny_ctx.encoder, [e], cpu) for e in examples]
    assert together["predictions"] == [a["predictions"][0] for a in alone]
    assert together["gold"] == [e.label for e in examples]
    assert abs(together["loss"] - sum(a["loss"] for a in alone) / len(alone)) < 1e-4
