"""Generation scoring: SQuAD-style token F1 and exact match, greedy answers, the tables the guard reads."""

import pytest

from fedproxy.eval.generate import exact_match, normalize, token_f1


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
    import torch

    from fedproxy.context import build_context
    from fedproxy.eval.generate import generate_answers

    ctx = build_context(tiny_cfg.with_overrides(["data.benchmark=tiny-qa"]), tmp_path, progress=False)
    enc, examples = ctx.encoder, ctx.bench.server_val[:2]
    a, b, nl = 10, 11, 12
    enc.__dict__["stop_ids"] = [enc.eos_id, nl]  # as if token 12's text held a new line
    seen = {}

    class Scripted(torch.nn.Module):  # "generates" a, b, <new-line token>, a and a, <eos>
        def generate(self, input_ids, eos_token_id, **kw):
            seen["eos"] = eos_token_id
            tail = torch.tensor([[a, b, nl, a], [a, enc.eos_id, enc.pad_id, enc.pad_id]])
            return torch.cat([input_ids, tail], dim=1)

    answers = generate_answers(Scripted(), enc, examples, torch.device("cpu"))
    assert seen["eos"] == [enc.eos_id, nl]
    assert answers == [enc.tok.decode([a, b, nl], skip_special_tokens=True).split("\n")[0].strip(),
                       enc.tok.decode([a], skip_special_tokens=True).strip()]


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


def test_score_only_checks_skip_the_reference_pass_and_get_the_same_answers(tiny_cfg, tmp_path):
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
    assert len(calls) < n_full  # one forward pass less per batch
    assert ctx.val_accuracy(ctx.llm) == full["score"]
    assert "loss" not in ctx.evaluate(ctx.llm, per_client=2, loss=False)
