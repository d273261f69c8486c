"""rtest worker agent.

This file is embedded in the rtest binary and sent to a fresh Python over its
stdin by the bootstrap one-liner.  It must run on Python 3.8+ and import
nothing outside the standard library before pytest starts.

Wire format (both directions): a 4-byte big-endian length, then one UTF-8
JSON object whose "t" field names the message type.  The coordinator owns all
scheduling and reporting; this agent only collects, runs the test indices it
is given with pytest's own runtest protocol, and reports what happened.
"""

import collections
import json
import os
import signal
import struct
import sys
import threading
import time

PROTOCOL_VERSION = 1
SHUTDOWN = -1


class Channel:
    """Framed JSON messages over two private file descriptors."""

    def __init__(self, rfd, wfd):
        self.rfd = rfd
        self.wfd = wfd
        self.lock = threading.Lock()

    def send(self, msg):
        data = _ENCODER.encode(msg)
        # Lone surrogates (undecodable bytes from a test's output) are not
        # valid UTF-8: replace them rather than corrupt the frame.
        self.send_frame(data.encode("utf-8", "replace"))

    def send_frame(self, payload):
        """Send one message already encoded as UTF-8 JSON."""
        frame = struct.pack(">I", len(payload)) + payload
        with self.lock:
            view = memoryview(frame)
            while view:
                written = os.write(self.wfd, view)
                view = view[written:]

    def _read_exact(self, n):
        chunks = []
        while n:
            chunk = os.read(self.rfd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def receive(self):
        header = self._read_exact(4)
        if header is None:
            return None
        (length,) = struct.unpack(">I", header)
        payload = self._read_exact(length)
        if payload is None:
            return None
        return json.loads(payload.decode("utf-8"), object_hook=_unwire)


BYTES_TAG = "__rtest_bytes__"


def _wire_default(value):
    """JSON for what json cannot write: bytes (pytest-cov's coverage data
    in ``workeroutput``) travel tagged, sets as lists, anything else as its
    text."""
    if isinstance(value, (bytes, bytearray)):
        import base64

        return {BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        return list(value)
    return _text(value)


# One for every frame (json.dumps with options makes a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_wire_default)


# The words a finished test's phases are made of, when pytest's own: JSON
# strings as they are.
_PLAIN_WORDS = frozenset(("setup", "call", "teardown", "passed", "failed", "skipped"))


def _finished_frame(index, took, phases):
    """The ``finished`` message of a test whose phases are pytest's plain
    ``[when, outcome, duration]``, written directly (most tests; the
    encoder costs several microseconds a test), else None."""
    parts = []
    for phase in phases:
        if len(phase) != 3 or not (phase[0] in _PLAIN_WORDS and phase[1] in _PLAIN_WORDS and _plain_float(phase[2])):
            return None
        parts.append('["%s","%s",%r]' % tuple(phase))
    if type(index) is not int or not _plain_float(took):
        return None
    return ('{"t":"finished","i":%d,"d":%r,"ph":[%s]}' % (index, took, ",".join(parts))).encode("ascii")


def _plain_float(value):
    """A float JSON writes as Python's repr does (a finite one)."""
    return type(value) is float and value - value == 0.0


def _unwire(obj):
    if len(obj) == 1 and BYTES_TAG in obj:
        import base64

        return base64.b64decode(obj[BYTES_TAG])
    return obj


def _coordinator_gone():
    """The coordinator went away: end this worker and, when it leads its
    process group (as rtest starts it, locally and over ssh), everything
    its tests started."""
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    except OSError:
        pass
    os._exit(70)


class Inbox:
    """Commands from the coordinator, filled by a reader thread.

    The reader thread also notices when the coordinator goes away (EOF on
    the protocol pipe) and ends this process, so no worker outlives it.
    """

    def __init__(self, channel, handlers=None):
        self.channel = channel
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.handlers = dict(handlers or {})
        thread = threading.Thread(target=self._pump, name="rtest-inbox", daemon=True)
        thread.start()

    def _pump(self):
        while True:
            try:
                msg = self.channel.receive()
            except Exception:
                msg = None
            if msg is None:
                if _ENDING:
                    # Done: the process is ending as an interpreter ends.
                    return
                _coordinator_gone()
            with self.cond:
                handler = self.handlers.get(msg.get("t"))
                if handler is None:
                    self.queue.append(msg)
                    self.cond.notify_all()
                    continue
            handler(msg)

    def on(self, kind, handler):
        """Handle `kind` as it is read from now on, and those read before
        (they came while pytest was being imported)."""
        with self.cond:
            self.handlers[kind] = handler
            early = [msg for msg in self.queue if msg.get("t") == kind]
            if early:
                self.queue = collections.deque(m for m in self.queue if m.get("t") != kind)
        for msg in early:
            handler(msg)

    def get(self):
        with self.cond:
            while not self.queue:
                self.cond.wait()
            return self.queue.popleft()


def python_info():
    info = {
        "t": "ready",
        "protocol": PROTOCOL_VERSION,
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "implementation": {"cpython": "CPython", "pypy": "PyPy", "graalpy": "GraalVM"}.get(sys.implementation.name, sys.implementation.name),
        "executable": sys.executable,
        "platform": sys.platform,
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "pytest": None,
        "pluggy": None,
    }
    try:
        import importlib.util

        spec = importlib.util.find_spec("pytest")
        if spec is not None:
            info["pytest"] = _dist_version("pytest", spec) or "unknown"
            info["pluggy"] = _dist_version("pluggy")
    except Exception:
        pass
    return info


def plugin_dists(config):
    """The installed distributions that provide the plugins of this
    session, as ``{normalized name: "name version"}``."""
    out = {}
    try:
        for _plugin, dist in config.pluginmanager.list_plugin_distinfo():
            name = str(dist.project_name)
            out[name.lower().replace("_", "-")] = "%s %s" % (name, dist.version)
    except Exception:
        pass
    return out


def _workerinfo():
    """What xdist's controller keeps as ``node.workerinfo`` (asked for only
    when a controller hears of this worker: ``platform.platform()`` takes
    tens of milliseconds)."""
    try:
        import platform

        full = platform.platform()
    except Exception:
        full = sys.platform
    return {
        "version": sys.version,
        "version_info": list(sys.version_info),
        "sysplatform": sys.platform,
        "platform": full,
        "executable": sys.executable,
        "cwd": os.getcwd(),
    }


def _dist_version(name, spec=None):
    # The dist-info directory beside the package names the version; reading
    # a directory is much cheaper than importing importlib.metadata.
    try:
        if spec is None:
            import importlib.util

            spec = importlib.util.find_spec(name)
        where = list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin)]
        site = os.path.dirname(where[0])
        prefix = name.lower() + "-"
        for entry in os.listdir(site):
            low = entry.lower()
            if low.startswith(prefix) and low.endswith(".dist-info"):
                return entry[len(prefix):-len(".dist-info")]
    except Exception:
        pass
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return None


def _longrepr_text(report):
    """pytest's rendering of a report's longrepr (honouring --tb), without
    the leading-whitespace strip of ``longreprtext``."""
    try:
        from io import StringIO

        from _pytest._io import TerminalWriter

        buf = StringIO()
        tw = TerminalWriter(file=buf)
        tw.hasmarkup = False
        report.toterminal(tw)
        return buf.getvalue().rstrip("\n")
    except Exception:
        return _text(report.longreprtext)


def _text(value):
    if value is None:
        return None
    try:
        return str(value)
    except Exception as exc:  # a broken __str__ in user code
        return "<unprintable %s: %s>" % (type(value).__name__, exc)


class JunitRecorder:
    """Stands in for pytest's LogXML in a worker, where pytest (as under
    xdist) does not open the JUnit file: the controller's junitxml writes
    it. What tests record for it with ``record_xml_attribute`` travels with
    their reports, and ``record_testsuite_property`` with the worker's
    ``workeroutput``, so both reach the file as in a serial run."""

    def __init__(self, family):
        self.family = family
        self.attrs = {}
        self.properties = []

    @classmethod
    def install(cls, config):
        if not getattr(config.option, "xmlpath", None):
            return None
        try:
            from _pytest.junitxml import xml_key

            if config.stash.get(xml_key, None) is not None:
                return None
            recorder = cls(config.getini("junit_family"))
            config.stash[xml_key] = recorder
            # junitxml's unconfigure unregisters what it finds there.
            config.pluginmanager.register(recorder, "rtest-junit")
            return recorder
        except Exception:
            return None

    def node_reporter(self, report):
        nodeid = getattr(report, "nodeid", None)
        return _AttributeSink(self.attrs.setdefault(str(report if nodeid is None else nodeid), []))

    def add_global_property(self, name, value):
        if not isinstance(name, str):
            raise TypeError("name parameter needs to be a string, but %s given" % type(name).__name__)
        self.properties.append([name, str(value)])

    def attach(self, report):
        # The fixture takes its sink at setup and fills it during the call.
        pending = self.attrs.get(report.nodeid)
        if pending:
            report._rtest_xml_attrs = list(pending)
            del pending[:]
        if report.when == "teardown":
            self.attrs.pop(report.nodeid, None)


class _AttributeSink:
    def __init__(self, into):
        self.into = into

    def add_attribute(self, name, value):
        self.into.append([str(name), str(value)])


class Worker:
    """The pytest plugin that turns a pytest session into an rtest worker."""

    def __init__(self, channel, inbox, start):
        self.channel = channel
        self.inbox = inbox
        self.start = start
        self.junit = None
        # pytest's serialized form of every report: for the report log, and
        # for the controller when its plugins replay reports.
        self.full_reports = bool(start.get("full_reports"))
        self.stream = False
        self.raws = []
        self.torun = collections.deque()
        self.item_index = None
        self.phases = []
        self.session = None
        self.config = None
        self.stopping = False
        self.deselected = 0
        self.hang_dump = None
        self.terminal = TerminalTail()
        # With live logging on (log_cli), what the logging plugin wrote to
        # the terminal during the test, phase by phase; else None.
        self.live_log = None
        self.collection_lines = []
        # The terminal reporter whose writer is the TerminalTail.
        self.quieted = None
        self.basetemp = None
        # (report, status) from the last pytest_report_teststatus.
        self.status_seen = None
        inbox.on("steal", self._steal)
        inbox.on("stop", self._stop)
        inbox.on("stream", self._stream)
        inbox.on("basetemp", self._basetemp)

    # -- commands -------------------------------------------------------

    def _steal(self, msg):
        """Give back queued tests that have not started (the one running
        and the one after it, already chosen as its successor, stay)."""
        wanted = set(msg.get("indices", []))
        stolen = []
        with self.inbox.cond:
            stolen.extend(i for i in self.torun if i in wanted)
            if stolen:
                self.torun = collections.deque(i for i in self.torun if i not in wanted)
            # Tests sent but not yet read from the inbox can go back too.
            for queued in self.inbox.queue:
                if queued.get("t") == "run":
                    keep = []
                    for i in queued["indices"]:
                        (stolen if i in wanted else keep).append(i)
                    queued["indices"] = keep
        self.channel.send({"t": "stolen", "indices": stolen})

    def _stream(self, msg):
        # Before the first test: the controller turned out to want reports.
        self.stream = bool(msg.get("on"))

    def _basetemp(self, msg):
        # The run's (the controller made it), for a worker started before
        # it was known: taken before the first test (it comes first).
        self.basetemp = msg.get("path")

    def _use_basetemp(self, config):
        """As if given with --basetemp, unless this session made its own
        already (a plugin's or conftest's tmp_path_factory at start)."""
        path, self.basetemp = self.basetemp, None
        factory = getattr(config, "_tmp_path_factory", None)
        if path is None or factory is None or config.option.basetemp:
            return
        if getattr(factory, "_basetemp", True) is None and hasattr(factory, "_given_basetemp"):
            import pathlib

            factory._given_basetemp = pathlib.Path(path)
            config.option.basetemp = path

    def _stop(self, msg):
        with self.inbox.cond:
            self.stopping = True
            self.torun.clear()
            self.torun.append(SHUTDOWN)
            self.inbox.cond.notify_all()

    def _next_index(self):
        """Block until the coordinator tells us the next test (or shutdown)."""
        while True:
            with self.inbox.cond:
                if self.torun:
                    return self.torun.popleft()
                if self.inbox.queue:
                    msg = self.inbox.queue.popleft()
                else:
                    self.inbox.cond.wait()
                    continue
            kind = msg.get("t")
            if kind == "run":
                with self.inbox.cond:
                    self.torun.extend(msg["indices"])
            elif kind == "shutdown":
                with self.inbox.cond:
                    self.torun.append(SHUTDOWN)

    # -- pytest hooks ---------------------------------------------------

    def _quiet_terminal(self, config):
        # The coordinator renders everything; a worker's own terminal output
        # would only be noise on stderr (but for a last word: TerminalTail).
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or reporter is self.quieted:
            return
        try:
            from _pytest.config import create_terminal_writer

            reporter._tw = create_terminal_writer(config, self.terminal)
            if self.quieted is None:
                self.terminal.show_at_exit()
            self.quieted = reporter
        except Exception:
            pass

    def pytest_configure(self, config):
        self._quiet_terminal(config)
        self.junit = JunitRecorder.install(config)
        msg = {"t": "configured", "options": _options(config)}
        if self.stream:
            msg["workerinfo"] = info = _workerinfo()
            # Which installed plugins this worker has: the controller skips
            # per-worker hooks of plugins it lacks (a bare remote Python).
            info["_rtest_dists"] = plugin_dists(config)
        self.channel.send(msg)

    def pytest_sessionstart(self, session):
        # First of all: a plugin that put its own terminal reporter in
        # pytest's place after this worker's configure (pytest-sugar, at a
        # trylast pytest_configure of its own) is quiet too.
        self._quiet_terminal(session.config)
        self.session = session

    def pytest_sessionfinish(self, session, exitstatus):
        # As xdist's worker: what plugins put in ``config.workeroutput`` goes
        # back to the controller (for pytest_testnodedown) after every
        # sessionfinish hook ran.
        output = self.config.workeroutput
        output["exitstatus"] = int(exitstatus)
        output["shouldfail"] = session.shouldfail
        output["shouldstop"] = session.shouldstop
        # The end of a worker's session is its terminal reporter's summary,
        # which is quiet: a plugin that prints its part of it (pytest-sugar's
        # "Results") instead of writing it there is quiet too (xdist drops
        # a worker's stdout); the controller's summary is the one shown.
        real = sys.stdout
        sys.stdout = self.terminal
        try:
            yield
        finally:
            sys.stdout = real
        if self.junit is not None and self.junit.properties:
            output["_rtest_junit_properties"] = self.junit.properties
        self.channel.send({"t": "workeroutput", "output": output})

    def pytest_unconfigure(self, config):
        # What plugins print at unconfigure is the controller's to show
        # (xdist drops a worker's stdout).
        real, sys.stdout = sys.stdout, self.terminal
        try:
            yield
        finally:
            sys.stdout = real

    def pytest_collectreport(self, report):
        if report.passed:
            return
        msg = {
            "t": "collect_report",
            "nodeid": report.nodeid,
            "outcome": report.outcome,
            "longrepr": _longrepr_text(report) if report.longrepr else None,
        }
        if report.skipped and isinstance(report.longrepr, tuple):
            msg["skip"] = [_text(x) for x in report.longrepr]
        elif report.failed:
            # The short summary's message, as pytest takes it: the text of
            # a plain-text error, the crash line of a traceback; none for
            # an import error (its repr carries no crash).
            longrepr = report.longrepr
            if isinstance(longrepr, str):
                msg["crash"] = longrepr
            else:
                crash = getattr(longrepr, "reprcrash", None)
                if crash is not None:
                    msg["crash"] = _text(crash.message)
        if self.full_reports or self.stream:
            msg["raw"] = self._serialize(report)
        self.channel.send(msg)

    def pytest_deselected(self, items):
        self.deselected += len(items)

    def pytest_report_collectionfinish(self):
        # What plugins report once collection is done (--lf's
        # "run-last-failure: ...", --sw's "stepwise: ..."), as pytest's
        # reporter here asks for it: the coordinator shows it.
        outcome = yield
        try:
            result = outcome.get_result()
        except BaseException:
            return
        for entry in reversed(result or []):
            for line in [entry] if isinstance(entry, str) else entry:
                self.collection_lines.append(_text(line))

    def pytest_collection_finish(self, session):
        _startup_done()
        if _live_logging(session.config):
            self.live_log = []
            session.config.pluginmanager.register(LiveLogTap(self), "rtest-live-log")
        self.channel.send(
            {
                "t": "collected",
                "deselected": self.deselected,
                "cachedir": _cachedir(session.config),
                "rootdir": str(session.config.rootpath),
                "ids": [item.nodeid for item in session.items],
                # Locations are left to the reports: computing them for
                # every item (most run elsewhere) costs real time.
                "groups": [_groups(item) for item in session.items] if self.start.get("groups") else [],
                "limits": _time_limits(session.config, session.items),
                "report_lines": self.collection_lines,
                "listing": _collected_listing(session) if session.config.option.collectonly else None,
                "log_cli": self.live_log is not None,
            }
        )

    def pytest_runtestloop(self, session):
        # Collection errors are decided by the coordinator (it sends
        # shutdown), so that every worker ends the same way.
        if session.config.option.collectonly:
            return True
        self.hang_dump = HangDump.for_config(session.config, self.start.get("timeout"))
        items = session.items
        index = self._next_index()
        self._use_basetemp(session.config)
        while index != SHUTDOWN:
            nxt = self._next_index()
            self.item_index = index
            self.phases = []
            self.raws = []
            if self.live_log is not None:
                self.live_log = []
            item = items[index]
            nextitem = None if nxt == SHUTDOWN else items[nxt]
            start = time.perf_counter()
            self.terminal.test_starts()
            if self.hang_dump is not None:
                self.hang_dump.begin()
            try:
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            except KeyboardInterrupt:
                self.channel.send(_interrupted(index, session.config))
                raise
            finally:
                self.terminal.test_ends()
                if self.hang_dump is not None:
                    self.hang_dump.end()
            took = time.perf_counter() - start
            frame = None if self.live_log or self.stream else _finished_frame(index, took, self.phases)
            if frame is not None:
                self.channel.send_frame(frame)
            else:
                msg = {"t": "finished", "i": index, "d": took, "ph": self.phases}
                if self.live_log:
                    msg["log"] = "".join(self.live_log)
                if self.stream:
                    # pytest's serialized form of the reports not sent in
                    # full, in one frame with the test (most of them:
                    # passes).
                    msg["rw"] = self.raws
                self.channel.send(msg)
            if session.shouldfail or session.shouldstop:
                self.channel.send(
                    {
                        "t": "should_stop",
                        "reason": _text(session.shouldfail or session.shouldstop),
                    }
                )
                break
            index = nxt
        return True

    def pytest_runtest_logstart(self, nodeid, location):
        # After pytest's reporter drew the test's start (trylast).
        self.terminal.clear()

    def _keep_live_log(self):
        """What the logging plugin wrote to the terminal since the last
        thing pytest's reporter drew (a "live log" section of the phase)."""
        if self.live_log is not None:
            text = self.terminal.text()
            if text:
                self.live_log.append(text)
            self.terminal.clear()

    def pytest_runtest_logreport(self, report):
        # After pytest's reporter drew the report (its text is no last word).
        self.terminal.clear()
        # pytest's own status first: it may change the report (a test whose
        # subtests failed fails), and plugins may count it otherwise.
        category = word = letter = None
        seen, self.status_seen = self.status_seen, None
        try:
            if seen is not None and seen[0] is report:
                status = seen[1]
            else:
                status = self.config.hook.pytest_report_teststatus(report=report, config=self.config)
            if status:
                category, letter = status[0], status[1]
                word = status[2] if isinstance(status[2], str) else None
        except Exception:
            pass
        if self.junit is not None:
            self.junit.attach(report)
        k = len(self.phases)
        phase = [report.when, report.outcome, report.duration]
        if category is not None and category not in _KNOWN_CATEGORIES:
            # A plugin's own (pytest-rerunfailures' "rerun", "R"): counted
            # under its name, shown with its letter.
            phase += [category, letter if isinstance(letter, str) else ""]
        elif category is not None and category != _usual_category(report):
            phase.append(category)
        self.phases.append(phase)
        wasxfail = getattr(report, "wasxfail", None)
        interesting = (
            not report.passed
            or report.sections
            or wasxfail is not None
            or report.user_properties
            or self.full_reports
        )
        if not interesting:
            if self.stream:
                self.raws.append(self._serialize(report, self.item_index))
            return
        if self.stream:
            self.raws.append(None)
        msg = {
            "t": "report",
            "i": self.item_index,
            "k": k,
            "when": report.when,
            "outcome": report.outcome,
            "duration": report.duration,
            "sections": [[_text(a), _text(b)] for a, b in report.sections],
            "location": list(report.location) if report.location else None,
            "head_line": _text(report.head_line),
            "wasxfail": _text(wasxfail),
            "user_properties": [[_text(k), _text(v)] for k, v in report.user_properties],
        }
        longrepr = report.longrepr
        if longrepr is not None:
            if report.skipped and isinstance(longrepr, tuple):
                msg["skip"] = [_text(x) for x in longrepr]
                keywords = getattr(report, "keywords", None) or {}
                if report.when == "setup" and "skip" in keywords and "pytestmark" not in keywords:
                    # pytest's short summary folds a skip by a marker that
                    # is not the test function's own decoration (its
                    # pytestmark would be among the keywords) by file and
                    # reason, not by line.
                    msg["by_file"] = True
            elif isinstance(longrepr, str):
                msg["longrepr"] = longrepr
                # pytest's summary line takes all of it as the message (its
                # first line where the line is trimmed; "[XPASS(strict)] "
                # keeps its space), and so does JUnit's.
                msg["crash"] = {"path": None, "lineno": None, "message": longrepr}
            else:
                msg["longrepr"] = _longrepr_text(report)
                crash = getattr(longrepr, "reprcrash", None)
                if crash is not None:
                    msg["crash"] = {
                        "path": _text(crash.path),
                        "lineno": crash.lineno,
                        "message": _text(crash.message),
                    }
        if len(phase) > 3:
            msg["category"] = phase[3]
        if len(phase) > 4:
            msg["letter"] = phase[4]
        if word and word != report.outcome.upper():
            msg["word"] = word  # SUBFAILED(i=2), as pytest's summary says it
        if self.full_reports or self.stream:
            msg["raw"] = self._serialize(report, self.item_index)
        self.channel.send(msg)

    def pytest_report_teststatus(self, report, config):
        # A wrapper: what plugins told pytest's reporter about the report
        # (it asks for every report it draws, before this plugin's
        # pytest_runtest_logreport), kept so that they are asked once, as
        # in a plain pytest session.
        outcome = yield
        try:
            self.status_seen = (report, outcome.get_result())
        except BaseException:
            self.status_seen = None

    def _teststatus_wrapper(self, report, config):
        # The same, as a new-style wrapper (pluggy 1.1+), which pluggy calls
        # for less than an old-style one: three times a test.
        self.status_seen = None
        status = yield
        self.status_seen = (report, status)
        return status

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        import warnings

        try:
            text = warnings.formatwarning(
                warning_message.message,
                warning_message.category,
                warning_message.filename,
                warning_message.lineno,
                warning_message.line,
            )
        except Exception:
            text = _text(warning_message.message)
        msg = {"t": "warning", "nodeid": nodeid, "when": when, "text": text.rstrip("\n")}
        if not nodeid:
            msg["place"] = _warning_place(self.config, warning_message)
        if self.stream or self.full_reports or when != "runtest":
            # Those outside tests come before the controller may have said
            # it wants the stream: kept by the coordinator until it has.
            # The report log writes them as pytest-reportlog does.
            msg["data"] = _warning_data(warning_message, when, nodeid, location)
        self.channel.send(msg)

    def pytest_keyboard_interrupt(self, excinfo):
        # pytest.exit() in a test, a fixture or a hook: the run ends with
        # pytest's own line for it.
        msg = _exit_message(excinfo)
        if msg is not None:
            self.channel.send(msg)

    def pytest_internalerror(self, excrepr, excinfo):
        # The coordinator says it (once for every worker that says the
        # same), where pytest would write it to stderr as well.
        self.channel.send({"t": "internal_error", "message": _text(excrepr)})
        return True

    def _serialize(self, report, item_index=None):
        try:
            data = self.config.hook.pytest_report_to_serializable(
                config=self.config, report=report
            )
            if item_index is not None:
                # As xdist forwards them: plugins (pytest-rerunfailures)
                # tell items apart by these.
                data["item_index"] = item_index
                data["worker_id"] = self.start["worker_id"]
                data["testrun_uid"] = self.start["testrun_uid"]
            return data
        except Exception:
            return None


def _interrupted(index, config):
    """A test raised KeyboardInterrupt: what pytest's reporter shows of it
    (its ``_report_keyboardinterrupt``): the exception's line as the title,
    then where it was raised, or with --full-trace the whole traceback."""
    msg = {"t": "interrupted", "i": index}
    try:
        from _pytest._code import ExceptionInfo

        excrepr = ExceptionInfo.from_current().getrepr(funcargs=True)
        crash = excrepr.reprcrash
        msg["title"] = _text(crash.message)
        if config.option.fulltrace:
            msg["message"] = str(excrepr)
        else:
            msg["location"] = [_text(crash.path), crash.lineno]
            msg["message"] = _text(crash.message).split("\n")[0]
    except Exception:
        import traceback

        msg["message"] = traceback.format_exc(limit=-3)
    return msg


def _exit_message(excinfo):
    """What says that pytest.exit() ended a session: pytest's line for it
    ("_pytest.outcomes.Exit: why") and the status it gives (2 without
    one); None for any other interruption."""
    try:
        from _pytest.outcomes import Exit
    except ImportError:
        return None
    if not isinstance(excinfo.value, Exit):
        return None
    status = excinfo.value.returncode
    return {
        "t": "exit",
        "message": _text(excinfo.exconly()),
        "status": 2 if status is None else int(status),
    }


def _drop_bytecode(path):
    # The copy keeps the local mtime, and pyc files check only mtime (in
    # whole seconds) and size: a same-size edit within a second of the last
    # sync would run stale bytecode. A changed source loses its cache.
    cache = os.path.join(os.path.dirname(path), "__pycache__")
    stem = os.path.basename(path)[:-3] + "."
    try:
        names = os.listdir(cache)
    except OSError:
        return
    for name in names:
        if name.startswith(stem) and name.endswith(".pyc"):
            try:
                os.unlink(os.path.join(cache, name))
            except OSError:
                pass


def _warning_data(warning_message, when, nodeid, location):
    """A recorded warning in a form the controller rebuilds a
    ``warnings.WarningMessage`` from (as xdist serializes it)."""
    message = warning_message.message
    category = warning_message.category
    data = {
        "when": when,
        "nodeid": nodeid,
        "location": list(location) if location else None,
        "message": _text(message),
        "message_args": None,
        "message_class": None,
        "category": None,
        "filename": _text(warning_message.filename),
        "lineno": warning_message.lineno,
        "line": _text(getattr(warning_message, "line", None)),
    }
    if isinstance(message, Warning):
        data["message_class"] = [type(message).__module__, type(message).__qualname__]
        try:
            json.dumps(list(message.args))
            data["message_args"] = list(message.args)
        except Exception:
            pass
    if category is not None:
        data["category"] = [category.__module__, category.__qualname__]
    return data


_KNOWN_CATEGORIES = ("passed", "failed", "skipped", "xfailed", "xpassed", "error", "", "subtests passed")


def _warning_place(config, warning_message):
    """Where pytest's warnings summary says a warning outside any test comes
    from (its ``WarningReport.get_location``): the file, relative to where
    pytest was started, and the line."""
    filename = getattr(warning_message, "filename", None)
    if not filename:
        return None
    try:
        from _pytest.pathlib import absolutepath, bestrelpath

        rel = bestrelpath(config.invocation_params.dir, absolutepath(filename))
    except Exception:
        try:
            rel = os.path.relpath(filename)
        except ValueError:
            rel = filename
    return "%s:%s" % (rel, warning_message.lineno)


def _usual_category(report):
    # What the coordinator makes of a report without being told.
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when != "call":
        if report.failed:
            return "error"
        return "skipped" if report.skipped else ""
    return report.outcome


def _options(config):
    """The effective options the coordinator renders with: the command line
    plus addopts, PYTEST_ADDOPTS and ini settings, as pytest parsed them.

    ``maxfail`` is taken over by the coordinator (counted across all
    workers), so it is switched off here."""
    o = config.option
    try:
        from _pytest.terminal import getreportopt

        chars = getreportopt(config)
    except Exception:
        chars = "wfE"
    maxfail = getattr(o, "maxfail", 0) or 0
    try:
        o.maxfail = 0
    except Exception:
        pass
    durations_min = getattr(o, "durations_min", None)
    return {
        "verbose": int(getattr(o, "verbose", 0) or 0),
        "reportchars": chars,
        "tbstyle": str(getattr(o, "tbstyle", "auto") or "auto"),
        "showcapture": str(getattr(o, "showcapture", "all") or "all"),
        "durations": getattr(o, "durations", None),
        "durations_min": float(durations_min) if durations_min is not None else None,
        "maxfail": int(maxfail),
        "continue_on_collection_errors": bool(getattr(o, "continue_on_collection_errors", False)),
        "capture": str(getattr(o, "capture", "fd")),
        "progress": _progress_style(config),
        "no_header": bool(getattr(o, "no_header", False)),
        "no_summary": bool(getattr(o, "no_summary", False)),
        "fold_skipped": bool(getattr(o, "fold_skipped", True)),
        "force_short_summary": bool(getattr(o, "force_short_summary", False)),
        # -p no:terminal: pytest writes nothing.
        "terminal": config.pluginmanager.get_plugin("terminalreporter") is not None,
    }


def _progress_style(config):
    """What pytest's terminal ends progress lines with, as its
    ``_determine_show_progress_info`` decides: none with ``-s`` (unless
    ``progress-even-when-capture-no``) or ``--setup-show``, else the
    ``console_output_style`` (``classic``: none)."""
    try:
        style = str(config.getini("console_output_style"))
    except Exception:
        style = "progress"
    if config.getoption("capture", "no") == "no" and style != "progress-even-when-capture-no":
        return ""
    if config.getoption("setupshow", False):
        return ""
    if style in ("progress", "progress-even-when-capture-no"):
        return "progress"
    if style in ("count", "times"):
        return style
    return ""


def give_timeout(config, seconds):
    """rtest's ``--timeout`` is pytest's own where a plugin defines that
    option (pytest-timeout): pytest would have given it the value (rtest
    takes ``--timeout`` off the command line and out of ``addopts``), so
    the plugin gets it, and its markers, ``--timeout-method``, ini keys and
    in-process failure apply as under plain pytest."""
    if seconds is not None and hasattr(config.option, "timeout"):
        config.option.timeout = seconds


class TerminalTail:
    """The file pytest's terminal writer writes to in a worker, where the
    coordinator draws the terminal: what pytest's reporter draws for each
    test is dropped, and what comes during a test besides (a plugin writing
    mid-test) is kept, the last 64 KiB of it.  A process ending through
    ``os._exit`` during a test says it on its way out, where the
    coordinator reads its stderr: pytest-timeout's thread method writes
    every thread's stack to the terminal, then calls ``os._exit``."""

    LIMIT = 64 * 1024
    HEAD = "what pytest's terminal got during the test before the worker exited:\n"
    encoding = "utf-8"
    errors = "replace"

    def __init__(self):
        self.parts = []
        self.size = 0
        self.testing = False

    def write(self, text):
        if text:
            self.parts.append(text)
            self.size += len(text)
            if self.size > 2 * self.LIMIT:
                kept = "".join(self.parts)[-self.LIMIT :]
                self.parts = [kept]
                self.size = len(kept)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("not a real file")

    def clear(self):
        if self.parts:
            self.parts = []
            self.size = 0

    def text(self):
        return "".join(self.parts)

    def test_starts(self):
        self.clear()
        self.testing = True

    def test_ends(self):
        self.testing = False
        self.clear()

    def show_at_exit(self):
        real, pid = os._exit, os.getpid()

        def _exit(status):
            # Not in a child forked by a test: its copy of this is the
            # parent's.
            text = "".join(self.parts)[-self.LIMIT :] if self.testing else ""
            if text.strip() and os.getpid() == pid:
                _last_words(self.HEAD + text.rstrip("\n") + "\n")
            real(status)

        os._exit = _exit


class LiveLogTap:
    """With live logging on, takes what the logging plugin wrote to the
    terminal during each phase of a test (its "live log" sections) before
    pytest's reporter draws the phase's report (tryfirst), and the
    "live log finish" section after everyone's logfinish (trylast): the
    coordinator shows it with the test."""

    def __init__(self, worker):
        self.worker = worker

    def pytest_runtest_logreport(self, report):
        self.worker._keep_live_log()

    def pytest_runtest_logfinish(self, nodeid, location):
        self.worker._keep_live_log()


class HangDump:
    """rtest's ``--timeout`` where rtest alone enforces it: a test still
    running at the limit dumps every thread's stack where the coordinator
    reads this process's stderr, so the timeout's report shows where it
    hung; the coordinator kills the worker a moment later.

    One watcher thread, not faulthandler's timer: arming that starts a
    thread per test (tens of microseconds each); this costs a lock.  Being
    Python, it cannot dump a hang that holds the GIL (the kill still
    comes)."""

    def __init__(self, limit):
        self.limit = limit
        self.deadline = None
        self.idle = False
        self.cond = threading.Condition()
        threading.Thread(target=self._watch, name="rtest-hang-dump", daemon=True).start()

    @classmethod
    def for_config(cls, config, seconds):
        if not seconds or hasattr(config.option, "timeout"):
            return None  # no limit, or a plugin enforces it
        try:
            if float(config.getini("faulthandler_timeout") or 0) > 0:
                return None  # pytest's faulthandler dumps the stacks already
        except Exception:
            pass
        return cls(float(seconds))

    def begin(self):
        with self.cond:
            self.deadline = time.monotonic() + self.limit
            if self.idle:
                self.cond.notify()

    def end(self):
        with self.cond:
            self.deadline = None

    def _watch(self):
        with self.cond:
            while True:
                if self.deadline is None:
                    self.idle = True
                    self.cond.wait()
                    self.idle = False
                    continue
                left = self.deadline - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
                self.deadline = None
                try:
                    _last_words(self.stacks())
                except Exception:
                    pass

    def stacks(self):
        """Every thread's stack but rtest's own, the test's first, without
        pytest's and pluggy's frames, as Python prints a traceback."""
        import traceback

        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        main = threading.main_thread().ident
        lines = [HANG_DUMP_HEAD % self.limit]
        for ident in [main] + sorted(i for i in frames if i != main):
            name = names.get(ident, str(ident))
            if ident not in frames or name.startswith("rtest-"):
                continue
            stack = [f for f in traceback.extract_stack(frames[ident]) if not _internal_frame(f.filename)]
            lines.append("")
            lines.append("Thread %s%s:" % (name, " (the test's)" if ident == main else ""))
            lines.extend(line.rstrip("\n") for line in traceback.format_list(stack))
        return "\n".join(lines) + "\n"


def _last_words(text):
    """Write ``text`` where the coordinator reads this process's stderr,
    past pytest's capture (the copy of fd 2 made before it started)."""
    try:
        os.write(_CRASH_FD if _CRASH_FD is not None else 2, text.encode("utf-8", "replace"))
    except OSError:
        pass


# The first line of a hang dump (the coordinator shows the dump from it).
HANG_DUMP_HEAD = "Timeout: still running after %gs; its threads (most recent call last):"


def _internal_frame(filename):
    """pytest's, pluggy's and rtest's own frames: the same in every dump."""
    if filename.startswith("<"):
        return True
    parts = filename.replace("\\", "/").split("/")
    return "_pytest" in parts or "pluggy" in parts


def _time_limits(config, items):
    """Where a plugin enforces pytest's ``--timeout`` (pytest-timeout), the
    limit of each item as the plugin sees it (its ``timeout`` marker, the
    option, ``PYTEST_TIMEOUT``, the ini): the coordinator then only kills a
    test that outlives its limit by a margin (a hang the plugin cannot
    interrupt), and never one the plugin lets run.  ``None`` where pytest
    has no such option: the coordinator's ``--timeout`` is the only one.

    As ``{"default": secs or None, "except": [[index, secs or None]...]}``;
    None is no limit (none set, ``timeout(0)``, or ``func_only``, whose
    limit leaves fixtures out)."""
    if not hasattr(config.option, "timeout"):
        return None
    plugin = config.pluginmanager.get_plugin("timeout")
    settings_of = getattr(plugin, "_get_item_settings", None)

    def limit(timeout, func_only=False):
        try:
            timeout = float(timeout) if timeout is not None else None
        except (TypeError, ValueError):
            return None
        if timeout is None or timeout <= 0 or func_only:
            return None
        return timeout

    default = limit(getattr(config, "_env_timeout", config.option.timeout),
                    getattr(config, "_env_timeout_func_only", False))
    out = {"default": default, "except": []}
    if settings_of is None:
        return out
    for index, item in enumerate(items):
        try:
            s = settings_of(item)
            mine = limit(s.timeout, s.func_only)
        except Exception:
            # A marker the plugin rejects fails the test when it runs.
            continue
        if mine != default:
            out["except"].append([index, mine])
    return out


def _live_logging(config):
    """Whether pytest's logging plugin shows log records live (``log_cli``
    or ``--log-cli-level``) in this session, as it decides it."""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    enabled = getattr(plugin, "_log_cli_enabled", None)
    try:
        return bool(enabled()) if enabled is not None else False
    except Exception:
        return False


def _collected_listing(session):
    """``--collect-only``'s listing as pytest's own terminal reporter draws
    it at this verbosity: the tree of collectors (with docstrings under
    ``-v``), node ids under ``-q``, counts per file under ``-qq``."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    draw = getattr(reporter, "_printcollecteditems", None)
    if draw is None or not session.items:
        return None
    import io

    try:
        from _pytest._io import TerminalWriter
    except ImportError:
        return None
    out = io.StringIO()
    writer = TerminalWriter(out)
    writer.hasmarkup = False
    saved = reporter._tw
    reporter._tw = writer
    try:
        draw(session.items)
    except Exception:
        return None
    finally:
        reporter._tw = saved
    return out.getvalue()


def _cachedir(config):
    """The cacheprovider's directory, when the plugin is active (the
    coordinator keeps ``cache/lastfailed`` up to date for ``--lf``)."""
    cache = getattr(config, "cache", None)
    if cache is None or config.getoption("cacheshow", False):
        return None
    path = getattr(cache, "_cachedir", None)
    return str(path) if path is not None else None


def _groups(item):
    names = []
    try:
        for mark in item.iter_markers("xdist_group"):
            if mark.args:
                names.append(str(mark.args[0]))
            else:
                names.append(str(mark.kwargs.get("name", "default")))
    except Exception:
        pass
    return sorted(set(names)) or None


def xdist_hookspecs():
    """pytest-xdist's hook specifications (xdist/newhooks.py), for a run
    where xdist is not loaded: plugins implement them as optional hooks,
    rtest's controller calls some, and a conftest.py that implements one
    (``pytest_xdist_auto_num_workers``) is not refused as unknown."""
    import pluggy

    spec = pluggy.HookspecMarker("pytest")

    class XdistHookspecs:
        @spec
        def pytest_xdist_setupnodes(self, config, specs):
            pass

        @spec
        def pytest_xdist_newgateway(self, gateway):
            pass

        @spec
        def pytest_xdist_rsyncstart(self, source, gateways):
            pass

        @spec
        def pytest_xdist_rsyncfinish(self, source, gateways):
            pass

        @spec(firstresult=True)
        def pytest_xdist_getremotemodule(self):
            pass

        @spec
        def pytest_configure_node(self, node):
            pass

        @spec
        def pytest_testnodeready(self, node):
            pass

        @spec
        def pytest_testnodedown(self, node, error):
            pass

        @spec
        def pytest_xdist_node_collection_finished(self, node, ids):
            pass

        @spec(firstresult=True)
        def pytest_xdist_make_scheduler(self, config, log):
            pass

        @spec(firstresult=True)
        def pytest_xdist_auto_num_workers(self, config):
            pass

        @spec(firstresult=True)
        def pytest_handlecrashitem(self, crashitem, report, sched):
            pass

    return XdistHookspecs


def xdist_plugin(pytest, stand_in):
    """xdist's worker_id and testrun_uid fixtures, for suites written for
    it, as a plugin module (pytest reads a module's fixtures from the
    module).

    With ``stand_in`` (pytest-xdist is not installed) it is registered as
    "xdist" and also carries xdist's hook specifications and its marker:
    plugins ask ``hasplugin("xdist")`` before they register their xdist
    hooks, as xdist's documentation tells them to (syrupy, pytest-randomly,
    schemathesis), and without it they would take the undistributed path in
    the controller while the workers look like xdist's (``workerinput``,
    ``PYTEST_XDIST_WORKER``): syrupy's unused snapshots, for one, would go
    unnoticed.  It is not importable: ``import xdist`` still fails, and
    plugins that try it first take their undistributed path."""
    import types

    module = types.ModuleType("xdist" if stand_in else "rtest_xdist_fixtures")

    @pytest.fixture(scope="session")
    def worker_id(request):
        workerinput = getattr(request.config, "workerinput", None)
        return workerinput["workerid"] if workerinput is not None else "master"

    @pytest.fixture(scope="session")
    def testrun_uid(request):
        workerinput = getattr(request.config, "workerinput", None)
        return workerinput["testrunuid"] if workerinput is not None else None

    module.worker_id = worker_id
    module.testrun_uid = testrun_uid
    if stand_in:

        def pytest_addhooks(pluginmanager):
            pluginmanager.add_hookspecs(xdist_hookspecs())

        def pytest_configure(config):
            config.addinivalue_line(
                "markers",
                "xdist_group: specify group for tests should run in same session."
                "in relation to one another. Provided by pytest-xdist.",
            )

        module.pytest_addhooks = pytest_addhooks
        module.pytest_configure = pytest_configure
    return module


def register_xdist(config, pytest):
    """xdist's fixtures in a worker; where pytest-xdist is not loaded (and
    not switched off with ``-p no:xdist``), the stand-in of
    :func:`xdist_plugin` under its name.  Returns the plugin."""
    pm = config.pluginmanager
    if pm.hasplugin("xdist") or pm.is_blocked("xdist"):
        plugin = xdist_plugin(pytest, False)
        pm.register(plugin, "rtest-fixtures")
    else:
        plugin = xdist_plugin(pytest, True)
        pm.register(plugin, "xdist")
    return plugin


def _as_pytest_main_sets_it():
    """``PYTEST_VERSION`` in the environment for the session, as
    ``pytest.main`` sets it (pytest 8.2 and later): under xdist the
    controller's main sets it and its workers inherit it, and so do the
    processes tests start; conftests and code under test read it to know
    they run under pytest."""
    try:
        import _pytest.config

        # main itself, or the _main it calls (pytest 9).
        codes = [getattr(getattr(_pytest.config, name, None), "__code__", None) for name in ("main", "_main")]
        if any("PYTEST_VERSION" in code.co_consts for code in codes if code is not None):
            import pytest

            os.environ["PYTEST_VERSION"] = pytest.__version__
    except Exception:
        pass


def parse_args(channel, args, plugins):
    """pytest's config from a command line, as ``(config, None)``; a
    rejected command line is told to the coordinator: ``(None, status)``."""
    import pytest
    from _pytest.config import _prepareconfig

    from _pytest.config import ConftestImportFailure

    _as_pytest_main_sets_it()

    # pytest's usage and its errors name the program as argparse finds it
    # in sys.argv[0] ("-c" here): name the one the user ran.
    argv0 = sys.argv[0] if sys.argv else None
    if argv0 is not None:
        sys.argv[0] = "rtest"
    try:
        return _prepareconfig(list(args), plugins), None
    except ConftestImportFailure as exc:
        channel.send({"t": "usage_error", "message": _conftest_failure(exc), "verbatim": True})
        return None, 4
    except pytest.UsageError as exc:
        channel.send({"t": "usage_error", "message": "\n".join(str(a) for a in exc.args)})
        return None, 4
    except SystemExit as exc:
        channel.send({"t": "usage_error", "message": "pytest exited while parsing its arguments"})
        return None, exc.code if isinstance(exc.code, int) else 4
    finally:
        if argv0 is not None:
            sys.argv[0] = argv0


def _conftest_failure(exc):
    """What pytest's main() prints for a conftest that does not import."""
    import io

    try:  # pytest >= 9 has it as a function
        from _pytest.config import print_conftest_import_error

        out = io.StringIO()
        print_conftest_import_error(exc, file=out)
        return out.getvalue().rstrip("\n")
    except ImportError:
        pass
    lines = ["ImportError while loading conftest '%s'." % (exc.path,)]
    try:
        from _pytest import config as pyconfig
        from _pytest._code import ExceptionInfo

        keep = getattr(pyconfig, "filter_traceback_for_conftest_import_failure", None) or getattr(
            pyconfig, "filter_traceback_for_import_failure"
        )
        cause = getattr(exc, "cause", None)
        if cause is not None:
            info = ExceptionInfo.from_exception(cause)
        else:
            info = ExceptionInfo.from_exc_info(exc.excinfo)
        info.traceback = info.traceback.filter(keep)
        if info.traceback:
            text = str(info.getrepr(style="short", chain=False))
        else:
            text = info.exconly()
        lines.extend(line.rstrip() for line in text.splitlines())
    except Exception:
        lines.append(str(exc))
    return "\n".join(lines)


def _importable_cwd():
    """The working directory on sys.path as `python -m pytest` has it:
    first, by its absolute name. `python -c` put "" there instead, which
    follows a test's os.chdir() and which xdist's own workers never have
    (a test that runs xdist asserts it)."""
    cwd = os.getcwd()
    sys.path[:] = [entry for entry in sys.path if entry != ""]
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return cwd


def run_pytest(channel, inbox, start):
    _report_crashes()
    _bound_startup(start.get("startup_timeout"))
    for key, value in (start.get("env") or {}).items():
        os.environ[key] = value
    os.environ["PYTEST_XDIST_WORKER"] = start["worker_id"]
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(start["worker_count"])
    os.environ["PYTEST_XDIST_TESTRUNUID"] = start["testrun_uid"]
    cwd = _importable_cwd()
    if start.get("remote"):
        # As xdist's remote workers: the synced tree is importable in the
        # subprocesses tests start too.
        os.environ["PYTHONPATH"] = cwd + os.pathsep + os.environ.get("PYTHONPATH", "")

    import pytest

    # Run after the terminal plugin's pytest_configure, to silence it.
    Worker.pytest_configure = pytest.hookimpl(trylast=True)(Worker.pytest_configure)
    Worker.pytest_sessionstart = pytest.hookimpl(tryfirst=True)(Worker.pytest_sessionstart)
    Worker.pytest_runtest_logstart = pytest.hookimpl(trylast=True)(Worker.pytest_runtest_logstart)
    LiveLogTap.pytest_runtest_logreport = pytest.hookimpl(tryfirst=True)(LiveLogTap.pytest_runtest_logreport)
    LiveLogTap.pytest_runtest_logfinish = pytest.hookimpl(trylast=True)(LiveLogTap.pytest_runtest_logfinish)
    Worker.pytest_sessionfinish = pytest.hookimpl(hookwrapper=True, tryfirst=True)(Worker.pytest_sessionfinish)
    Worker.pytest_unconfigure = pytest.hookimpl(hookwrapper=True, tryfirst=True)(Worker.pytest_unconfigure)
    try:
        Worker.pytest_report_teststatus = pytest.hookimpl(wrapper=True)(Worker._teststatus_wrapper)
    except TypeError:
        Worker.pytest_report_teststatus = pytest.hookimpl(hookwrapper=True)(Worker.pytest_report_teststatus)
    Worker.pytest_report_collectionfinish = pytest.hookimpl(hookwrapper=True)(
        Worker.pytest_report_collectionfinish
    )
    # After pytest's reporter asked plugins what to report.
    Worker.pytest_collection_finish = pytest.hookimpl(trylast=True)(Worker.pytest_collection_finish)
    worker = Worker(channel, inbox, start)
    worker.stream = bool(start.get("stream"))
    config, status = parse_args(channel, start["args"], None)
    if config is None:
        return status
    # pytest parsed its arguments and loaded plugins and conftests while the
    # controller configured; pytest_configure needs ``config.workerinput``,
    # which the controller's plugins fill (pytest_configure_node).
    workerinput = start.get("workerinput")
    if workerinput is None:
        while True:
            msg = inbox.get()
            kind = msg.get("t")
            if kind == "worker_input":
                workerinput = msg.get("input") or {}
                worker.stream = bool(msg.get("stream"))
                break
            if kind == "shutdown":
                return 0
    give_timeout(config, start.get("timeout"))
    config.workerinput = dict(workerinput)
    config.workeroutput = {}
    worker.config = config
    config.option.usepdb = False
    config.option.looponfail = False
    config.option.dist = "no"
    config.option.numprocesses = None
    config.pluginmanager.register(worker, "rtest-worker")
    register_xdist(config, pytest)
    try:
        status = config.hook.pytest_cmdline_main(config=config)
    except pytest.UsageError as exc:
        channel.send({"t": "usage_error", "message": "\n".join(str(a) for a in exc.args)})
        return 4
    finally:
        try:
            config._ensure_unconfigure()
        except Exception:
            pass
    return int(status)


class Sync:
    """The receiving side of a sync: mirror files under a base directory.

    Every path must be relative and stay inside the base (no absolute
    paths, no "..", no writing through a symlink that leads out); anything
    else is refused and reported, never written."""

    def __init__(self, channel):
        self.channel = channel
        self.base = None
        self.files = 0
        self.bytes = 0
        self.errors = []
        self.partial = {}
        self.real_base = None
        # Directories known to exist inside the base (resolved once each).
        self.safe_dirs = set()

    def _target(self, rel):
        if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
            raise ValueError("unsafe path %r" % (rel,))
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError("unsafe path %r" % (rel,))
        path = os.path.join(self.base, *parts)
        parent = os.path.dirname(path)
        if parent in self.safe_dirs:
            return path
        real = os.path.realpath(parent)
        base = self.real_base
        if real != base and not real.startswith(base + os.sep):
            raise ValueError("path %r leads outside the sync base" % (rel,))
        if os.path.isdir(parent) and not os.path.islink(parent):
            self.safe_dirs.add(parent)
        return path

    def _parent(self, path):
        parent = os.path.dirname(path)
        if parent not in self.safe_dirs:
            os.makedirs(parent, exist_ok=True)
            # Made through a checked path: re-check what it resolves to.
            real = os.path.realpath(parent)
            if real != self.real_base and not real.startswith(self.real_base + os.sep):
                raise ValueError("path %r leads outside the sync base" % (path,))
            self.safe_dirs.add(parent)

    def handle(self, msg):
        kind = msg["t"]
        try:
            getattr(self, kind)(msg)
        except Exception as exc:  # refuse, report, carry on
            if kind == "sync_list":
                # No manifest without a base: the coordinator hears why
                # instead of waiting for one.
                where = msg.get("base") if isinstance(msg, dict) else None
                self.channel.send({"t": "internal_error", "message": "cannot sync to %s: %s" % (where, exc)})
                return
            self.errors.append("%s: %s" % (kind, exc))

    def _scan(self, path, prefix, files, links):
        # scandir: one readdir per directory, one lstat per entry.
        try:
            it = os.scandir(path)
        except OSError:
            return
        with it:
            for e in it:
                rel = prefix + e.name
                if rel == PLACE_MARKER:
                    continue  # the copy's own, never the tree's
                try:
                    if e.is_symlink():
                        links.append([rel, os.readlink(e.path)])
                    elif e.is_dir(follow_symlinks=False):
                        self._scan(e.path, rel + "/", files, links)
                    else:
                        st = e.stat(follow_symlinks=False)
                        files.append([rel, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777])
                except OSError:
                    continue

    def sync_list(self, msg):
        base = os.path.abspath(os.path.expanduser(msg["base"]))
        os.makedirs(base, exist_ok=True)
        self.base = base
        self.real_base = os.path.realpath(base)
        self.safe_dirs = set()
        self.files = self.bytes = 0
        self.errors = []
        files, links = [], []
        for top in msg.get("dirs") or []:
            try:
                start = self._target(top) if top not in ("", ".") else base
            except ValueError as exc:
                self.errors.append(str(exc))
                continue
            prefix = "" if top in ("", ".") else top.rstrip("/") + "/"
            self._scan(start, prefix, files, links)
        for rel in msg.get("files") or []:
            try:
                full = self._target(rel)
            except ValueError as exc:
                self.errors.append(str(exc))
                continue
            if os.path.isfile(full) and not os.path.islink(full):
                st = os.stat(full)
                files.append([rel, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777])
        self.channel.send({"t": "sync_manifest", "base": base, "files": files, "links": links})

    def sync_put(self, msg):
        import base64
        import zlib

        path = self._target(msg["path"])
        data = base64.b64decode(msg["data"])
        if not msg.get("raw"):
            data = zlib.decompress(data)
        tmp = self.partial.get(path)
        if tmp is None:
            self._parent(path)
            if os.path.isdir(path) and not os.path.islink(path):
                # A directory here locally became a file: mirror that.
                import shutil

                shutil.rmtree(path)
            tmp = "%s.rtest-tmp-%d" % (path, os.getpid())
            self.partial[path] = tmp
            how = "wb"
        else:
            how = "ab"
        with open(tmp, how) as fh:
            fh.write(data)
            if msg.get("last"):
                os.fchmod(fh.fileno(), msg.get("mode") or 0o644)
        self.bytes += len(data)
        if msg.get("last"):
            del self.partial[path]
            mtime = int(msg.get("mtime_ns") or 0)
            os.utime(tmp, ns=(mtime, mtime))
            # rename(2) replaces a symlink itself, never what it points to.
            os.replace(tmp, path)
            self.files += 1
            if path.endswith(".py"):
                _drop_bytecode(path)

    def sync_link(self, msg):
        path = self._target(msg["path"])
        target = msg["target"]
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if os.path.isabs(target) or not (resolved + os.sep).startswith(os.path.realpath(self.base) + os.sep):
            raise ValueError("link %r -> %r leads outside the sync base" % (msg["path"], target))
        self._parent(path)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
        self.files += 1

    def sync_delete(self, msg):
        for rel in msg.get("paths") or []:
            path = self._target(rel)
            if os.path.lexists(path) and not os.path.isdir(path) or os.path.islink(path):
                os.unlink(path)
                self._prune(os.path.dirname(path))

    def _prune(self, directory):
        # Directories left empty by deletions go too (up to the base), so a
        # directory that became a file can be written.
        while directory != self.base and directory.startswith(self.base + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return
            self.safe_dirs.discard(directory)
            directory = os.path.dirname(directory)

    def sync_place(self, msg):
        ids = []
        for d in msg.get("dirs") or []:
            try:
                ids.append(_place_id(d, bool(msg.get("create"))))
            except Exception as exc:
                # Unknown: a place of its own (synced separately, never
                # assumed shared).
                ids.append("unknown %s %s" % (os.urandom(8).hex(), exc))
        self.channel.send({"t": "places", "ids": ids})

    def sync_end(self, msg):
        for tmp in self.partial.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self.partial = {}
        self.channel.send({"t": "synced", "files": self.files, "bytes": self.bytes, "errors": self.errors})


PLACE_MARKER = ".rtest-place"


def _place_id(directory, create):
    """An id of the files at ``directory``: the same for every process that
    sees the same files there (one container, a volume two containers
    mount), different otherwise. A marker with a random id, made once
    atomically; without ``create``, a place that has none yet is named by
    this machine's boot, mount namespace and the directory's real path."""
    base = os.path.abspath(os.path.expanduser(directory))
    marker = os.path.join(base, PLACE_MARKER)
    if create and not os.path.isfile(marker):
        os.makedirs(base, exist_ok=True)
        # A random name: processes of two containers sharing a volume may
        # have the same pid.
        tmp = "%s.%s.tmp" % (marker, os.urandom(8).hex())
        with open(tmp, "w") as fh:
            fh.write(os.urandom(16).hex())
        try:
            os.link(tmp, marker)  # fails if another process was first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    try:
        with open(marker) as fh:
            text = fh.read().strip()
        if text:
            return "marker " + text
    except OSError:
        pass
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            parts = [fh.read().strip()]
    except OSError:
        import socket

        parts = [socket.gethostname()]
    try:
        parts.append(str(os.stat("/proc/self/ns/mnt").st_ino))
    except OSError:
        pass
    root = os.stat("/")
    parts.append("%d:%d" % (root.st_dev, root.st_ino))
    parts.append(os.path.realpath(base))
    return "path " + " ".join(parts)


def _report_crashes():
    """A crash anywhere in this process (a segfault at import or in
    collection included) dumps every thread's stack where the coordinator
    reads this process's stderr: to a copy of fd 2, which pytest's capture
    (active while it loads conftests) does not redirect."""
    global _CRASH_FD
    try:
        import faulthandler

        _CRASH_FD = os.dup(2)
        faulthandler.enable(file=_CRASH_FD, all_threads=False)
    except Exception:
        pass


_CRASH_FD = None


def _bound_startup(limit):
    """Unless collection is reported within ``limit`` seconds (an import
    that never returns), dump every thread's stack where the coordinator
    reads it and exit."""
    if not limit:
        return
    try:
        import faulthandler

        out = _CRASH_FD if _CRASH_FD is not None else sys.stderr
        faulthandler.dump_traceback_later(float(limit), exit=True, file=out)
    except Exception:
        pass


def _startup_done():
    try:
        import faulthandler

        faulthandler.cancel_dump_traceback_later()
    except Exception:
        pass


def main():
    # Protect the protocol: keep private copies of fd 0 and 1, point fd 0 at
    # /dev/null and fd 1 at stderr, so nothing a test does can corrupt frames.
    rfd = os.dup(0)
    wfd = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    channel = Channel(rfd, wfd)
    # Sync messages are handled as they are read, in order, by the reader
    # thread (no hand-over per file), from the first frame on.
    sync = Sync(channel)
    kinds = ("sync_list", "sync_put", "sync_link", "sync_delete", "sync_end", "sync_place")
    inbox = Inbox(channel, {kind: sync.handle for kind in kinds})

    hello = inbox.get()
    if hello.get("t") != "hello":
        channel.send({"t": "internal_error", "message": "expected hello, got %r" % hello.get("t")})
        return 3
    while True:
        # A second hello (an exec= worker is synced on its own connection
        # first) says where to run, now that the copy is there.
        if hello is not None:
            import importlib

            importlib.invalidate_caches()  # files may have just been synced
            for entry in reversed(hello.get("sys_path") or []):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            if hello.get("chdir"):
                target = os.path.expanduser(hello["chdir"])
                os.makedirs(target, exist_ok=True)
                os.chdir(target)
            channel.send(python_info())
            if hello.get("protocol") != PROTOCOL_VERSION:
                return 3
            hello = None
        msg = inbox.get()
        kind = msg.get("t")
        if kind == "shutdown":
            return 0
        if kind == "hello":
            hello = msg
            continue
        if kind in ROLES:
            break
    status = 3
    try:
        status = ROLES[kind](channel, inbox, msg)
    except KeyboardInterrupt:
        status = 2
    except BaseException:
        import traceback

        channel.send({"t": "internal_error", "message": traceback.format_exc()})
        status = 3
    channel.send({"t": "done", "status": status})
    return status


# What a worker can become, by the message that follows the handshake; the
# controller role (controller.py, sent after this file) adds itself.
ROLES = {"start": run_pytest}


# How long the atexit handlers of a process that is done may take (xdist
# gives its workers as long to exit).
EXIT_HANDLERS_LIMIT = 10.0

# The process is done and ending (the coordinator closing the pipe now is
# no reason to kill it).
_ENDING = False


def _end(code):
    """End as an interpreter that is done ends, an execnet worker's among
    them: the atexit handlers (a conftest's report file, coverage's data
    saved at exit), then what the modules hold is finalized (a file a
    conftest opened and never closed is flushed, a sqlite connection is
    closed and its WAL folded back). Bounded: handlers still running after
    the limit end the process at once, and where tests left threads
    running, which an interpreter would wait for forever, the handlers run
    and the process ends without waiting for them."""
    import atexit

    global _ENDING
    _ENDING = True
    # The session is over: what is printed now is quiet, as at unconfigure
    # (xdist drops a worker's stdout); what is written to stderr is shown.
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass
    timer = threading.Timer(EXIT_HANDLERS_LIMIT, _exit_handlers_hung, (code,))
    timer.daemon = True
    timer.start()
    main_thread = threading.main_thread()
    left = any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate())
    try:
        atexit._run_exitfuncs()
        atexit._clear()
    except BaseException:
        pass
    timer.cancel()
    if left:
        _exit_now(code)
    # The interpreter's own end: every object still alive is released
    # (about 0.1 s for a worker that collected 5,000 tests, as at the end
    # of plain pytest). Freezing them first would save most of it, but
    # leave whatever sits in a reference cycle (a sqlite connection) open.
    sys.exit(code)


def _exit_handlers_hung(code):
    _last_words("atexit handlers still running after %gs; the process ends without them\n" % EXIT_HANDLERS_LIMIT)
    _exit_now(code)


def _exit_now(code):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _entry():
    code = main()
    _end(code if isinstance(code, int) else 3)
