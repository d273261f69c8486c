//! `conftest.toml` and `[tool.rtest]` in `pyproject.toml`.
//!
//! ```toml
//! numprocesses = 4
//! tx = ["popen//python=python3.12"]
//! rsyncdirs = ["src", "tests"]
//!
//! [profile.ci]
//! inherits = "default"
//! numprocesses = 8
//! ```

use super::layer::{put, render_at, Layer, SyntaxError, Table};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Where each `[section]` key sits: (section path, key) -> line.
pub(super) fn key_lines(text: &str) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            section = line
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
            out.entry((section.clone(), String::new())).or_insert(i + 1);
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            let k = k.trim().trim_matches('"').to_string();
            if !k.is_empty() && !k.starts_with('#') {
                out.entry((section.clone(), k)).or_insert(i + 1);
            }
        }
    }
    out
}

fn to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// Parse a `conftest.toml` (`prefix` empty) or the `[tool.rtest]` table of
/// a `pyproject.toml` (`prefix` = `tool.rtest`). `None` when a pyproject has
/// no such table.
pub fn parse(path: &Path, text: &str, prefix: &str) -> Result<Option<Layer>, SyntaxError> {
    let file = path.display().to_string();
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let offset = e.span().map_or(0, |s| s.start);
        render_at(&file, text, offset, e.message(), None)
    })?;
    let mut root = &doc;
    if !prefix.is_empty() {
        for part in prefix.split('.') {
            match root.get(part) {
                Some(toml::Value::Table(t)) => root = t,
                _ => return Ok(None),
            }
        }
    }
    let name = if prefix.is_empty() {
        file.clone()
    } else {
        format!("{file} [{prefix}]")
    };
    let lines = key_lines(text);
    let line = |section: &str, key: &str| -> usize {
        lines
            .get(&(section.to_string(), key.to_string()))
            .or_else(|| lines.get(&(section.to_string(), String::new())))
            .copied()
            .unwrap_or(1)
    };
    let mut layer = Layer {
        name: file.clone(),
        path: Some(path.to_path_buf()),
        ..Layer::default()
    };
    let sect = |extra: &str| -> String {
        match (prefix.is_empty(), extra.is_empty()) {
            (true, _) => extra.to_string(),
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{extra}"),
        }
    };
    let fill = |table: &mut Table, warnings: &mut Vec<String>, src: &toml::Table, section: &str| {
        for (k, v) in src {
            let values = match (super::layer::is_list(k), v) {
                (Some(true), toml::Value::Array(a)) => a.iter().map(to_json).collect(),
                _ => vec![to_json(v)],
            };
            if let Some(w) = put(table, &file, k, line(section, k), values) {
                warnings.push(w);
            }
        }
    };
    let mut base_src = root.clone();
    let profiles = base_src.remove("profile");
    let mut warnings = Vec::new();
    let mut base = Table::default();
    fill(&mut base, &mut warnings, &base_src, &sect(""));
    match profiles {
        None => {}
        Some(toml::Value::Table(ps)) => {
            for (pname, pv) in ps {
                let section = sect(&format!("profile.{pname}"));
                let toml::Value::Table(mut pt) = pv else {
                    warnings.push(format!(
                        "{file}:{}: profile.{pname} must be a table",
                        line(&sect(""), "profile")
                    ));
                    continue;
                };
                layer
                    .profile_lines
                    .insert(pname.clone(), line(&section, ""));
                if let Some(parent) = pt.remove("inherits") {
                    match parent {
                        toml::Value::String(s) => {
                            layer.inherits.insert(pname.clone(), s);
                        }
                        _ => {
                            return Err(SyntaxError {
                                rendered: format!(
                                    "{file}:{}: inherits: expected a profile name (a string)",
                                    line(&section, "inherits")
                                ),
                            })
                        }
                    }
                }
                let mut table = Table::default();
                fill(&mut table, &mut warnings, &pt, &section);
                layer.profiles.insert(pname, table);
            }
        }
        Some(_) => warnings.push(format!(
            "{file}:{}: \"profile\" must be a table of profiles",
            line(&sect(""), "profile")
        )),
    }
    layer.base = base;
    layer.warnings = warnings;
    layer.name = name;
    // Locations use the file name, whatever the layer is called.
    layer.name = file.clone();
    Ok(Some(layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conftest_toml_with_profiles() {
        let text = "numprocesses = 2\ntx = [\"popen\", \"2*popen//python=python3\"]\n\n[profile.ci]\ninherits = \"base\"\ndist = \"each\"\n";
        let l = parse(Path::new("/r/conftest.toml"), text, "")
            .unwrap()
            .unwrap();
        assert_eq!(l.base.values["numprocesses"], 2);
        assert_eq!(
            l.base.values["tx"],
            serde_json::json!(["popen", "2*popen//python=python3"])
        );
        assert_eq!(l.profiles["ci"].values["dist"], "each");
        assert_eq!(l.inherits["ci"], "base");
        assert_eq!(l.location(Some("ci"), "dist"), "/r/conftest.toml:6");
        assert_eq!(l.location(None, "tx"), "/r/conftest.toml:2");
    }

    #[test]
    fn pyproject_tool_rtest() {
        let text = "[project]\nname = \"x\"\n\n[tool.rtest]\ntimeout = 30\nbogus = 1\n\n[tool.rtest.profile.ci]\nmaxfail = 3\n";
        let l = parse(Path::new("/r/pyproject.toml"), text, "tool.rtest")
            .unwrap()
            .unwrap();
        assert_eq!(l.base.values["timeout"], 30);
        assert_eq!(l.location(None, "timeout"), "/r/pyproject.toml:5");
        assert_eq!(
            l.warnings,
            vec!["/r/pyproject.toml:6: unknown key \"bogus\" (ignored)"]
        );
        assert_eq!(l.profiles["ci"].values["maxfail"], 3);
        assert!(parse(Path::new("p.toml"), "[project]\n", "tool.rtest")
            .unwrap()
            .is_none());
    }

    #[test]
    fn syntax_error_has_line_and_caret() {
        let e = parse(Path::new("c.toml"), "numprocesses = 2\ndist = \"load\n", "").unwrap_err();
        assert!(e.rendered.starts_with("c.toml:2:"), "{}", e.rendered);
        assert!(e.rendered.contains("2 | dist = \"load"), "{}", e.rendered);
    }
}
