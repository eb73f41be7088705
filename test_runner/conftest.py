# Root conftest of the integration tests: loads the shared fixtures (see fixtures/__init__.py).
pytest_plugins = (
    "fixtures.zenith_fixtures",
    "fixtures.pageserver",
    "fixtures.zenith_env",
    "fixtures.browser",
    "fixtures.remote_storage",
)

