"""The WSGI entry point for gunicorn (``api.wsgi:app``): the only module that builds an app at import."""

from api import create_app

app = create_app()
