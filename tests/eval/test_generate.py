"""Generation scoring: SQuAD-style token F1 and exact match, greedy answers, the tables the guard reads."""

import pytest

from fedproxy.eval.generate import exact_match, normalize, token_f1
from tests.conftest import ARCHITECTURES, tiny_arch_model


def test_normalization_and_scores_match_hand_computation():
    assert normalize("The Cat, sat!") == ["cat", "sat"]
    assert exact_match("the Earthquakes.", "earthquakes") == 1.0
    # prediction "big red dog", reference "red dog": precision 2/3, recall 1 -> F1 0.8
    assert token_f1("big red dog", "red dog") == pytest.approx(0.8)
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "dog") == 0.0


def test_evaluation_of_a_generation_benchmark_has_per_example_tables(tiny_cfg, tmp_path):
    from fedproxy.context import build_context
    from fedproxy.eval.guard import collapse_reasons, paired_test, per_example

    ctx = build_context(tiny_cfg.with_overrides(["data.benchmark=tiny-qa", "data.max_answer=4"]), tmp_path,
                        progress=False)
    ev = ctx.val_eval(ctx.llm)
    n = len(ctx.bench.server_val)
    assert ev["n"] == n and len(ev["scores"]) == n and len(ev["outputs"]) == n
    assert ev["score"] == pytest.approx(sum(ev["scores"]) / n) and ev["loss"] > 0
    assert all(len(a.split()) <= 4 for a in ev["outputs"])
    assert not paired_test(per_example(ev), per_example(ev))["better"]
    assert isinstance(collapse_reasons(ev, ev), list)
    pooled = ctx.evaluate(ctx.llm)
    assert set(pooled["per_client"]) == set(ctx.bench.client_names) and "exact_match" in pooled


def test_answers_stop_at_a_new_line_token_and_keep_its_text_before_the_line(tiny_cfg, tmp_path):
    from fedproxy.context import build_context
    from fedproxy.eval.generate import answer_texts

    enc = build_context(tiny_cfg.with_overrides(["data.benchmark=tiny-qa"]), tmp_path, progress=False).encoder
    a, b, nl = 10, 11, 12
    enc.__dict__["stop_ids"] = [enc.eos_id, nl]  # as if token 12's text held a new line
    # a, b, <new-line token>, as greedy decoding leaves a row that stopped there; a, <eos>; a, b, cut by length
    answers = answer_texts(enc, [[a, b, nl], [a, enc.eos_id], [a, b]])
    assert answers == [enc.tok.decode([a, b, nl], skip_special_tokens=True).split("\n")[0].strip(),
                       enc.tok.decode([a], skip_special_tokens=True).strip(),
                       enc.tok.decode([a, b], skip_special_tokens=True).strip()]


def test_generation_results_follow_the_examples_order_whatever_the_batching(tiny_cfg, tmp_path):
    from fedproxy.context import build_context
    from fedproxy.eval.generate import evaluate_generation

    ctx = build_context(tiny_cfg.with_overrides(["data.benchmark=tiny-qa", "data.max_answer=4"]), tmp_path,
                        progress=False)
    examples = ctx.bench.server_val
    fwd = evaluate_generation(ctx.llm, ctx.encoder, examples, ctx.device, batch_size=3)
    rev = evaluate_generation(ctx.llm, ctx.encoder, examples[::-1], ctx.device, batch_size=5)
    assert rev["outputs"] == fwd["outputs"][::-1] and rev["scores"] == fwd["scores"][::-1]
    assert len({len(e.text) for e in examples}) > 1  # the batches really were reordered by length


def test_the_loss_rides_on_the_answers_forward_passes_and_score_only_checks_get_the_same_answers(tiny_cfg, tmp_path):
    from fedproxy.context import build_context

    ctx = build_context(tiny_cfg.with_overrides(["data.benchmark=tiny-qa", "data.max_answer=4"]), tmp_path,
                        progress=False)
    calls = []
    hook = ctx.llm.get_input_embeddings().register_forward_hook(lambda mod, args, out: calls.append(1))
    full = ctx.val_eval(ctx.llm)
    n_full, calls[:] = len(calls), []
    lean = ctx.val_eval(ctx.llm, loss=False)
    hook.remove()
    assert "loss" in full and "loss" not in lean
    assert lean["outputs"] == full["outputs"] and lean["scores"] == full["scores"]
    assert len(calls) == n_full  # the reference's loss takes no forward pass of its own
    assert ctx.val_accuracy(ctx.llm) == full["score"]
    assert "loss" not in ctx.evaluate(ctx.llm, per_client=2, loss=False)


def _random_lm_and_prompts(kind="llama"):
    """A random LM of architecture ``kind`` with a wide init, so that its greedy continuations differ by
    row, and left-padded prompts of several lengths (the Gemmas' sliding window is 8 tokens)."""
    import torch

    model = tiny_arch_model(kind, init=0.5)
    model.generation_config.eos_token_id = None  # no stop token unless a test names one
    lengths = [7, 5, 6, 3, 7, 4]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, -n:], mask[i, -n:] = torch.randint(3, 64, (n,)), 1
    return model, ids, mask


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_greedy_tokens_match_generate_and_finished_rows_leave_the_batch(kind):
    from fedproxy.eval.generate import greedy_tokens

    model, ids, mask = _random_lm_and_prompts(kind)
    lengths = mask.sum(1).tolist()
    free = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8,
                          pad_token_id=0)[:, ids.shape[1]:].tolist()
    assert len({tuple(r) for r in free}) > 2
    assert greedy_tokens(model, ids, mask, 8, []) == free  # no stop token: every row runs to the end
    # a stop token that ends some rows early and never comes in others, which run on
    stop = min(t for r in free for t in r[:-1] if any(t not in other for other in free))
    expected = [r[: r.index(stop) + 1] if stop in r else r for r in free]
    stopped = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8,
                             pad_token_id=0, eos_token_id=[stop])[:, ids.shape[1]:].tolist()
    assert [r[: len(e)] for r, e in zip(stopped, expected)] == expected
    rows = []
    hook = model.get_input_embeddings().register_forward_hook(lambda mod, args, out: rows.append(out.shape[0]))
    got = greedy_tokens(model, ids, mask, 8, [stop])
    hook.remove()
    assert got == expected
    assert rows[0] == len(lengths) and rows[-1] == sum(len(r) == 8 for r in expected) < len(lengths)
    assert len(rows) == max(map(len, expected))


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_the_loss_from_the_answers_pass_is_the_references_loss_and_the_answer_does_not_see_the_reference(kind):
    import torch
    import torch.nn.functional as F

    from fedproxy.eval.generate import greedy_tokens, greedy_tokens_and_loss

    model, ids, mask = _random_lm_and_prompts(kind)
    refs = [[5, 9, 2], [7], [11, 12, 13, 14], [3, 3], [8, 20, 4], [30]]
    widths = []
    hook = model.get_input_embeddings().register_forward_hook(lambda mod, args, out: widths.append(out.shape[1]))
    tokens, nll = greedy_tokens_and_loss(model, ids, mask, refs, 8, [])
    hook.remove()
    # one prefill over prompt and reference; two where they and the answer outrun the Gemmas' window of 8
    assert sum(w > 1 for w in widths) == (2 if kind.startswith("gemma") else 1)
    assert tokens == greedy_tokens(model, ids, mask, 8, [])  # the reference, in the cache, is masked out
    for i, r in enumerate(refs):  # each example alone, unpadded: the mean loss of its reference tokens
        seq = torch.cat([ids[i][mask[i] == 1], torch.tensor(r)])[None]
        with torch.no_grad():
            logits = model(input_ids=seq).logits[0, -len(r) - 1:-1]
        assert float(nll[i]) == pytest.approx(float(F.cross_entropy(logits, torch.tensor(r))), rel=1e-4)
    stop = tokens[0][0]
    short, _ = greedy_tokens_and_loss(model, ids, mask, refs, 8, [stop])
    assert short == greedy_tokens(model, ids, mask, 8, [stop]) and short[0] == [stop]
