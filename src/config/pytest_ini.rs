//! What rtest reads from pytest's own ini file (the one pytest's rootdir
//! rules pick: pytest.ini, .pytest.ini, pyproject.toml, tox.ini,
//! setup.cfg): `addopts`, and pytest-xdist's `rsyncdirs` and
//! `rsyncignore`, with the line each was written on.

use super::ConfigError;
use std::path::{Path, PathBuf};

/// One ini value: its items (an `args`/`paths` value split as pytest
/// splits it) and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniValue {
    /// The items, in order.
    pub items: Vec<String>,
    /// 1-based line of the key.
    pub line: usize,
}

/// The keys rtest reads from a pytest ini file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PytestIni {
    /// The file.
    pub path: PathBuf,
    /// `addopts`, split like a shell (as pytest's `shlex.split`).
    pub addopts: Option<IniValue>,
    /// xdist's `rsyncdirs`, relative to the file's directory.
    pub rsyncdirs: Option<IniValue>,
    /// xdist's `rsyncignore`, relative to the file's directory.
    pub rsyncignore: Option<IniValue>,
}

/// Read `addopts`, `rsyncdirs` and `rsyncignore` from the ini file pytest
/// uses.
pub fn read(path: &Path) -> Result<PytestIni, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let values = if name == "pyproject.toml" {
        toml_values(path, &text)?
    } else {
        let section = if name == "setup.cfg" {
            "tool:pytest"
        } else {
            "pytest"
        };
        ini_values(path, &text, section)?
    };
    let mut out = PytestIni {
        path: path.to_path_buf(),
        ..PytestIni::default()
    };
    for (key, raw, line) in values {
        let items = match raw {
            Raw::Text(t) => split(&t)
                .map_err(|e| ConfigError(format!("{}:{line}: {key}: {e}", path.display())))?,
            Raw::List(l) => l,
        };
        let v = Some(IniValue { items, line });
        match key.as_str() {
            "addopts" => out.addopts = v,
            "rsyncdirs" => out.rsyncdirs = v,
            "rsyncignore" => out.rsyncignore = v,
            _ => {}
        }
    }
    Ok(out)
}

enum Raw {
    Text(String),
    List(Vec<String>),
}

const KEYS: &[&str] = &["addopts", "rsyncdirs", "rsyncignore"];

/// iniconfig's rules: `[section]`, `key = value` or `key: value`,
/// indented continuation lines joined with newlines, `#`/`;` comment lines.
fn ini_values(
    path: &Path,
    text: &str,
    section: &str,
) -> Result<Vec<(String, Raw, usize)>, ConfigError> {
    let mut out: Vec<(String, String, usize)> = Vec::new();
    let mut current: Option<String> = None;
    let mut last_key_in_section = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') || raw.trim().is_empty() {
            continue;
        }
        let line = raw.trim_end();
        if line.starts_with('[') {
            let head = line.split(['#', ';']).next().unwrap_or("").trim_end();
            current = head
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .map(str::to_string);
            last_key_in_section = false;
            continue;
        }
        let in_section = current.as_deref() == Some(section);
        if line.starts_with(char::is_whitespace) {
            // A continuation of the previous key.
            if in_section && last_key_in_section {
                if let Some((_, value, _)) = out.last_mut() {
                    if value.is_empty() {
                        *value = line.trim().to_string();
                    } else {
                        value.push('\n');
                        value.push_str(line.trim());
                    }
                }
            }
            continue;
        }
        let pair = match line.split_once('=') {
            Some((k, v)) if !k.contains(':') => Some((k, v)),
            _ => line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|k| (k, ""))),
        };
        let Some((key, value)) = pair else {
            if in_section {
                return Err(ConfigError(format!(
                    "{}:{line_no}: unexpected line {line:?} (expected key = value)",
                    path.display()
                )));
            }
            continue;
        };
        let key = key.trim();
        last_key_in_section = in_section && KEYS.contains(&key);
        if last_key_in_section {
            out.retain(|(k, _, _)| k != key);
            out.push((key.to_string(), value.trim().to_string(), line_no));
        }
    }
    Ok(out
        .into_iter()
        .map(|(k, v, l)| (k, Raw::Text(v), l))
        .collect())
}

/// `[tool.pytest.ini_options]` (strings or lists) or pytest 9's native
/// `[tool.pytest]` (lists).
fn toml_values(path: &Path, text: &str) -> Result<Vec<(String, Raw, usize)>, ConfigError> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError(format!("{}: invalid TOML: {}", path.display(), e.message()))
    })?;
    let lines = super::toml::key_lines(text);
    let tool_pytest = doc
        .get("tool")
        .and_then(|t| t.get("pytest"))
        .and_then(|t| t.as_table());
    let (table, section) = match tool_pytest {
        Some(t) => match t.get("ini_options").and_then(|o| o.as_table()) {
            Some(o) => (o, "tool.pytest.ini_options"),
            None => (t, "tool.pytest"),
        },
        None => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for key in KEYS {
        let Some(v) = table.get(*key) else { continue };
        let line = lines
            .get(&(section.to_string(), key.to_string()))
            .copied()
            .unwrap_or(1);
        let raw = match v {
            toml::Value::String(s) => Raw::Text(s.clone()),
            toml::Value::Array(items) => Raw::List(
                items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Ok(s.clone()),
                        other => Err(ConfigError(format!(
                            "{}:{line}: {key}: expected strings, got {other}",
                            path.display()
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(ConfigError(format!(
                    "{}:{line}: {key}: expected a string or a list of strings, got {other}",
                    path.display()
                )))
            }
        };
        out.push((key.to_string(), raw, line));
    }
    Ok(out)
}

/// Split like Python's `shlex.split` (POSIX mode, no comments): whitespace
/// separates, single quotes are literal, double quotes allow `\"`, `\\`,
/// `\$` and `` \` `` escapes, a backslash outside quotes escapes the next
/// character.
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => cur.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                            None => return Err("no closing quotation".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(e) => cur.push(e),
                    None => return Err("no escaped character".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Quote words so that [`split`] (and `shlex.split`) gives them back.
pub fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            // `//` is quoted too: inside an exec= tx spec it would
            // otherwise end the command.
            let safe = !w.is_empty()
                && !w.contains("//")
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
            if safe {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\"'\"'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn split_follows_shlex() {
        assert_eq!(
            split(r#"-n 2  --dist=loadfile -k "a and not b" -m 'slow or x' a\ b"#).unwrap(),
            w(&[
                "-n",
                "2",
                "--dist=loadfile",
                "-k",
                "a and not b",
                "-m",
                "slow or x",
                "a b"
            ])
        );
        assert_eq!(split("-v\n  -ra").unwrap(), w(&["-v", "-ra"]));
        assert_eq!(split(r#"x"" ''"#).unwrap(), w(&["x", ""]));
        assert!(split("'open").is_err());
        let words = w(&["-k", "a and 'b'", "", "plain", "$HOME"]);
        assert_eq!(split(&join(&words)).unwrap(), words);
    }

    fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(name);
        std::fs::write(&p, text).unwrap();
        (t, p)
    }

    #[test]
    fn ini_sections_and_continuations() {
        let (_t, p) = file(
            "tox.ini",
            "[tox]\naddopts = -n 9\n\n[pytest]\n# comment\naddopts =\n    -n 1\n    --dist loadfile\nrsyncdirs = src tests\nrsyncignore: *.log\n",
        );
        let ini = read(&p).unwrap();
        assert_eq!(
            ini.addopts,
            Some(IniValue {
                items: w(&["-n", "1", "--dist", "loadfile"]),
                line: 6
            })
        );
        assert_eq!(ini.rsyncdirs.unwrap().items, w(&["src", "tests"]));
        assert_eq!(ini.rsyncignore.unwrap().line, 10);
        let (_t, p) = file(
            "setup.cfg",
            "[pytest]\naddopts=-x\n[tool:pytest]\naddopts=-n2\n",
        );
        assert_eq!(read(&p).unwrap().addopts.unwrap().items, w(&["-n2"]));
    }

    #[test]
    fn pyproject_strings_and_lists() {
        let (_t, p) = file(
            "pyproject.toml",
            "[project]\nname = \"x\"\n\n[tool.pytest.ini_options]\naddopts = \"-n 1 --dist 'loadfile'\"\nrsyncdirs = [\"src\"]\n",
        );
        let ini = read(&p).unwrap();
        assert_eq!(
            ini.addopts,
            Some(IniValue {
                items: w(&["-n", "1", "--dist", "loadfile"]),
                line: 5
            })
        );
        assert_eq!(ini.rsyncdirs.unwrap().items, w(&["src"]));
        let (_t, p) = file(
            "pyproject.toml",
            "[tool.pytest]\naddopts = [\"-n\", \"3\"]\n",
        );
        assert_eq!(read(&p).unwrap().addopts.unwrap().items, w(&["-n", "3"]));
    }
}
