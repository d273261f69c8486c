//! rtest's options as one table: `--help` is printed from it and the shell
//! completion scripts (`rtest completions bash|zsh|fish`) are generated
//! from it, so the two cannot drift apart.

use std::fmt::Write as _;

/// What a shell offers for an option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Complete {
    /// The option takes no value.
    Flag,
    /// Anything (nothing to offer).
    Any,
    /// One of these words.
    Words(&'static [&'static str]),
    /// A file path.
    File,
    /// A directory.
    Dir,
    /// A profile defined in the config files (asked of rtest when
    /// completing: `rtest __complete profiles`).
    Profile,
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// `-n`, if it has a short form.
    pub short: Option<&'static str>,
    /// `--numprocesses`.
    pub long: &'static str,
    /// The value as `--help` names it (`N|auto|logical`), if any.
    pub value: Option<&'static str>,
    /// What completion offers for the value.
    pub complete: Complete,
    /// The help text (wrapped when printed).
    pub help: &'static str,
}

/// A titled group of options.
pub struct Section {
    /// `distribution`.
    pub title: &'static str,
    /// Its options.
    pub options: &'static [Opt],
    /// Printed as one compact list of names (pytest's own options that
    /// rtest reads).
    pub compact: bool,
}

/// A subcommand.
pub struct Command {
    /// `plan`.
    pub name: &'static str,
    /// Its positional arguments, as `--help` shows them.
    pub args: &'static str,
    /// What completion offers for them.
    pub complete: Complete,
    /// Its own options.
    pub options: &'static [Opt],
    /// It also takes a run's options (`rtest plan -n 4 tests`).
    pub run_options: bool,
    /// What it does.
    pub help: &'static str,
}

impl Command {
    /// `plan [ARGS] [--format text|json|dot] [--collect] [--probe]`.
    fn usage(&self) -> String {
        let mut s = format!("rtest {}", self.name);
        if !self.args.is_empty() {
            s.push(' ');
            s.push_str(self.args);
        }
        for o in self.options {
            s.push_str(&format!(" [{}]", names(o)));
        }
        s
    }
}

/// The distribution modes (`--dist`).
pub const DIST_MODES: &[&str] = &[
    "load",
    "loadscope",
    "loadfile",
    "loadgroup",
    "worksteal",
    "each",
    "no",
];

const fn opt(
    short: Option<&'static str>,
    long: &'static str,
    value: Option<&'static str>,
    complete: Complete,
    help: &'static str,
) -> Opt {
    Opt {
        short,
        long,
        value,
        complete,
        help,
    }
}

/// Every option, by section, in `--help` order.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "distribution",
        compact: false,
        options: &[
            opt(Some("-n"), "--numprocesses", Some("N|auto|logical"), Complete::Words(&["auto", "logical"]),
                "N local workers (auto: one per physical core, logical: one per logical CPU; 0: no distribution). Default without -n and --tx: auto."),
            opt(None, "--maxprocesses", Some("N"), Complete::Any, "at most N local workers, whatever -n says."),
            opt(None, "--tx", Some("SPEC"), Complete::Any,
                "add workers: [N*]popen [//python=PY] [//chdir=DIR] [//env:NAME=VALUE] [//id=ID] [//nice=N] [//dont_write_bytecode]; ssh=[USER@]HOST[:PORT] [//ssh_config=FILE] (your ssh config and keys; the host needs only Python 3.8+); socket=HOST:PORT (a host running `rtest socketserver`; the token comes from RTEST_TOKEN or RTEST_TOKEN_FILE); or exec=COMMAND, any command that gives a pipe to a Python (`docker exec -i C`, `kubectl exec -i POD --`, `srun`): the Python invocation is appended. Repeatable."),
            opt(None, "--rsyncdir", Some("DIR"), Complete::Dir,
                "mirror DIR to remote workers and popen//chdir= workers before they start (only changes travel; remote workers get the rootdir without one)."),
            opt(None, "--rsyncignore", Some("GLOB"), Complete::Any, "leave matching files out of the sync."),
            opt(None, "--require-all-hosts", None, Complete::Flag,
                "fail when a remote worker cannot be reached (default: go on with the others)."),
            opt(None, "--dist", Some("MODE"), Complete::Words(DIST_MODES),
                "how tests are spread over the workers: load (default), loadscope, loadfile, loadgroup, worksteal, each, no."),
            opt(Some("-d"), "", None, Complete::Flag, "the same as --dist load."),
            opt(None, "--max-worker-restart", Some("N"), Complete::Any,
                "replace at most N crashed workers (default 4 per worker)."),
            opt(None, "--maxschedchunk", Some("N"), Complete::Any,
                "send a worker at most N tests in one step (load, worksteal); as xdist's."),
            opt(None, "--loadscope-reorder", None, Complete::Flag,
                "loadscope, loadfile, loadgroup: hand out the largest scopes first (the default), as xdist does."),
            opt(None, "--no-loadscope-reorder", None, Complete::Flag,
                "loadscope, loadfile, loadgroup: hand out scopes in collection order, so every worker runs them in that order."),
            opt(None, "--testrunuid", Some("ID"), Complete::Any,
                "the run's id (the testrun_uid fixture, PYTEST_XDIST_TESTRUNUID) instead of a fresh one."),
            opt(None, "--timeout", Some("SECS"), Complete::Any,
                "fail a test still running after SECS, with its stack, and replace its worker (0: no timeout); with pytest-timeout installed, its --timeout, rtest killing only what it cannot stop."),
            opt(None, "--startup-timeout", Some("SECS"), Complete::Any,
                "kill a worker that has not reported its collection after SECS, saying where it hung (default 300; 0: none)."),
            opt(None, "--no-provision", None, Complete::Flag,
                "do not create a venv with pytest when the chosen interpreter lacks it; fail instead."),
            opt(None, "--shard", Some("K/N"), Complete::Any,
                "run only shard K of N: a deterministic split of the collected suite balanced by the duration history (.rtest/durations.json), for CI job matrices."),
        ],
    },
    Section {
        title: "config",
        compact: false,
        options: &[
            opt(None, "--profile", Some("NAME"), Complete::Profile, "apply profile NAME from the config files."),
            opt(None, "--no-config", None, Complete::Flag, "ignore conftest.kdl/conftest.toml/[tool.rtest]."),
            opt(None, "--strict-config", None, Complete::Flag,
                "unknown config keys are errors (also given to pytest)."),
        ],
    },
    Section {
        title: "outputs",
        compact: false,
        options: &[
            opt(None, "--junitxml", Some("PATH"), Complete::File, "write JUnit XML (pytest's xunit2 layout)."),
            opt(None, "--report-log", Some("PATH"), Complete::File, "write pytest-reportlog JSON lines."),
        ],
    },
    Section {
        title: "read by rtest and passed to pytest",
        compact: true,
        options: &[
            opt(Some("-x"), "--exitfirst", None, Complete::Flag, "stop at the first failure."),
            opt(None, "--maxfail", Some("N"), Complete::Any, "stop after N failures."),
            opt(Some("-v"), "--verbose", None, Complete::Flag, "more output."),
            opt(Some("-q"), "--quiet", None, Complete::Flag, "less output."),
            opt(None, "--tb", Some("STYLE"), Complete::Words(&["auto", "long", "short", "line", "native", "no"]), "traceback style."),
            opt(Some("-r"), "", Some("CHARS"), Complete::Any, "short summary of these outcomes."),
            opt(Some("-s"), "--capture", Some("METHOD"), Complete::Words(&["fd", "sys", "no", "tee-sys"]), "output capture (-s: none)."),
            opt(None, "--collect-only", None, Complete::Flag, "only collect."),
            opt(None, "--show-capture", Some("WHAT"), Complete::Words(&["no", "stdout", "stderr", "log", "all"]), "captured output shown with failures."),
            opt(None, "--durations", Some("N"), Complete::Any, "the N slowest tests."),
            opt(None, "--color", Some("WHEN"), Complete::Words(&["yes", "no", "auto"]), "terminal colors."),
            opt(None, "--basetemp", Some("DIR"), Complete::Dir, "one subdirectory per worker."),
            opt(None, "--continue-on-collection-errors", None, Complete::Flag, "run the tests even if collection failed somewhere."),
        ],
    },
    Section {
        title: "",
        compact: false,
        options: &[
            opt(Some("-h"), "--help", None, Complete::Flag, "this help; `pytest --help` lists pytest's options."),
            opt(Some("-V"), "--version", None, Complete::Flag, "rtest's version (and the commit it was built from)."),
        ],
    },
];

/// The subcommands.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "plan",
        args: "[ARGS]",
        complete: Complete::File,
        options: &[
            opt(None, "--format", Some("text|json|dot"), Complete::Words(&["text", "json", "dot"]), "how to print the plan."),
            opt(None, "--collect", None, Complete::Flag, "also collect, and show how the tests would be split."),
            opt(None, "--probe", None, Complete::Flag, "also ask each worker's Python what it is."),
        ],
        run_options: true,
        help: "show what a run would do, and where each setting came from, without running anything.",
    },
    Command {
        name: "schema",
        args: "config|plan",
        complete: Complete::Words(&["config", "plan"]),
        options: &[],
        run_options: false,
        help: "print the JSON Schema of the config or plan format.",
    },
    Command {
        name: "serve",
        args: "",
        complete: Complete::Flag,
        options: &[
            opt(None, "--listen", Some("HOST:PORT"), Complete::Any, "where to listen."),
            opt(None, "--token-file", Some("F"), Complete::File, "the shared token."),
            opt(None, "--insecure-no-token", None, Complete::Flag, "accept connections without a token."),
        ],
        run_options: false,
        help: "run workers on this host for remote rtest runs.",
    },
    Command {
        name: "socketserver",
        args: "",
        complete: Complete::Flag,
        options: &[],
        run_options: false,
        help: "print the single-file, stdlib-only Python socket server: `python3 socketserver.py --listen HOST:PORT` on a host with only Python.",
    },
    Command {
        name: "completions",
        args: "bash|zsh|fish",
        complete: Complete::Words(&["bash", "zsh", "fish"]),
        options: &[],
        run_options: false,
        help: "print a shell completion script (bash: `source <(rtest completions bash)`).",
    },
];

const INTRO: &str = "\
rtest: run a pytest suite on many workers.

usage: rtest [RTEST OPTIONS] [PYTEST OPTIONS] [FILE_OR_DIR ...]
       rtest COMMAND [ARGS]

rtest takes pytest's command line: every option below is rtest's, every
other option goes to pytest unchanged and in order (also options that a
conftest.py adds). `--` is optional; everything after it goes to pytest.
rtest's options are also read from the ini file's addopts and from
PYTEST_ADDOPTS (below rtest's config files and the command line), as an
existing pytest-xdist setup has them; pytest gets the rest.
";

const OUTRO: &str = "\
exit codes: 0 all passed, 1 tests failed, 2 interrupted or collection
errors, 3 internal error, 4 usage error, 5 no tests collected.
";

/// Where help text starts.
const HELP_COLUMN: usize = 24;
/// The width `--help` is wrapped to.
const WIDTH: usize = 76;

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// `-n, --numprocesses N|auto|logical`.
fn names(o: &Opt) -> String {
    let mut s = match (o.short, o.long) {
        (Some(short), "") => short.to_string(),
        (Some(short), long) => format!("{short}, {long}"),
        (None, long) => long.to_string(),
    };
    if let Some(v) = o.value {
        s.push(' ');
        s.push_str(v);
    }
    s
}

/// One entry: its names, then its help in the second column (on the next
/// line when the names are too long).
fn entry(out: &mut String, left: &str, help: &str) {
    let lines = wrap(help, WIDTH - HELP_COLUMN);
    let pad = " ".repeat(HELP_COLUMN);
    if left.len() + 2 + 2 <= HELP_COLUMN {
        let _ = writeln!(out, "  {left:<w$}{}", lines[0], w = HELP_COLUMN - 2);
    } else {
        let _ = writeln!(out, "  {left}");
        let _ = writeln!(out, "{pad}{}", lines[0]);
    }
    for l in &lines[1..] {
        let _ = writeln!(out, "{pad}{l}");
    }
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = String::from(INTRO);
    for section in SECTIONS {
        out.push('\n');
        if !section.title.is_empty() {
            let _ = writeln!(out, "{}:", section.title);
        }
        if section.compact {
            let all: Vec<String> = section
                .options
                .iter()
                .map(|o| match (o.short, o.long) {
                    (Some(s), "") => s.to_string(),
                    (Some(s), l) => format!("{s}/{l}"),
                    (None, l) => l.to_string(),
                })
                .collect();
            for l in wrap(&format!("{}.", all.join(", ")), WIDTH - 2) {
                let _ = writeln!(out, "  {l}");
            }
            continue;
        }
        for o in section.options {
            entry(&mut out, &names(o), o.help);
        }
        if section.title == "config" {
            for c in COMMANDS {
                entry(&mut out, &c.usage(), c.help);
            }
        }
    }
    out.push('\n');
    out.push_str(OUTRO);
    out
}

/// Every option, in table order.
pub fn all() -> impl Iterator<Item = &'static Opt> {
    SECTIONS.iter().flat_map(|s| s.options.iter())
}

/// The first sentence of a help text, for a completion's description.
fn brief(help: &str) -> String {
    let first = help.split("; ").next().unwrap_or(help);
    let first = first.split(" (").next().unwrap_or(first);
    first.trim_end_matches('.').to_string()
}

/// A completion script for `shell` (`bash`, `zsh` or `fish`).
pub fn completions(shell: &str) -> Option<String> {
    match shell {
        "bash" => Some(bash()),
        "zsh" => Some(zsh()),
        "fish" => Some(fish()),
        _ => None,
    }
}

/// The bash `case` arm that completes the value of `o`, if it takes one.
fn bash_value(o: &Opt) -> Option<String> {
    let flags: Vec<&str> = [o.short, Some(o.long).filter(|l| !l.is_empty())]
        .into_iter()
        .flatten()
        .collect();
    let reply = match o.complete {
        Complete::Flag => return None,
        Complete::Any => "return 0".to_string(),
        Complete::Words(w) => {
            format!("COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")); return 0", w.join(" "))
        }
        Complete::File => "COMPREPLY=($(compgen -f -- \"$cur\")); return 0".to_string(),
        Complete::Dir => "COMPREPLY=($(compgen -d -- \"$cur\")); return 0".to_string(),
        Complete::Profile => "COMPREPLY=($(compgen -W \"$(rtest __complete profiles 2>/dev/null)\" -- \"$cur\")); return 0".to_string(),
    };
    Some(format!(
        "        {})\n            {reply};;\n",
        flags.join("|")
    ))
}

/// An option's names, for a list of words.
fn flags(o: &Opt) -> impl Iterator<Item = &'static str> {
    [o.short, Some(o.long).filter(|l| !l.is_empty())]
        .into_iter()
        .flatten()
}

fn bash() -> String {
    let run_words: Vec<&str> = all().flat_map(flags).collect();
    let mut cases: String = all().filter_map(bash_value).collect();
    let mut subs = String::new();
    for c in COMMANDS {
        cases.extend(c.options.iter().filter_map(bash_value));
        let mut words: Vec<&str> = c.options.iter().flat_map(flags).collect();
        if c.run_options {
            words.extend(&run_words);
        }
        let positional = match c.complete {
            Complete::Words(w) => {
                format!("COMPREPLY=($(compgen -W \"{}\" -- \"$cur\"))", w.join(" "))
            }
            Complete::File => "COMPREPLY=($(compgen -f -- \"$cur\"))".to_string(),
            _ => "COMPREPLY=()".to_string(),
        };
        let _ = writeln!(
            subs,
            "        {})\n            if [[ \"$cur\" == -* ]]; then COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")); else {positional}; fi\n            return 0;;",
            c.name,
            words.join(" ")
        );
    }
    let commands: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    format!(
        r#"# bash completion for rtest (generated by `rtest completions bash`)
_rtest() {{
    local cur prev
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
{cases}    esac
    if [[ $COMP_CWORD -gt 1 ]]; then
        case "${{COMP_WORDS[1]}}" in
{subs}        esac
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "{words}" -- "$cur"))
        return 0
    fi
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{commands}" -- "$cur") $(compgen -f -- "$cur"))
        return 0
    fi
    COMPREPLY=($(compgen -f -- "$cur"))
}}
complete -o filenames -F _rtest rtest
"#,
        words = run_words.join(" "),
        commands = commands.join(" "),
    )
}

/// Text inside a zsh `_arguments` spec's brackets, or a single-quoted
/// shell word.
fn zsh_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\'', "'\\''")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .replace(':', "\\:")
}

/// `_arguments` specs for these options.
fn zsh_specs(options: &[Opt]) -> String {
    let mut specs = String::new();
    for o in options {
        let desc = zsh_escape(&brief(o.help));
        let action = match o.complete {
            Complete::Flag => String::new(),
            Complete::Any => format!(":{}: ", zsh_escape(o.value.unwrap_or("value"))),
            Complete::Words(w) => format!(
                ":{}:({})",
                zsh_escape(o.value.unwrap_or("value")),
                w.join(" ")
            ),
            Complete::File => ":file:_files".to_string(),
            Complete::Dir => ":directory:_files -/".to_string(),
            Complete::Profile => ":profile:_rtest_profiles".to_string(),
        };
        let repeat = if matches!(o.long, "--tx" | "--rsyncdir" | "--rsyncignore")
            || matches!(o.short, Some("-v" | "-q"))
        {
            "*"
        } else {
            ""
        };
        for flag in flags(o) {
            let _ = writeln!(specs, "        '{repeat}{flag}[{desc}]{action}' \\");
        }
    }
    specs
}

fn zsh() -> String {
    let run: Vec<Opt> = all().copied().collect();
    let commands: Vec<String> = COMMANDS
        .iter()
        .map(|c| format!("'{}:{}'", c.name, zsh_escape(&brief(c.help))))
        .collect();
    let mut subs = String::new();
    for c in COMMANDS {
        let mut options: Vec<Opt> = c.options.to_vec();
        if c.run_options {
            options.extend(run.iter().copied());
        }
        let rest = match c.complete {
            Complete::Words(w) => format!("'*:argument:({})'", w.join(" ")),
            Complete::File => "'*:file or directory:_files'".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            subs,
            "    {})\n        shift words; (( CURRENT-- ))\n        _arguments -s \\\n{}        {rest}\n        ;;",
            c.name,
            zsh_specs(&options)
        );
    }
    format!(
        r#"#compdef rtest
# zsh completion for rtest (generated by `rtest completions zsh`)
_rtest_profiles() {{
    local -a profiles
    profiles=(${{(f)"$(rtest __complete profiles 2>/dev/null)"}})
    _describe 'profile' profiles
}}
_rtest() {{
    local -a commands
    commands=({commands})
    if (( CURRENT == 2 )) && [[ "${{words[2]}}" != -* ]]; then
        _describe 'command' commands
        _files
        return
    fi
    case "${{words[2]}}" in
{subs}    *)
        _arguments -s \
{specs}        '*:file or directory:_files'
        ;;
    esac
}}
if [ "$funcstack[1]" = "_rtest" ]; then
    _rtest "$@"
else
    compdef _rtest rtest
fi
"#,
        commands = commands.join(" "),
        specs = zsh_specs(&run),
    )
}

/// A fish `complete` line for `o`, under `condition` if any.
fn fish_line(o: &Opt, condition: Option<&str>) -> String {
    let mut line = String::from("complete -c rtest");
    if let Some(c) = condition {
        let _ = write!(line, " -n '{c}'");
    }
    if let Some(s) = o.short {
        let _ = write!(line, " -s {}", s.trim_start_matches('-'));
    }
    if !o.long.is_empty() {
        let _ = write!(line, " -l {}", o.long.trim_start_matches("--"));
    }
    match o.complete {
        Complete::Flag => {}
        Complete::Any => line.push_str(" -x"),
        Complete::Words(w) => {
            let _ = write!(line, " -x -a '{}'", w.join(" "));
        }
        Complete::File | Complete::Dir => line.push_str(" -r -F"),
        Complete::Profile => {
            line.push_str(" -x -a '(rtest __complete profiles 2>/dev/null)'");
        }
    }
    let _ = write!(line, " -d '{}'", brief(o.help).replace('\'', "\\'"));
    line
}

fn fish() -> String {
    let mut out = String::from(
        "# fish completion for rtest (generated by `rtest completions fish`)\ncomplete -c rtest -f\n",
    );
    let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    let plain = format!("not __fish_seen_subcommand_from {}", names.join(" "));
    for c in COMMANDS {
        let _ = writeln!(
            out,
            "complete -c rtest -n __fish_use_subcommand -a {} -d '{}'",
            c.name,
            brief(c.help).replace('\'', "\\'")
        );
        let seen = format!("__fish_seen_subcommand_from {}", c.name);
        for o in c.options {
            let _ = writeln!(out, "{}", fish_line(o, Some(&seen)));
        }
        if let Complete::Words(w) = c.complete {
            let _ = writeln!(out, "complete -c rtest -n '{seen}' -x -a '{}'", w.join(" "));
        }
    }
    for o in all() {
        // A run's options, also after `rtest plan`.
        let condition = format!("{plain}; or __fish_seen_subcommand_from plan");
        let _ = writeln!(out, "{}", fish_line(o, Some(&condition)));
    }
    // Test paths.
    let _ = writeln!(
        out,
        "complete -c rtest -n '{plain}; or __fish_seen_subcommand_from plan' -F"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_option_of_the_table() {
        let text = help();
        for o in all() {
            let name = if o.long.is_empty() {
                o.short.unwrap_or_default()
            } else {
                o.long
            };
            assert!(text.contains(name), "{name} missing from --help");
        }
        for line in text.lines() {
            assert!(line.len() <= WIDTH + 4, "too wide: {line}");
        }
    }

    #[test]
    fn the_table_and_the_parser_know_the_same_options() {
        let own = &SECTIONS[..3];
        for o in own
            .iter()
            .flat_map(|s| s.options)
            .filter(|o| !o.long.is_empty())
        {
            let parsed = super::super::args::own_long(o.long) || o.long == "--strict-config";
            assert!(
                parsed,
                "{} is in --help but rtest does not parse it",
                o.long
            );
            assert_eq!(
                super::super::args::OWN_WITH_VALUE.contains(&o.long),
                o.value.is_some(),
                "{}: takes a value in one and not the other",
                o.long
            );
        }
        for name in super::super::args::OWN_WITH_VALUE {
            let aliases = ["--junit-xml", "--maxfail"];
            assert!(
                aliases.contains(name) || all().any(|o| o.long == *name),
                "{name} is parsed but not in --help"
            );
        }
    }

    #[test]
    fn every_script_offers_every_long_option() {
        for shell in ["bash", "zsh", "fish"] {
            let script = completions(shell).unwrap();
            let subs = COMMANDS.iter().flat_map(|c| c.options.iter());
            for o in all().chain(subs).filter(|o| !o.long.is_empty()) {
                let want = match shell {
                    "fish" => format!("-l {}", o.long.trim_start_matches("--")),
                    _ => o.long.to_string(),
                };
                assert!(script.contains(&want), "{shell}: {} missing", o.long);
            }
            assert!(script.contains("loadscope"), "{shell}: no --dist modes");
            assert!(
                script.contains("__complete profiles"),
                "{shell}: no profiles"
            );
        }
        assert!(completions("powershell").is_none());
    }
}
