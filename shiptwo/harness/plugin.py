"""pytest wiring for shiptwo: `@pytest.mark.ac(ID)`, model markers, the `criterion` fixture,
and reports/results.json. Logic lives in shiptwo.harness.spec / shiptwo.harness.results; this is only hooks.

Inert for tests without an `ac` mark: the spec is loaded only when a bound test is collected,
and results.json is written only when a bound test ran. Under pytest-xdist each worker attaches
its records to `report.user_properties`; the controller gathers them and writes the file once.
One run id per session (shared with xdist workers) names the session's evidence directory.
Every test bound to a criterion, collected or not (a static scan of acceptance/), is expected:
a session that ran only some of them records the criterion NOT RUN.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.checkout import run_info
from shiptwo.harness.bindings import bound_tests, scan_bindings
from shiptwo.harness.evidence import criterion_dir, new_run_id
from shiptwo.harness.results import CriterionCheck, TestOutcome, combine_records, make_record, write_results
from shiptwo.harness.spec import Spec, load_spec

from shiptwo.harness.spec import AC_MARKER, MODELS
from shiptwo import paths
from shiptwo.paths import ACCEPTANCE_DIR, DEFAULT_PROFILE, EVIDENCE_DIR, PROFILES, PROFILE_ENV, RESULTS_PATH, SPEC_PATH

USER_PROPERTY_KEY = "shiptwo_result"  # carries one test's record from an xdist worker to the controller
RUN_ID_KEY = "shiptwo_run_id"  # carries the controller's run id to xdist workers


_CID = pytest.StashKey[str]()
_CHECK = pytest.StashKey[CriterionCheck]()
_STATE = pytest.StashKey["_ShiptwoSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shiptwo", "shiptwo acceptance criteria")
    group.addoption("--spec", dest="shiptwo_spec", default=None, help=f"spec YAML (default: <rootdir>/{SPEC_PATH})")
    group.addoption("--profile", dest="shiptwo_profile", default=None,
                    help=f"threshold profile: {', '.join(PROFILES)} (default: ${PROFILE_ENV} or {DEFAULT_PROFILE})")
    group.addoption("--results", dest="shiptwo_results", default=None, help=f"results file (default: <rootdir>/{RESULTS_PATH})")
    group.addoption("--evidence-root", dest="shiptwo_evidence", default=None,
                    help=f"where each run's evidence directory goes (default: <rootdir>/{EVIDENCE_DIR})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{AC_MARKER}(id): binds a test to an acceptance criterion of the spec")
    for model in MODELS:
        config.addinivalue_line("markers", f"{model}: criteria of {model} (applied from the spec)")
    session = _ShiptwoSession(config)
    config.stash[_STATE] = session
    config.pluginmanager.register(session, "shiptwo-session")


@pytest.fixture
def criterion(request: pytest.FixtureRequest) -> CriterionCheck:
    """The bound criterion: measure, then `criterion.check(measured, evidence={...})`."""
    cid = request.node.stash.get(_CID, None)
    if cid is None:
        raise pytest.UsageError(f"{request.node.nodeid}: the criterion fixture needs @pytest.mark.ac(\"ID\")")
    state = request.config.stash[_STATE]
    check = CriterionCheck(state.spec.criterion(cid), state.profile, criterion_dir(state.evidence_root, state.run_id, cid))
    request.node.stash[_CHECK] = check
    return check


@pytest.fixture(scope="session")
def run_evidence_dir(request: pytest.FixtureRequest) -> Path:
    """reports/evidence/<run-id>/ (created): where session-wide evidence (exports several criteria
    measure) lives beside the per-criterion directories, so it survives the run."""
    state = request.config.stash[_STATE]
    path = state.evidence_root / state.run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def active_profile(config: pytest.Config) -> str:
    """The threshold profile of this run (--profile / $SHIPTWO_PROFILE / default), validated."""
    return config.stash[_STATE].profile


def active_spec_path(config: pytest.Config) -> Path:
    """The spec this run judges against (--spec, resolved as the plugin resolves it)."""
    return config.stash[_STATE].spec_path


def _bound_id(item: pytest.Item) -> str:
    """The single criterion id an item is bound to; ValueError when the mark is malformed."""
    marks = list(item.iter_markers(AC_MARKER))
    if len(marks) != 1 or len(marks[0].args) != 1 or not isinstance(marks[0].args[0], str):
        raise ValueError(f"{item.nodeid}: needs exactly one @pytest.mark.ac(\"ID\") with one id")
    return marks[0].args[0]


def _report_text(report: pytest.TestReport) -> str:
    """The skip reason or the one-line failure message of a report."""
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0] if crash.message else ""
    lines = str(longrepr or "").strip().splitlines()
    return lines[-1] if lines else ""


class _ShiptwoSession:
    """Per-config plugin object: options, the lazily loaded spec, gathered records, the write."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self._spec: Spec | None = None
        self.records: list[dict] = []
        self.written = ""
        self.collected: dict[str, set[str]] = defaultdict(set)  # cid -> node ids bound to it (before -k/-m)
        self._static: dict[str, set[str]] | None = None
        worker = getattr(config, "workerinput", None)
        self.run_id = worker[RUN_ID_KEY] if worker and RUN_ID_KEY in worker else new_run_id()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """xdist controller: every worker records into this session's evidence directory."""
        node.workerinput[RUN_ID_KEY] = self.run_id

    @property
    def evidence_root(self) -> Path:
        explicit = self._option("shiptwo_evidence")
        return explicit or paths.project_root(self.config.rootpath, checkout_fallback=False) / EVIDENCE_DIR

    def expected_tests(self, cid: str) -> set[str]:
        """Every test bound to `cid`: node ids collected in this session plus `file::function` keys
        found by scanning the acceptance directory (tests in files this session did not collect)."""
        return self.collected.get(cid, set()) | self._static_bindings().get(cid, set())

    def _static_bindings(self) -> dict[str, set[str]]:
        if self._static is None:
            acceptance = paths.root_of_spec(self.spec_path) / ACCEPTANCE_DIR
            self._static = bound_tests(scan_bindings(acceptance), self.config.rootpath) if acceptance.is_dir() else {}
        return self._static

    def _option(self, name: str) -> Path | None:
        value = self.config.getoption(name)
        return Path(self.config.invocation_params.dir, value) if value else None

    @property
    def spec_path(self) -> Path:
        return paths.spec_path(self._option("shiptwo_spec"), start=self.config.rootpath, checkout_fallback=False)

    @property
    def results_path(self) -> Path:
        return paths.results_path(self._option("shiptwo_results"), start=self.config.rootpath, checkout_fallback=False)

    @property
    def profile(self) -> str:
        try:
            return paths.active_profile(self.config.getoption("shiptwo_profile"))
        except ShiptwoError as exc:
            raise pytest.UsageError(f"shiptwo: {exc}") from None

    @property
    def spec(self) -> Spec:
        if self._spec is None:
            if not self.spec_path.is_file():
                raise pytest.UsageError(f"shiptwo: no spec at {self.spec_path} (needed by @pytest.mark.ac tests; see --spec)")
            try:
                self._spec = load_spec(self.spec_path)
            except ShiptwoError as exc:
                raise pytest.UsageError(f"shiptwo: {exc}") from exc
        return self._spec

    def _bind(self, items: list[pytest.Item]) -> list[str]:
        """Stash each bound item's id and add its model marker; the binding errors found."""
        bound = [item for item in items if item.get_closest_marker(AC_MARKER)]
        if not bound:
            return []
        try:
            spec, _ = self.spec, self.profile
            self._static_bindings()  # an unparseable acceptance file is a collection error, not a crash later
        except pytest.UsageError as exc:
            return [str(exc).removeprefix("shiptwo: ")]
        except ShiptwoError as exc:
            return [str(exc)]
        errors = []
        for item in bound:
            try:
                cid = _bound_id(item)
            except ValueError as exc:
                errors.append(str(exc))
                continue
            if cid not in spec.criteria:
                errors.append(f"{item.nodeid}: @pytest.mark.ac({cid!r}) names an id not in {self.spec_path}")
                continue
            item.stash[_CID] = cid
            item.add_marker(spec.criteria[cid].model)
            self.collected[cid].add(item.nodeid)
        return errors

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector):
        """Bind at collection time (before `-m` selects) and turn a bad binding into a collection
        error of that module: it fails the run clearly, also on xdist workers."""
        report = yield
        if report.passed:
            errors = self._bind([node for node in report.result if isinstance(node, pytest.Item)])
            if errors:
                report.outcome = "failed"
                report.longrepr = "shiptwo: " + "\n".join(errors)
                report.result = []
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        cid = item.stash.get(_CID, None)
        decisive = report.when == "call" or (report.when == "setup" and not report.passed) or (
            report.when == "teardown" and report.failed)
        if cid is not None and decisive:
            outcome = TestOutcome(report.when, report.outcome, report.duration, _report_text(report))
            record = make_record(item.nodeid, self.spec.criteria[cid], self.profile, outcome, item.stash.get(_CHECK, None),
                                 sorted(self.expected_tests(cid)))
            report.user_properties.append((USER_PROPERTY_KEY, record))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        new = [value for key, value in report.user_properties if key == USER_PROPERTY_KEY]
        self.records.extend(new)
        if new and not hasattr(self.config, "workerinput"):
            # Written after every criterion, not only at the end: a test that kills the process
            # (a segfault in a native runtime) must not take the results of the others with it.
            self._write()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput") or not self.records:
            return  # xdist workers never write; nothing bound ran
        if not self._write():
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def _write(self) -> bool:
        """Merge the records so far into the results file (atomically); False on failure."""
        grouped: dict[str, list[dict]] = defaultdict(list)
        for record in self.records:
            grouped[record["id"]].append(record)
        entries = {cid: combine_records(records) for cid, records in grouped.items()}
        try:
            run = {**run_info(self.config.rootpath, self.spec.sha256, self.profile, with_environment=True), "run_id": self.run_id,
                   "evidence_dir": str(self.evidence_root / self.run_id)}
            write_results(self.results_path, entries, run)
            self.written = f"shiptwo: {len(entries)} criteria recorded in {self.results_path} (profile {self.profile})"
            return True
        except (ShiptwoError, pytest.UsageError) as exc:
            self.written = f"shiptwo: error: cannot write results: {exc}"
            return False

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.written:
            terminalreporter.write_line(self.written)
