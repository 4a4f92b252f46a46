"""Django email messages <-> plain data that the task arguments can store (never pickle).

A message becomes a dict whose first keys are ``subject`` and ``to``, so that a short preview of the
execution's arguments names the email rather than showing its body. Attachments that are MIME objects
are stored as their bytes and parsed back; file attachments keep their exact content (str or bytes).
Attributes set on the instance beyond the usual fields (``encoding``, ``content_subtype``, extra data
for a third-party backend...) are kept too, as long as they are storable values.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
from email.mime.base import MIMEBase
from typing import Any

from django.core.mail import EmailMessage
from django.utils.functional import Promise
from django.utils.module_loading import import_string

# The fields every Django message has, stored under their own keys (in this order).
FIELDS = ("subject", "to", "cc", "bcc", "from_email", "reply_to", "body", "extra_headers")
# Never stored: the connection belongs to the sending process (``_connection`` on Django >= 6.1).
NOT_STORED = frozenset({"connection", "_connection", "attachments", "alternatives", *FIELDS})

try:  # Django >= 5.2 holds attachments and alternatives in named tuples.
    from django.core.mail import EmailAlternative, EmailAttachment
except ImportError:  # Django 4.2: plain tuples
    EmailAlternative = EmailAttachment = None


class _ParsedMIMEBase(MIMEBase):
    """What a stored ``MIMEBase`` attachment is parsed back into (Django checks ``isinstance(MIMEBase)``)."""

    def __init__(self, policy: Any = None) -> None:
        email.message.Message.__init__(self, policy=policy or email.policy.compat32)


def message_to_data(message: EmailMessage) -> dict[str, Any]:
    """The stored form of ``message``; raises ``TypeError`` naming what cannot be stored."""
    cls = type(message)
    class_path = f"{cls.__module__}.{cls.__qualname__}"
    if _import_class(class_path) is not cls:
        raise TypeError(f"Email class {class_path} cannot be imported by that path, so the worker could not rebuild it")
    try:
        blank = cls()
    except TypeError as exc:
        raise TypeError(
            f"Email class {class_path} must be constructible without arguments to be queued: {exc}"
        ) from None

    data: dict[str, Any] = {name: _plain(getattr(message, name)) for name in FIELDS}
    if hasattr(message, "alternatives"):
        data["alternatives"] = [_alternative_to_data(item) for item in message.alternatives]
    data["attachments"] = [_attachment_to_data(item, index) for index, item in enumerate(message.attachments)]
    data["class"] = class_path
    # Whatever else differs from a blank instance of the same class: encoding, content_subtype, ...
    data["attributes"] = {
        name: _plain(value)
        for name, value in vars(message).items()
        if name not in NOT_STORED and (name not in vars(blank) or vars(blank)[name] != value)
    }
    return data


def message_from_data(data: dict[str, Any]) -> EmailMessage:
    """Inverse of :func:`message_to_data`."""
    cls = _import_class(data["class"])
    message = cls()
    for name in FIELDS:
        setattr(message, name, data[name])
    if "alternatives" in data:
        message.alternatives = [_alternative_from_data(item) for item in data["alternatives"]]
    message.attachments = [_attachment_from_data(item) for item in data["attachments"]]
    for name, value in data["attributes"].items():
        setattr(message, name, value)
    return message


def _import_class(path: str) -> type[EmailMessage]:
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise TypeError(f"Email class {path!r} cannot be imported: {exc}") from None
    # A stored row may only name an email class, not any callable.
    if not (isinstance(cls, type) and issubclass(cls, EmailMessage)):
        raise TypeError(f"{path!r} is not a subclass of django.core.mail.EmailMessage")
    return cls


def _plain(value: Any) -> Any:
    """Lazy translations become text; containers are walked. Other values are checked when stored."""
    if isinstance(value, Promise):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _alternative_to_data(item: Any) -> dict[str, Any]:
    content, mimetype = item
    return {"content": _plain(content), "mimetype": mimetype}


def _alternative_from_data(data: dict[str, Any]) -> Any:
    if EmailAlternative is None:
        return (data["content"], data["mimetype"])
    return EmailAlternative(data["content"], data["mimetype"])


def _attachment_to_data(item: Any, index: int) -> dict[str, Any]:
    if isinstance(item, MIMEBase):
        return {"mime": item.as_bytes(), "kind": "MIMEBase"}
    if isinstance(item, email.message.MIMEPart):
        kind = "EmailMessage" if isinstance(item, email.message.EmailMessage) else "MIMEPart"
        return {"mime": item.as_bytes(), "kind": kind}
    if isinstance(item, tuple) and len(item) == 3:
        filename, content, mimetype = item
        return {"filename": _plain(filename), "content": _plain(content), "mimetype": mimetype}
    raise TypeError(
        f"Attachment {index} is a {type(item).__qualname__}; expected (filename, content, mimetype) "
        "or a MIME object"
    )


def _attachment_from_data(data: dict[str, Any]) -> Any:
    if "mime" in data:
        if data["kind"] == "MIMEBase":
            parser = email.parser.BytesParser(_ParsedMIMEBase, policy=email.policy.compat32)
        else:
            part_class = email.message.EmailMessage if data["kind"] == "EmailMessage" else email.message.MIMEPart
            parser = email.parser.BytesParser(part_class, policy=email.policy.default)
        return parser.parsebytes(data["mime"])
    if EmailAttachment is None:
        return (data["filename"], data["content"], data["mimetype"])
    return EmailAttachment(data["filename"], data["content"], data["mimetype"])
