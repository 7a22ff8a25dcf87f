"""Packed rows give the padded batch's numbers (scores, losses, gradients) for every supported architecture."""

import pytest
import torch

import fedproxy.objectives as objectives
from fedproxy.data.encode import Encoded
from fedproxy.objectives import _label_index, label_loss, logits_at, pack, padding_fraction, score_first_tokens
from tests.conftest import ARCHITECTURES
from tests.conftest import tiny_arch_model as _model


def _batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 64, (n,), generator=g)
        mask[i, :n] = 1
    labels = [[int(ids[i, n - 2]), int(ids[i, n - 1])] for i, n in enumerate(lengths)]
    return Encoded(ids, mask, torch.tensor([n - 3 for n in lengths]), labels, torch.zeros(len(lengths)))


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_packed_logits_equal_padded_logits(kind, monkeypatch):
    monkeypatch.setattr(objectives, "PACK_TOKENS", 24)  # several rows, one sequence longer than the sliding window
    model, batch = _model(kind), _batch([5, 17, 9, 3, 12, 20, 7])
    rows, cols, _ = _label_index(batch)
    with torch.no_grad():
        padded = logits_at(model, batch, rows, cols)
        packed = logits_at(model, batch, rows, cols, packed=True)
    assert torch.allclose(padded, packed, atol=1e-4), float((padded - packed).abs().max())


def test_pack_fills_rows_in_order_and_restarts_positions(monkeypatch):
    monkeypatch.setattr(objectives, "PACK_TOKENS", 10)
    batch = _batch([4, 5, 3, 9])
    ids, pos, row, start = pack(batch)
    assert row.tolist() == [0, 0, 1, 2] and start.tolist() == [0, 4, 0, 0]  # 4+5 fit in 10, +3 would not
    assert ids.shape == (3, 9)
    assert pos[1].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5]  # the unused tail is a segment of its own
    for i, n in enumerate([4, 5, 3, 9]):
        assert torch.equal(ids[row[i], start[i]: start[i] + n], batch.input_ids[i, :n])


def test_scores_do_not_depend_on_what_else_is_in_the_batch():
    model = _model("llama")
    batch = _batch([6, 15, 8, 11])
    alone = Encoded(batch.input_ids[1:2, :15], batch.attention_mask[1:2, :15], batch.label_pos[1:2],
                    batch.label_ids[1:2], batch.labels[1:2])
    scores, nll = score_first_tokens(model, batch, [1, 2, 3])
    scores_alone, nll_alone = score_first_tokens(model, alone, [1, 2, 3])
    assert torch.allclose(scores[1], scores_alone[0], atol=1e-5) and torch.allclose(nll[1], nll_alone[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gemma3_text"])
def test_packed_label_loss_has_the_padded_gradients(kind, monkeypatch):
    monkeypatch.setattr(objectives, "PACK_TOKENS", 24)
    model, batch = _model(kind).train(), _batch([5, 17, 9, 3, 12, 20, 7])
    grads = []
    for packed in (False, True):
        model.zero_grad(set_to_none=True)
        label_loss(model, batch, packed=packed).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n, g in grads[0].items():
        assert torch.allclose(g, grads[1][n], atol=1e-5, rtol=1e-4), n


def test_padding_fraction_counts_what_each_layout_pads(tiny_ctx, monkeypatch):
    enc = tiny_ctx.encoder
    ex = tiny_ctx.bench.train[0][:4]
    lengths = [int(enc.batch([e], with_label=True).attention_mask.sum()) for e in ex]
    chunks = [ex[:2], ex[2:]]
    width = [max(lengths[:2]), max(lengths[2:])]
    assert padding_fraction(enc, chunks) == 1 - sum(lengths) / (2 * width[0] + 2 * width[1])
    assert padding_fraction(enc, [[e] for e in ex]) == 0
    assert padding_fraction(enc, chunks, packed=True) == 0  # each chunk fits one row
    monkeypatch.setattr(objectives, "PACK_TOKENS", 1)  # one sequence per row: as padded
    assert padding_fraction(enc, chunks, packed=True) == padding_fraction(enc, chunks)
