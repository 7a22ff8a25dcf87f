"""The report states each promise of the method with the number that decides it."""

from fedproxy.report import goal_checks


def method(acc, proxy=None):
    r = {"accuracy": acc}
    if proxy is not None:
        r["proxy_after_fl"] = {"accuracy": proxy}
    return r


def test_goal_checks_say_which_promise_holds():
    methods = {"zero-shot": method(0.4), "fedproxy": method(0.55, proxy=0.6),
               "offsite-tuning": method(0.5, proxy=0.45), "centralized": method(0.6)}
    checks = {c["check"]: c for c in goal_checks(methods)}
    assert {c["method"] for c in goal_checks(methods)} == {"fedproxy"}  # OT is a baseline, not checked
    gain = checks["recovers >= 90% of the centralized gain"]
    assert gain["measured"] == "75%" and not gain["holds"]
    assert checks["fused LLM above Offsite-Tuning"]["holds"]
    ip = checks["fused LLM above the proxy alone (the IP gap)"]
    assert ip["measured"] == "-0.050" and not ip["holds"]


def test_goal_checks_skip_promises_without_numbers():
    checks = goal_checks({"fedproxy": method(0.5, proxy=0.4)})
    assert [c["check"] for c in checks] == ["fused LLM above the proxy alone (the IP gap)"]
    assert checks[0]["holds"]
