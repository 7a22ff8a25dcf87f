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
