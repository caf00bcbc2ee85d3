"""The service fixtures (redis-server, moto S3, the tiny checkpoint, ``start_worker``, ``start_api``) live in
``tests/support/service_fixtures.py`` and the API ones in ``tests/support/api_fixtures.py``; both are
registered for every folder by ``tests/conftest.py`` (``tests/reliability`` uses them too)."""
