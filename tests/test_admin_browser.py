"""End to end: the admin in a real headless Chromium, driven by Playwright, against a live server.

Needs the ``playwright`` package and Debian's ``chromium`` (/usr/bin/chromium, or the path in
TOOSIMPLEQ_CHROMIUM). Without them these tests are skipped with the reason, unless
TOOSIMPLEQ_REQUIRE_BROWSER=1, which makes that a failure. Screenshots of every page visited are
written to build/screenshots/ so that a person can look at them; every page is also
looked at in 1366x768 and 1920x1080, light and dark.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import pytest
from django.utils import timezone

from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus
from django_toosimple_q.registry import schedules_registry, tasks_registry
from django_toosimple_q.schedules import Schedule, register_schedule

from .conftest import ROOT

CHROMIUM = os.environ.get("TOOSIMPLEQ_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("TOOSIMPLEQ_REQUIRE_BROWSER") == "1"
# Git-ignored, kept by CI: a person can look at every page the tests visited.
ARTIFACTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
States = TaskExec.States


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TOOSIMPLEQ_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser():
    problem = _missing()
    if problem:
        if REQUIRED:
            pytest.fail(f"TOOSIMPLEQ_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are plain
    # synchronous code, which Django would otherwise refuse here.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            yield launched
            launched.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server, django_user_model):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "secret-pw")
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.base = live_server.url  # type: ignore[attr-defined]
    yield page
    context.close()


def shot(page, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def log_in(page) -> None:
    page.goto(f"{page.base}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "secret-pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    shot(page, "00-admin-index")


def select_rows_and_run(page, ids: list[int], action: str) -> None:
    for pk in ids:
        page.check(f'input[name="_selected_action"][value="{pk}"]')
    page.select_option('select[name="action"]', action)
    page.click('button[name="index"]')
    page.wait_for_selector("ul.messagelist")


def listed_ids(page) -> list[int]:
    return [int(v) for v in page.eval_on_selector_all('input[name="_selected_action"]', "els => els.map(e => e.value)")]


def seed() -> dict[str, TaskExec]:
    now = timezone.now()
    worker = WorkerStatus.objects.create(label="worker-1", host="web-1", pid=4242, timeout=600, queues=["default"])
    rows = {}
    for i in range(12):
        end = now - datetime.timedelta(minutes=3 * i + 1)
        rows[f"ok{i}"] = TaskExec.objects.create(
            task_name="add",
            args=[i, i],
            result=2 * i,
            state=States.SUCCEEDED,
            started=end - datetime.timedelta(seconds=1),
            finished=end,
            worker=worker,
        )
    rows["failed"] = TaskExec.objects.create(
        task_name="fail",
        args=["<b>not bold</b>"],
        state=States.FAILED,
        started=now - datetime.timedelta(minutes=2),
        finished=now - datetime.timedelta(minutes=2),
        error='Traceback (most recent call last):\n  File "tasks.py", line 3, in fail\nValueError: <b>not bold</b>',
        worker=worker,
    )
    rows["queued"] = TaskExec.objects.create(
        task_name="echo", args=["later"], queue="mail", state=States.QUEUED, due=now - datetime.timedelta(minutes=4)
    )
    rows["running"] = TaskExec.objects.create(
        task_name="sleep_then_record", args=["k", 30], state=States.PROCESSING, started=now, worker=worker
    )
    return rows


@pytest.mark.django_db(transaction=True)
def test_admin_flow(page):
    rows = seed()
    log_in(page)

    # The executions list.
    page.goto(f"{page.base}/admin/toosimpleq/taskexec/")
    page.wait_for_selector("#result_list")
    shot(page, "01-executions")
    assert rows["failed"].pk in listed_ids(page)
    assert "<b>" not in page.inner_text("#result_list") or page.locator("#result_list b").count() == 0

    # Filter the failures from the sidebar.
    page.click("#changelist-filter >> text=Failed")
    page.wait_for_url(re.compile(r"state__exact=FAILED"))
    assert listed_ids(page) == [rows["failed"].pk]
    shot(page, "02-failures")

    # The failure's detail page shows the traceback, escaped.
    page.click(f'#result_list th a[href*="/{rows["failed"].pk}/change/"] >> nth=0')
    page.wait_for_selector("text=ValueError")
    assert page.locator(".field-error_display pre").inner_text().endswith("ValueError: <b>not bold</b>")
    shot(page, "03-failure-detail")
    page.go_back()

    # Requeue it: a new execution appears, linked from the old one.
    select_rows_and_run(page, [rows["failed"].pk], "action_requeue")
    shot(page, "04-requeued")
    new = TaskExec.objects.exclude(pk__in=[r.pk for r in rows.values()]).get()
    assert f"#{new.pk}" in page.inner_text("ul.messagelist")
    page.goto(f"{page.base}/admin/toosimpleq/taskexec/")
    assert listed_ids(page)[0] == new.pk
    assert new.args == ["<b>not bold</b>"] and new.state == States.QUEUED
    shot(page, "05-list-with-new-row")

    # Cancel a queued execution.
    page.goto(f"{page.base}/admin/toosimpleq/taskexec/?state__exact=QUEUED")
    select_rows_and_run(page, [rows["queued"].pk], "action_cancel")
    assert "Cancelled 1 execution." in page.inner_text("ul.messagelist")
    shot(page, "06-cancelled")
    rows["queued"].refresh_from_db()
    assert rows["queued"].state == States.CANCELLED

    # The dashboard, reached from the app index.
    page.goto(f"{page.base}/admin/toosimpleq/")
    shot(page, "07-app-index")
    page.click("text=Queue dashboard")
    page.wait_for_selector("svg.toosimpleq-chart")
    # 12 successes 3 minutes apart, in 5-minute bars; the failure on top of one of them.
    assert page.locator("svg.toosimpleq-chart > rect.succeeded").count() >= 7
    assert page.locator("svg.toosimpleq-chart > rect.failed").count() == 1
    assert "12 succeeded, 1 failed" in page.inner_text("#toosimpleq-throughput h2")
    assert "worker-1" in page.inner_text("#toosimpleq-health")
    shot(page, "08-dashboard")

    # Workers.
    page.goto(f"{page.base}/admin/toosimpleq/workerstatus/")
    assert f"sleep_then_record #{rows['running'].pk}" in page.inner_text("#result_list")
    shot(page, "09-workers")


@pytest.fixture
def schedules():
    """Schedules declared for the live server (same process), forgotten afterwards."""
    saved = dict(schedules_registry)
    schedules_registry.clear()
    add = tasks_registry["add"]
    register_schedule(Schedule(name="nightly_sums", task=add, cron="0 1 * * *", args=(1, 2), queue_name="timers"))
    register_schedule(Schedule(name="every_quarter", task=add, cron="*/15 * * * *", args=(3, 4)))
    register_schedule(Schedule(name="on_demand", task=add, cron="manual", args=("<b>", "</b>")))
    yield
    schedules_registry.clear()
    schedules_registry.update(saved)


@pytest.mark.django_db(transaction=True)
def test_schedules_page_run_now(page, schedules):
    before = TaskExec.objects.create(task_name="add", args=[3, 4], state=States.SUCCEEDED, finished=timezone.now())
    last_due = timezone.now().replace(second=0, microsecond=0) - datetime.timedelta(minutes=5)
    ScheduleExec.objects.create(name="every_quarter", last_due=last_due, last_task=before)
    ScheduleExec.objects.create(name="removed_long_ago", state=ScheduleExec.States.INVALID)
    log_in(page)

    # From the app index to the schedules page: every schedule, even those no worker has seen.
    page.goto(f"{page.base}/admin/toosimpleq/")
    page.click("a[href='/admin/toosimpleq/scheduleexec/']")
    page.wait_for_selector("#result_list")
    names = page.eval_on_selector_all("tr.toosimpleq-schedule", "els => els.map(e => e.dataset.schedule)")
    assert names == ["every_quarter", "nightly_sums", "on_demand", "removed_long_ago"]
    table = page.inner_text("#result_list")
    assert "Every 15 minutes" in table and "At 01:00" in table and "Removed from code" in table
    assert page.locator("#result_list b").count() == 0  # the "<b>" argument is text
    shot(page, "10-schedules")

    # Run one now with its own button: a new execution, linked from the message and the row.
    page.click('button.toosimpleq-run-now[value="nightly_sums"]')
    page.wait_for_selector("ul.messagelist")
    new = TaskExec.objects.exclude(pk=before.pk).get()
    assert new.args == [1, 2] and new.state == States.QUEUED
    assert f"add #{new.pk}" in page.inner_text("ul.messagelist")
    row = page.locator('tr[data-schedule="nightly_sums"]')
    assert f"#{new.pk}" in row.locator("td.field-last_task").inner_text()
    shot(page, "11-schedule-run-now")

    # Follow the link to the new execution.
    row.locator(f'td.field-last_task a[href*="/taskexec/{new.pk}/change/"]').click()
    page.wait_for_selector(".field-args_display")
    assert "QUEUED" in page.inner_text("#content-main").upper()
    shot(page, "12-schedule-execution")
    page.goto(f"{page.base}/admin/toosimpleq/scheduleexec/")

    # Run two at once with the action; the cron timeline of the first one stays where it was.
    page.check('input[name="_selected_action"][value="every_quarter"]')
    page.check('input[name="_selected_action"][value="on_demand"]')
    page.select_option('select[name="action"]', "action_force_run")
    page.click('button[name="index"]')
    page.wait_for_selector("text=Queued 2 executions now")
    assert ScheduleExec.objects.get(name="every_quarter").last_due == last_due
    assert TaskExec.objects.count() == 4

    # The new execution is in the executions list.
    page.goto(f"{page.base}/admin/toosimpleq/taskexec/")
    assert new.pk in listed_ids(page)
    shot(page, "13-executions-after-run-now")

    # A schedule's detail page: read-only, with its own "run now" button.
    page.goto(f"{page.base}/admin/toosimpleq/scheduleexec/")
    page.click('tr[data-schedule="every_quarter"] th a')
    page.wait_for_selector(".field-description_display")
    assert "Every 15 minutes" in page.inner_text(".field-description_display")
    shot(page, "14-schedule-detail")
    page.click("button.toosimpleq-run-now")
    page.wait_for_selector("text=Queued 1 execution now")
    assert "/scheduleexec/" in page.url and "/change/" in page.url  # back on the detail page
    latest = TaskExec.objects.order_by("-pk").first()
    assert f"#{latest.pk}" in page.inner_text(".field-last_task_display")
    assert TaskExec.objects.count() == 5
    shot(page, "15-schedule-detail-run-now")


SIZES = {"1366x768": {"width": 1366, "height": 768}, "1920x1080": {"width": 1920, "height": 1080}}

# Elements sticking out to the right of the window, or tables wider than the box that holds them
# (the admin scrolls those sideways, hiding the last columns).
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const found = [];
  if (document.documentElement.scrollWidth > width) found.push(`page ${document.documentElement.scrollWidth}px > ${width}px`);
  for (const table of document.querySelectorAll('#content table')) {
    const box = table.parentElement;
    if (table.getBoundingClientRect().right > width + 1) found.push(`${table.id || table.className} ends at ${table.getBoundingClientRect().right}px`);
    if (box.scrollWidth > box.clientWidth + 1) found.push(`${table.id || table.className} scrolls: ${box.scrollWidth}px in ${box.clientWidth}px`);
  }
  return found;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.django_db(transaction=True)
def test_every_admin_page_fits_the_screen(browser, live_server, django_user_model, schedules, size, scheme):
    rows = seed()
    worker = WorkerStatus.objects.get()
    retried = TaskExec.objects.create(
        task_name="record_with_retries", args=["a-rather-long-key-" * 3], state=States.FAILED, retries=2,
        retry_delay=5, started=timezone.now(), finished=timezone.now(), worker=worker, error="Boom",
    )
    retried.replaced_by = TaskExec.objects.create(
        task_name="record_with_retries", args=retried.args, state=States.SLEEPING, retries=1, retry_delay=10,
        attempt=2, due=timezone.now() + datetime.timedelta(seconds=10),
    )
    retried.save()
    ScheduleExec.objects.create(name="every_quarter", last_due=timezone.now(), last_task=rows["ok0"])
    django_user_model.objects.create_superuser("admin", "admin@example.com", "secret-pw")
    context = browser.new_context(viewport=SIZES[size], locale="en-US", color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.base = live_server.url  # type: ignore[attr-defined]
    pages = {
        "index": "/admin/",
        "app-index": "/admin/toosimpleq/",
        "executions": "/admin/toosimpleq/taskexec/",
        "execution-succeeded": f"/admin/toosimpleq/taskexec/{rows['ok0'].pk}/change/",
        "execution-failed-retried": f"/admin/toosimpleq/taskexec/{retried.pk}/change/",
        "execution-sleeping-retry": f"/admin/toosimpleq/taskexec/{retried.replaced_by.pk}/change/",
        "dashboard": "/admin/toosimpleq/taskexec/dashboard/",
        "workers": "/admin/toosimpleq/workerstatus/",
        "worker": f"/admin/toosimpleq/workerstatus/{worker.pk}/change/",
        "schedules": "/admin/toosimpleq/scheduleexec/",
        "schedule": "/admin/toosimpleq/scheduleexec/every_quarter/change/",
    }
    try:
        log_in(page)
        problems = {}
        for name, url in pages.items():
            response = page.goto(f"{page.base}{url}")
            assert response.status == 200, f"{url}: {response.status}"
            page.wait_for_selector("#content")
            shot(page, f"{size}-{scheme}/{name}")
            overflow = page.evaluate(OVERFLOW)
            if overflow:
                problems[name] = overflow
        assert not problems, f"pages wider than {size}: {problems}"
    finally:
        context.close()
