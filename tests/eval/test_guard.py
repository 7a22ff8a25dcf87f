"""The do-no-harm statistics against hand-computed values (fedproxy.eval.guard)."""

import math

import pytest

from fedproxy.eval.guard import Acceptance, collapse_reasons, paired_test, per_example, recall


def _ev(pred, gold):
    return {"predictions": list(pred), "gold": list(gold), "accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold)}


def test_better_by_one_example_is_not_better():
    base = [0.0] * 100
    cand = [1.0] + [0.0] * 99
    t = paired_test(cand, base)
    assert (t["wins"], t["losses"]) == (1, 0)
    assert t["p"] == pytest.approx(0.5)  # one discordant pair: a coin flip
    assert not t["better"]


def test_a_tie_is_not_better():
    base = [1.0, 0.0] * 50
    cand = [0.0, 1.0] * 50  # different examples right, same count
    t = paired_test(cand, base)
    assert t["diff"] == 0.0 and t["p"] > 0.5 and not t["better"]
    assert not paired_test(base, base)["better"]


def test_mcnemar_p_and_lower_bound_match_hand_computation():
    # 200 examples: the candidate fixes 30 the base got wrong and breaks 5 the base got right.
    base = [0.0] * 30 + [1.0] * 5 + [1.0] * 80 + [0.0] * 85
    cand = [1.0] * 30 + [0.0] * 5 + [1.0] * 80 + [0.0] * 85
    t = paired_test(cand, base, alpha=0.05)
    p_hand = sum(math.comb(35, k) for k in range(30, 36)) / 2**35
    assert t["p"] == pytest.approx(p_hand, rel=1e-9)
    d_mean = 25 / 200
    d_var = (30 * (1 - d_mean) ** 2 + 5 * (-1 - d_mean) ** 2 + 165 * d_mean**2) / 199
    t_crit = 1.6525  # Student t, 199 degrees of freedom, 95% one-sided (table value)
    assert t["diff"] == pytest.approx(d_mean)
    assert t["ci_low"] == pytest.approx(d_mean - t_crit * math.sqrt(d_var / 200), rel=1e-4)
    assert t["better"] and t["test"].startswith("McNemar")


def test_continuous_scores_use_the_paired_t_test():
    base = [0.5, 0.4, 0.6, 0.5, 0.3, 0.7]
    cand = [b + 0.1 + 0.01 * i for i, b in enumerate(base)]
    t = paired_test(cand, base)
    assert t["test"].startswith("paired t") and t["better"]
    assert t["diff"] == pytest.approx(0.125)


def test_per_example_needs_the_tables():
    assert per_example({"predictions": [0, 1, 2], "gold": [0, 2, 2]}) == [1.0, 0.0, 1.0]
    assert per_example({"scores": [0.5, 1]}) == [0.5, 1.0]
    with pytest.raises(ValueError, match="per-example|predictions"):
        per_example({"accuracy": 0.5})
    with pytest.raises(ValueError, match="same examples"):
        paired_test([1.0], [1.0, 0.0])


def test_one_class_predictions_are_collapse_even_with_higher_accuracy():
    gold = [0] * 60 + [1] * 20 + [2] * 20
    base = _ev([1] * 50 + [0] * 10 + [1] * 20 + [2] * 20, gold)  # 0.50
    cand = _ev([0] * 100, gold)  # 0.60, but one class for everything
    assert cand["accuracy"] > base["accuracy"]
    reasons = collapse_reasons(cand, base, ["pos", "neg", "neu"])
    assert any("predicts 'pos' for 100 of 100" in r for r in reasons)
    assert any("recall 0 on 'neg'" in r for r in reasons)


def test_concentrated_gold_labels_are_not_collapse():
    gold = [0] * 90 + [1] * 10
    assert collapse_reasons(_ev([0] * 95 + [1] * 5, gold)) == []


def test_zero_recall_counts_only_where_the_replaced_model_recalls():
    gold = [0] * 50 + [1] * 40 + [2] * 10
    base = _ev([0] * 50 + [1] * 40 + [0] * 9 + [2], gold)  # class 2 recall 0.1
    cand = _ev([0] * 50 + [1] * 40 + [0] * 10, gold)
    assert collapse_reasons(cand, base, min_recall=0.1) == ["recall 0 on class 2, which the model it would replace "
                                                            "recalls at 0.10"]
    assert collapse_reasons(cand, base, min_recall=0.2) == []
    assert recall(cand["predictions"], gold) == {0: 1.0, 1: 1.0, 2: 0.0}


def test_near_zero_recall_on_validation_is_collapse_too():
    """The quick benchmark's seed 4: the shipped x1 plug-in recalled 2 of 41 'neutral' validation
    examples (the unchanged LLM 9 of 41) and none of 75 on test."""
    gold = [0] * 54 + [1] * 72 + [2] * 41 + [3] * 33
    base = _ev([0] * 54 + [1] * 72 + [2] * 9 + [0] * 32 + [0] * 33, gold)
    near_zero = _ev([0] * 54 + [1] * 72 + [2] * 2 + [1] * 39 + [1] * 33, gold)
    assert collapse_reasons(near_zero, base, recall_keep=0.25) == [
        "recall 0.05 on class 2, under 25% of the 0.22 the model it would replace has"]
    assert collapse_reasons(near_zero, base) == []  # without the margin only zero recall counts
    half = _ev([0] * 54 + [1] * 72 + [2] * 5 + [1] * 36 + [1] * 33, gold)  # 5 of 41 keeps more than a quarter
    assert collapse_reasons(half, base, recall_keep=0.25) == []
    assert Acceptance().collapse(near_zero, base)  # the default rule has the margin


def test_generation_guard_on_outputs_and_loss():
    base = {"outputs": ["a", "b", "c", "d"], "loss": 1.0, "scores": [1, 0, 1, 0]}
    same = {"outputs": ["x", "x", "x", "x"], "loss": 1.0, "scores": [0, 0, 0, 0]}
    worse_loss = {"outputs": ["a", "b", "c", "e"], "loss": 2.0, "scores": [1, 0, 1, 0]}
    assert "generates 'x' for 4 of 4" in collapse_reasons(same, base)[0]
    assert "reference loss 2.000" in collapse_reasons(worse_loss, base)[0]
    assert collapse_reasons(base, base) == []


def test_acceptance_collapse_uses_its_thresholds():
    gold = [0] * 50 + [1] * 50
    cand = _ev([0] * 85 + [1] * 15, gold)
    assert Acceptance(max_share=0.8).collapse(cand, None)
    assert not Acceptance(max_share=0.9).collapse(cand, None)
