import io
import time

from assay.engine.progress import LineProgress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_log_progress_lines_name_units_queries_and_eta():
    out, clock, queries = io.StringIO(), Clock(), [0]
    p = LineProgress(out, interval=10, queries=lambda: queries[0], clock=clock)
    try:
        p("robustness.evasion: linf epsilons", 0, 4)
        clock.t, queries[0] = 3.0, 500
        p("robustness.evasion: linf epsilons", 1, 4)  # within the interval: no line yet
        assert out.getvalue() == ""
        clock.t, queries[0] = 12.0, 2000
        p("robustness.evasion: linf epsilons", 2, 4)
        line = out.getvalue().strip()
        assert "2/4 (50%)" in line and "2,000 queries" in line and "ETA 12s" in line
        p("robustness.evasion: linf epsilons", 4, 4)  # the end of a step is always written
        assert out.getvalue().count("\n") == 2 and "4/4 (100%)" in out.getvalue()
    finally:
        p.close()


def test_heartbeat_speaks_when_a_step_is_silent():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, interval=0.05, clock=clock)
    try:
        p("privacy.membership: training reference models", 1, 8)
        before = out.getvalue().count("\n")
        clock.t = 60.0  # a minute without any update
        deadline = time.time() + 5
        while out.getvalue().count("\n") == before and time.time() < deadline:
            time.sleep(0.02)
        assert "training reference models: 1/8" in out.getvalue().splitlines()[-1]
    finally:
        p.close()


def test_heartbeat_speaks_from_the_start_of_a_probe_that_reports_no_steps():
    """Observed: 11 minutes of a black-box probe on a slow machine with no line at all, because the
    probe had not yet reported a step and the heartbeat had nothing to name."""
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, interval=0.05, queries=lambda: 1234, clock=clock)
    try:
        p.phase("robustness.blackbox")
        clock.t = 75.0
        deadline = time.time() + 5
        while not out.getvalue() and time.time() < deadline:
            time.sleep(0.02)
        assert out.getvalue().splitlines()[-1].strip() == (
            "progress: still working on robustness.blackbox, 1,234 queries so far, 1m15s elapsed")
    finally:
        p.close()
