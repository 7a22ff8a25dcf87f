"""The fault suite's counts come from test outcomes: a failing case shows in the printed line."""

import shutil
import subprocess
import sys
from pathlib import Path

CASES = '''
def test_rejected(fault_log):
    fault_log.bad_input("a bad input that is rejected")
    assert True

def test_not_rejected(fault_log):
    fault_log.bad_input("a bad input that slips through")
    assert False

def test_survived(fault_log):
    fault_log.record("a crash that is survived", rounds_lost=0)

def test_fails_before_naming_its_case(fault_log):
    raise RuntimeError("boom")
'''


def test_failing_cases_are_counted_as_failures(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    line = next(x for x in out.stdout.splitlines() if x.startswith("fault suite:"))
    assert line == ("fault suite: 2 bad inputs tried, 1 rejected with a clear error; 1 faults injected, 1 survived, "
                    "rounds lost 0; 2 FAILED")
    assert "2 failed, 2 passed" in out.stdout
