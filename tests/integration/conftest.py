"""conftest: the pytest fixtures every integration test shares (the helpers are in harness.py).

Fixtures
    spawn            function: spawn(args, env=None, name=None, cwd=None) -> harness.Proc; every
                     process still running at the end of the test is killed
    postgres         session (one cluster per test file, as ctest runs one file per process):
                     harness.Postgres with .url, .fresh_db(), .restart(), .stop(), .connect()
    make_devbroker   function: make_devbroker(brokers=3, partitions=6, replication=None,
                     topic_prefix="hookflow", env=None, extra_args=(), check_exit=True)
                     -> a started harness.DevBroker; stopped with SIGTERM at the end of the test,
                     and (check_exit) the test errors if it then exits non-zero or a sanitizer
                     reported anything
    devbroker        function: make_devbroker() with the defaults

When a test fails, the tail of the log of every process that ran during it (and the PostgreSQL
server log when the test used `postgres`) is added to the failure report. When any test fails the
session's temporary directory (process logs) is kept and its path printed.
"""

import signal
import time

import pytest

import harness


def pytest_report_header(config):
    try:
        return f"hookflow build dir: {harness.build_dir()}"
    except harness.HarnessError as e:
        return f"hookflow: {e}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item._hf_started = time.monotonic()
    yield


def _process_logs(item):
    started = getattr(item, "_hf_started", 0.0)
    sections = []
    for p in harness.all_procs():
        if p.ended_at is not None and p.ended_at < started:
            continue
        state = "running" if p.alive() else f"exit code {p.returncode}"
        sections.append(f"--- {p.name} pid {p.pid} ({state}) {p.log_path}\n{p.tail(60)}")
    pg = item.funcargs.get("postgres") if hasattr(item, "funcargs") else None
    if isinstance(pg, harness.Postgres):
        tail = "\n".join(pg.log().splitlines()[-30:])
        sections.append(f"--- postgres {pg.dir}/postgres.log\n{tail}")
    return "\n".join(sections)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        item.session._hf_failed = True
        logs = _process_logs(item)
        if logs:
            rep.sections.append(("hookflow process logs (tails)", logs))


def pytest_sessionfinish(session, exitstatus):
    harness.kill_all()
    keep = bool(getattr(session, "_hf_failed", False)) or exitstatus not in (0, 5)
    root = harness.cleanup_temp(keep=keep)
    if keep and root:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"hookflow: process logs kept in {root}")


def _or_fail(fn):
    """fn(), with a HarnessError (missing binary, variable, script) turned into a one-line test
    failure instead of a traceback."""
    try:
        return fn()
    except harness.HarnessError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def spawn():
    """Starts processes for one test; kills whatever is still running at its end."""
    started = []

    def _spawn(args, env=None, name=None, cwd=None):
        p = harness.Proc(args, env=env, name=name, cwd=cwd)
        started.append(p)
        return p

    yield _spawn
    harness.kill_all(started)


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the test file; use fresh_db() per test."""
    pg = _or_fail(harness.Postgres)
    try:
        pg.start()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def make_devbroker():
    """Factory for started dev brokers; each is stopped (SIGTERM) at the end of the test."""
    brokers = []

    def _make(check_exit=True, **kw):
        db = harness.DevBroker(**kw)
        brokers.append((db, check_exit))
        return _or_fail(db.start)

    yield _make

    problems = []
    for db, check_exit in brokers:
        if db.proc is None:
            continue
        was_running = db.proc.alive()
        code = db.stop(signal.SIGTERM, timeout=15)
        if not check_exit:
            continue
        if was_running and code != 0:
            problems.append(f"{db.name} exited {code} after SIGTERM:\n{db.proc.tail()}")
        errors = db.proc.sanitizer_errors()
        if errors:
            problems.append(f"{db.name} sanitizer report:\n{db.proc.tail(80)}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def devbroker(make_devbroker):
    """A dev broker with the defaults (3 brokers, 6 partitions, prefix "hookflow")."""
    return make_devbroker()
