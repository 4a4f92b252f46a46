"""contrib.mail: emails are queued as executions and delivered by the worker, losing nothing.

Delivery goes to Django's locmem backend (to compare every field) or to a real SMTP server on loopback
(aiosmtpd), started and stopped by the tests.
"""

from __future__ import annotations

import datetime
import email
import io
import email.policy
import socket
import warnings
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage

import django
import pytest
from aiosmtpd.controller import Controller
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.core.mail import EmailMessage, EmailMultiAlternatives, send_mail, send_mass_mail
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy

from django_toosimple_q.contrib.mail import backend as legacy_module
from django_toosimple_q.contrib.mail.backends import QueueBackend
from django_toosimple_q.contrib.mail.tasks import send_emails
from django_toosimple_q.models import TaskExec, describe

from .conftest import run_worker_here, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
States = TaskExec.States

QUEUE_BACKEND = "django_toosimple_q.contrib.mail.backends.QueueBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"
SMTP = "django.core.mail.backends.smtp.EmailBackend"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
# Django >= 6.0 builds messages with the modern email API and accepts MIMEPart attachments.
MODERN_EMAIL = django.VERSION >= (6, 0)


@pytest.fixture(autouse=True)
def queue_backend(settings):
    settings.EMAIL_BACKEND = QUEUE_BACKEND
    settings.TOOSIMPLEQ_EMAIL_BACKEND = LOCMEM
    settings.DEFAULT_FROM_EMAIL = "site@example.com"
    mail.outbox = []


@pytest.fixture(autouse=True)
def no_deprecation_noise():
    # Django 6.1 deprecates fail_silently= and direct backend creation; both are still the public API here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        yield


class NewsletterEmail(EmailMultiAlternatives):
    """A project's own message class: must come back as itself."""


def full_message() -> EmailMultiAlternatives:
    message = NewsletterEmail(
        subject=gettext_lazy("Welcome aboard"),
        body="Plain text body\nwith two lines, and ünïcödé.",
        from_email="Site <site@example.com>",
        to=["Zoë <zoe@example.com>", "bob@example.com"],
        cc=["carol@example.com"],
        bcc=["dave@example.com", "erin@example.com"],
        reply_to=["support@example.com"],
        headers={"X-Campaign": "welcome-2026", "X-Note": "héllo"},
    )
    message.attach_alternative("<p>Hello <b>HTML</b> ünïcödé</p>", "text/html")
    message.attach("notes.txt", "some notes\n", "text/plain")
    message.attach("résumé.bin", bytes(range(256)), "application/octet-stream")
    message.attach("photo.png", PNG, "image/png")
    message.attachments.append(MIMEImage(b"GIF89a" + bytes(range(64)), "gif"))
    if MODERN_EMAIL:
        part = email.message.MIMEPart()
        part.set_content(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="doc.pdf")
        message.attachments.append(part)
    message.encoding = "utf-8"
    message.tags = ["onboarding", "2026"]  # e.g. extra data read by a third-party backend
    return message


def assert_same_message(got: EmailMessage, sent: EmailMessage) -> None:
    assert type(got) is type(sent)
    for name in ("subject", "body", "from_email", "to", "cc", "bcc", "reply_to", "extra_headers", "encoding"):
        assert getattr(got, name) == getattr(sent, name), name
        assert type(getattr(got, name)) is type(getattr(sent, name)) or name == "subject", name
    assert got.content_subtype == sent.content_subtype
    assert getattr(got, "alternatives", None) == getattr(sent, "alternatives", None)
    assert len(got.attachments) == len(sent.attachments)
    for got_item, sent_item in zip(got.attachments, sent.attachments):
        if isinstance(sent_item, email.message.Message):
            base = MIMEBase if isinstance(sent_item, MIMEBase) else email.message.MIMEPart
            assert isinstance(got_item, base)
            assert got_item.as_bytes() == sent_item.as_bytes()
            assert got_item.get_payload(decode=True) == sent_item.get_payload(decode=True)
        else:
            assert tuple(got_item) == tuple(sent_item)
            assert type(got_item[1]) is type(sent_item[1])  # bytes stay bytes, text stays text


# -- configuration -----------------------------------------------------------------------------------


def test_both_backend_paths_queue(settings):
    assert legacy_module.QueueBackend is QueueBackend
    for path in (QUEUE_BACKEND, "django_toosimple_q.contrib.mail.backend.QueueBackend"):
        settings.EMAIL_BACKEND = path
        assert isinstance(mail.get_connection(), QueueBackend)
        assert send_mail("Hi", "Body", None, [f"{path[-20:]}@example.com"]) == 1
    assert TaskExec.objects.count() == 2
    assert mail.outbox == []


def test_delivery_backend_defaults_to_smtp(settings):
    from django_toosimple_q.contrib.mail.tasks import delivery_backend

    del settings.TOOSIMPLEQ_EMAIL_BACKEND
    assert type(delivery_backend()).__module__ == "django.core.mail.backends.smtp"


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS arrived in Django 6.1")
def test_mailers_aliases(settings):
    settings.MAILERS = {"default": {"BACKEND": QUEUE_BACKEND}, "deliver": {"BACKEND": LOCMEM}}
    settings.TOOSIMPLEQ_EMAIL_BACKEND = "deliver"
    assert EmailMessage("Via mailers", "Body", None, ["a@example.com"]).send() == 1
    assert mail.outbox == []
    run_worker_here()
    assert [m.subject for m in mail.outbox] == ["Via mailers"]


def test_queue_backend_as_delivery_backend_is_refused(settings):
    settings.TOOSIMPLEQ_EMAIL_BACKEND = QUEUE_BACKEND
    settings.TOOSIMPLEQ_EMAIL_RETRIES = 0
    send_mail("Loop", "Body", None, ["a@example.com"])
    run_worker_here()
    execution = TaskExec.objects.get()
    assert execution.state == States.FAILED
    assert "ImproperlyConfigured" in execution.error and "TOOSIMPLEQ_EMAIL_BACKEND" in execution.error


def test_missing_queue_app_is_reported(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if not app.startswith("django_toosimple_q")]
    with pytest.raises(ImproperlyConfigured, match="'django_toosimple_q' in INSTALLED_APPS"):
        QueueBackend()


def test_without_the_contrib_app_a_check_recommends_it(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_toosimple_q.contrib.mail"]
    output = io.StringIO()
    call_command("check", stdout=output, stderr=output)
    assert "toosimpleq.W001" in output.getvalue() and "'django_toosimple_q.contrib.mail'" in output.getvalue()
    settings.EMAIL_BACKEND = LOCMEM  # not queuing: nothing to say
    output = io.StringIO()
    call_command("check", stdout=output, stderr=output)
    assert "toosimpleq.W001" not in output.getvalue()


# -- queuing -----------------------------------------------------------------------------------------


def test_send_mail_queues_and_returns_at_once():
    assert send_mail("Subject", "Body", "from@example.com", ["to@example.com"]) == 1
    assert mail.outbox == []
    execution = TaskExec.objects.get()
    assert execution.task_name == send_emails.name
    assert execution.state == States.QUEUED

    run_worker_here()
    execution.refresh_from_db()
    assert execution.state == States.SUCCEEDED
    assert execution.result == {"sent": 1}
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Subject"


def test_every_field_round_trips():
    sent = full_message()
    assert sent.send() == 1
    assert mail.outbox == []
    run_worker_here()
    assert TaskExec.objects.get().state == States.SUCCEEDED
    [got] = mail.outbox
    assert_same_message(got, sent)
    assert got.tags == ["onboarding", "2026"]
    # And the delivered message still renders like the original.
    rendered = got.message()
    assert rendered["Subject"] == "Welcome aboard"
    assert "dave@example.com" not in rendered.as_string()  # bcc stays off the headers


def test_plain_email_message_with_html_subtype_and_encoding_round_trips():
    sent = EmailMessage("Html only", "<h1>Hi</h1>", None, ["a@example.com"], headers={"Message-ID": "<x@y>"})
    sent.content_subtype = "html"
    sent.encoding = "iso-8859-1"
    sent.send()
    run_worker_here()
    [got] = mail.outbox
    assert_same_message(got, sent)
    assert type(got) is EmailMessage
    assert got.content_subtype == "html"
    assert not hasattr(got, "alternatives")


def test_preview_names_subject_and_recipients_not_body():
    EmailMessage("Quarterly report", "x" * 10_000, None, ["boss@example.com"]).send()
    execution = TaskExec.objects.get()
    preview = describe(tuple(execution.args))
    assert preview.startswith("({'subject': 'Quarterly report', 'to': ['boss@example.com']")
    assert "xxxxx" not in preview


def test_send_mass_mail_is_one_execution():
    count = send_mass_mail(
        [
            ("First", "Body 1", None, ["a@example.com"]),
            ("Second", "Body 2", "other@example.com", ["b@example.com", "c@example.com"]),
            ("Nobody", "Skipped: no recipient", None, []),
            ("Third", "Body 3", None, ["d@example.com"]),
        ]
    )
    assert count == 3  # as Django's SMTP backend counts: messages without recipients are not sent
    execution = TaskExec.objects.get()
    assert [m["subject"] for m in execution.args] == ["First", "Second", "Third"]
    run_worker_here()
    assert sorted(m.subject for m in mail.outbox) == ["First", "Second", "Third"]
    execution.refresh_from_db()
    assert execution.result == {"sent": 3}


def test_counts_follow_django_contract():
    assert EmailMessage("No one", "Body", None, []).send() == 0
    assert mail.get_connection().send_messages([]) == 0
    assert mail.get_connection().send_messages(None) == 0
    messages = [EmailMessage(f"M{i}", "Body", None, [f"{i}@example.com"]) for i in range(3)]
    assert mail.get_connection().send_messages(messages) == 3
    assert TaskExec.objects.count() == 1


def test_identical_messages_queued_twice_are_sent_once():
    send_mail("Same", "Same body", None, ["a@example.com"])
    send_mail("Same", "Same body", None, ["a@example.com"])
    send_mail("Same", "Other body", None, ["a@example.com"])
    assert TaskExec.objects.count() == 2
    run_worker_here()
    assert sorted(m.body for m in mail.outbox) == ["Other body", "Same body"]
    # Once the first was sent, the same message queues (and is sent) again.
    send_mail("Same", "Same body", None, ["a@example.com"])
    run_worker_here()
    assert len(mail.outbox) == 3


def test_rolled_back_transaction_sends_nothing():
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            assert send_mail("Never", "Body", None, ["a@example.com"]) == 1
            raise RuntimeError("rollback")
    assert TaskExec.objects.count() == 0
    run_worker_here()
    assert mail.outbox == []


def test_queuing_error_raises_unless_fail_silently():
    message = EmailMessage("Unstorable", "Body", None, ["a@example.com"])
    message.payload = object()
    with pytest.raises(TypeError, match="payload"):
        message.send()
    assert mail.get_connection(fail_silently=True).send_messages([message]) == 0
    assert TaskExec.objects.count() == 0


def test_fail_silently_inside_a_transaction(settings):
    settings.TOOSIMPLEQ_EMAIL_RETRIES = "many"  # makes queuing fail
    with transaction.atomic():
        assert send_mail("Fine", "Body", None, ["a@example.com"], fail_silently=True) == 0
        assert TaskExec.objects.count() == 0  # the transaction still runs queries
    with pytest.raises(ImproperlyConfigured, match="TOOSIMPLEQ_EMAIL_RETRIES"):
        send_mail("Loud", "Body", None, ["a@example.com"])


def test_retry_settings_are_read_when_queuing(settings):
    send_mail("Defaults", "Body", None, ["a@example.com"])
    settings.TOOSIMPLEQ_EMAIL_RETRIES = 2
    settings.TOOSIMPLEQ_EMAIL_RETRY_DELAY = 5
    send_mail("Custom", "Body", None, ["a@example.com"])
    settings.TOOSIMPLEQ_EMAIL_QUEUE = "mail"
    send_mail("Other queue", "Body", None, ["a@example.com"])
    defaults, custom, other_queue = TaskExec.objects.order_by("id")
    assert (defaults.queue, defaults.retries, defaults.retry_delay) == ("default", 10, 30.0)
    assert (custom.queue, custom.retries, custom.retry_delay) == ("default", 2, 5.0)
    assert other_queue.queue == "mail"
    run_worker_here("--until_done", "--queue", "mail")
    assert [m.subject for m in mail.outbox] == ["Other queue"]


@pytest.mark.parametrize(
    "name, value",
    [("TOOSIMPLEQ_EMAIL_RETRIES", -1), ("TOOSIMPLEQ_EMAIL_RETRY_DELAY", "soon"), ("TOOSIMPLEQ_EMAIL_QUEUE", "")],
)
def test_bad_settings_raise_when_queuing(settings, name, value):
    setattr(settings, name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        send_mail("Bad", "Body", None, ["a@example.com"])
    assert TaskExec.objects.count() == 0


class PersonalEmail(EmailMessage):
    """Importable, but its constructor needs an argument, so the worker could not rebuild it."""

    def __init__(self, user):
        super().__init__(to=[user])


def test_message_class_must_be_rebuildable():
    class LocalEmail(EmailMessage):
        pass

    with pytest.raises(TypeError, match="cannot be imported"):
        LocalEmail("Local", "Body", None, ["a@example.com"]).send()
    with pytest.raises(TypeError, match="constructible without arguments"):
        PersonalEmail("a@example.com").send()
    assert TaskExec.objects.count() == 0


class ZeroSentBackend(LocmemBackend):
    def send_messages(self, messages):
        return 0


class RefusingBackend(LocmemBackend):
    """Refuses messages to anyone at refused.example.com, delivers the others."""

    def send_messages(self, messages):
        for message in messages:
            if any(r.endswith("@refused.example.com") for r in message.recipients()):
                raise ValueError(f"recipient refused: {message.recipients()}")
        return super().send_messages(messages)


def test_backend_reporting_zero_sent_fails_and_retries(settings):
    settings.TOOSIMPLEQ_EMAIL_BACKEND = "tests.test_mail.ZeroSentBackend"
    settings.TOOSIMPLEQ_EMAIL_RETRIES = 1
    settings.TOOSIMPLEQ_EMAIL_RETRY_DELAY = 60
    send_mail("Lost?", "Body", None, ["a@example.com"])
    run_worker_here()
    failed = TaskExec.objects.get(state=States.FAILED)
    assert "reported 0 emails sent" in failed.error
    retry = failed.replaced_by
    assert retry.state == States.SLEEPING and retry.retries == 0 and retry.args == failed.args


def test_partial_failure_queues_only_the_failed_messages_again(settings):
    settings.TOOSIMPLEQ_EMAIL_BACKEND = "tests.test_mail.RefusingBackend"
    send_mass_mail(
        [
            ("Good 1", "Body", None, ["a@example.com"]),
            ("Bad", "Body", None, ["x@refused.example.com"]),
            ("Good 2", "Body", None, ["b@example.com"]),
        ]
    )
    first = TaskExec.objects.get()
    run_worker_here()
    first.refresh_from_db()
    assert sorted(m.subject for m in mail.outbox) == ["Good 1", "Good 2"]
    assert first.state == States.SUCCEEDED
    assert first.result["sent"] == 2 and first.result["failed"] == 1
    assert "recipient refused" in first.result["errors"][0]
    again = TaskExec.objects.get(pk=first.result["queued_again_as"])
    assert [m["subject"] for m in again.args] == ["Bad"]
    assert again.state == States.SLEEPING and again.due > timezone.now()


def test_all_failed_batch_raises_with_every_error(settings):
    settings.TOOSIMPLEQ_EMAIL_BACKEND = "tests.test_mail.RefusingBackend"
    settings.TOOSIMPLEQ_EMAIL_RETRIES = 0
    send_mass_mail([("Bad 1", "B", None, ["x@refused.example.com"]), ("Bad 2", "B", None, ["y@refused.example.com"])])
    run_worker_here()
    execution = TaskExec.objects.get()
    assert execution.state == States.FAILED
    assert "None of the 2 emails was delivered" in execution.error
    assert "x@refused.example.com" in execution.error and "y@refused.example.com" in execution.error


# -- against a real SMTP server ------------------------------------------------------------------------


class Recorder:
    """aiosmtpd handler: keeps each envelope; refuses recipients at refused.example.com."""

    def __init__(self):
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example.com"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp(settings):
    """A not-yet-started SMTP server on a free loopback port; ``start()`` it (the delivery goes there)."""

    class Server:
        def __init__(self):
            self.port = free_port()
            self.handler = Recorder()
            self.controller = None

        def start(self):
            self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
            self.controller.start()
            return self

    server = Server()
    settings.TOOSIMPLEQ_EMAIL_BACKEND = SMTP
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_TIMEOUT = 10
    yield server
    if server.controller is not None:
        server.controller.stop()


def parse(envelope) -> email.message.EmailMessage:
    return email.message_from_bytes(envelope.content, policy=email.policy.default)


def test_smtp_delivery_really_sends(smtp):
    smtp.start()
    sent = full_message()
    sent.send()
    assert smtp.handler.envelopes == []
    run_worker_here()
    assert TaskExec.objects.get().state == States.SUCCEEDED
    [envelope] = smtp.handler.envelopes
    assert envelope.mail_from == "site@example.com"
    assert sorted(envelope.rcpt_tos) == sorted(
        ["zoe@example.com", "bob@example.com", "carol@example.com", "dave@example.com", "erin@example.com"]
    )
    received = parse(envelope)
    assert received["Subject"] == "Welcome aboard"
    assert received["To"] == "Zoë <zoe@example.com>, bob@example.com"
    assert received["Cc"] == "carol@example.com"
    assert received["Bcc"] is None
    assert received["Reply-To"] == "support@example.com"
    assert received["X-Campaign"] == "welcome-2026"
    assert received["X-Note"] == "héllo"
    # SMTP carries CRLF line ends and the email package may add a final newline.
    assert received.get_body(("plain",)).get_content().replace("\r\n", "\n").rstrip("\n") == sent.body
    assert received.get_body(("html",)).get_content().strip() == "<p>Hello <b>HTML</b> ünïcödé</p>"
    attachments = {part.get_filename(): part for part in received.iter_attachments()}
    assert attachments["résumé.bin"].get_content() == bytes(range(256))
    assert attachments["photo.png"].get_content() == PNG
    assert attachments["photo.png"].get_content_type() == "image/png"
    assert attachments["notes.txt"].get_content().replace("\r\n", "\n") == "some notes\n"
    gif = [p for p in received.iter_attachments() if p.get_content_type() == "image/gif"]
    assert gif[0].get_content() == b"GIF89a" + bytes(range(64))


def test_smtp_down_is_retried_then_delivered(smtp, settings):
    settings.TOOSIMPLEQ_EMAIL_RETRIES = 3
    settings.TOOSIMPLEQ_EMAIL_RETRY_DELAY = 0.2
    send_mail("Patience", "Body", None, ["a@example.com"])
    run_worker_here()  # nothing listens on the port yet
    failed = TaskExec.objects.get(state=States.FAILED)
    assert "ConnectionRefusedError" in failed.error
    retry = failed.replaced_by
    assert retry.state == States.SLEEPING and retry.retries == 2
    assert retry.due >= failed.finished + datetime.timedelta(seconds=0.2)

    smtp.start()

    def delivered():
        run_worker_here()
        return smtp.handler.envelopes

    wait_for(delivered, timeout=30, message="the retried email to be delivered")
    assert parse(smtp.handler.envelopes[0])["Subject"] == "Patience"
    last = TaskExec.objects.exclude(replaced_by__isnull=False).get()
    assert last.state == States.SUCCEEDED
    assert len(smtp.handler.envelopes) == 1


def test_smtp_refused_recipient_ends_failed_with_the_smtp_error(smtp, settings):
    smtp.start()
    settings.TOOSIMPLEQ_EMAIL_RETRIES = 1
    settings.TOOSIMPLEQ_EMAIL_RETRY_DELAY = 0
    send_mail("Refused", "Body", None, ["nobody@refused.example.com"])
    wait_for(lambda: run_worker_here() or not TaskExec.objects.filter(state__in=States.waiting()).exists())
    executions = list(TaskExec.objects.order_by("id"))
    assert [e.state for e in executions] == [States.FAILED, States.FAILED]
    for execution in executions:
        assert "SMTPRecipientsRefused" in execution.error and "No such user here" in execution.error
    assert smtp.handler.envelopes == []


def test_smtp_rolled_back_transaction_sends_nothing(smtp):
    smtp.start()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            send_mail("Never", "Body", None, ["a@example.com"])
            raise RuntimeError("rollback")
    send_mail("Committed", "Body", None, ["a@example.com"])
    run_worker_here()
    assert [parse(e)["Subject"] for e in smtp.handler.envelopes] == ["Committed"]


def test_only_email_backend_set_is_enough_as_in_1x(smtp, workers, monkeypatch, settings):
    """The contrib app not installed, only EMAIL_BACKEND set (a 1.x set-up): emails are queued and a
    worker process (whose settings lack the app too) loads the delivery task and sends them."""
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_toosimple_q.contrib.mail"]
    smtp.start()
    monkeypatch.setenv("TOOSIMPLEQ_TEST_EMAIL_PORT", str(smtp.port))
    monkeypatch.setenv("TOOSIMPLEQ_TEST_MAIL_WITHOUT_APP", "1")
    assert send_mail("Like 1.x", "Body", None, ["a@example.com"]) == 1
    done = workers.run("--until_done")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "django_toosimple_q.contrib.mail.send_emails" in done.stderr  # listed among the worker's tasks
    assert [parse(e)["Subject"] for e in smtp.handler.envelopes] == ["Like 1.x"]
    assert TaskExec.objects.get().state == States.SUCCEEDED


def test_worker_subprocess_delivers_over_smtp(smtp, workers, monkeypatch):
    """A separate worker process finds the delivery task by itself (app autodiscovery) and sends."""
    smtp.start()
    monkeypatch.setenv("TOOSIMPLEQ_TEST_EMAIL_PORT", str(smtp.port))
    send_mail("From a worker", "Body", None, ["a@example.com"])
    done = workers.run("--until_done")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [parse(e)["Subject"] for e in smtp.handler.envelopes] == ["From a worker"]
    assert TaskExec.objects.get().state == States.SUCCEEDED
