//! One config file (or `[tool.rtest]`, or the environment) as a layer:
//! values as JSON, each key's line, its profiles, and warnings.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The keys a config may set, and whether each is a list.
pub const KEYS: &[(&str, bool)] = &[
    ("tx", true),
    ("numprocesses", false),
    ("maxprocesses", false),
    ("dist", false),
    ("rsyncdirs", true),
    ("rsyncignore", true),
    ("pytest-args", true),
    ("timeout", false),
    ("startup-timeout", false),
    ("max-worker-restart", false),
    ("maxfail", false),
    ("junitxml", false),
    ("report-log", false),
];

/// Whether `key` is a list key; `None` for unknown keys.
pub fn is_list(key: &str) -> Option<bool> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, l)| *l)
}

/// Keys of one table, with the line each was written on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Values by key.
    pub values: Map<String, Value>,
    /// 1-based line of each key.
    pub lines: BTreeMap<String, usize>,
    /// For list keys: the line of each item, in order.
    pub item_lines: BTreeMap<String, Vec<usize>>,
}

/// A parsed config source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// What users call it: the file path, `[tool.rtest] in pyproject.toml`,
    /// `environment`.
    pub name: String,
    /// The file, for resolving relative paths and for locations.
    pub path: Option<PathBuf>,
    /// Top-level keys.
    pub base: Table,
    /// `profile NAME { ... }` / `[profile.NAME]` tables.
    pub profiles: BTreeMap<String, Table>,
    /// Each profile's `inherits`.
    pub inherits: BTreeMap<String, String>,
    /// Line of each profile's declaration.
    pub profile_lines: BTreeMap<String, usize>,
    /// Unknown keys and the like, with locations.
    pub warnings: Vec<String>,
    /// How the file set its values, when not as keys of its own (pytest's
    /// ini `addopts`): named after the location.
    pub via: Option<String>,
}

impl Layer {
    /// `file:line` for a key, or the layer's name.
    pub fn location(&self, profile: Option<&str>, key: &str) -> String {
        let line = self.table(profile).and_then(|t| t.lines.get(key)).copied();
        self.at(line)
    }

    /// `file:line` for each item of a list key, in order.
    pub fn item_locations(&self, profile: Option<&str>, key: &str) -> Vec<String> {
        self.table(profile)
            .and_then(|t| t.item_lines.get(key))
            .map(|lines| lines.iter().map(|l| self.at(Some(*l))).collect())
            .unwrap_or_default()
    }

    fn table(&self, profile: Option<&str>) -> Option<&Table> {
        match profile {
            Some(p) => self.profiles.get(p),
            None => Some(&self.base),
        }
    }

    fn at(&self, line: Option<usize>) -> String {
        let at = match line {
            Some(line) if line > 0 => format!("{}:{line}", self.name),
            _ => self.name.clone(),
        };
        match &self.via {
            Some(via) => format!("{at} {via}"),
            None => at,
        }
    }

    /// The directory relative paths in this layer are relative to.
    pub fn base_dir(&self) -> Option<&Path> {
        self.path.as_deref().and_then(Path::parent)
    }
}

/// A syntax error, rendered as `file:line:col: message`, the line, and a
/// caret under the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The rendered diagnostic.
    pub rendered: String,
}

/// Render a diagnostic at byte `offset` of `text`.
pub fn render_at(
    name: &str,
    text: &str,
    offset: usize,
    message: &str,
    help: Option<&str>,
) -> SyntaxError {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let col = text[line_start..offset].chars().count() + 1;
    let gutter = line_no.to_string().len();
    let mut rendered = format!(
        "{name}:{line_no}:{col}: {message}\n{:gutter$} |\n{line_no} | {line}\n{:gutter$} | {}^",
        "",
        "",
        " ".repeat(col - 1)
    );
    if let Some(h) = help {
        rendered.push_str(&format!("\n{:gutter$} = help: {h}", ""));
    }
    SyntaxError { rendered }
}

/// Add a key's value to a table: list keys accumulate, scalars are set.
/// Returns a warning for unknown keys.
pub fn put(
    table: &mut Table,
    name: &str,
    key: &str,
    line: usize,
    values: Vec<Value>,
) -> Option<String> {
    match is_list(key) {
        None => Some(format!("{name}:{line}: unknown key \"{key}\" (ignored)")),
        Some(true) => {
            let entry = table
                .values
                .entry(key.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            let n = values.len();
            if let Value::Array(items) = entry {
                items.extend(values);
            }
            table.lines.entry(key.to_string()).or_insert(line);
            table
                .item_lines
                .entry(key.to_string())
                .or_default()
                .extend(std::iter::repeat_n(line, n));
            None
        }
        Some(false) => {
            let v = match values.len() {
                1 => values.into_iter().next().unwrap_or(Value::Null),
                _ => Value::Array(values),
            };
            table.values.insert(key.to_string(), v);
            table.lines.insert(key.to_string(), line);
            None
        }
    }
}
