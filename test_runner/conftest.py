# Root conftest of the integration tests: loads the shared fixtures (see fixtures/__init__.py).
pytest_plugins = (
    "fixtures.zenith_fixtures",
    "fixtures.pageserver",
    "fixtures.zenith_env",
    "fixtures.browser",
)

# The longest tests (minutes each with the suite running beside them: see the durations pytest
# prints at the end) go first, so that pytest-xdist's workers fill the rest of the run with the
# short ones instead of ending on a long tail. Matched against the start of each test's node id.
SLOW_FIRST = (
    "test_pg_regress.py::test_pg_regress[1MB]",
    "test_zenith_cli.py::test_laptop_flow",
    "test_pg_regress.py::test_pg_regress[default]",
    "test_walkeepers.py::test_backpressure_throttles_inside_one_statement",
    "test_pageserver_scale.py::test_follow_busy_primary_with_bounded_resources",
    "test_walkeepers.py::test_ledger_under_walkeeper_chaos",
    "performance/test_pageserver_scale_perf.py::test_getpage_many_layers",
    "test_pageserver_crash.py::test_crash_at_failpoint",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        for i, prefix in enumerate(SLOW_FIRST):
            if item.nodeid.startswith(prefix):
                return i
        return len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
