"""The WSGI entry point for gunicorn (``api.wsgi:app``): the only module that builds an app at import."""

from api import create_app
from api.settings import ApiSettings
from jobs import logs

_settings = ApiSettings.from_env()
if not logs.configured():  # python -m api configured it already (gunicorn's logconfig_dict, --log-level)
    logs.configure(_settings.log_format, _settings.log_level)
app = create_app({"SETTINGS": _settings})
