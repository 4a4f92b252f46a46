"""Property tests of the dashboard's figures: any finish times, any counts."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_toosimple_q import monitoring
from django_toosimple_q.admin.dashboard import INTERVAL_MINUTES, nice_scale
from django_toosimple_q.models import TaskExec

States = TaskExec.States
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 6, 1, 12, 34, 56, 789000, tzinfo=UTC)


@given(st.integers(min_value=0, max_value=10**12))
def test_the_scale_covers_any_count_in_at_most_four_round_steps(top):
    step, maximum = nice_scale(top)
    assert maximum >= top and maximum >= 1
    assert maximum % step == 0 and maximum // step <= 4
    assert str(step).rstrip("0") in ("1", "2", "5")
    # No coarser than needed: the next smaller round step would need more than four.
    smaller = {"1": step // 2, "2": step // 2, "5": step * 2 // 5}[str(step)[0]]
    assert smaller == 0 or -(-top // smaller) > 4


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hours=st.sampled_from(sorted(INTERVAL_MINUTES)),
    finished=st.lists(
        st.tuples(
            st.sampled_from([States.SUCCEEDED, States.FAILED, States.CANCELLED]),
            st.integers(min_value=-30 * 3600, max_value=60),  # seconds from NOW: before, in and after the window
        ),
        max_size=30,
    ),
)
def test_each_execution_is_counted_once_in_the_interval_it_finished_in(hours, finished):
    TaskExec.objects.all().delete()
    TaskExec.objects.bulk_create(
        TaskExec(task_name="add", args=[], state=state, finished=NOW + datetime.timedelta(seconds=offset))
        for state, offset in finished
    )
    length = INTERVAL_MINUTES[hours]
    intervals = monitoring.outcomes_per_interval(hours, length, NOW)

    assert len(intervals) == hours * 60 // length
    assert intervals[0].start + datetime.timedelta(minutes=length) * len(intervals) > NOW >= intervals[-1].start
    for interval in intervals:
        end = interval.start + datetime.timedelta(minutes=length)
        inside = [state for state, offset in finished if interval.start <= NOW + datetime.timedelta(seconds=offset) < end]
        assert interval.succeeded == inside.count(States.SUCCEEDED)
        assert interval.failed == inside.count(States.FAILED)
