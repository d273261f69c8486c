//! The tx spec grammar: where workers run.
//!
//! Compatible with execnet/pytest-xdist specs: an optional `N*` prefix, then
//! `//`-separated parts, exactly one of which names the transport
//! (`popen`, `ssh=[user@]host[:port]`, `ssh=-p PORT [user@]host`,
//! `socket=host:port`, `exec=COMMAND`); the others are `python=`, `chdir=`, `env:NAME=value`,
//! `id=`, `nice=`, `dont_write_bytecode` and `ssh_config=`. [`TxSpec`] is the
//! parsed form; its `Display` writes a spec that parses back to the same value.

use std::fmt;
use std::str::FromStr;

/// Where a worker's Python runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transport {
    /// A local child process.
    Popen,
    /// A Python started over ssh.
    Ssh {
        /// Login user, when given.
        user: Option<String>,
        /// Host name or address.
        host: String,
        /// Port, when given.
        port: Option<u16>,
    },
    /// A TCP connection to `rtest serve` or the Python socket server.
    Socket {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A command that gives a pipe to a Python somewhere (`docker exec -i
    /// C`, `kubectl exec -i POD --`, `srun`, `bwrap ...`): the Python
    /// invocation is appended to it.
    Exec {
        /// The command, split by shell word rules.
        argv: Vec<String>,
    },
}

impl Transport {
    /// The transport's name: `popen`, `ssh`, `socket` or `exec`.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Popen => "popen",
            Transport::Ssh { .. } => "ssh",
            Transport::Socket { .. } => "socket",
            Transport::Exec { .. } => "exec",
        }
    }

    /// The host this transport reaches (`localhost` for popen; for exec,
    /// the command that reaches it).
    pub fn host(&self) -> String {
        match self {
            Transport::Popen => "localhost".to_string(),
            Transport::Ssh { host, .. } | Transport::Socket { host, .. } => host.clone(),
            Transport::Exec { argv } => crate::config::pytest_ini::join(argv),
        }
    }
}

/// One parsed `--tx` spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TxSpec {
    /// How many workers this spec starts (`N*`).
    pub count: usize,
    /// Where they run.
    pub transport: Transport,
    /// The interpreter (`python=`), if not the default.
    pub python: Option<String>,
    /// Working directory (`chdir=`).
    pub chdir: Option<String>,
    /// Environment variables (`env:NAME=value`), in spec order.
    pub env: Vec<(String, String)>,
    /// Worker id prefix (`id=`).
    pub id: Option<String>,
    /// Niceness (`nice=`).
    pub nice: Option<i32>,
    /// Set `PYTHONDONTWRITEBYTECODE` (`dont_write_bytecode`).
    pub dont_write_bytecode: bool,
    /// ssh config file (`ssh_config=`).
    pub ssh_config: Option<String>,
}

impl TxSpec {
    /// A plain `popen` spec for the given interpreter.
    pub fn popen(python: Option<String>) -> Self {
        TxSpec {
            count: 1,
            transport: Transport::Popen,
            python,
            chdir: None,
            env: Vec::new(),
            id: None,
            nice: None,
            dont_write_bytecode: false,
            ssh_config: None,
        }
    }
}

/// Why a spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse tx spec \"{spec}\": {kind}")]
pub struct SpecError {
    /// The whole spec as given.
    pub spec: String,
    /// What is wrong.
    pub kind: SpecErrorKind,
}

/// The ways a spec can be wrong; each names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecErrorKind {
    /// The spec is empty.
    #[error("the spec is empty (expected e.g. \"popen\", \"ssh=host\" or \"socket=host:port\")")]
    Empty,
    /// `N*` with a bad N.
    #[error("bad count \"{0}\" before '*': expected a whole number of at least 1")]
    BadCount(String),
    /// No `popen`/`ssh=`/`socket=`/`exec=` part.
    #[error("no transport: add one of \"popen\", \"ssh=HOST\", \"socket=HOST:PORT\" or \"exec=COMMAND\"")]
    NoTransport,
    /// More than one transport.
    #[error("more than one transport (\"{0}\" and \"{1}\")")]
    TwoTransports(String, String),
    /// A part rtest does not know.
    #[error("unknown part \"{0}\" (known: popen, ssh=, socket=, exec=, python=, chdir=, env:NAME=, id=, nice=, dont_write_bytecode, ssh_config=)")]
    UnknownKey(String),
    /// A part given twice.
    #[error("\"{0}\" is given more than once")]
    Duplicate(String),
    /// A key that needs a value has none.
    #[error("\"{0}\" needs a value, as in \"{0}=VALUE\"")]
    MissingValue(String),
    /// A key that takes no value has one.
    #[error("\"{0}\" takes no value")]
    UnexpectedValue(String),
    /// `ssh=` without a host.
    #[error("\"{0}\": missing host")]
    MissingHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("bad port \"{port}\" in \"{part}\": expected a number from 1 to 65535")]
    BadPort {
        /// The part.
        part: String,
        /// The port text.
        port: String,
    },
    /// `socket=` without `:port`.
    #[error("\"{0}\": missing port, as in \"socket=HOST:PORT\"")]
    MissingPort(String),
    /// `env:` with a bad name.
    #[error("bad environment variable name in \"{0}\"")]
    BadEnvName(String),
    /// `nice=` that is not an integer.
    #[error("bad niceness \"{0}\": expected an integer")]
    BadNice(String),
    /// An empty part (`popen////python=x`).
    #[error("empty part between '//' separators")]
    EmptyPart,
    /// `exec=` whose command does not split into words.
    #[error("bad command in \"{part}\": {why} (quote as in a shell: exec=sh -c 'cd /w && exec \"$@\"' sh)")]
    BadCommand {
        /// The part.
        part: String,
        /// What is wrong.
        why: String,
    },
}

impl FromStr for TxSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        parse(spec).map_err(|kind| SpecError {
            spec: spec.to_string(),
            kind,
        })
    }
}

fn parse(spec: &str) -> Result<TxSpec, SpecErrorKind> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(SpecErrorKind::Empty);
    }
    let (count, rest) = split_count(spec)?;
    let mut out = TxSpec::popen(None);
    out.count = count;
    let mut transport: Option<(String, Transport)> = None;
    let mut seen: Vec<String> = Vec::new();
    for part in split_parts(rest) {
        if part.is_empty() {
            return Err(SpecErrorKind::EmptyPart);
        }
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        if let Some(name) = key.strip_prefix("env:") {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(SpecErrorKind::BadEnvName(part.to_string()));
            }
            let value = value.ok_or_else(|| SpecErrorKind::MissingValue(key.to_string()))?;
            out.env.push((name.to_string(), value.to_string()));
            continue;
        }
        let is_transport = matches!(key, "popen" | "ssh" | "socket" | "exec");
        if !is_transport {
            if seen.iter().any(|s| s == key) {
                return Err(SpecErrorKind::Duplicate(key.to_string()));
            }
            seen.push(key.to_string());
        }
        let need = |v: Option<&str>| -> Result<String, SpecErrorKind> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(SpecErrorKind::MissingValue(key.to_string())),
            }
        };
        match key {
            "popen" | "ssh" | "socket" | "exec" => {
                let parsed = match key {
                    "popen" => {
                        if value.is_some() {
                            return Err(SpecErrorKind::UnexpectedValue("popen".into()));
                        }
                        Transport::Popen
                    }
                    "ssh" => parse_ssh(part, value.unwrap_or(""))?,
                    "exec" => parse_exec(part, value.unwrap_or(""))?,
                    _ => parse_socket(part, value.unwrap_or(""))?,
                };
                if let Some((first, _)) = &transport {
                    return Err(SpecErrorKind::TwoTransports(
                        first.clone(),
                        part.to_string(),
                    ));
                }
                transport = Some((part.to_string(), parsed));
            }
            "python" => out.python = Some(need(value)?),
            "chdir" => out.chdir = Some(need(value)?),
            "id" => out.id = Some(need(value)?),
            "ssh_config" => out.ssh_config = Some(need(value)?),
            "nice" => {
                let v = need(value)?;
                out.nice = Some(v.parse().map_err(|_| SpecErrorKind::BadNice(v.clone()))?);
            }
            "dont_write_bytecode" => {
                if value.is_some() {
                    return Err(SpecErrorKind::UnexpectedValue(key.to_string()));
                }
                out.dont_write_bytecode = true;
            }
            _ => return Err(SpecErrorKind::UnknownKey(part.to_string())),
        }
    }
    out.transport = transport.ok_or(SpecErrorKind::NoTransport)?.1;
    Ok(out)
}

/// The `//`-separated parts. Inside an `exec=` part, `//` within shell
/// quotes does not separate (`exec=sh -c 'cd //srv && exec "$@"' sh`).
fn split_parts(rest: &str) -> Vec<&str> {
    let bytes = rest.as_bytes();
    let (mut parts, mut start, mut i) = (Vec::new(), 0, 0);
    // Quote state, kept only while the current part is an exec= command.
    let (mut single, mut double) = (false, false);
    while i < bytes.len() {
        let quoting = rest[start..].starts_with("exec=");
        let b = bytes[i];
        if quoting && single {
            single = b != b'\'';
        } else if quoting && b == b'\\' {
            i += 1;
        } else if quoting && double {
            double = b != b'"';
        } else if quoting && b == b'\'' {
            single = true;
        } else if quoting && b == b'"' {
            double = true;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            parts.push(&rest[start..i]);
            i += 2;
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&rest[start.min(rest.len())..]);
    parts
}

fn parse_exec(part: &str, value: &str) -> Result<Transport, SpecErrorKind> {
    let argv =
        crate::config::pytest_ini::split(value).map_err(|why| SpecErrorKind::BadCommand {
            part: part.to_string(),
            why,
        })?;
    if argv.is_empty() {
        return Err(SpecErrorKind::MissingValue("exec".into()));
    }
    Ok(Transport::Exec { argv })
}

fn split_count(spec: &str) -> Result<(usize, &str), SpecErrorKind> {
    // Only a leading run of digits before '*' is a count: '*' may appear in
    // values (a chdir glob, an env value) too.
    if let Some((n, rest)) = spec.split_once('*') {
        if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
            return match n.parse::<usize>() {
                Ok(c) if c >= 1 => Ok((c, rest)),
                _ => Err(SpecErrorKind::BadCount(n.to_string())),
            };
        }
        if !n.contains('=') && !n.contains("//") {
            return Err(SpecErrorKind::BadCount(n.to_string()));
        }
    }
    Ok((1, spec))
}

fn parse_port(part: &str, port: &str) -> Result<u16, SpecErrorKind> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(SpecErrorKind::BadPort {
            part: part.to_string(),
            port: port.to_string(),
        }),
    }
}

fn parse_ssh(part: &str, value: &str) -> Result<Transport, SpecErrorKind> {
    let value = value.trim();
    let mut port = None;
    let mut target = value;
    // execnet accepted ssh options before the host: "ssh=-p 2222 user@host".
    if let Some(rest) = value.strip_prefix("-p") {
        let rest = rest.trim_start();
        let (p, t) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        port = Some(parse_port(part, p)?);
        target = t.trim();
    }
    let (user, hostport) = match target.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some((_, h)) => (None, h),
        None => (None, target),
    };
    let host = if let Some(rest) = hostport.strip_prefix('[') {
        // [ipv6]:port
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| SpecErrorKind::MissingHost(part.into()))?;
        if let Some(p) = after.strip_prefix(':') {
            port = Some(parse_port(part, p)?);
        }
        h.to_string()
    } else if hostport.matches(':').count() == 1 {
        let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
        port = Some(parse_port(part, p)?);
        h.to_string()
    } else {
        hostport.to_string()
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(SpecErrorKind::MissingHost(part.to_string()));
    }
    Ok(Transport::Ssh { user, host, port })
}

fn parse_socket(part: &str, value: &str) -> Result<Transport, SpecErrorKind> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| SpecErrorKind::MissingHost(part.into()))?;
        (
            h,
            after
                .strip_prefix(':')
                .ok_or_else(|| SpecErrorKind::MissingPort(part.into()))?,
        )
    } else {
        value
            .rsplit_once(':')
            .ok_or_else(|| SpecErrorKind::MissingPort(part.into()))?
    };
    if host.is_empty() {
        return Err(SpecErrorKind::MissingHost(part.to_string()));
    }
    Ok(Transport::Socket {
        host: host.to_string(),
        port: parse_port(part, port)?,
    })
}

impl fmt::Display for TxSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count != 1 {
            write!(f, "{}*", self.count)?;
        }
        match &self.transport {
            Transport::Popen => write!(f, "popen")?,
            Transport::Ssh { user, host, port } => {
                write!(f, "ssh=")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    write!(f, "{host}")?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
            }
            Transport::Socket { host, port } => {
                if host.contains(':') {
                    write!(f, "socket=[{host}]:{port}")?;
                } else {
                    write!(f, "socket={host}:{port}")?;
                }
            }
            Transport::Exec { argv } => {
                let mut text = crate::config::pytest_ini::join(argv);
                // A last word ending in `/` would run into the `//` after it.
                if text.ends_with('/') {
                    let last = argv.last().map(String::as_str).unwrap_or_default();
                    text.truncate(text.len() - last.len());
                    text.push_str(&format!("'{last}'"));
                }
                write!(f, "exec={text}")?;
            }
        }
        if let Some(v) = &self.id {
            write!(f, "//id={v}")?;
        }
        if let Some(v) = &self.python {
            write!(f, "//python={v}")?;
        }
        if let Some(v) = &self.chdir {
            write!(f, "//chdir={v}")?;
        }
        for (k, v) in &self.env {
            write!(f, "//env:{k}={v}")?;
        }
        if let Some(v) = self.nice {
            write!(f, "//nice={v}")?;
        }
        if self.dont_write_bytecode {
            write!(f, "//dont_write_bytecode")?;
        }
        if let Some(v) = &self.ssh_config {
            write!(f, "//ssh_config={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> TxSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        s.parse::<TxSpec>().unwrap_err().to_string()
    }

    #[test]
    fn valid_specs() {
        let cases: &[(&str, usize, Transport)] = &[
            ("popen", 1, Transport::Popen),
            ("3*popen", 3, Transport::Popen),
            (
                "ssh=build1",
                1,
                Transport::Ssh {
                    user: None,
                    host: "build1".into(),
                    port: None,
                },
            ),
            (
                "ssh=ci@build1:2222",
                1,
                Transport::Ssh {
                    user: Some("ci".into()),
                    host: "build1".into(),
                    port: Some(2222),
                },
            ),
            (
                "ssh=-p 2222 ci@build1",
                1,
                Transport::Ssh {
                    user: Some("ci".into()),
                    host: "build1".into(),
                    port: Some(2222),
                },
            ),
            (
                "socket=10.0.0.2:8888",
                1,
                Transport::Socket {
                    host: "10.0.0.2".into(),
                    port: 8888,
                },
            ),
            (
                "socket=[::1]:8888",
                1,
                Transport::Socket {
                    host: "::1".into(),
                    port: 8888,
                },
            ),
            (
                "4*ssh=[::1]:22",
                4,
                Transport::Ssh {
                    user: None,
                    host: "::1".into(),
                    port: Some(22),
                },
            ),
        ];
        for (spec, count, transport) in cases {
            let parsed = ok(spec);
            assert_eq!(parsed.count, *count, "{spec}");
            assert_eq!(&parsed.transport, transport, "{spec}");
        }
    }

    #[test]
    fn options_parse() {
        let s = ok("2*popen//python=python3.12//chdir=/tmp/x//env:A=1//env:B=x=y//id=fast//nice=5//dont_write_bytecode");
        assert_eq!(s.python.as_deref(), Some("python3.12"));
        assert_eq!(s.chdir.as_deref(), Some("/tmp/x"));
        assert_eq!(
            s.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(s.id.as_deref(), Some("fast"));
        assert_eq!(s.nice, Some(5));
        assert!(s.dont_write_bytecode);
        // the transport may come after other parts, as execnet allowed
        assert_eq!(ok("python=python3//popen").transport, Transport::Popen);
    }

    #[test]
    fn errors_name_the_part() {
        let cases: &[(&str, &str)] = &[
            ("", "failed to parse tx spec \"\": the spec is empty (expected e.g. \"popen\", \"ssh=host\" or \"socket=host:port\")"),
            ("0*popen", "failed to parse tx spec \"0*popen\": bad count \"0\" before '*': expected a whole number of at least 1"),
            ("x*popen", "failed to parse tx spec \"x*popen\": bad count \"x\" before '*': expected a whole number of at least 1"),
            ("python=python3", "failed to parse tx spec \"python=python3\": no transport: add one of \"popen\", \"ssh=HOST\", \"socket=HOST:PORT\" or \"exec=COMMAND\""),
            ("popen//ssh=h", "failed to parse tx spec \"popen//ssh=h\": more than one transport (\"popen\" and \"ssh=h\")"),
            ("popen//pyhton=x", "failed to parse tx spec \"popen//pyhton=x\": unknown part \"pyhton=x\" (known: popen, ssh=, socket=, exec=, python=, chdir=, env:NAME=, id=, nice=, dont_write_bytecode, ssh_config=)"),
            ("popen//python=", "failed to parse tx spec \"popen//python=\": \"python\" needs a value, as in \"python=VALUE\""),
            ("popen//python", "failed to parse tx spec \"popen//python\": \"python\" needs a value, as in \"python=VALUE\""),
            ("ssh=", "failed to parse tx spec \"ssh=\": \"ssh=\": missing host"),
            ("ssh=h:99999", "failed to parse tx spec \"ssh=h:99999\": bad port \"99999\" in \"ssh=h:99999\": expected a number from 1 to 65535"),
            ("socket=host", "failed to parse tx spec \"socket=host\": \"socket=host\": missing port, as in \"socket=HOST:PORT\""),
            ("socket=:80", "failed to parse tx spec \"socket=:80\": \"socket=:80\": missing host"),
            ("popen//env:=1", "failed to parse tx spec \"popen//env:=1\": bad environment variable name in \"env:=1\""),
            ("popen//nice=high", "failed to parse tx spec \"popen//nice=high\": bad niceness \"high\": expected an integer"),
            ("popen////python=x", "failed to parse tx spec \"popen////python=x\": empty part between '//' separators"),
            ("popen//id=a//id=b", "failed to parse tx spec \"popen//id=a//id=b\": \"id\" is given more than once"),
            ("popen=1", "failed to parse tx spec \"popen=1\": \"popen\" takes no value"),
        ];
        for (spec, want) in cases {
            assert_eq!(&err(spec), want, "{spec}");
        }
    }

    #[test]
    fn exec_commands_split_like_a_shell() {
        let s = ok("2*exec=kubectl exec -i runner-0 --//python=python3//chdir=/w");
        assert_eq!(s.count, 2);
        assert_eq!(
            s.transport,
            Transport::Exec {
                argv: ["kubectl", "exec", "-i", "runner-0", "--"]
                    .map(String::from)
                    .to_vec()
            }
        );
        assert_eq!(s.python.as_deref(), Some("python3"));
        // `//` inside quotes belongs to the command
        let s = ok("exec=sh -c 'cd //srv && exec \"$@\"' sh//env:A=1");
        assert_eq!(
            s.transport,
            Transport::Exec {
                argv: ["sh", "-c", "cd //srv && exec \"$@\"", "sh"]
                    .map(String::from)
                    .to_vec()
            }
        );
        assert_eq!(s.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(s.transport.host(), "sh -c 'cd //srv && exec \"$@\"' sh");
        assert_eq!(
            err("exec=sh -c 'x"),
            "failed to parse tx spec \"exec=sh -c 'x\": bad command in \"exec=sh -c 'x\": no closing quotation (quote as in a shell: exec=sh -c 'cd /w && exec \"$@\"' sh)"
        );
        assert_eq!(
            err("exec=  //python=x"),
            "failed to parse tx spec \"exec=  //python=x\": \"exec\" needs a value, as in \"exec=VALUE\""
        );
        assert_eq!(
            err("exec=a//popen"),
            "failed to parse tx spec \"exec=a//popen\": more than one transport (\"exec=a\" and \"popen\")"
        );
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "popen",
            "3*popen//python=python3.12",
            "ssh=ci@build1:2222//python=python3//chdir=work",
            "socket=[::1]:8888//id=x//env:A=b",
            "popen//nice=-3//dont_write_bytecode//ssh_config=cfg",
            "4*exec=docker exec -i ci-runner//python=/usr/bin/python3//chdir=/work",
            "exec=curl 'http://x' 'a b' 'x/'//id=c",
        ] {
            let parsed = ok(spec);
            let again = ok(&parsed.to_string());
            assert_eq!(parsed, again, "{spec} -> {parsed}");
        }
    }

    /// Property: for generated specs, parse -> display -> parse is the
    /// identity (a small xorshift generator keeps it dependency-free and
    /// reproducible).
    #[test]
    fn property_parse_display_parse() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let words = [
            "a",
            "build1",
            "py3",
            "x_y",
            "h-1",
            "python3.12",
            "/usr/bin/python3",
            "w/dir",
        ];
        for _ in 0..2000 {
            let mut parts: Vec<String> = Vec::new();
            let transport = match next(3) {
                0 => "popen".to_string(),
                1 => {
                    let user = if next(2) == 0 {
                        format!("{}@", words[next(5) as usize])
                    } else {
                        String::new()
                    };
                    let port = if next(2) == 0 {
                        format!(":{}", 1 + next(65000))
                    } else {
                        String::new()
                    };
                    format!(
                        "ssh={user}{}{port}",
                        ["build1", "h-1", "example.org", "10.0.0.1"][next(4) as usize]
                    )
                }
                _ => format!(
                    "socket={}:{}",
                    ["build3", "127.0.0.1", "[::1]"][next(3) as usize],
                    1 + next(65000)
                ),
            };
            parts.push(transport);
            if next(2) == 0 {
                parts.push(format!(
                    "python={}",
                    words[next(words.len() as u64) as usize]
                ));
            }
            if next(3) == 0 {
                parts.push(format!(
                    "chdir={}",
                    words[next(words.len() as u64) as usize]
                ));
            }
            for k in 0..next(3) {
                parts.push(format!(
                    "env:V{k}={}",
                    words[next(words.len() as u64) as usize]
                ));
            }
            if next(4) == 0 {
                parts.push(format!("nice={}", next(20) as i64 - 10));
            }
            if next(4) == 0 {
                parts.push("dont_write_bytecode".into());
            }
            if next(4) == 0 {
                parts.push(format!("id={}", words[next(4) as usize]));
            }
            // execnet allowed the parts in any order
            let rot = next(parts.len() as u64) as usize;
            parts.rotate_left(rot);
            let count = if next(2) == 0 {
                format!("{}*", 1 + next(16))
            } else {
                String::new()
            };
            let spec = format!("{count}{}", parts.join("//"));
            let parsed = ok(&spec);
            assert_eq!(parsed, ok(&parsed.to_string()), "{spec} -> {parsed}");
        }
    }
}
