//! Declarative config: hierarchical `conftest.kdl` / `conftest.toml` files,
//! `[tool.rtest]` in the rootdir's `pyproject.toml`, and `RTEST_*`
//! environment variables, merged with figment.
//!
//! Layers, outermost first: `[tool.rtest]`, then the config file of the
//! rootdir and of every directory from it down to each test path, then the
//! environment. Nearer layers win for scalars; lists accumulate (figment's
//! `admerge`). Within a layer the selected profile (and the profiles it
//! `inherits`) overlays the top-level keys. Every relative path resolves
//! against the directory of the file that wrote it. [`load`] returns a
//! [`Config`] in which every value carries its origin (`file:line`, the
//! variable, or the flag), for errors and for `rtest plan`.

mod elements;
pub mod kdl;
pub mod layer;
pub mod pytest_ini;
pub mod rootdir;
pub mod schema;
pub mod toml;

pub use elements::{DistMode, NumProcesses};
use figment::value::magic::{RelativePathBuf, Tagged};
use figment::value::{Dict, Map, Value as FValue};
use figment::{Figment, Metadata, Profile, Provider};
use layer::Layer;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// `path:line`, `RTEST_VAR`, `--flag` or `default`.
    pub source: String,
}

impl<T> Sourced<T> {
    /// A value with its origin.
    pub fn new(value: T, source: impl Into<String>) -> Self {
        Sourced {
            value,
            source: source.into(),
        }
    }
}

/// What config loading needs to know about the invocation.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The working directory.
    pub cwd: PathBuf,
    /// Positional arguments (test paths, node ids).
    pub args: Vec<String>,
    /// pytest's `-c FILE`.
    pub inifile: Option<PathBuf>,
    /// pytest's `--rootdir DIR`.
    pub rootdir: Option<PathBuf>,
    /// `--profile` (else `RTEST_PROFILE`).
    pub profile: Option<String>,
    /// `--no-config`: ignore every file.
    pub no_config: bool,
    /// `--strict-config`: unknown keys are errors.
    pub strict: bool,
    /// `RTEST_*` variables.
    pub env: Vec<(String, String)>,
    /// Layers below every config file, outermost first: what pytest's own
    /// configuration says (ini `addopts`, xdist's ini keys,
    /// `PYTEST_ADDOPTS`).
    pub pytest_layers: Vec<Layer>,
}

/// The merged config.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Config {
    /// pytest's rootdir.
    pub rootdir: PathBuf,
    /// Config files, in merge order (outermost first).
    pub files: Vec<PathBuf>,
    /// The selected profile.
    pub profile: Option<String>,
    /// Every profile the config files define, sorted.
    pub profiles: Vec<String>,
    /// `tx` specs (not yet parsed).
    pub tx: Vec<Sourced<String>>,
    /// `numprocesses`.
    pub numprocesses: Option<Sourced<NumProcesses>>,
    /// `maxprocesses`.
    pub maxprocesses: Option<Sourced<usize>>,
    /// `dist`.
    pub dist: Option<Sourced<DistMode>>,
    /// `rsyncdirs`, absolute.
    pub rsyncdirs: Vec<Sourced<PathBuf>>,
    /// `rsyncignore` patterns with the directory they are relative to.
    pub rsyncignore: Vec<Sourced<(String, PathBuf)>>,
    /// `pytest-args`, prepended to the command line's pytest arguments.
    pub pytest_args: Vec<Sourced<String>>,
    /// `timeout` seconds.
    pub timeout: Option<Sourced<f64>>,
    /// `startup-timeout` seconds.
    pub startup_timeout: Option<Sourced<f64>>,
    /// `max-worker-restart`.
    pub max_worker_restart: Option<Sourced<usize>>,
    /// `maxfail`.
    pub maxfail: Option<Sourced<usize>>,
    /// `junitxml`, absolute.
    pub junitxml: Option<Sourced<PathBuf>>,
    /// `report-log`, absolute.
    pub report_log: Option<Sourced<PathBuf>>,
    /// Warnings (unknown keys), with locations.
    pub warnings: Vec<String>,
}

/// A config error: the message names the file and line, or the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

const ENV_LAYER: &str = "environment";

const ENV_KEYS: &[(&str, &str)] = &[
    ("RTEST_TX", "tx"),
    ("RTEST_NUMPROCESSES", "numprocesses"),
    ("RTEST_MAXPROCESSES", "maxprocesses"),
    ("RTEST_DIST", "dist"),
    ("RTEST_RSYNCDIRS", "rsyncdirs"),
    ("RTEST_RSYNCIGNORE", "rsyncignore"),
    ("RTEST_PYTEST_ARGS", "pytest-args"),
    ("RTEST_TIMEOUT", "timeout"),
    ("RTEST_STARTUP_TIMEOUT", "startup-timeout"),
    ("RTEST_MAX_WORKER_RESTART", "max-worker-restart"),
    ("RTEST_MAXFAIL", "maxfail"),
    ("RTEST_JUNITXML", "junitxml"),
    ("RTEST_REPORT_LOG", "report-log"),
];

/// The config files that apply: `[tool.rtest]` of the rootdir's
/// pyproject.toml, then `conftest.kdl`/`conftest.toml` from the rootdir
/// down to each test path.
pub fn discover(rootdir: &Path, cwd: &Path, args: &[String]) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = Vec::new();
    let pyproject = rootdir.join("pyproject.toml");
    if pyproject.is_file() {
        let text = read(&pyproject)?;
        if let Some(l) =
            toml::parse(&pyproject, &text, "tool.rtest").map_err(|e| ConfigError(e.rendered))?
        {
            layers.push(l);
        }
    }
    let mut targets = rootdir::dirs_from_args(cwd, args);
    if targets.is_empty() {
        targets.push(cwd.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for t in &targets {
        let Ok(rel) = t.strip_prefix(rootdir) else {
            continue;
        };
        let mut d = rootdir.to_path_buf();
        if !dirs.contains(&d) {
            dirs.push(d.clone());
        }
        for c in rel.components() {
            d.push(c);
            if !dirs.contains(&d) {
                dirs.push(d.clone());
            }
        }
    }
    if dirs.is_empty() {
        dirs.push(rootdir.to_path_buf());
    }
    // Outermost first; siblings in a stable order.
    dirs.sort_by(|a, b| {
        a.components()
            .count()
            .cmp(&b.components().count())
            .then(a.cmp(b))
    });
    for d in dirs {
        let (k, t) = (d.join("conftest.kdl"), d.join("conftest.toml"));
        match (k.is_file(), t.is_file()) {
            (true, true) => {
                return Err(ConfigError(format!(
                    "both {} and {} exist: keep one of them",
                    k.display(),
                    t.display()
                )))
            }
            (true, false) => {
                layers.push(kdl::parse(&k, &read(&k)?).map_err(|e| ConfigError(e.rendered))?)
            }
            (false, true) => {
                if let Some(l) =
                    toml::parse(&t, &read(&t)?, "").map_err(|e| ConfigError(e.rendered))?
                {
                    layers.push(l);
                }
            }
            (false, false) => {}
        }
    }
    Ok(layers)
}

fn read(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p).map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))
}

/// The `RTEST_*` variables as a layer.
pub fn env_layer(env: &[(String, String)]) -> Layer {
    let mut layer = Layer {
        name: ENV_LAYER.into(),
        ..Layer::default()
    };
    for (var, key) in ENV_KEYS {
        let Some((_, raw)) = env.iter().find(|(k, _)| k == var) else {
            continue;
        };
        let values: Vec<Value> = match *key {
            "tx" | "rsyncignore" => raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect(),
            "rsyncdirs" => std::env::split_paths(raw)
                .map(|p| Value::String(p.display().to_string()))
                .collect(),
            "pytest-args" => raw
                .split_whitespace()
                .map(|s| Value::String(s.into()))
                .collect(),
            "timeout" | "startup-timeout" => vec![raw
                .parse::<f64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(raw.clone()))],
            "max-worker-restart" | "maxfail" | "maxprocesses" => {
                vec![raw
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::String(raw.clone()))]
            }
            "numprocesses" => vec![raw
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(raw.clone()))],
            _ => vec![Value::String(raw.clone())],
        };
        layer::put(&mut layer.base, ENV_LAYER, key, 0, values);
    }
    layer
}

/// The chain of profiles to apply, parents first.
fn profile_chain(layers: &[Layer], profile: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let Some(p) = profile else {
        return Ok(Vec::new());
    };
    let defined: Vec<&String> = layers.iter().flat_map(|l| l.profiles.keys()).collect();
    let mut chain = vec![p.to_string()];
    let mut cur = p.to_string();
    loop {
        let implicit_default = cur == "default" && chain.len() == 1;
        if !(defined.contains(&&cur) || implicit_default) {
            let mut names: Vec<&str> = defined.iter().map(|s| s.as_str()).collect();
            names.sort();
            names.dedup();
            return Err(ConfigError(format!(
                "profile \"{cur}\" is not defined in any config file (defined: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
        // The nearest declaration of `inherits` wins.
        let parent = layers
            .iter()
            .rev()
            .find_map(|l| l.inherits.get(&cur).cloned());
        match parent {
            Some(parent) if parent == "default" => break,
            Some(parent) => {
                if chain.contains(&parent) {
                    return Err(ConfigError(format!(
                        "profile \"{p}\": inherits forms a cycle ({} -> {parent})",
                        chain.join(" -> ")
                    )));
                }
                chain.push(parent.clone());
                cur = parent;
            }
            None => break,
        }
    }
    chain.reverse();
    Ok(chain)
}

/// A layer with its profile chain applied, as a figment provider.
struct LayerProvider {
    name: String,
    path: Option<PathBuf>,
    values: serde_json::Map<String, Value>,
}

impl Provider for LayerProvider {
    fn metadata(&self) -> Metadata {
        let md = Metadata::named(self.name.clone());
        match &self.path {
            Some(p) => md.source(figment::Source::File(p.clone())),
            None => md,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        match FValue::serialize(&self.values)? {
            FValue::Dict(_, dict) => Ok(Profile::Default.collect(dict)),
            _ => Ok(Map::new()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Raw {
    #[serde(default)]
    tx: Vec<Tagged<String>>,
    numprocesses: Option<Tagged<FValue>>,
    maxprocesses: Option<Tagged<u64>>,
    dist: Option<Tagged<String>>,
    #[serde(default)]
    rsyncdirs: Vec<Tagged<RelativePathBuf>>,
    #[serde(default)]
    rsyncignore: Vec<Tagged<String>>,
    #[serde(default)]
    pytest_args: Vec<Tagged<String>>,
    timeout: Option<Tagged<f64>>,
    startup_timeout: Option<Tagged<f64>>,
    max_worker_restart: Option<Tagged<u64>>,
    maxfail: Option<Tagged<u64>>,
    junitxml: Option<Tagged<RelativePathBuf>>,
    report_log: Option<Tagged<RelativePathBuf>>,
}

/// Load and merge every layer.
pub fn load(input: &Input) -> Result<Config, ConfigError> {
    let root = rootdir::determine(
        &input.cwd,
        &input.args,
        input.inifile.as_deref(),
        input.rootdir.as_deref(),
    );
    let mut layers = input.pytest_layers.clone();
    if !input.no_config {
        layers.extend(discover(&root.dir, &input.cwd, &input.args)?);
    }
    let profile = input
        .profile
        .clone()
        .or_else(|| {
            input
                .env
                .iter()
                .find(|(k, _)| k == "RTEST_PROFILE")
                .map(|(_, v)| v.clone())
        })
        .filter(|p| !p.is_empty());
    let mut warnings: Vec<String> = layers
        .iter()
        .flat_map(|l| l.warnings.iter().cloned())
        .collect();
    if input.strict && !warnings.is_empty() {
        return Err(ConfigError(format!(
            "{} (--strict-config makes unknown keys errors)",
            warnings.join("\n")
        )));
    }
    let chain = profile_chain(&layers, profile.as_deref())?;
    layers.push(env_layer(&input.env));

    // Per layer: top-level keys overlaid by the chain's profiles, and where
    // each key was written.
    let mut figment = Figment::new();
    // Per layer and key: the origin of the value, or of each list item.
    let mut origins: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{i}:{}", l.name);
        let mut values = l.base.values.clone();
        let mut where_: BTreeMap<String, Vec<String>> = l
            .base
            .values
            .keys()
            .map(|k| (k.clone(), origins_of(l, None, k)))
            .collect();
        for p in &chain {
            let Some(t) = l.profiles.get(p) else { continue };
            for (k, v) in &t.values {
                match (layer::is_list(k), values.get_mut(k), v) {
                    (Some(true), Some(Value::Array(items)), Value::Array(more)) => {
                        items.extend(more.iter().cloned());
                        where_
                            .entry(k.clone())
                            .or_default()
                            .extend(origins_of(l, Some(p), k));
                    }
                    _ => {
                        values.insert(k.clone(), v.clone());
                        where_.insert(k.clone(), origins_of(l, Some(p), k));
                    }
                }
            }
        }
        origins.insert(name.clone(), where_);
        figment = figment.admerge(LayerProvider {
            name,
            path: l.path.clone(),
            values,
        });
    }
    // The origin of a scalar (index 0) or of the next item of a list from
    // the same layer.
    let mut taken: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut find = |fig: &Figment, tag: figment::value::Tag, key: &str| -> String {
        let Some(md) = fig.get_metadata(tag) else {
            return "config".into();
        };
        let layer = md.name.to_string();
        let n = taken.entry((layer.clone(), key.to_string())).or_insert(0);
        let list = origins.get(&layer).and_then(|o| o.get(key));
        let at = list
            .and_then(|l| l.get(*n).or_else(|| l.last()))
            .cloned()
            .unwrap_or_else(|| "config".into());
        if layer::is_list(key) == Some(true) {
            *n += 1;
        }
        at
    };
    let raw: Raw = figment.extract().map_err(|e| {
        let key = e.path.first().cloned().unwrap_or_default();
        let at = e
            .metadata
            .as_ref()
            .and_then(|m| origins.get(m.name.as_ref()))
            .and_then(|o| o.get(&key))
            .and_then(|l| l.first())
            .cloned()
            .unwrap_or_else(|| "config".into());
        ConfigError(format!("{at}: {key}: {}", e.kind))
    })?;
    let cwd = &input.cwd;
    let abs = |p: PathBuf| rootdir::normalize(&cwd.join(p));
    let mut cfg = Config {
        rootdir: root.dir.clone(),
        files: layers
            .iter()
            .filter_map(|l| l.path.clone())
            .fold(Vec::new(), |mut files, f| {
                if !files.contains(&f) {
                    files.push(f);
                }
                files
            }),
        profile: profile.clone(),
        profiles: {
            let mut names: Vec<String> = layers
                .iter()
                .flat_map(|l| l.profiles.keys().cloned())
                .collect();
            names.sort();
            names.dedup();
            names
        },
        ..Config::default()
    };
    for t in raw.tx {
        let src = find(&figment, t.tag(), "tx");
        cfg.tx.push(Sourced::new(t.into_inner(), src));
    }
    if let Some(n) = raw.numprocesses {
        let src = find(&figment, n.tag(), "numprocesses");
        let v = n.into_inner();
        let text = match &v {
            FValue::String(_, s) => s.clone(),
            FValue::Num(_, num) => num
                .to_u128()
                .map(|u| u.to_string())
                .or_else(|| num.to_i128().map(|i| i.to_string()))
                .or_else(|| num.to_f64().map(|f| f.to_string()))
                .unwrap_or_default(),
            FValue::Bool(_, b) => b.to_string(),
            _ => "a table or list".to_string(),
        };
        let parsed = text
            .parse::<NumProcesses>()
            .map_err(|e| ConfigError(format!("{src}: numprocesses: {e}")))?;
        cfg.numprocesses = Some(Sourced::new(parsed, src));
    }
    if let Some(d) = raw.dist {
        let src = find(&figment, d.tag(), "dist");
        let parsed = d
            .into_inner()
            .parse::<DistMode>()
            .map_err(|e| ConfigError(format!("{src}: dist: {e}")))?;
        cfg.dist = Some(Sourced::new(parsed, src));
    }
    for d in raw.rsyncdirs {
        let src = find(&figment, d.tag(), "rsyncdirs");
        let path = abs(d.into_inner().relative());
        if !path.is_dir() {
            return Err(ConfigError(format!(
                "{src}: rsyncdirs: {} is not a directory",
                path.display()
            )));
        }
        cfg.rsyncdirs.push(Sourced::new(path, src));
    }
    for g in raw.rsyncignore {
        let src = find(&figment, g.tag(), "rsyncignore");
        let md = figment.get_metadata(g.tag());
        let base = md
            .and_then(|m| m.source.as_ref())
            .and_then(|s| s.file_path())
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.clone());
        let pattern = g.into_inner();
        if let Err(e) = globset::Glob::new(&pattern) {
            return Err(ConfigError(format!(
                "{src}: rsyncignore: bad pattern \"{pattern}\": {e}"
            )));
        }
        cfg.rsyncignore.push(Sourced::new((pattern, base), src));
    }
    for a in raw.pytest_args {
        let src = find(&figment, a.tag(), "pytest-args");
        cfg.pytest_args.push(Sourced::new(a.into_inner(), src));
    }
    if let Some(t) = raw.timeout {
        let src = find(&figment, t.tag(), "timeout");
        let v = t.into_inner();
        if !(v.is_finite() && v >= 0.0) {
            return Err(ConfigError(format!(
                "{src}: timeout: expected a number of seconds (0 for none), got {v}"
            )));
        }
        cfg.timeout = Some(Sourced::new(v, src));
    }
    if let Some(t) = raw.startup_timeout {
        let src = find(&figment, t.tag(), "startup-timeout");
        let v = t.into_inner();
        if !(v.is_finite() && v >= 0.0) {
            return Err(ConfigError(format!(
                "{src}: startup-timeout: expected a number of seconds (0 for none), got {v}"
            )));
        }
        cfg.startup_timeout = Some(Sourced::new(v, src));
    }
    if let Some(m) = raw.max_worker_restart {
        let src = find(&figment, m.tag(), "max-worker-restart");
        cfg.max_worker_restart = Some(Sourced::new(m.into_inner() as usize, src));
    }
    if let Some(m) = raw.maxprocesses {
        let src = find(&figment, m.tag(), "maxprocesses");
        let v = m.into_inner() as usize;
        if v == 0 {
            return Err(ConfigError(format!(
                "{src}: maxprocesses: expected a whole number of 1 or more, got 0"
            )));
        }
        cfg.maxprocesses = Some(Sourced::new(v, src));
    }
    if let Some(m) = raw.maxfail {
        let src = find(&figment, m.tag(), "maxfail");
        cfg.maxfail = Some(Sourced::new(m.into_inner() as usize, src));
    }
    if let Some(j) = raw.junitxml {
        let src = find(&figment, j.tag(), "junitxml");
        cfg.junitxml = Some(Sourced::new(abs(j.into_inner().relative()), src));
    }
    if let Some(j) = raw.report_log {
        let src = find(&figment, j.tag(), "report-log");
        cfg.report_log = Some(Sourced::new(abs(j.into_inner().relative()), src));
    }
    warnings.sort();
    warnings.dedup();
    cfg.warnings = warnings;
    Ok(cfg)
}

/// Where a key of a layer was set: one origin for a scalar, one per item
/// for a list.
fn origins_of(l: &Layer, profile: Option<&str>, key: &str) -> Vec<String> {
    if l.path.is_none() && l.name != ENV_LAYER {
        return vec![l.name.clone()];
    }
    if l.path.is_none() {
        let var = ENV_KEYS
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(v, _)| v.to_string())
            .unwrap_or_else(|| l.name.clone());
        return vec![var];
    }
    let decorate = |loc: String| match profile {
        Some(p) => format!("{loc} (profile {p})"),
        None => loc,
    };
    if layer::is_list(key) == Some(true) {
        let items = l.item_locations(profile, key);
        if !items.is_empty() {
            return items.into_iter().map(decorate).collect();
        }
    }
    vec![decorate(l.location(profile, key))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_list_item_names_its_own_line() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        std::fs::write(root.join("pytest.ini"), "[pytest]\n").unwrap();
        std::fs::write(
            root.join("conftest.kdl"),
            "tx \"popen//id=a\"\n\ntx \"popen//id=b\"\nprofile \"ci\" {\n    tx \"popen//id=c\"\n}\n",
        )
        .unwrap();
        let cfg = load(&Input {
            cwd: root.clone(),
            profile: Some("ci".into()),
            ..Input::default()
        })
        .unwrap();
        let kdl = root.join("conftest.kdl").display().to_string();
        let got: Vec<(&str, &str)> = cfg
            .tx
            .iter()
            .map(|s| (s.value.as_str(), s.source.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("popen//id=a", format!("{kdl}:1").as_str()),
                ("popen//id=b", format!("{kdl}:3").as_str()),
                ("popen//id=c", format!("{kdl}:5 (profile ci)").as_str()),
            ]
        );
    }
}
