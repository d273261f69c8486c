//! The terminal reporter: pytest's look, with xdist's worker tags.
//!
//! Header, progress (dots with `[ NN%]`, or one `[gw1] PASSED id` line per
//! test with `-v`), failure and error sections with pytest's own rendering,
//! warnings, the short test summary and the final `== ... in 1.23s ==`
//! line. On a TTY a live status line sits below the progress.

use crate::events::{
    categorize, Category, Event, PluginOutput, Reporter, StopReason, TestResult, WorkerDesc,
};
use crate::protocol::{CollectReport, PhaseReport, PytestOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

/// How the terminal reporter draws.
#[derive(Debug, Clone)]
pub struct TerminalOptions {
    /// Width in columns.
    pub width: usize,
    /// ANSI colors.
    pub color: bool,
    /// Live status line (stdout is a TTY).
    pub live: bool,
    /// pytest's verbosity (`-v` +1, `-q` -1).
    pub verbosity: i32,
    /// `--tb`.
    pub tb: String,
    /// `-r` characters, already expanded.
    pub report_chars: String,
    /// `--show-capture`.
    pub show_capture: String,
    /// `--durations`.
    pub durations: Option<usize>,
    /// `--durations-min`.
    pub durations_min: f64,
    /// The version to print in the header.
    pub version: String,
    /// Directory that paths in the summary are made relative to.
    pub cwd: std::path::PathBuf,
    /// `--collect-only`.
    pub collect_only: bool,
    /// Extra lines for the header (what was provisioned, outputs).
    pub header_notes: Vec<String>,
    /// Show the warnings summary (pytest's `w` report char).
    pub show_warnings: bool,
    /// What the progress lines end with.
    pub progress: Progress,
    /// `--no-header`: no platform, rootdir or plugin lines.
    pub no_header: bool,
    /// `--no-summary`: none of pytest's own summary sections.
    pub no_summary: bool,
    /// Skips folded by place and reason in the short summary
    /// (`--no-fold-skipped` lists each).
    pub fold_skipped: bool,
    /// `--force-short-summary`: messages trimmed at -vv and on CI too.
    pub force_short_summary: bool,
    /// The `PYTHONHASHSEED` rtest gave every worker (shown with -v).
    pub hash_seed: Option<String>,
}

/// What pytest's progress lines end with (its `console_output_style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// `[ 42%]` (`progress`, the default).
    #[default]
    Percent,
    /// `[ 42/100]` (`count`).
    Count,
    /// Nothing: `classic`, `-s` (unless `progress-even-when-capture-no`)
    /// and `--setup-show`; the letters run on without breaking the line.
    Off,
}

impl Progress {
    /// The style a worker's pytest settled on (`_determine_show_progress_info`:
    /// `progress`, `count`, `times` or empty for none). `times`, whose
    /// per-module durations need every item in the controller, is shown
    /// as a percentage.
    pub fn from_pytest(style: &str) -> Progress {
        match style {
            "" => Progress::Off,
            "count" => Progress::Count,
            _ => Progress::Percent,
        }
    }
}

/// pytest's warnings summary, grouped as its reporter groups them: one
/// entry per message, in the order first seen, with the lines that say
/// where it came from (every test or place that recorded it, once per
/// time; from ten on, counted per file instead).
fn warning_groups(warnings: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for (location, text) in warnings {
        let at = match grouped.iter().position(|(t, _)| t == text) {
            Some(at) => at,
            None => {
                grouped.push((text.clone(), Vec::new()));
                grouped.len() - 1
            }
        };
        if !location.is_empty() {
            grouped[at].1.push(location.clone());
        }
    }
    for (_, locations) in grouped.iter_mut() {
        if locations.len() >= 10 {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for l in locations.iter() {
                let file = l.split("::").next().unwrap_or(l).to_string();
                match counts.iter_mut().find(|(f, _)| *f == file) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((file, 1)),
                }
            }
            *locations = counts
                .into_iter()
                .map(|(f, n)| format!("{f}: {n} {}", if n == 1 { "warning" } else { "warnings" }))
                .collect();
        }
    }
    grouped
}

/// Expand pytest's `-r` characters (default `fE`) as pytest's
/// `getreportopt` does (`a` and `A` replace what came before them); the
/// warnings character `w` is left out.
pub fn expand_report_chars(chars: Option<&str>) -> String {
    let mut out = String::new();
    for c in chars.unwrap_or("fE").chars() {
        let c = match c {
            'F' => 'f',
            'S' => 's',
            c => c,
        };
        match c {
            'a' => out = "sxXEf".into(),
            'A' => out = "PpsxXEf".into(),
            'N' => out.clear(),
            'w' => {}
            c if !out.contains(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// Counts of everything that ended, for the final line.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Per category.
    pub counts: BTreeMap<Category, usize>,
    /// Deselected items.
    pub deselected: usize,
    /// Warnings.
    pub warnings: usize,
    /// Collection errors.
    pub collect_errors: usize,
    /// Categories plugins add (`rerun` from pytest-rerunfailures), in the
    /// order they first came.
    pub others: Vec<(String, usize)>,
}

impl Stats {
    /// The words of pytest's final line, in pytest's order, with each
    /// part's color.
    pub fn parts(&self) -> Vec<(String, &'static str)> {
        let get = |c: Category| self.counts.get(&c).copied().unwrap_or(0);
        let mut parts = Vec::new();
        let mut push = |n: usize, word: &str, color: &'static str| {
            if n > 0 {
                parts.push((format!("{n} {word}"), color));
            }
        };
        push(get(Category::Failed), "failed", RED);
        push(get(Category::Passed), "passed", GREEN);
        push(get(Category::Skipped), "skipped", YELLOW);
        push(self.deselected, "deselected", YELLOW);
        push(get(Category::XFailed), "xfailed", YELLOW);
        push(get(Category::XPassed), "xpassed", YELLOW);
        let w = self.warnings;
        push(w, if w == 1 { "warning" } else { "warnings" }, YELLOW);
        let e = get(Category::Error) + self.collect_errors;
        push(e, if e == 1 { "error" } else { "errors" }, RED);
        push(get(Category::SubtestsPassed), "subtests passed", GREEN);
        for (word, n) in &self.others {
            push(*n, word, YELLOW);
        }
        parts
    }

    /// The main color of the final line.
    pub fn main_color(&self) -> &'static str {
        let get = |c: Category| self.counts.get(&c).copied().unwrap_or(0);
        if get(Category::Failed) + get(Category::Error) + self.collect_errors > 0 {
            RED
        } else if self.warnings > 0 || get(Category::XPassed) > 0 {
            YELLOW
        } else if get(Category::Passed) > 0 {
            GREEN
        } else {
            YELLOW
        }
    }
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The terminal reporter.
pub struct Terminal {
    opts: TerminalOptions,
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    stats: Stats,
    total: usize,
    done: usize,
    line_len: usize,
    current_line: String,
    /// The last line written is a test's `-v` result line: pytest leaves a
    /// blank line below it before its summary (its reporter's line is
    /// still open when the session ends, and the first separator opens a
    /// new one).
    after_result_line: bool,
    status_visible: bool,
    last_draw: Instant,
    started: Instant,
    workers: Vec<WorkerDesc>,
    failures: Vec<TestResult>,
    interesting: Vec<TestResult>,
    collect_reports: Vec<CollectReport>,
    warnings: Vec<(String, String)>,
    durations: Vec<(f64, String, String)>,
    partial: BTreeMap<String, Vec<u8>>,
    header_done: bool,
    /// pytest's rootdir, once collection names it: node ids are shown
    /// relative to the invocation directory, as pytest shows them.
    rootdir: Option<std::path::PathBuf>,
    /// Summary sections a plugin's terminal reporter draws in the
    /// controller (pytest's method names).
    left_to_plugins: Vec<String>,
    /// The items `--collect-only` lists (this job's, with `--shard`).
    listed: usize,
    /// What plugins report once collection is done, for the header.
    collection_lines: Vec<String>,
}

impl Terminal {
    /// A terminal reporter writing to stdout and stderr.
    pub fn new(opts: TerminalOptions) -> Self {
        Self::with_writers(
            opts,
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
        )
    }

    /// A terminal reporter writing to the given streams (tests).
    pub fn with_writers(
        opts: TerminalOptions,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Self {
        Terminal {
            opts,
            out,
            err,
            stats: Stats::default(),
            total: 0,
            done: 0,
            line_len: 0,
            current_line: String::new(),
            after_result_line: false,
            status_visible: false,
            last_draw: Instant::now(),
            started: Instant::now(),
            workers: Vec::new(),
            failures: Vec::new(),
            interesting: Vec::new(),
            collect_reports: Vec::new(),
            warnings: Vec::new(),
            durations: Vec::new(),
            partial: BTreeMap::new(),
            header_done: false,
            rootdir: None,
            left_to_plugins: Vec::new(),
            listed: 0,
            collection_lines: Vec::new(),
        }
    }

    /// Take the options the workers' pytest runs with (they include
    /// addopts and ini settings the command line did not show).
    fn apply(&mut self, o: &PytestOptions) {
        self.opts.verbosity = o.verbose;
        self.opts.tb = o.tbstyle.clone();
        self.opts.show_warnings = o.reportchars.contains('w');
        self.opts.report_chars = o.reportchars.replace('w', "");
        self.opts.show_capture = o.showcapture.clone();
        self.opts.durations = o.durations;
        self.opts.durations_min =
            o.durations_min
                .unwrap_or(if o.verbose < 2 { 0.005 } else { 0.0 });
        self.opts.progress = Progress::from_pytest(&o.progress);
        self.opts.no_header = o.no_header;
        self.opts.no_summary = o.no_summary;
        self.opts.fold_skipped = o.fold_skipped;
        self.opts.force_short_summary = o.force_short_summary;
        if !o.terminal {
            // -p no:terminal: pytest writes nothing to its terminal.
            self.out = Box::new(std::io::sink());
        }
    }

    /// A node id as pytest's `cwd_relative_nodeid` shows it: its path
    /// relative to the invocation directory rather than the rootdir.
    fn shown(&self, nodeid: &str) -> String {
        let Some(root) = self.rootdir.as_deref().filter(|r| *r != self.opts.cwd) else {
            return nodeid.to_string();
        };
        let (path, rest) = match nodeid.split_once("::") {
            Some((path, rest)) => (path, Some(rest)),
            None => (nodeid, None),
        };
        let rel = crate::fsutil::bestrelpath(&self.opts.cwd, &root.join(path));
        match rest {
            Some(rest) => format!("{rel}::{rest}"),
            None => rel,
        }
    }

    fn paint(&self, text: &str, color: &str, bold: bool) -> String {
        if !self.opts.color {
            return text.to_string();
        }
        format!("{}{color}{text}{RESET}", if bold { BOLD } else { "" })
    }

    fn sep(&self, ch: char, title: &str) -> String {
        let width = self.opts.width.max(20);
        if title.is_empty() {
            return ch.to_string().repeat(width);
        }
        let n = ((width.saturating_sub(title.chars().count() + 2)) / 2).max(1);
        let fill = ch.to_string().repeat(n);
        let mut line = format!("{fill} {title} {fill}");
        if line.chars().count() < width {
            line.push(ch);
        }
        line
    }

    fn line(&mut self, text: &str) {
        self.hide_status();
        self.finish_progress_line();
        let _ = writeln!(self.out, "{text}");
        self.after_result_line = false;
    }

    /// A test's `-v` result line.
    fn result_line(&mut self, text: &str) {
        self.line(text);
        self.after_result_line = true;
    }

    fn sep_line(&mut self, ch: char, title: &str, color: &str, bold: bool) {
        let s = self.sep(ch, title);
        let painted = self.paint(&s, color, bold);
        self.line(&painted);
    }

    fn hide_status(&mut self) {
        if self.status_visible {
            // Clear the status line and the progress line above it; the
            // progress line is redrawn from `current_line`.
            let _ = write!(self.out, "\r\x1b[K\x1b[1A\r\x1b[K");
            self.status_visible = false;
            if !self.current_line.is_empty() {
                let _ = write!(self.out, "{}", self.current_line);
            }
        }
    }

    fn draw_status(&mut self) {
        if !self.opts.live || self.opts.collect_only || self.total == 0 || !self.header_done {
            return;
        }
        let failed = self
            .stats
            .counts
            .get(&Category::Failed)
            .copied()
            .unwrap_or(0)
            + self
                .stats
                .counts
                .get(&Category::Error)
                .copied()
                .unwrap_or(0);
        let mut status = format!(
            " {}/{} tests · {} workers · {:.1}s",
            self.done,
            self.total,
            self.workers.len(),
            self.started.elapsed().as_secs_f64()
        );
        if failed > 0 {
            status.push_str(&format!(" · {failed} failed"));
        }
        let status: String = status
            .chars()
            .take(self.opts.width.saturating_sub(1))
            .collect();
        let painted = self.paint(&status, "\x1b[2m", false);
        if self.status_visible {
            let _ = write!(self.out, "\r\x1b[K{painted}");
        } else {
            let _ = write!(self.out, "\n{painted}");
            self.status_visible = true;
        }
        let _ = self.out.flush();
        self.last_draw = Instant::now();
    }

    /// What ends a progress line (`[ 42%]`, `[ 42/100]`), without its
    /// leading space; None when progress is off.
    fn progress_info(&self) -> Option<String> {
        match self.opts.progress {
            Progress::Off => None,
            Progress::Percent => {
                let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
                Some(format!("[{pct:>3}%]"))
            }
            Progress::Count => {
                let w = self.total.to_string().len();
                Some(format!("[{:>w$}/{}]", self.done, self.total))
            }
        }
    }

    /// How wide the progress information can get, its leading space
    /// included (pytest's `progress_length`).
    fn progress_len(&self) -> usize {
        match self.opts.progress {
            Progress::Off => 0,
            Progress::Percent => " [100%]".len(),
            Progress::Count => " [/]".len() + 2 * self.total.to_string().len(),
        }
    }

    /// A verbose result line's `[gw0] [ 42%] ` prefix.
    fn verbose_prefix(&self, worker: &str) -> String {
        match self.progress_info() {
            Some(info) => format!("[{worker}] {info} "),
            None => format!("[{worker}] "),
        }
    }

    /// End the progress line for other text to follow: with its
    /// percentage once every test is in, else where it is (the progress
    /// goes on below).
    fn finish_progress_line_if_done(&mut self) {
        if self.line_len > 0 && self.total > 0 && self.done >= self.total {
            self.finish_progress_line();
        } else if self.line_len > 0 {
            let _ = writeln!(self.out);
            self.line_len = 0;
            self.current_line.clear();
        }
    }

    fn finish_progress_line(&mut self) {
        if self.line_len > 0 {
            // pytest right-justifies the information to one column short
            // of the width.
            let text = match self.progress_info() {
                Some(info) => {
                    let fill = self.opts.width.saturating_sub(self.line_len + 1);
                    format!("{:>fill$}", format!(" {info}"))
                }
                None => String::new(),
            };
            let _ = writeln!(self.out, "{text}");
            self.line_len = 0;
            self.current_line.clear();
        }
    }

    fn progress_char(&mut self, c: Category) {
        let color = match c {
            Category::Failed | Category::Error => RED,
            Category::Passed => GREEN,
            _ => YELLOW,
        };
        self.progress_text(&c.letter().to_string(), color);
    }

    /// One progress letter, wrapping the line with its percentage.
    fn progress_text(&mut self, letter: &str, color: &'static str) {
        let s = self.paint(letter, color, false);
        let was_visible = self.status_visible;
        self.hide_status();
        let _ = write!(self.out, "{s}");
        self.current_line.push_str(&s);
        self.line_len += 1;
        // pytest's "past edge": the line breaks once the information and
        // one more column would not fit.
        let past_edge = self.opts.progress != Progress::Off
            && self.line_len + self.progress_len() + 1 >= self.opts.width;
        if past_edge {
            let info = self.progress_info().unwrap_or_default();
            let _ = writeln!(self.out, " {info}");
            self.line_len = 0;
            self.current_line.clear();
        }
        if was_visible {
            self.draw_status();
        }
    }

    fn on_result(&mut self, r: &TestResult) {
        self.done += 1;
        if let Some(log) = r.live_log.as_deref().filter(|l| !l.trim().is_empty()) {
            // The test's live log sections, below the line that names it
            // (pytest's: its location, at the test's start).
            let head = format!("[{}] {} ", r.worker, self.shown(&r.nodeid));
            self.line(&head);
            self.line(log.trim_start_matches('\n').trim_end_matches('\n'));
        }
        let cats: Vec<(Category, PhaseReport)> =
            r.categories().map(|(c, p)| (c, p.clone())).collect();
        // A plugin's own outcome (pytest-rerunfailures' `rerun`) counts
        // under its name, with its letter, before the final outcome.
        for p in &r.phases {
            if categorize(p).is_none() {
                let name = p.category.as_deref().unwrap_or(p.outcome.as_str());
                if !matches!(name, "" | "passed" | "failed" | "skipped") {
                    match self.stats.others.iter_mut().find(|(w, _)| w == name) {
                        Some((_, n)) => *n += 1,
                        None => self.stats.others.push((name.to_string(), 1)),
                    }
                    let letter = p.letter.clone().unwrap_or_default();
                    if self.opts.verbosity > 0 && !self.opts.collect_only {
                        let word = p.word.clone().unwrap_or_else(|| name.to_uppercase());
                        let prefix = self.verbose_prefix(&r.worker);
                        let word = self.paint(&word, YELLOW, false);
                        let id = self.shown(&r.nodeid);
                        self.result_line(&format!("{prefix}{word} {id} "));
                    } else if !letter.is_empty() && !self.opts.collect_only {
                        self.progress_text(&letter, YELLOW);
                    }
                }
            }
        }
        for (c, p) in &cats {
            *self.stats.counts.entry(*c).or_default() += 1;
            // Passed subtests count in the final line only, as in pytest.
            if self.opts.collect_only || *c == Category::SubtestsPassed {
                continue;
            }
            if self.opts.verbosity > 0 {
                let prefix = self.verbose_prefix(&r.worker);
                let word = self.paint(
                    c.verbose_word(),
                    match c {
                        Category::Failed | Category::Error => RED,
                        Category::Passed => GREEN,
                        _ => YELLOW,
                    },
                    false,
                );
                // pytest's location ends with a space (`_locationline`).
                let mut text = format!("{prefix}{word} {} ", self.shown(&r.nodeid));
                if *c == Category::Skipped || *c == Category::XFailed {
                    if let Some(reason) = skip_reason(p) {
                        text.push_str(&format!("({reason})"));
                    }
                }
                self.result_line(&text);
            } else if self.opts.verbosity > -2 || !matches!(c, Category::Passed) {
                self.progress_char(*c);
            }
        }
        for p in &r.phases {
            self.durations
                .push((p.duration, p.when.clone(), r.nodeid.clone()));
        }
        if cats
            .iter()
            .any(|(c, _)| matches!(c, Category::Failed | Category::Error))
        {
            self.failures.push(r.clone());
        }
        if cats
            .iter()
            .any(|(c, _)| !matches!(c, Category::Failed | Category::Error))
        {
            let keep_passes =
                self.opts.report_chars.contains('p') || self.opts.report_chars.contains('P');
            let keep_other = cats.iter().any(|(c, _)| !matches!(c, Category::Passed));
            if keep_other || keep_passes {
                self.interesting.push(r.clone());
            }
        }
        if self.opts.live && self.last_draw.elapsed() > Duration::from_millis(100) {
            self.draw_status();
        }
    }

    fn worker_line(&self, worker: &str) -> Option<String> {
        self.workers
            .iter()
            .find(|w| w.id == worker)
            .map(|w| match w.named_host() {
                None => format!("[{}] {}", w.id, w.platform_line()),
                Some(host) => format!("[{} on {host}] {}", w.id, w.platform_line()),
            })
    }

    fn print_sections(&mut self, p: &PhaseReport) {
        if self.opts.show_capture == "no" {
            return;
        }
        for (title, content) in p.sections.clone() {
            if self.opts.show_capture != "all" && !title.contains(&self.opts.show_capture) {
                continue;
            }
            self.sep_line('-', &title, "", false);
            let content = content.strip_suffix('\n').unwrap_or(&content).to_string();
            self.line(&content);
        }
    }

    fn summary_errors(&mut self) {
        let errors: Vec<TestResult> = self
            .failures
            .iter()
            .filter(|r| r.categories().any(|(c, _)| c == Category::Error))
            .cloned()
            .collect();
        let collect_errors: Vec<CollectReport> = self
            .collect_reports
            .iter()
            .filter(|r| r.outcome == "failed")
            .cloned()
            .collect();
        if (errors.is_empty() && collect_errors.is_empty()) || self.opts.tb == "no" {
            return;
        }
        self.sep_line('=', "ERRORS", "", false);
        for c in &collect_errors {
            self.sep_line('_', &format!("ERROR collecting {}", c.nodeid), RED, true);
            self.line(c.longrepr.as_deref().unwrap_or(""));
        }
        for r in &errors {
            for p in r
                .phases
                .iter()
                .filter(|p| categorize(p) == Some(Category::Error))
            {
                let name = p.head_line.clone().unwrap_or_else(|| r.nodeid.clone());
                self.sep_line('_', &format!("ERROR at {} of {name}", p.when), RED, true);
                if let Some(l) = self.worker_line(&r.worker) {
                    self.line(&l);
                }
                self.line(p.longrepr.as_deref().unwrap_or(""));
                self.print_sections(p);
            }
        }
    }

    fn summary_failures(&mut self) {
        let failures: Vec<TestResult> = self
            .failures
            .iter()
            .filter(|r| r.categories().any(|(c, _)| c == Category::Failed))
            .cloned()
            .collect();
        if failures.is_empty() || self.opts.tb == "no" {
            return;
        }
        self.sep_line('=', "FAILURES", "", false);
        for r in &failures {
            for p in r
                .phases
                .iter()
                .filter(|p| categorize(p) == Some(Category::Failed))
            {
                if self.opts.tb == "line" {
                    if self.pytest_major().is_some_and(|major| major >= 9) {
                        // pytest 9 shows the report (its one line) and
                        // what the test printed before the crash line.
                        if let Some(l) = self.worker_line(&r.worker) {
                            self.line(&l);
                        }
                        if let Some(text) = p.longrepr.as_deref().filter(|t| !t.is_empty()) {
                            self.line(text);
                        }
                        self.print_sections(p);
                    }
                    // pytest's _getcrashline: "path:line: message" (its
                    // first line), or a text report's first 50 characters.
                    let line = match p.crash.as_ref().filter(|c| c.path.is_some()) {
                        Some(c) => format!(
                            "{}:{}: {}",
                            c.path.as_deref().unwrap_or_default(),
                            py_str(c.lineno),
                            c.message
                                .as_deref()
                                .unwrap_or("")
                                .split('\n')
                                .next()
                                .unwrap_or("")
                        ),
                        None => p
                            .longrepr
                            .as_deref()
                            .unwrap_or("")
                            .chars()
                            .take(50)
                            .collect(),
                    };
                    self.line(&line);
                    continue;
                }
                let name = p.head_line.clone().unwrap_or_else(|| r.nodeid.clone());
                self.sep_line('_', &name, RED, true);
                if let Some(l) = self.worker_line(&r.worker) {
                    self.line(&l);
                }
                self.line(p.longrepr.as_deref().unwrap_or(""));
                self.print_sections(p);
                self.print_teardown_sections(r);
            }
        }
    }

    /// The workers' pytest's major version.
    fn pytest_major(&self) -> Option<u32> {
        self.workers
            .first()
            .and_then(|w| w.info.pytest.as_deref())
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
    }

    /// pytest shows a failed test's teardown output after its call output.
    fn print_teardown_sections(&mut self, r: &TestResult) {
        if let Some(td) = r
            .phases
            .iter()
            .find(|p| p.when == "teardown" && p.outcome != "failed")
        {
            let mut only = td.clone();
            only.sections.retain(|(t, _)| t.contains("teardown"));
            self.print_sections(&only);
        }
    }

    /// pytest's PASSES (`-rP`) or XPASSES (`-rX`) section.
    fn summary_passes(&mut self, which: Category) {
        let (char, title) = match which {
            Category::XPassed => ('X', "XPASSES"),
            _ => ('P', "PASSES"),
        };
        if !self.opts.report_chars.contains(char) || self.opts.tb == "no" {
            return;
        }
        // As pytest: the heading once any test passed; a test's own
        // heading and output when its call report has captured output;
        // its teardown's output in any case.
        let passes: Vec<TestResult> = self
            .interesting
            .iter()
            .filter(|r| r.categories().any(|(c, _)| c == which))
            .cloned()
            .collect();
        if passes.is_empty() {
            return;
        }
        self.sep_line('=', title, "", false);
        for r in &passes {
            if let Some(call) = r
                .phases
                .iter()
                .find(|p| p.when == "call" && !p.sections.is_empty())
            {
                let call = call.clone();
                let name = call.head_line.clone().unwrap_or_else(|| r.nodeid.clone());
                self.sep_line('_', &name, GREEN, true);
                if let Some(l) = self.worker_line(&r.worker) {
                    self.line(&l);
                }
                self.print_sections(&call);
            }
            self.print_teardown_sections(r);
        }
    }

    fn summary_warnings(&mut self) {
        if self.warnings.is_empty() || !self.opts.show_warnings {
            return;
        }
        self.sep_line('=', "warnings summary", YELLOW, false);
        for (text, lines) in warning_groups(&self.warnings) {
            if lines.is_empty() {
                self.line(text.trim_end());
            } else {
                for l in &lines {
                    self.line(l);
                }
                let indented: Vec<String> = text.lines().map(|l| format!("  {l}")).collect();
                self.line(indented.join("\n").trim_end());
            }
            self.line("");
        }
        self.line("-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html");
    }

    fn summary_durations(&mut self) {
        let Some(n) = self.opts.durations else { return };
        let mut d = std::mem::take(&mut self.durations);
        d.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        let title = if n == 0 {
            "slowest durations".to_string()
        } else {
            format!("slowest {n} durations")
        };
        self.sep_line('=', &title, "", false);
        let limit = if n == 0 { d.len() } else { n.min(d.len()) };
        let min = if self.opts.verbosity < 2 {
            self.opts.durations_min
        } else {
            0.0
        };
        let mut hidden = 0;
        for (i, (secs, when, id)) in d.iter().enumerate() {
            if i >= limit {
                break;
            }
            if *secs < min {
                hidden += limit - i;
                break;
            }
            self.line(&format!("{secs:.2}s {when:<8} {id}"));
        }
        if hidden > 0 {
            self.line(&format!(
                "\n({hidden} durations < {min}s hidden.  Use -vv to show these durations.)"
            ));
        }
    }

    fn short_summary(&mut self) {
        let chars = self.opts.report_chars.clone();
        // A test run in several environments (--dist each) says which one
        // each line is about: worker, host, Python.
        let mut seen: HashMap<&str, HashSet<&str>> = HashMap::new();
        for r in self.failures.iter().chain(self.interesting.iter()) {
            seen.entry(r.nodeid.as_str())
                .or_default()
                .insert(r.worker.as_str());
        }
        let envs: HashMap<String, String> = self
            .workers
            .iter()
            .map(|w| {
                let python = if w.info.python_version.is_empty() {
                    String::new()
                } else {
                    format!(", Python {}", w.info.python_version)
                };
                (w.id.clone(), format!("{}{}{python}", w.id, w.on_host()))
            })
            .collect();
        let label = |r: &TestResult| -> String {
            if seen.get(r.nodeid.as_str()).is_some_and(|w| w.len() > 1) {
                let env = envs
                    .get(&r.worker)
                    .cloned()
                    .unwrap_or_else(|| r.worker.clone());
                format!("{} [{env}]", self.shown(&r.nodeid))
            } else {
                self.shown(&r.nodeid)
            }
        };
        let mut lines: Vec<String> = Vec::new();
        let width = self.opts.width;
        // pytest trims the message to the line unless -vv or on CI
        // (and then too with --force-short-summary).
        let verbose =
            (self.opts.verbosity >= 2 || running_on_ci()) && !self.opts.force_short_summary;
        let with_msg = |word: &str, id: &str, msg: Option<&str>| -> String {
            let base = format!("{word} {id}");
            let Some(msg) = msg else {
                return base;
            };
            if verbose {
                // All of it, every line (a long assertion diff too).
                return format!("{base} - {msg}");
            }
            // As pytest measures it: a line with markup has no width.
            let available = width as isize - pytest_width(&base);
            match trimmed_message(msg, available) {
                Some(m) => format!("{base}{m}"),
                None => base,
            }
        };
        for c in chars.chars() {
            match c {
                'f' => {
                    for r in &self.failures {
                        for p in r
                            .phases
                            .iter()
                            .filter(|p| categorize(p) == Some(Category::Failed))
                        {
                            let msg = crash_message(p);
                            let word = p.word.as_deref().unwrap_or("FAILED");
                            lines.push(with_msg(
                                &self.paint(word, RED, false),
                                &label(r),
                                msg.as_deref(),
                            ));
                        }
                    }
                }
                'E' => {
                    for cr in self
                        .collect_reports
                        .iter()
                        .filter(|r| r.outcome == "failed")
                    {
                        lines.push(with_msg(
                            &self.paint("ERROR", RED, false),
                            &self.shown(&cr.nodeid),
                            cr.crash.as_deref(),
                        ));
                    }
                    for r in &self.failures {
                        for p in r
                            .phases
                            .iter()
                            .filter(|p| categorize(p) == Some(Category::Error))
                        {
                            let msg = crash_message(p);
                            lines.push(with_msg(
                                &self.paint("ERROR", RED, false),
                                &label(r),
                                msg.as_deref(),
                            ));
                        }
                    }
                }
                's' if !self.opts.fold_skipped => {
                    // --no-fold-skipped: one line per skip, its reason as
                    // pytest holds it.
                    let word = self.paint("SKIPPED", YELLOW, false);
                    let collected = self
                        .collect_reports
                        .iter()
                        .filter(|c| c.outcome == "skipped")
                        .map(|c| (self.shown(&c.nodeid), c.skip.clone()));
                    let ran = self.interesting.iter().flat_map(|r| {
                        r.phases
                            .iter()
                            .filter(|p| categorize(p) == Some(Category::Skipped))
                            .map(|p| (label(r), p.skip.clone()))
                    });
                    for (id, skip) in collected.chain(ran).collect::<Vec<_>>() {
                        let reason = skip.and_then(|s| s.get(2).cloned().flatten());
                        lines.push(match reason.filter(|r| !r.is_empty()) {
                            Some(r) => format!("{word} {id} - {r}"),
                            None => format!("{word} {id}"),
                        });
                    }
                }
                's' => {
                    let mut folded: Vec<((String, String), usize)> = Vec::new();
                    for c in self
                        .collect_reports
                        .iter()
                        .filter(|c| c.outcome == "skipped")
                    {
                        let phase = PhaseReport {
                            skip: c.skip.clone(),
                            ..PhaseReport::default()
                        };
                        let key = self.skip_key(&phase, &c.nodeid);
                        match folded.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, n)) => *n += 1,
                            None => folded.push((key, 1)),
                        }
                    }
                    for r in &self.interesting {
                        for p in r
                            .phases
                            .iter()
                            .filter(|p| categorize(p) == Some(Category::Skipped))
                        {
                            let key = self.skip_key(p, &r.nodeid);
                            match folded.iter_mut().find(|(k, _)| *k == key) {
                                Some((_, n)) => *n += 1,
                                None => folded.push((key, 1)),
                            }
                        }
                    }
                    for ((loc, reason), n) in folded {
                        lines.push(format!(
                            "{} [{n}] {loc}: {reason}",
                            self.paint("SKIPPED", YELLOW, false)
                        ));
                    }
                }
                'x' | 'X' => {
                    let cat = if c == 'x' {
                        Category::XFailed
                    } else {
                        Category::XPassed
                    };
                    // The reason in full, as pytest (8 and later) shows it;
                    // pytest 9 names the phase of an xfail outside the call.
                    let phase_named = self.pytest_major().is_some_and(|major| major >= 9);
                    for r in &self.interesting {
                        for p in r.phases.iter().filter(|p| categorize(p) == Some(cat)) {
                            let word = self.paint(cat.verbose_word(), YELLOW, false);
                            let mut line = if phase_named && c == 'x' && p.when != "call" {
                                format!("{word} at {} of {}", p.when, label(r))
                            } else {
                                format!("{word} {}", label(r))
                            };
                            if let Some(reason) = p.wasxfail.as_deref().filter(|m| !m.is_empty()) {
                                line.push_str(" - ");
                                line.push_str(reason);
                            }
                            lines.push(line);
                        }
                    }
                }
                // `P` is the PASSES section's, not a summary line's.
                'p' if !chars[..chars.find(c).unwrap_or(0)].contains('p') => {
                    for r in &self.interesting {
                        if r.categories().any(|(c, _)| c == Category::Passed) {
                            lines.push(format!(
                                "{} {}",
                                self.paint("PASSED", GREEN, false),
                                label(r)
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        if !lines.is_empty() {
            self.sep_line('=', "short test summary info", "\x1b[36m", false);
            for l in lines {
                self.line(&l);
            }
        }
    }

    fn skip_key(&self, p: &PhaseReport, nodeid: &str) -> (String, String) {
        if let Some(skip) = &p.skip {
            let path = skip.first().cloned().flatten().unwrap_or_default();
            let path = std::path::Path::new(&path)
                .strip_prefix(&self.opts.cwd)
                .map(|p| p.display().to_string())
                .unwrap_or(path);
            let line = skip.get(1).cloned().flatten().unwrap_or_default();
            let reason = skip.get(2).cloned().flatten().unwrap_or_default();
            let reason = reason
                .strip_prefix("Skipped: ")
                .unwrap_or(&reason)
                .to_string();
            if p.by_file {
                return (path, reason);
            }
            return (format!("{path}:{line}"), reason);
        }
        (nodeid.to_string(), skip_reason(p).unwrap_or_default())
    }

    fn final_line(&mut self, elapsed: Duration) {
        let parts = self.stats.parts();
        let secs = elapsed.as_secs_f64();
        let mut time = format!("{secs:.2}s");
        if secs >= 60.0 {
            let t = secs as u64;
            time.push_str(&format!(
                " ({}:{:02}:{:02})",
                t / 3600,
                (t / 60) % 60,
                t % 60
            ));
        }
        let mut color = self.stats.main_color();
        let body = if self.opts.collect_only {
            // pytest's words for it (`_build_collect_only_summary_stats_line`).
            let deselected = self.stats.deselected;
            let collected = self.listed + deselected;
            let mut s = if collected == 0 {
                color = YELLOW;
                "no tests collected".to_string()
            } else if deselected == 0 {
                color = GREEN;
                format!(
                    "{collected} test{} collected",
                    if collected == 1 { "" } else { "s" }
                )
            } else if deselected == collected {
                color = YELLOW;
                format!("no tests collected ({deselected} deselected)")
            } else {
                color = GREEN;
                format!(
                    "{}/{collected} tests collected ({deselected} deselected)",
                    self.listed
                )
            };
            let errors = self.stats.collect_errors;
            if errors > 0 {
                color = RED;
                s.push_str(&format!(
                    ", {errors} error{}",
                    if errors == 1 { "" } else { "s" }
                ));
            }
            format!("{s} in {time}")
        } else if parts.is_empty() {
            format!("no tests ran in {time}")
        } else {
            let words: Vec<String> = parts.iter().map(|(t, _)| t.clone()).collect();
            format!("{} in {time}", words.join(", "))
        };
        if self.opts.verbosity < 0 {
            let painted = self.paint(&body, color, false);
            self.line(&painted);
        } else {
            self.sep_line('=', &body, color, true);
        }
    }

    fn header(&mut self, worker: &WorkerDesc) {
        if self.opts.verbosity < 0 {
            return;
        }
        self.sep_line('=', "test session starts", "", true);
        if self.opts.no_header {
            return;
        }
        let info = &worker.info;
        let mut line = format!(
            "platform {} -- Python {}, pytest-{}, pluggy-{}",
            info.platform,
            info.python_version,
            info.pytest.as_deref().unwrap_or("?"),
            info.pluggy.as_deref().unwrap_or("?")
        );
        // pytest names its interpreter from -v on.
        if self.opts.verbosity > 0 && !info.executable.is_empty() {
            line.push_str(&format!(" -- {}", info.executable));
        }
        self.line(&line);
    }

    fn on_collected(
        &mut self,
        header: &[String],
        workers: &[WorkerDesc],
        total: usize,
        per_worker: usize,
        deselected: usize,
        reports: &[CollectReport],
    ) {
        self.workers = workers.to_vec();
        self.total = total;
        self.stats.deselected = deselected;
        self.stats.collect_errors = reports.iter().filter(|r| r.outcome == "failed").count();
        let collect_skips = reports.iter().filter(|r| r.outcome == "skipped").count();
        if collect_skips > 0 {
            *self.stats.counts.entry(Category::Skipped).or_default() += collect_skips;
        }
        self.collect_reports = reports.to_vec();
        self.header_done = true;
        if self.opts.verbosity < 0 {
            return;
        }
        for line in header {
            self.line(line);
        }
        for n in self.opts.header_notes.clone() {
            self.line(&n);
        }
        if let Some(seed) = self
            .opts
            .hash_seed
            .clone()
            .filter(|_| self.opts.verbosity > 0)
        {
            self.line(&format!(
                "PYTHONHASHSEED={seed} for every worker (so they collect alike; set it to choose)"
            ));
        }
        // Group workers with the same interpreter: "gw0-gw3: popen, CPython 3.11.7 (/usr/bin/python3)".
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for w in workers {
            let desc = format!(
                "{}{}, {} {} ({})",
                // The spec tells environments apart; the interpreter is
                // shown as it reported itself.
                w.spec
                    .split("//")
                    .filter(|part| !part.starts_with("python="))
                    .collect::<Vec<_>>()
                    .join("//"),
                w.on_host(),
                if w.info.implementation.is_empty() {
                    "Python"
                } else {
                    &w.info.implementation
                },
                w.info.python_version,
                w.info.executable
            );
            match groups.iter_mut().find(|(d, _)| *d == desc) {
                Some((_, ids)) => ids.push(w.id.clone()),
                None => groups.push((desc, vec![w.id.clone()])),
            }
        }
        let n = workers.len();
        self.line(&format!(
            "rtest {}: {n} worker{} [{per_worker} item{}{}]",
            self.opts.version,
            if n == 1 { "" } else { "s" },
            if per_worker == 1 { "" } else { "s" },
            if deselected > 0 {
                format!(" / {deselected} deselected")
            } else {
                String::new()
            }
        ));
        for (desc, ids) in groups {
            self.line(&format!("  {}: {desc}", ids.join(", ")));
        }
        // pytest's "run-last-failure: ..." and plugins' like it, where
        // pytest puts them: below the count of what was collected.
        for line in std::mem::take(&mut self.collection_lines) {
            self.line(&line);
        }
        if !self.opts.collect_only {
            self.line("");
        }
    }

    /// Worker output is written a whole line at a time, each prefixed with
    /// the worker id, so lines of two workers never interleave.
    fn worker_output(&mut self, worker: &str, data: &[u8]) {
        let buf = self.partial.entry(worker.to_string()).or_default();
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            out.extend_from_slice(format!("[{worker}] ").as_bytes());
            out.extend_from_slice(&buf[start..start + pos + 1]);
            start += pos + 1;
        }
        buf.drain(..start);
        if buf.len() > 64 * 1024 {
            // A very long line without a newline: show it rather than hoard it.
            out.extend_from_slice(format!("[{worker}] ").as_bytes());
            out.append(buf);
            out.push(b'\n');
        }
        self.write_err(&out);
    }

    fn flush_worker_output(&mut self) {
        let pending: Vec<(String, Vec<u8>)> =
            std::mem::take(&mut self.partial).into_iter().collect();
        for (worker, rest) in pending {
            if !rest.is_empty() {
                let mut out = format!("[{worker}] ").into_bytes();
                out.extend_from_slice(&rest);
                out.push(b'\n');
                self.write_err(&out);
            }
        }
    }

    fn write_err(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.hide_status();
        // Not in the middle of the progress line (when both streams are
        // the terminal); the progress goes on below.
        self.finish_progress_line_if_done();
        let _ = self.out.flush();
        let _ = self.err.write_all(bytes);
        let _ = self.err.flush();
    }

    fn finished(
        &mut self,
        stop: Option<&StopReason>,
        elapsed: Duration,
        error: Option<&crate::error::Error>,
        plugins: &PluginOutput,
    ) {
        self.flush_worker_output();
        self.hide_status();
        self.finish_progress_line();
        self.plugin_text_after_loop(&plugins.after_loop);
        if self.after_result_line {
            self.line("");
        }
        if let Some(e) = error.filter(|e| matches!(e.kind, crate::error::ErrorKind::Exit(_))) {
            // pytest.exit() before the run: pytest's own line, where its
            // terminal writes it (none at configure time).
            if !e.message.is_empty() {
                self.sep_line('!', &e.message, RED, false);
            }
            let _ = self.out.flush();
            return;
        }
        if let Some(e) = error {
            let _ = self.out.flush();
            let msg = self.paint(&e.rendered(), RED, false);
            let _ = writeln!(self.err, "{msg}");
            let _ = self.err.flush();
            if self.done == 0 {
                return;
            }
        }
        if self.draws("summary_errors") {
            self.summary_errors();
        }
        if self.draws("summary_failures") {
            self.summary_failures();
        }
        if self.draws("summary_warnings") {
            self.summary_warnings();
        }
        if self.draws("summary_passes") {
            self.summary_passes(Category::Passed);
            self.summary_passes(Category::XPassed);
        }
        self.plugin_text(&plugins.summary);
        // Nothing ran under --collect-only: pytest shows no durations.
        if !self.opts.collect_only {
            self.summary_durations();
        }
        if self.draws("short_test_summary") {
            self.short_summary();
        }
        self.interrupted(stop);
        match stop {
            Some(StopReason::MaxFail(n)) => {
                self.sep_line('!', &format!("stopping after {n} failures"), RED, false)
            }
            Some(StopReason::CollectionErrors(n)) => self.sep_line(
                '!',
                &format!(
                    "Interrupted: {n} error{} during collection",
                    if *n == 1 { "" } else { "s" }
                ),
                RED,
                false,
            ),
            Some(StopReason::PytestStop(reason)) if !reason.is_empty() => {
                self.sep_line('!', &format!("Interrupted: {reason}"), RED, false)
            }
            Some(StopReason::PytestExit(line, false)) => self.sep_line('!', line, RED, false),
            Some(StopReason::WorkersLost) => self.sep_line(
                '!',
                "every worker crashed; see the errors above",
                RED,
                false,
            ),
            _ => {}
        }
        self.final_line(elapsed);
        if let Some(StopReason::PytestExit(line, true)) = stop {
            self.sep_line('!', line, RED, false);
        }
        self.plugin_text(&plugins.after_final);
        let _ = self.out.flush();
    }
}

impl Terminal {
    /// A KeyboardInterrupt, where pytest's reporter shows it (after the
    /// summary, before the final line): its line as the title, then where
    /// a test raised it with a hint to use --full-trace, or the whole
    /// traceback with it.
    fn interrupted(&mut self, stop: Option<&StopReason>) {
        match stop {
            Some(StopReason::TestInterrupted(int)) => {
                self.line(&self.sep('!', &int.title));
                if !int.title.contains("KeyboardInterrupt") {
                    return;
                }
                match &int.location {
                    Some((path, lineno)) => {
                        let path = self.paint(path, RED, true);
                        self.line(&format!("{path}:{}: {}", py_str(*lineno), int.text));
                        let hint =
                            "(to show a full traceback on KeyboardInterrupt use --full-trace)";
                        self.line(&self.paint(hint, YELLOW, false));
                    }
                    None => {
                        for line in int.text.trim_end().lines() {
                            self.line(line);
                        }
                    }
                }
            }
            Some(StopReason::Signal(why)) => {
                self.line(&self.sep('!', "KeyboardInterrupt"));
                if !why.is_empty() && why != "KeyboardInterrupt" {
                    self.line(why);
                }
            }
            _ => {}
        }
    }

    /// Whether rtest draws this summary section (pytest's method name),
    /// rather than a plugin's terminal reporter in the controller; none
    /// with `--no-summary`.
    fn draws(&self, section: &str) -> bool {
        !self.opts.no_summary && !self.left_to_plugins.iter().any(|s| s == section)
    }

    /// A plugin's text during the run, below the progress so far.
    fn live_plugin_text(&mut self, text: &str) {
        self.after_result_line = false;
        self.hide_status();
        let mut text = text;
        if self.line_len > 0 {
            self.finish_progress_line_if_done();
            // The plugin ended the progress line itself, as it would
            // under pytest.
            text = text.strip_prefix('\n').unwrap_or(text);
        }
        let _ = self.out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = writeln!(self.out);
        }
        let _ = self.out.flush();
    }

    /// What plugins wrote after the test loop and in
    /// `pytest_sessionfinish`, shown below the progress: pytest's first
    /// `\n` ended its progress line (the coordinator ended its own) and
    /// its last is the blank line pytest leaves before the summary, shown
    /// only below something a plugin wrote.
    fn plugin_text_after_loop(&mut self, text: &str) {
        let text = text.strip_prefix('\n').unwrap_or(text);
        if !text.trim().is_empty() {
            self.plugin_text(text);
        }
    }

    /// Text plugins wrote in the controller's session, as they wrote it
    /// (their sections, markup and blank lines), ending its last line.
    fn plugin_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.after_result_line = false;
        self.hide_status();
        self.finish_progress_line();
        let _ = self.out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = writeln!(self.out);
        }
    }
}

/// pytest's `running_on_ci`: `CI` or `BUILD_NUMBER` set and not empty.
fn running_on_ci() -> bool {
    ["CI", "BUILD_NUMBER"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

fn crash_message(p: &PhaseReport) -> Option<String> {
    p.crash.as_ref().and_then(|c| c.message.clone())
}

fn skip_reason(p: &PhaseReport) -> Option<String> {
    if let Some(x) = &p.wasxfail {
        return Some(x.clone());
    }
    let reason = p.skip.as_ref()?.get(2).cloned().flatten()?;
    Some(
        reason
            .strip_prefix("Skipped: ")
            .unwrap_or(&reason)
            .to_string(),
    )
}

impl Reporter for Terminal {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::SessionStarted {
                worker,
                options,
                plugin_text,
            } => {
                self.apply(options);
                // Above rtest's header, without pytest's blank lines.
                let text = plugin_text.trim_start_matches('\n').trim_end();
                if !text.is_empty() {
                    self.line(text);
                }
                self.header(worker)
            }
            Event::Collected {
                rootdir,
                workers,
                total,
                per_worker,
                deselected,
                collect_reports,
                ids,
                listing,
                live_logging,
                header,
                collection_lines,
                plugin_text,
                left_to_plugins,
            } => {
                self.left_to_plugins = left_to_plugins.clone();
                self.collection_lines = collection_lines.clone();
                if *live_logging && self.opts.verbosity < 1 && !self.opts.collect_only {
                    // pytest's logging plugin turns -v on for live logs
                    // ("to avoid messy test progress output").
                    self.opts.verbosity = 1;
                }
                if !rootdir.is_empty() {
                    self.rootdir = Some(std::path::PathBuf::from(rootdir));
                }
                // pytest's header lines from the controller, else the
                // rootdir alone; none with --no-header.
                let mut header = if self.opts.no_header {
                    Vec::new()
                } else if header.is_empty() {
                    vec![format!("rootdir: {rootdir}")]
                } else {
                    header.clone()
                };
                // What plugins wrote below pytest's header.
                let text = plugin_text.trim_start_matches('\n').trim_end();
                if !text.is_empty() {
                    header.extend(text.lines().map(str::to_string));
                }
                self.on_collected(
                    &header,
                    workers,
                    *total,
                    *per_worker,
                    *deselected,
                    collect_reports,
                );
                if self.opts.collect_only {
                    self.listed = ids.len();
                    match listing {
                        Some(text) if !text.is_empty() => {
                            // pytest's blank line before its tree.
                            if self.opts.verbosity > -1 {
                                self.line("");
                            }
                            self.line(text.trim_end_matches('\n'));
                        }
                        _ => {
                            for id in ids {
                                self.line(id);
                            }
                        }
                    }
                    self.line("");
                }
            }
            Event::TestFinished(r) => self.on_result(r),
            Event::WorkerOutput { worker, data } => self.worker_output(worker, data),
            Event::ControllerOutput(data) => self.write_err(data),
            Event::PluginText(text) => self.live_plugin_text(text),
            Event::Notice(text) => {
                let _ = self.out.flush();
                self.hide_status();
                let painted = self.paint(&format!("rtest: {text}"), YELLOW, false);
                // In the flow of the progress, as xdist's node-down lines.
                self.finish_progress_line_if_done();
                let _ = writeln!(self.out, "{painted}");
                let _ = self.out.flush();
            }
            Event::Warning {
                nodeid,
                text,
                place,
                ..
            } => {
                self.stats.warnings += 1;
                let location = match place {
                    Some(place) if nodeid.is_empty() => place.clone(),
                    _ => nodeid.clone(),
                };
                self.warnings.push((location, text.clone()));
            }
            Event::Finished {
                stop,
                elapsed,
                error,
                plugins,
                ..
            } => self.finished(stop.as_ref(), *elapsed, error.as_ref(), plugins),
        }
    }

    fn tick(&mut self) {
        if self.opts.live && self.last_draw.elapsed() >= Duration::from_millis(200) {
            self.draw_status();
        }
    }
}

/// A string's width in columns as pytest's `wcswidth` gives it: -1 where
/// it holds a control character (terminal markup), and pytest's answer
/// decides how the short summary trims its lines.
fn pytest_width(text: &str) -> isize {
    let mut width = 0;
    for c in text.chars() {
        let o = c as u32;
        if o < 32 || (0x7f..0xa0).contains(&o) {
            return -1;
        }
        width += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0) as isize;
    }
    width
}

/// pytest's `_format_trimmed(" - {}", msg, available)`: the message's
/// first line after " - ", cut with "..." to what is left of the line, or
/// nothing where not even " - ..." fits.
fn trimmed_message(msg: &str, available: isize) -> Option<String> {
    let first = msg.split('\n').next().unwrap_or_default();
    const FORMAT: isize = 3;
    const ELLIPSIS: isize = 3;
    if FORMAT + ELLIPSIS > available {
        return None;
    }
    if FORMAT + pytest_width(first) <= available {
        return Some(format!(" - {first}"));
    }
    let available = available - ELLIPSIS;
    let mut cut: String = first.chars().take(available.max(0) as usize).collect();
    while FORMAT + pytest_width(&cut) > available {
        cut.pop();
    }
    Some(format!(" - {cut}..."))
}

/// A number as Python's `str()` writes it, `None` where there is none
/// (pytest's crash lines print a missing line number so).
fn py_str<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "None".to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::{pytest_width, trimmed_message};

    #[test]
    fn short_summary_messages_are_trimmed_as_pytest_trims_them() {
        // Room for all of it.
        assert_eq!(trimmed_message("boom\nmore", 8).as_deref(), Some(" - boom"));
        // Cut to the line, with the ellipsis.
        assert_eq!(trimmed_message("abcdefgh", 9).as_deref(), Some(" - abc..."));
        // Exactly room for " - ...": that is what pytest writes.
        assert_eq!(trimmed_message("abcdefgh", 6).as_deref(), Some(" - ..."));
        assert_eq!(trimmed_message("abcdefgh", 5), None);
        // Wide characters take two columns.
        assert_eq!(
            trimmed_message("日本語です", 10).as_deref(),
            Some(" - 日本...")
        );
        // A message with a control character has no width for pytest:
        // never cut.
        assert_eq!(
            trimmed_message("a\tbcdefghij", 7).as_deref(),
            Some(" - a\tbcdefghij")
        );
        // Markup makes the line's own width -1 (pytest then allows one
        // column more than the terminal has).
        assert_eq!(pytest_width("\x1b[31mFAILED\x1b[0m t.py"), -1);
        assert_eq!(pytest_width("FAILED t.py"), 11);
    }
}
