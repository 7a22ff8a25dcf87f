import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fedproxy.data.benchmark import Example
from fedproxy.federated.client import prior_bias
from fedproxy.objectives import _label_index, label_loss, logits_at


def _examples(labels):
    return [Example(text="good", label=c, domain="d") for c in labels]


def test_prior_bias_is_zero_for_balanced_clients_and_signed_by_skew(tiny_ctx):
    enc = tiny_ctx.encoder
    firsts = [t[0] for t in enc.label_tokens]
    n_cls = len(firsts)
    assert prior_bias(_examples(list(range(n_cls)) * 5), enc, 1.0) == pytest.approx({t: 0.0 for t in firsts})
    skewed = prior_bias(_examples([0] * 9 + [1]), enc, 2.0)
    total = 10 + n_cls  # add-one smoothing
    assert skewed[firsts[0]] == pytest.approx(2.0 * math.log(n_cls * 10 / total))
    assert skewed[firsts[0]] > 0 > skewed[firsts[1]] > skewed[firsts[2]]
    assert prior_bias(_examples([0, 0]), enc, 0.0) == {}


def test_label_loss_offsets_only_the_first_label_token(tiny_ctx):
    enc, model = tiny_ctx.encoder, tiny_ctx.llm
    batch = enc.batch(tiny_ctx.bench.train[0][:6], with_label=True)
    bias = prior_bias(tiny_ctx.bench.train[0][:6], enc, 1.0)
    rows, cols, targets = _label_index(batch)
    with torch.no_grad():
        logits = logits_at(model, batch, rows, cols)
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        expected = logits.clone()
        for tok, value in bias.items():
            expected[first, tok] += value
        assert float(label_loss(model, batch, bias)) == pytest.approx(float(F.cross_entropy(expected, targets)))
        assert float(label_loss(model, batch)) == pytest.approx(float(F.cross_entropy(logits, targets)))
        assert float(label_loss(model, batch, bias)) != pytest.approx(float(label_loss(model, batch)))


def test_class_softmax_scores_first_tokens_among_the_classes_only(tiny_ctx):
    enc, model = tiny_ctx.encoder, tiny_ctx.llm
    batch = enc.batch(tiny_ctx.bench.train[0][:6], with_label=True)
    classes = [t[0] for t in enc.label_tokens]
    rows, cols, targets = _label_index(batch)
    with torch.no_grad():
        logits = logits_at(model, batch, rows, cols)
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        per_token = F.cross_entropy(logits, targets, reduction="none")
        for i in torch.nonzero(first).flatten().tolist():
            restricted = logits[i, classes]
            per_token[i] = -torch.log_softmax(restricted, 0)[classes.index(int(targets[i]))]
        got = label_loss(model, batch, class_tokens=classes)
        assert float(got) == pytest.approx(float(per_token.mean()), rel=1e-5)
        # Over the classes only, a first token's loss is smaller than over the whole vocabulary.
        assert float(got) < float(label_loss(model, batch))


def test_class_softmax_needs_distinct_first_tokens(tiny_ctx):
    import dataclasses

    from fedproxy.errors import ConfigError
    from fedproxy.federated.client import class_tokens

    cfg = dataclasses.replace(tiny_ctx.cfg.fed, label_softmax="classes")
    enc = tiny_ctx.encoder
    assert class_tokens(enc, cfg) == [t[0] for t in enc.label_tokens]
    assert class_tokens(enc, tiny_ctx.cfg.fed) is None
    shared = copy.copy(enc)
    shared.first_token_scoring = False
    with pytest.raises(ConfigError, match="first tokens differ"):
        class_tokens(shared, cfg)


def _train(ctx, params, examples, steps, opt_state=None, **fed):
    import dataclasses

    from fedproxy.federated.client import local_train

    cfg = dataclasses.replace(ctx.cfg.fed, local_steps=steps, batch_size=len(examples), lr=1e-3, **fed)
    return local_train(ctx.llm, params, examples, ctx.encoder, cfg, torch.device("cpu"), seed=0,
                       opt_state=opt_state).update


def test_kept_optimizer_state_continues_adam_across_rounds(tiny_ctx):
    from fedproxy.federated import trainable_names
    from fedproxy.modeling import snapshot

    # One full batch per step, so two rounds of two steps see the same data as one run of four.
    examples = tiny_ctx.bench.train[0][:4]
    names = trainable_names(tiny_ctx.llm, tiny_ctx.cfg.fed)
    start = snapshot(tiny_ctx.llm, names)
    whole = _train(tiny_ctx, start, examples, 4)

    def two_rounds(state):
        first = _train(tiny_ctx, start, examples, 2, state)
        second = _train(tiny_ctx, {n: start[n] + first[n] for n in names}, examples, 2, state)
        return {n: first[n] + second[n] for n in names}

    state: dict = {}
    kept = two_rounds(state)
    restarted = two_rounds(None)
    assert state and all("::" in k for k in state)
    gap = lambda d: max(float((d[n] - whole[n]).abs().max()) for n in names)  # noqa: E731
    assert gap(kept) < 1e-6 < gap(restarted)


def test_saved_optimizer_state_of_another_model_is_refused(tiny_ctx, fault_log):
    from fedproxy.errors import ModelError
    from fedproxy.federated import trainable_names
    from fedproxy.modeling import snapshot

    examples = tiny_ctx.bench.train[0][:4]
    names = trainable_names(tiny_ctx.llm, tiny_ctx.cfg.fed)
    state: dict = {}
    _train(tiny_ctx, snapshot(tiny_ctx.llm, names), examples, 1, state)
    stale = {k: v for k, v in state.items() if not k.startswith(names[0] + "::")}
    with pytest.raises(ModelError, match="does not match the trained tensors"):
        _train(tiny_ctx, snapshot(tiny_ctx.llm, names), examples, 1, stale)
    fault_log.bad_input("client optimizer state saved for a different set of tensors")


def test_packed_and_padded_training_take_the_same_steps(tiny_ctx):
    from fedproxy.federated import trainable_names
    from fedproxy.modeling import snapshot

    examples = tiny_ctx.bench.train[0][:6]  # of different lengths, so the padded batch carries padding
    assert len({int(tiny_ctx.encoder.batch([e], True).attention_mask.sum()) for e in examples}) > 1
    names = trainable_names(tiny_ctx.llm, tiny_ctx.cfg.fed)
    start = snapshot(tiny_ctx.llm, names)
    packed, padded = (_train(tiny_ctx, start, examples, 3, pack=p) for p in (True, False))
    # Adam turns float-rounding differences of tiny gradients into ~1e-6 differences of its steps
    assert max(float((packed[n] - padded[n]).abs().max()) for n in names) < 5e-5
    assert max(float(padded[n].abs().max()) for n in names) > 1e-4  # the steps did move the model


def test_update_is_the_parameter_change_and_no_gradient_outlives_training(tiny_ctx):
    from fedproxy.federated import trainable_names
    from fedproxy.modeling import snapshot

    names = trainable_names(tiny_ctx.llm, tiny_ctx.cfg.fed)
    start = snapshot(tiny_ctx.llm, names)
    update = _train(tiny_ctx, start, tiny_ctx.bench.train[0][:4], 2)
    after = snapshot(tiny_ctx.llm, names)
    assert all(torch.equal(update[n], after[n] - start[n]) for n in names)
    # Gradients the size of the trained tensors would otherwise sit on the model until its next use.
    assert all(p.grad is None for p in tiny_ctx.llm.parameters())
