"""rtest controller role: the one local pytest session that plugins see.

This file is sent after agent.py (same namespace: Channel, Inbox, _text and
ROLES come from there) to the process the coordinator starts as the
controller.  It implements the controller half of pytest-xdist's plugin
contract, as xdist's DSession and WorkerController do, without running or
collecting anything itself:

- ``pytest_configure_node(node)`` before a worker's pytest configures; the
  node's ``workerinput`` goes back to the coordinator, which hands it to the
  worker;
- ``pytest_testnodeready``, ``pytest_xdist_node_collection_finished``,
  ``pytest_testnodedown`` (with the worker's ``workeroutput``);
- every worker's reports, rebuilt with ``pytest_report_from_serializable``
  and replayed through ``pytest_runtest_logstart`` / ``logreport`` /
  ``logfinish``, ``pytest_collectreport`` and ``pytest_warning_recorded``;
- ``pytest_sessionfinish`` and ``pytest_terminal_summary`` once, whose
  terminal output goes back to the coordinator, which prints it where
  pytest would.

The coordinator renders progress, failures, warnings, durations and the
final line itself; pytest's own terminal sections are silenced here.
"""

# Hooks that make the controller worth keeping: a plugin or conftest.py
# (not pytest's built-ins, not rtest's own) implementing one of them sees
# the run here.  Without any, workers send no reports for it, and the
# controller ends at once (or, holding the run's temporary directory, when
# the run ends).
CONTROLLER_HOOKS = (
    "pytest_configure_node",
    "pytest_testnodeready",
    "pytest_testnodedown",
    "pytest_xdist_node_collection_finished",
    "pytest_runtest_logstart",
    "pytest_runtest_logreport",
    "pytest_runtest_logfinish",
    "pytest_collectreport",
    "pytest_warning_recorded",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_handlecrashitem",
)

# The terminal reporter's own sections, which the coordinator renders.
SILENCED_SECTIONS = (
    "summary_errors",
    "summary_failures",
    "summary_xfailures",
    "summary_warnings",
    "summary_passes",
    "summary_xpasses",
    "short_test_summary",
    "summary_stats",
    "_report_keyboardinterrupt",
)


# Sections of the terminal summary rtest leaves to a plugin's terminal
# reporter that overrides them.
PLUGIN_SECTIONS = (
    "summary_errors",
    "summary_failures",
    "summary_warnings",
    "summary_passes",
    "short_test_summary",
)


class Spec:
    """A tx spec as execnet's XSpec shows it: ``spec.popen``, ``spec.ssh``,
    ``spec.python``, ``spec.chdir``, ``spec.env``; unknown keys are None."""

    def __init__(self, string, ident):
        self._spec = string
        self.id = ident
        self.env = {}
        for part in string.split("//"):
            key, eq, value = part.partition("=")
            if key.startswith("env:"):
                self.env[key[4:]] = value
            elif "*" in key and not eq:
                self.__dict__[key.split("*", 1)[1]] = True
            else:
                self.__dict__[key] = value if eq else True

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def __str__(self):
        return self._spec

    def __repr__(self):
        return "<XSpec %r>" % self._spec


class RemoteInfo:
    """What ``gateway._rinfo()`` answers (pytest-cov reads it)."""

    def __init__(self, info):
        version_info = info.get("version_info") or [0, 0, 0, "final", 0]
        self.version_info = tuple(version_info)
        self.platform = info.get("sysplatform") or info.get("platform")
        self.executable = info.get("executable")
        self.cwd = info.get("cwd")
        self.pid = info.get("pid")


class Gateway:
    def __init__(self, ident, spec, info):
        self.id = ident
        self.spec = spec
        self._info = info or {}

    def _rinfo(self, update=False):
        return RemoteInfo(self._info)

    def __repr__(self):
        return "<Gateway id=%r>" % self.id


class NodeManager:
    def __init__(self, roots):
        from pathlib import Path

        self.roots = [Path(r) for r in roots]
        self.specs = []


class Node:
    """What xdist's WorkerController gives plugins."""

    def __init__(self, config, msg):
        ident = msg["id"]
        self.config = config
        self.gateway = Gateway(ident, Spec(msg.get("spec") or "popen", ident), msg.get("info"))
        self.nodemanager = NodeManager(msg.get("roots") or [])
        self.workerinput = dict(msg.get("workerinput") or {})
        self.workerinfo = {}

    @property
    def shutting_down(self):
        return False

    def shutdown(self):
        # The coordinator owns scheduling and worker lifetimes.
        pass

    def __repr__(self):
        return "<WorkerController %s>" % self.gateway.id


class CrashScheduler:
    """The ``sched`` that ``pytest_handlecrashitem`` gets: xdist's
    ``mark_test_pending`` (run the crashed test again) where the
    distribution mode takes single tests back (``load``, ``worksteal``, as
    in xdist), else ``NotImplementedError`` as xdist's other schedulers
    raise.  The coordinator does the re-queueing."""

    def __init__(self, config, requeue):
        self.config = config
        self.requeue = requeue
        self.pending = set()

    def mark_test_pending(self, item):
        if not self.requeue:
            raise NotImplementedError()
        self.pending.add(item)


def _is_builtin(plugin, own):
    import types

    if any(plugin is o for o in own):
        return True
    if isinstance(plugin, types.ModuleType):
        name = plugin.__name__
    else:
        name = type(plugin).__module__ or ""
    if name == "_pytest.junitxml":
        return False  # LogXML writes the JUnit file from the replayed reports
    return name.startswith(("_pytest.", "xdist.")) or name in ("pytest", "xdist")


def _auto_workers(config, own, word):
    """``(n, plugins)``: what the ``pytest_xdist_auto_num_workers`` of
    plugins other than xdist's and rtest's say, with
    ``config.option.numprocesses`` the word given (as xdist calls it);
    ``n`` is None when none implements it or every one returned None."""
    pm = config.pluginmanager
    caller = getattr(pm.hook, "pytest_xdist_auto_num_workers", None)
    if caller is None:
        return None, []
    impls = caller.get_hookimpls()
    builtin = [impl.plugin for impl in impls if _is_builtin(impl.plugin, own)]
    by = [impl.plugin_name for impl in impls if not _is_builtin(impl.plugin, own)]
    if not by:
        return None, []
    option = config.option
    before = getattr(option, "numprocesses", None)
    option.numprocesses = word
    try:
        n = pm.subset_hook_caller("pytest_xdist_auto_num_workers", builtin)(config=config)
    finally:
        option.numprocesses = before
    return n, by


# pytest's TerminalReporter methods that draw the per-test progress and
# collection status: the coordinator draws those itself.
_PROGRESS_METHODS = (
    "pytest_runtest_logstart",
    "pytest_runtest_logreport",
    "pytest_runtest_logfinish",
    "pytest_collectreport",
    "report_collect",
    "_write_progress_information_filling_space",
)


class _PluginText:
    """The file the session's terminal writer writes to: it keeps what
    plugins write, drops what pytest's own reporter draws for each test
    (the coordinator's to draw), and holds what comes during the run for
    the coordinator to show as it comes (pytest-instafail's failures)."""

    def __init__(self):
        import io

        self.kept = io.StringIO()
        self.live = None
        # Where pytest's header went (the coordinator draws its own): what
        # plugins wrote before it (a section in pytest_sessionstart) is
        # shown above rtest's header, the rest below it.
        self.header_at = None
        try:
            from _pytest.terminal import TerminalReporter

            codes = (getattr(TerminalReporter, name, None) for name in _PROGRESS_METHODS)
            self.progress = {f.__code__ for f in codes if f is not None and hasattr(f, "__code__")}
            self.header = {TerminalReporter.pytest_sessionstart.__code__}
        except Exception:
            self.progress = set()
            self.header = set()

    def _drawn_by(self, codes):
        frame = sys._getframe(2)
        depth = 0
        while frame is not None and depth < 12:
            if frame.f_code in codes:
                return True
            frame = frame.f_back
            depth += 1
        return False

    def write(self, text):
        if not text or (self.progress and self._drawn_by(self.progress)):
            return len(text)
        if self.header and self._drawn_by(self.header):
            if self.header_at is None:
                self.header_at = self.kept.tell()
            return len(text)
        if self.live is not None:
            self.live.append(text)
        return self.kept.write(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def tell(self):
        return self.kept.tell()

    def getvalue(self):
        return self.kept.getvalue()

    def around_header(self):
        """What plugins wrote before pytest's header, and after it."""
        text = self.kept.getvalue()
        at = len(text) if self.header_at is None else self.header_at
        return text[:at], text[at:]

    def take_live(self):
        text = "".join(self.live)
        self.live = []
        return text


class Controller:
    """The pytest plugin that makes this session rtest's controller."""

    def __init__(self, channel, inbox, control):
        self.channel = channel
        self.inbox = inbox
        self.control = control
        self.config = None
        self.session = None
        self.nodes = {}
        self.told_missing = set()
        self.junit_seen = {}
        self.needed = False
        # The run's numbered temporary directory, made here (its lock is
        # this process's): held until the run ends, wanted or not.
        self.basetemp = None
        # pytest.exit() ended the session (said to the coordinator).
        self.exited = False
        self.collected = False
        self.errors = 0
        self.buffer = None
        self.marks = {}
        self.own = [self]
        self.logstart = self.logfinish = None
        self.ready_sent = False
        self.internal_errors = []
        self.replaced = []
        self.awaiting_workers = False
        self.after_final = ""
        # (numprocesses, dist) as the run was given them, and as plugins'
        # pytest_cmdline_main left them; whether a plugin turned the
        # distribution off.
        self.given = None
        self.after_cmdline = None
        self.undistributed = False

    # -- making plugins see a distributed session --------------------------

    def _as_distributed(self, namespace):
        # What xdist's own option parsing leaves for plugins that ask
        # whether the run is distributed (pytest-cov decides this while
        # loading initial conftests); ``tx`` stays empty so that an installed
        # xdist does not start a session of its own here.
        namespace.numprocesses = self.control.get("numprocesses") or None
        namespace.dist = self.control.get("dist") or "load"
        namespace.distload = False
        namespace.tx = []

    def give_options(self, option):
        """What xdist's option parsing gives plugins' pytest_cmdline_main:
        the ``-n`` (as the number of workers rtest counted for ``auto``, so
        that xdist's own pytest_cmdline_main does not ask plugins again)
        and ``--dist`` the run was given, None and "no" where it was not."""
        n = self.control.get("given_numprocesses")
        if isinstance(n, str):
            n = self.control.get("numprocesses") or None
        dist = self.control.get("given_dist") or "no"
        option.numprocesses = n
        option.dist = dist
        self.given = (n, dist)

    def pytest_cmdline_main(self, config):
        # After plugins' and conftest files' own (tryfirst ones, and those
        # registered after rtest's), before pytest's session: what they
        # made of the distribution, as xdist would read it.
        option = config.option
        n = getattr(option, "numprocesses", None)
        dist = getattr(option, "dist", "no")
        if n and dist == "no":
            # What xdist's pytest_cmdline_main makes of -n, where it is
            # not loaded (not installed, or -p no:xdist) to do it.
            option.dist = dist = "load"
        self.after_cmdline = (n, dist)

    def _turned_off(self, option):
        """Whether a plugin turned the distribution off before xdist would
        have read it: ``numprocesses`` set to 0 (or ``dist`` to "no") in
        its pytest_cmdline_main, or ``dist`` to "no" in a pytest_configure
        that runs before xdist's (pytest-codspeed, mypy's --update-data,
        conftest files that keep a tier serial)."""
        if self.given is None or self.after_cmdline is None or self.given[0] == 0:
            return False
        given_dist = self.given[1]
        after_n, after_dist = self.after_cmdline
        now_n = getattr(option, "numprocesses", None)
        now_dist = getattr(option, "dist", "no")
        return (
            after_n == 0
            or now_n == 0
            or (after_dist == "no" and given_dist != "no")
            or (now_dist == "no" and after_dist != "no")
        )

    def pytest_load_initial_conftests(self, early_config, parser, args):
        self._as_distributed(early_config.known_args_namespace)
        yield

    def pytest_configure(self, config):
        self.config = config
        if self._turned_off(config.option):
            # As rtest's -n 0: one worker, which plugins here see as one
            # node of a run that is not distributed further.
            self.undistributed = True
            self.control["numprocesses"] = 1
            self.control["dist"] = "no"
        self._as_distributed(config.option)
        config.option.looponfail = False
        config.option.usepdb = False
        # The coordinator renders durations (runner's summary) itself.
        config.option.durations = None
        if not config.pluginmanager.hasplugin("xdist"):
            # pytest-xdist switched off (-p no:xdist): its hooks still need
            # their specifications to be called.
            config.pluginmanager.add_hookspecs(xdist_hookspecs())

    def pytest_terminal_summary(self, terminalreporter):
        # What plugins wrote before this (in pytest_sessionfinish) is shown
        # right after the progress, what they write from here on where the
        # summary goes.
        self.marks["summary"] = self._position()
        # junitxml wrote its temp file in sessionfinish; its summary line
        # names the file the coordinator moves it to.
        xml = self.junit_xml()
        if xml is not None and self.control.get("junitxml"):
            xml.logfile = self.control["junitxml"]
        yield

    def pytest_sessionstart(self, session):
        # First of all sessionstart hooks: the terminal reporter is the one
        # the session keeps (pytest-instafail puts its own in pytest's place
        # at configure time), and what plugins write from here on is kept.
        self.session = session
        self._capture_terminal()
        shard = self.control.get("shard")
        xml = self.junit_xml()
        if shard and xml is not None:
            xml.suite_name = "%s (shard %s/%s)" % (xml.suite_name, shard[0], shard[1])

    def _capture_terminal(self):
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        self.buffer = _PluginText()
        if reporter is None:
            return
        try:
            from _pytest.config import create_terminal_writer

            tw = create_terminal_writer(self.config, self.buffer)
        except Exception:
            from _pytest._io import TerminalWriter

            tw = TerminalWriter(file=self.buffer)
        tw.hasmarkup = bool(self.control.get("color"))
        width = self.control.get("width")
        if width:
            tw.fullwidth = int(width)
        reporter._tw = tw
        # Its per-test lines and progress are the coordinator's to draw:
        # replays skip its logstart/logfinish (its logreport still counts
        # stats for plugins).
        pm = self.config.pluginmanager
        self.logstart = pm.subset_hook_caller("pytest_runtest_logstart", [reporter])
        self.logfinish = pm.subset_hook_caller("pytest_runtest_logfinish", [reporter])
        # Its progress (the final "[100%]" after the loop) is the
        # coordinator's to draw.
        if hasattr(reporter, "_show_progress_info"):
            reporter._show_progress_info = False
        # A plugin that replaced the terminal reporter with a subclass of its
        # own and overrides one of the sections rtest draws (pytest-instafail
        # leaves out the failures it showed as they came) has that section
        # its way: it runs here, and rtest draws none of its own.
        self.replaced = []
        try:
            from _pytest.terminal import TerminalReporter

            for name in PLUGIN_SECTIONS:
                mine = getattr(type(reporter), name, None)
                if mine is not None and mine is not getattr(TerminalReporter, name, None):
                    self.replaced.append(name)
        except Exception:
            pass
        for name in SILENCED_SECTIONS:
            if hasattr(reporter, name) and name not in self.replaced:
                setattr(reporter, name, _nothing)

    def ready(self, session):
        """After every plugin's sessionstart: tell the coordinator what the
        header shows and whether this session is worth the reports."""
        config = self.config
        pm = config.pluginmanager
        hooked = []
        for name in CONTROLLER_HOOKS:
            caller = getattr(pm.hook, name, None)
            if caller is None:
                continue
            for impl in caller.get_hookimpls():
                if not _is_builtin(impl.plugin, self.own):
                    hooked.append("%s (%s)" % (name, impl.plugin_name))
        if _max_warnings(config) is not None:
            # pytest >= 9.2 fails a passing run with more warnings than
            # --max-warnings (or the ini's max_warnings) allows: its
            # terminal reporter here counts the run's warnings.
            hooked.append("pytest_sessionfinish (max_warnings)")
        if config.getoption("stepwise", False):
            # pytest's stepwise plugin remembers the failing test only
            # outside workers (as under xdist, where the controller does).
            hooked.append("pytest_runtest_logreport (stepwise)")
        self.needed = bool(hooked)
        wants_ids = any(h.startswith("pytest_xdist_node_collection_finished") for h in hooked)
        common = {}
        if not pm.hasplugin("xdist") and pm.hasplugin("randomly"):
            # pytest-randomly reads workerinput["randomly_seed"] in every
            # process that has a workerinput, but fills it (through
            # pytest_configure_node) only where a plugin named xdist is
            # loaded: with xdist switched off (-p no:xdist) the contract
            # cannot serve it, so every worker gets the seed this session
            # chose.
            common["randomly_seed"] = config.getoption("randomly_seed")
        self.ready_sent = True
        watch, absent = _watch(config)
        basetemp = self.basetemp = self._basetemp()
        before, after = self.buffer.around_header() if self.buffer is not None else ("", "")
        self.channel.send(
            {
                "t": "controller_ready",
                "header": self._header_lines(),
                "needed": self.needed,
                "wants_ids": wants_ids,
                "hooked": hooked,
                "configure_node": any(h.startswith("pytest_configure_node ") for h in hooked),
                "crash_items": any(h.startswith("pytest_handlecrashitem ") for h in hooked),
                "workerinput": common,
                "watch": watch,
                "absent": absent,
                "sections": self.replaced,
                "before_header": before,
                "after_header": after,
                "basetemp": basetemp,
                "undistributed": self.undistributed,
            }
        )

    def _basetemp(self):
        """The run's numbered base temporary directory (pytest-of-user/
        pytest-N), made here as xdist's controller makes it: the local
        workers' lie in it, the last runs are kept whole, and this
        session's sessionfinish cleans it up as pytest's. None where not
        asked for or pytest cannot make it (a worker then says why)."""
        config = self.config
        factory = getattr(config, "_tmp_path_factory", None)
        if not self.control.get("basetemp") or factory is None or config.option.basetemp:
            return None
        try:
            return str(factory.getbasetemp())
        except Exception:
            return None

    def _header_lines(self):
        config = self.config
        hook = config.hook.pytest_report_header
        try:
            if "start_path" in hook.spec.argnames:
                lines = hook(config=config, start_path=config.invocation_params.dir)
            else:  # pytest < 7
                import py

                lines = hook(config=config, startdir=py.path.local())
        except Exception:
            # A plugin's header hook that fails (one that reads -v under
            # -p no:terminal) costs the header lines, as in pytest.
            return []
        out = []
        for entry in reversed(lines):
            if isinstance(entry, str):
                out.append(entry)
            else:
                out.extend(_text(line) for line in entry)
        return out

    def pytest_keyboard_interrupt(self, excinfo):
        # pytest.exit() in the session's own hooks (a conftest's
        # pytest_sessionstart): the run ends with pytest's line for it.
        msg = _exit_message(excinfo)
        if msg is not None:
            # At configure time (no sessionstart began), pytest writes only
            # "Exit: why" to stderr (this session's, shown).
            msg["quiet"] = self.session is None
            self.exited = True
            self.channel.send(msg)

    def pytest_internalerror(self, excrepr, excinfo):
        # The session itself failed (a plugin raised in pytest_configure or
        # pytest_sessionstart): the coordinator says it, as pytest would.
        self.internal_errors.append(str(excrepr))
        return True

    def pytest_collection(self, session):
        # As xdist's controller: the workers collect.
        return True

    def pytest_runtestloop(self, session):
        if not self.needed and self.basetemp is None:
            # Nothing but built-ins would see the run: end now.
            self.marks["loop"] = self._position()
            return True
        # Wanted, or holding the run's temporary directory: then, with no
        # report coming, the session ends with the run, as xdist's does
        # (pytest removes the directory of a passing run under the
        # "failed" retention policy, and its lock only now).
        finish = None
        if self.buffer is not None:
            self.buffer.live = []
        while finish is None:
            msg = self.inbox.get()
            kind = msg.get("t")
            if kind == "finish":
                finish = msg
                self.awaiting_workers = True
                break
            if kind == "shutdown":
                finish = {"exitstatus": 2}
                break
            self.dispatch(kind, msg)
        if self.buffer is not None:
            self.buffer.live = None
        status = finish.get("exitstatus", 0)
        session.testscollected = int(finish.get("collected") or 0)
        session.testsfailed = int(finish.get("failed") or 0)
        if status == 1:
            session.testsfailed = max(session.testsfailed, 1)
        elif status == 0:
            session.testsfailed = 0
        elif status == 5:
            session.testscollected = 0
        # The coordinator stopped the run and said why; pytest's own lines
        # for it are the coordinator's to print. (pytest >= 8.4 refuses to
        # unset them through the property, with a warning: a replayed
        # report that stopped the session here, --sw's, is no reason to
        # stop anything.)
        for name in ("shouldfail", "shouldstop"):
            if hasattr(session, "_" + name):
                setattr(session, "_" + name, False)
            else:
                setattr(session, name, False)
        self.marks["loop"] = self._position()
        if status == 2:
            raise session.Interrupted("interrupted")
        if status not in (0, 1, 5):
            raise session.Failed("rtest: the run ended with exit status %s" % status)
        return True

    def dispatch(self, kind, msg):
        handler = getattr(self, "on_" + kind, None)
        if handler is None:
            return
        try:
            handler(msg)
        except Exception as exc:
            _reraise_exit(exc)
            self.hook_error(kind)
        if self.buffer is not None and self.buffer.live:
            # What plugins wrote for this test (pytest-instafail's
            # failure), shown now, as under xdist.
            self.channel.send({"t": "plugin_text", "text": self.buffer.take_live()})

    def await_workers(self):
        """Under xdist the controller's first sessionfinish implementation
        tears its nodes down and waits for them: plugins then have all
        their workers will give outside the reports (pytest-retry's socket
        is read until each worker closes it; files written at unconfigure).
        The loop ended when every worker's session was over, so pytest-cov
        combined and reported meanwhile."""
        while self.awaiting_workers:
            msg = self.inbox.get()
            kind = msg.get("t")
            if kind in ("workers_gone", "shutdown"):
                break
            self.dispatch(kind, msg)
        self.awaiting_workers = False

    def pytest_sessionfinish(self, session, exitstatus):
        self.await_workers()
        # What plugins print() in the summary (a conftest's
        # pytest_terminal_summary) goes where pytest shows it, with what
        # they write to the terminal (this process's stdout is stderr).
        real = sys.stdout
        if self.buffer is not None:
            sys.stdout = self.buffer
        try:
            yield
        finally:
            sys.stdout = real

    def pytest_unconfigure(self, config):
        # What plugins print or write to the terminal at unconfigure
        # (pytest-xprocess's reminder, pytest-md-report's table) comes after
        # pytest's final line.
        import io

        self.marks["unconfigure"] = self._position()
        real, sys.stdout = sys.stdout, io.StringIO()
        try:
            yield
        finally:
            printed, sys.stdout = sys.stdout.getvalue(), real
            written = self.buffer.getvalue()[self.marks["unconfigure"] :] if self.buffer is not None else ""
            self.after_final = written + printed

    def _position(self):
        return self.buffer.tell() if self.buffer is not None else 0

    def output(self):
        """The terminal output of plugins after the loop and in
        pytest_sessionfinish (pytest-cov's fail-under error), ending with
        the line pytest writes before the summary; and in the summary (the
        coverage table)."""
        if self.buffer is None:
            return "", ""
        text = self.buffer.getvalue()
        text = text[: self.marks.get("unconfigure", len(text))]
        loop = self.marks.get("loop", len(text))
        summary = self.marks.get("summary", len(text))
        return text[loop:summary], text[summary:]

    def hook_error(self, where):
        """A plugin raised in a replayed hook: say it as pytest's
        INTERNALERROR does, and go on with the run."""
        self.errors += 1
        if self.errors > 5:
            return
        self.channel.send({"t": "internal_error", "message": self.error_text(), "hook": where})

    def error_text(self):
        """The exception being handled, as pytest's INTERNALERROR lines,
        with the plugin's frames (not rtest's or pluggy's)."""
        import traceback

        try:
            from _pytest._code import ExceptionInfo

            excinfo = ExceptionInfo.from_current()
            # The plugin's frames, not rtest's or pluggy's.
            tb = excinfo.traceback
            kept = [e for e in tb if not str(e.path).startswith("<rtest-agent") and "pluggy" not in str(e.path)]
            if kept:
                excinfo.traceback = type(tb)(kept)
            text = str(excinfo.getrepr(style="short", chain=True))
        except Exception:
            text = traceback.format_exc()
        return "\n".join("INTERNALERROR> " + line for line in text.rstrip("\n").split("\n"))

    def tell_auto_workers(self, config, word, cap):
        """As xdist's pytest_cmdline_main does for ``-n auto`` (and
        ``logical``): plugins' and conftest files' ``pytest_xdist_auto_num_workers``
        say how many workers run (xdist's own implementation counts CPUs,
        which rtest does itself).  The coordinator waits for this answer
        before it starts the workers; plugins configure with the number."""
        n, by, error = None, [], None
        try:
            n, by = _auto_workers(config, self.own, word)
        except Exception:
            error = self.error_text()
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            error = (
                "INTERNALERROR> pytest_xdist_auto_num_workers (%s) returned %r: it must return "
                "a number of workers (an int, 0 or more) or None" % (", ".join(by), n)
            )
        count, undistributed = None, False
        if error is None and n is not None:
            # The number of workers the run starts: one where the hook says
            # none (xdist then runs in its own process, undistributed).
            count = max(n, 1)
            if cap:
                count = min(count, max(int(cap), 1))
            undistributed = n == 0
            self.control["numprocesses"] = count
            if undistributed:
                self.control["dist"] = "no"
        # On an error the session goes on (and the run, on as many workers
        # as rtest counts); the error is said and the exit status is 3.
        self.channel.send(
            {"t": "auto_workers", "count": count, "undistributed": undistributed, "by": by, "error": error}
        )

    # -- the run, as the coordinator streams it ----------------------------

    def node(self, ident):
        node = self.nodes.get(ident)
        if node is None:
            node = self.nodes[ident] = Node(self.config, {"id": ident})
        return node

    def on_configure_node(self, msg):
        node = Node(self.config, msg)
        self.nodes[node.gateway.id] = node
        try:
            self.config.hook.pytest_configure_node(node=node)
        finally:
            self.channel.send({"t": "node_configured", "id": node.gateway.id, "workerinput": node.workerinput})

    def on_node_ready(self, msg):
        node = self.node(msg["id"])
        info = dict(msg.get("info") or {})
        node.gateway._info = info
        dists = info.pop("_rtest_dists", None)
        info["id"] = node.gateway.id
        info["spec"] = node.gateway.spec
        node.workerinfo = info
        if dists is not None:
            self.note_missing_plugins(node, dists)
        self.node_hook(node, "pytest_testnodeready")(node=node)

    def note_missing_plugins(self, node, dists):
        """Plugins installed here but not where ``node`` runs (a bare remote
        Python gets pytest alone) never saw that worker: their per-worker
        hooks are skipped for it, and the user is told once per set."""
        pm = self.config.pluginmanager
        missing, names = [], []
        for plugin, dist in pm.list_plugin_distinfo():
            key = str(dist.project_name).lower().replace("_", "-")
            if key not in dists:
                missing.append(plugin)
                label = "%s %s" % (dist.project_name, dist.version)
                if label not in names:
                    names.append(label)
        node._rtest_missing = missing
        if names and tuple(names) not in self.told_missing:
            self.told_missing.add(tuple(names))
            sys.stderr.write(
                "rtest: %s (%s) lacks plugins this run has: %s; what they gather "
                "from workers comes from the workers that have them (said once for "
                "every worker that lacks the same)\n"
                % (node.gateway.id, node.gateway.spec, ", ".join(sorted(names)))
            )
            sys.stderr.flush()

    def node_hook(self, node, name):
        """A per-worker hook, without the plugins that worker lacks."""
        missing = getattr(node, "_rtest_missing", None)
        if missing:
            return self.config.pluginmanager.subset_hook_caller(name, missing)
        return getattr(self.config.hook, name)

    def on_node_collected(self, msg):
        ids = msg.get("ids") or []
        self.session.testscollected = len(ids) or int(msg.get("count") or 0)
        hook = getattr(self.config.hook, "pytest_xdist_node_collection_finished", None)
        if hook is not None and msg.get("ids") is not None:
            hook(node=self.node(msg["id"]), ids=ids)

    def on_collect_reports(self, msg):
        hook = self.config.hook
        for data in msg.get("reports") or []:
            _tuples(data)
            try:
                report = hook.pytest_report_from_serializable(config=self.config, data=data)
                if report is not None:
                    hook.pytest_collectreport(report=report)
            except Exception as exc:
                _reraise_exit(exc)
                self.hook_error("pytest_collectreport")

    def on_test(self, msg):
        hook = self.config.hook
        node = self.node(msg["node"])
        nodeid = msg["nodeid"]
        location = tuple(msg.get("location") or (nodeid.split("::")[0], None, nodeid))
        (self.logstart or hook.pytest_runtest_logstart)(nodeid=nodeid, location=location)
        environment = msg.get("environment")
        for data in msg.get("reports") or []:
            _tuples(data)
            try:
                report = hook.pytest_report_from_serializable(config=self.config, data=data)
            except Exception as exc:
                _reraise_exit(exc)
                self.hook_error("pytest_report_from_serializable")
                continue
            if report is None:
                continue
            report.node = node
            attrs = getattr(report, "_rtest_xml_attrs", None)
            if environment or attrs:
                self.junit_record(report, environment or (), attrs or ())
                environment = None
            try:
                hook.pytest_runtest_logreport(report=report)
            except Exception as exc:
                _reraise_exit(exc)
                self.hook_error("pytest_runtest_logreport")
        crash = msg.get("crash")
        if crash is not None:
            self.log_crash(self.crash_report(nodeid, location, node, crash), environment)
        (self.logfinish or hook.pytest_runtest_logfinish)(nodeid=nodeid, location=location)

    def crash_report(self, nodeid, location, node, crash):
        """The failed report of a test whose worker died (or that never
        ran), as xdist's controller makes one."""
        import pytest

        report = pytest.TestReport(
            nodeid=nodeid,
            location=location,
            keywords={},
            outcome="failed",
            longrepr=crash.get("longrepr") or "",
            when=crash.get("when") or "call",
            duration=float(crash.get("duration") or 0.0),
        )
        report.node = node
        report.worker_id = node.gateway.id
        return report

    def log_crash(self, report, environment):
        if environment:
            self.junit_record(report, environment)
        try:
            self.config.hook.pytest_runtest_logreport(report=report)
        except Exception as exc:
            _reraise_exit(exc)
            self.hook_error("pytest_runtest_logreport")

    def on_crash_item(self, msg):
        """A test crashed its worker: as xdist's DSession.handle_crashitem,
        plugins decide (``pytest_handlecrashitem``) whether it runs again
        (pytest-rerunfailures' ``--reruns``), then the report is logged;
        the coordinator gets the verdict."""
        hook = self.config.hook
        node = self.node(msg["node"])
        nodeid = msg["nodeid"]
        fspath = nodeid.split("::")[0]
        location = tuple(msg.get("location") or (fspath, None, fspath))
        report = self.crash_report(nodeid, location, node, msg)
        sched = CrashScheduler(self.config, bool(msg.get("requeue")))
        # What the worker told plugins' own servers here just before it
        # died (pytest-rerunfailures' status server: the test's reruns)
        # may still be on its way: let their threads read it first.
        time.sleep(0.05)
        try:
            hook.pytest_handlecrashitem(crashitem=nodeid, report=report, sched=sched)
        except Exception as exc:
            _reraise_exit(exc)
            self.hook_error("pytest_handlecrashitem")
        verdict = {
            "t": "crash_verdict",
            "item": msg["item"],
            "rerun": nodeid in sched.pending,
            "outcome": str(report.outcome),
            "longrepr": _text(report.longrepr),
        }
        try:
            status = hook.pytest_report_teststatus(report=report, config=self.config)
            if status:
                verdict["category"], verdict["letter"] = _text(status[0]), _text(status[1])
                word = status[2][0] if isinstance(status[2], tuple) else status[2]
                verdict["word"] = _text(word)
        except Exception:
            pass
        self.channel.send(verdict)
        (self.logstart or hook.pytest_runtest_logstart)(nodeid=nodeid, location=location)
        self.log_crash(report, msg.get("environment"))
        (self.logfinish or hook.pytest_runtest_logfinish)(nodeid=nodeid, location=location)

    def on_warning(self, msg):
        data = msg["data"]
        kwargs = dict(
            warning_message=_warning_message(data),
            when=data.get("when") or "runtest",
            nodeid=data.get("nodeid") or "",
            location=tuple(data["location"]) if data.get("location") else None,
        )
        self.config.hook.pytest_warning_recorded.call_historic(kwargs=kwargs)

    def junit_xml(self):
        try:
            from _pytest.junitxml import xml_key

            return self.config.stash.get(xml_key, None)
        except Exception:
            return None

    def junit_record(self, report, properties=(), attributes=()):
        """What the JUnit testcase of ``report`` gets beyond pytest's own:
        where it ran, when the run has several such places (properties),
        and ``record_xml_attribute`` calls made in a worker (attributes)."""
        xml = self.junit_xml()
        if xml is None:
            return
        reporter = xml.node_reporter(report)
        for name, value in properties:
            reporter.add_property(name, value)
        for name, value in attributes:
            reporter.add_attribute(name, value)

    def junit_properties(self, node, properties):
        """``record_testsuite_property`` calls made in a worker. A pair
        another worker already gave (a session fixture runs once per
        worker) is not repeated."""
        xml = self.junit_xml()
        if xml is None:
            return
        for name, value in properties:
            first = self.junit_seen.setdefault((name, value), node.gateway.id)
            if first == node.gateway.id:
                xml.add_global_property(name, value)

    def on_node_down(self, msg):
        node = self.node(msg["id"])
        output = msg.get("output")
        if output is not None:
            properties = output.pop("_rtest_junit_properties", None)
            if properties:
                self.junit_properties(node, properties)
            node.workeroutput = output
        self.node_hook(node, "pytest_testnodedown")(node=node, error=msg.get("error"))
        _cov_paths_for_combining(self.config)


def _reraise_exit(exc):
    """pytest.exit() in a replayed hook (a conftest that stops the run at
    the first failure it hears of) ends the session with its status, as
    under xdist: it is no plugin error."""
    from _pytest.outcomes import Exit

    if isinstance(exc, Exit):
        raise exc


def _tuples(data):
    """What JSON made lists that pytest keeps as tuples (execnet, under
    xdist, keeps them): a skip's ``longrepr`` (path, line, reason), which
    junitxml asserts is a tuple, and ``location``."""
    for key in ("longrepr", "location"):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])


def _cov_paths_for_combining(config):
    """pytest-cov (up to 7.x at least) records where a remote worker ran
    (``cov_worker_path``, from ``workeroutput``) as a ``[paths]`` alias on
    the Coverage object it then does not combine with, so remote data keeps
    the remote paths and counts for files that do not exist here
    (pytest-dev/pytest-cov#232, the same under xdist). The contract cannot
    serve this: it is pytest-cov's own bookkeeping. Give the combining
    object the aliases pytest-cov meant it to have."""
    plugin = config.pluginmanager.get_plugin("_cov")
    cov_controller = getattr(plugin, "cov_controller", None)
    cov = getattr(cov_controller, "cov", None)
    combining = getattr(cov_controller, "combining_cov", None)
    if cov is None or combining is None or cov is combining:
        return
    try:
        aliases = list(cov.config.paths.get("source") or [])
        if len(aliases) > 1:
            combining.config.paths["source"] = aliases
    except Exception:
        pass


def _max_warnings(config):
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    get = getattr(reporter, "_get_max_warnings", None)
    try:
        return get() if get is not None else None
    except Exception:
        # A bad ini value: pytest's own reporter says so at the end.
        return 0


def _watch(config):
    """What decided this session's plugins: files with their mtime and
    size (the directories packages are installed in, every plugin's and
    conftest's file, the ini file), and the initial conftest.py files that
    do not exist (one in the rootdir, the invocation directory, or a
    directory the arguments name or lie in, up to the rootdir). While none
    changes or appears, the next run can start its workers on what this
    one's controller said."""
    import types

    paths = set()
    for entry in sys.path:
        try:
            if entry and os.path.isdir(entry) and any(
                n.endswith((".dist-info", ".egg-info")) for n in os.listdir(entry)
            ):
                paths.add(entry)
        except OSError:
            pass
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, types.ModuleType):
            module = plugin
        else:
            module = sys.modules.get(type(plugin).__module__)
        path = getattr(module, "__file__", None)
        if path:
            paths.add(path)
    if config.inipath is not None:
        paths.add(str(config.inipath))
    out = []
    for path in sorted(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append([path, st.st_mtime_ns, st.st_size])
    return out, _absent_conftests(config)


def _absent_conftests(config):
    root = str(config.rootpath)
    dirs = {root, str(config.invocation_params.dir)}
    for arg in config.args:
        path = os.path.join(str(config.invocation_params.dir), arg.split("::")[0])
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            path = os.path.dirname(path)
        while path.startswith(root + os.sep):
            dirs.add(path)
            path = os.path.dirname(path)
    return sorted(
        os.path.join(d, "conftest.py")
        for d in dirs
        if not os.path.exists(os.path.join(d, "conftest.py"))
    )


def _nothing(*args, **kwargs):
    return None


def _import_attr(pair):
    import importlib

    module, name = pair
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _warning_message(data):
    import warnings

    category = None
    if data.get("category"):
        try:
            category = _import_attr(data["category"])
        except Exception:
            category = UserWarning
    message = data.get("message") or ""
    if data.get("message_class"):
        try:
            cls = _import_attr(data["message_class"])
            args = data.get("message_args")
            message = cls(*args) if args is not None else cls(message)
        except Exception:
            message = (category or UserWarning)(message)
    return warnings.WarningMessage(
        message=message,
        category=category,
        filename=data.get("filename") or "",
        lineno=data.get("lineno") or 0,
        line=data.get("line"),
    )


def run_controller(channel, inbox, control):
    """The controller role: a pytest session with the user's arguments that
    hosts plugins while the coordinator runs the tests."""
    for key, value in (control.get("env") or {}).items():
        os.environ[key] = value
    os.environ.pop("PYTEST_XDIST_WORKER", None)
    _importable_cwd()

    import pytest

    Controller.pytest_load_initial_conftests = pytest.hookimpl(hookwrapper=True)(
        Controller.pytest_load_initial_conftests
    )
    Controller.pytest_configure = pytest.hookimpl(tryfirst=True)(Controller.pytest_configure)
    Controller.pytest_sessionstart = pytest.hookimpl(tryfirst=True)(Controller.pytest_sessionstart)
    Controller.pytest_terminal_summary = pytest.hookimpl(hookwrapper=True, tryfirst=True)(
        Controller.pytest_terminal_summary
    )
    Controller.pytest_sessionfinish = pytest.hookimpl(hookwrapper=True, tryfirst=True)(Controller.pytest_sessionfinish)
    Controller.pytest_unconfigure = pytest.hookimpl(hookwrapper=True, tryfirst=True)(Controller.pytest_unconfigure)
    controller = Controller(channel, inbox, control)

    class Ready:
        # After every plugin's sessionstart (trylast ones run in the order
        # they were registered: only a wrapper comes after all).
        @pytest.hookimpl(hookwrapper=True, tryfirst=True)
        def pytest_sessionstart(self, session):
            outcome = yield
            # A session whose start raised (pytest.exit() in a conftest's
            # sessionstart) never starts: it is not ready for anything.
            if outcome.excinfo is None:
                controller.ready(session)

    ready = Ready()
    controller.own.append(ready)
    config, status = parse_args(channel, control["args"], [controller, ready])
    if config is None:
        return status
    controller.own.append(register_xdist(config, pytest))
    if control.get("auto_workers"):
        controller.tell_auto_workers(config, control["auto_workers"], control.get("auto_cap"))
    give_timeout(config, control.get("timeout"))
    controller.give_options(config.option)
    status = 3
    try:
        status = int(config.hook.pytest_cmdline_main(config=config))
    except pytest.UsageError as exc:
        # pytest refused the run at configure time (a bad ini value): no
        # plugin failed; the coordinator stops the run with pytest's words.
        channel.send({"t": "usage_error", "message": "\n".join(str(a) for a in exc.args)})
        return 4
    except Exception:
        controller.hook_error("pytest_sessionfinish")
        status = 3
    finally:
        try:
            config._ensure_unconfigure()
        except Exception:
            controller.hook_error("pytest_unconfigure")
    after_loop, summary = controller.output()
    for text in controller.internal_errors:
        lines = ["INTERNALERROR> " + line for line in text.rstrip("\n").split("\n")]
        channel.send({"t": "internal_error", "message": "\n".join(lines)})
    # A session interrupted before it started (a KeyboardInterrupt in a
    # conftest's pytest_sessionstart) is no plugin error: the coordinator
    # ends the run with its status, as pytest would.
    interrupted = status == 2
    if (
        not controller.ready_sent
        and not controller.internal_errors
        and not controller.exited
        and not interrupted
    ):
        message = "the controller's session did not start (exit status %s)" % status
        channel.send({"t": "internal_error", "message": message})
    channel.send(
        {
            "t": "controller_done",
            "exitstatus": status,
            "after_loop": after_loop,
            "summary": summary,
            "after_final": controller.after_final,
            "errors": controller.errors,
        }
    )
    return status


ROLES["control"] = run_controller
