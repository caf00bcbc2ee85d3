"""The fixtures every folder of tests may ask for, registered once here (the top-level conftest, so
``pytest_plugins`` is allowed): real redis-server, moto S3 on loopback, the tiny checkpoint, real
``python -m worker`` / ``python -m api`` processes (``tests/support/service_fixtures.py``) and the API
fixtures (``tests/support/api_fixtures.py``). Fixtures are only started by the tests that request them;
a folder's own conftest (``tests/model``, ``tests/deploy``) still overrides a name it defines."""

pytest_plugins = ["service_fixtures", "api_fixtures"]
