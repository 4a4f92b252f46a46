"""Notifications: the TOOSIMPLEQ_LISTEN_DATABASE setting, and what the triggers' payloads mean for
any queue name (read back from real notifications)."""

from __future__ import annotations

import datetime
import re

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_toosimple_q import conf
from django_toosimple_q.engine.postgresql import CHANNEL, read_payload
from django_toosimple_q.models import TaskExec
from django_toosimple_q.worker import Worker

States = TaskExec.States


@pytest.mark.parametrize("value", ["nope", 42, True, ["default"]])
def test_listen_database_must_be_an_alias_or_none(value):
    with override_settings(TOOSIMPLEQ_LISTEN_DATABASE=value):
        with pytest.raises(ImproperlyConfigured, match=rf"TOOSIMPLEQ_LISTEN_DATABASE is {re.escape(repr(value))}.*None"):
            conf.listen_database()
        # The earliest point: the system checks that run before `manage.py worker` starts.
        with pytest.raises(SystemCheckError, match=r"toosimpleq\.E002.*TOOSIMPLEQ_LISTEN_DATABASE"):
            call_command("check")
        with pytest.raises(ImproperlyConfigured, match="TOOSIMPLEQ_LISTEN_DATABASE"):
            Worker()


@pytest.mark.django_db
def test_listen_database_values(vendor):
    assert conf.listen_database() == "default"  # unset: the queue database
    for off in (None, False):
        with override_settings(TOOSIMPLEQ_LISTEN_DATABASE=off):
            assert conf.listen_database() is None
    with override_settings(TOOSIMPLEQ_LISTEN_DATABASE="default"):
        if vendor == "postgresql":
            assert conf.listen_database() == "default"
        else:
            with pytest.raises(ImproperlyConfigured, match=rf"is 'default', a {vendor} database: notifications need"):
                conf.listen_database()


queue_names = st.one_of(
    st.text(max_size=40),
    st.tuples(st.sampled_from(["sleeping", "queued", "sleeping ", "queued ", "ping "]), st.text(max_size=20)).map(
        "".join
    ),
).filter(lambda name: "\x00" not in name)  # PostgreSQL text cannot hold NUL


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queue=queue_names, sleeping=st.booleans())
def test_trigger_payloads_say_which_queue_got_work_whatever_its_name(queue, sleeping):
    """Every execution that becomes QUEUED, or is inserted SLEEPING, is notified with a payload that
    reads back as exactly its queue and kind."""
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        due = timezone.now() + datetime.timedelta(hours=1) if sleeping else timezone.now()
        execution = TaskExec.objects.create(
            task_name="add", queue=queue, state=States.SLEEPING if sleeping else States.QUEUED, due=due
        )
        if sleeping:  # and then woken: QUEUED
            TaskExec.objects.filter(pk=execution.pk).update(state=States.QUEUED)
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=2 if sleeping else 1)]
    expected = [(queue, True), (queue, False)] if sleeping else [(queue, False)]
    assert [read_payload(p) for p in payloads] == expected
