"""A task written with Django's tasks framework (Django 6.0 and later), run by our worker."""

from django.tasks import task


@task(takes_context=True)
def send_newsletter(context, issue):
    """Queued with ``send_newsletter.enqueue(12)``; its TaskResult is read with ``get_result()``."""
    return f"newsletter #{issue} sent (attempt {context.attempt})"
