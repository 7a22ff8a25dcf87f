"""benchmarks/diagnostics/answer_length.py: the fused-minus-proxy split by answer length adds up."""

import importlib.util
from pathlib import Path

import pytest


def _script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "diagnostics" / "answer_length.py"
    spec = importlib.util.spec_from_file_location("answer_length_diag", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_split_by_answer_length_adds_up_to_the_score_difference():
    al = _script()
    fused = {"a": {"outputs": ["the red car", "blue", ""], "scores": [0.5, 1.0, 0.0]},
             "b": {"outputs": ["yes"], "scores": [1.0]}}
    proxy = {"a": {"outputs": ["red", "blue", "green"], "scores": [1.0, 1.0, 1.0]},
             "b": {"outputs": ["no"], "scores": [0.0]}}
    split = al.length_split(fused, proxy)
    assert split["longer"] == {"examples": 1, "diff": pytest.approx(-0.5 / 4)}
    assert split["same"] == {"examples": 2, "diff": pytest.approx(1.0 / 4)}
    assert split["shorter"] == {"examples": 1, "diff": pytest.approx(-1.0 / 4)}
    assert sum(g["diff"] for g in split.values()) == pytest.approx((2.5 - 3.0) / 4)
    assert al.words(["the red car", "blue"]) == 2.0
    with pytest.raises(ValueError, match="split 'b': 1 fused answers against 2"):
        al.length_split(fused, {**proxy, "b": {"outputs": ["x", "y"], "scores": [0, 0]}})
