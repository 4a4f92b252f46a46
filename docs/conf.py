"""Sphinx configuration of the django-toosimple-q documentation (`make docs`)."""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

# autodoc and the command reference import the package: give Django just enough settings to load it.
settings.configure(
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.admin",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django_toosimple_q",
        "django_toosimple_q.contrib.mail",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
)
django.setup()

import django_toosimple_q  # noqa: E402

project = "django-toosimple-q"
author = "the django-toosimple-q developers"
copyright = author  # noqa: A001 - the name Sphinx reads
release = django_toosimple_q.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "toosimpleq_commands",  # docs/_ext: the command reference, read from the commands' argparse parsers
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Headings get anchors, so pages can link to a section: [Retention](high-volume.md#retention).
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]
# Option names such as --queue must stay two hyphens, not become dashes.
smartquotes = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "furo"
html_title = f"django-toosimple-q {release}"

# Pages written on other branches (the deployment guide, the upgrade notes) appear in the table of
# contents as soon as their file exists; until then the toctree leaves them out instead of failing.
OPTIONAL_PAGES = ["deployment", "upgrading"]


def _drop_missing_pages(app, docname, source):
    if docname != "index":
        return
    missing = [page for page in OPTIONAL_PAGES if not (HERE / f"{page}.md").exists()]
    lines = source[0].split("\n")
    source[0] = "\n".join(line for line in lines if line.strip() not in missing)


def setup(app):
    app.connect("source-read", _drop_missing_pages)
