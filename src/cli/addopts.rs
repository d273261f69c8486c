//! pytest's own configuration as rtest config layers, so that an existing
//! pytest-xdist setup works as it is: the distribution options users keep
//! in the ini file's `addopts` and in `PYTEST_ADDOPTS` (`-n`, `--dist`,
//! `--tx`, `--rsyncdir`, `--maxprocesses`, `-x`, ...), and xdist's ini keys
//! `rsyncdirs` / `rsyncignore`.
//!
//! These layers sit below every rtest config file. What rtest takes out of
//! `addopts` must not reach pytest a second time (a worker's pytest without
//! xdist would reject `-n`), so when rtest takes anything, pytest gets the
//! rest: the ini's as `-o addopts=...`, the variable's as a rewritten
//! `PYTEST_ADDOPTS`.

use super::args;
use crate::config::layer::{self, Layer, Table};
use crate::config::pytest_ini::{self, PytestIni};
use crate::config::rootdir::normalize;
use crate::error::Error;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What pytest's configuration contributes to a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PytestConfig {
    /// Config layers, lowest precedence first: the ini file's xdist keys
    /// and `addopts`, then `PYTEST_ADDOPTS`.
    pub layers: Vec<Layer>,
    /// pytest arguments that replace the ini's `addopts` (`-o addopts=...`)
    /// when rtest took options out of it.
    pub override_args: Vec<String>,
    /// `PYTEST_ADDOPTS` for pytest processes when rtest took options out
    /// of it.
    pub env_addopts: Option<String>,
    /// `--basetemp` found in either (rtest splits it per worker).
    pub basetemp: Option<String>,
    /// xdist's `--maxschedchunk` found in either.
    pub max_sched_chunk: Option<usize>,
    /// xdist's `--loadscope-reorder` / `--no-loadscope-reorder` found in
    /// either.
    pub loadscope_reorder: Option<bool>,
    /// xdist's `--testrunuid` found in either.
    pub testrun_uid: Option<String>,
    /// rtest options that have no meaning there, with where they were.
    pub warnings: Vec<String>,
    /// What pytest gets instead, for `rtest plan`: (setting, value,
    /// source).
    pub rewritten: Vec<(String, String, String)>,
}

/// Read the ini file pytest uses (if any) and `PYTEST_ADDOPTS`.
pub fn read(
    cwd: &Path,
    inifile: Option<&Path>,
    env_addopts: Option<&str>,
) -> Result<PytestConfig, Error> {
    let mut out = PytestConfig::default();
    if let Some(path) = inifile.filter(|p| p.is_file()) {
        let ini = pytest_ini::read(path).map_err(|e| Error::usage(e.0))?;
        let keys = ini_keys_layer(&ini);
        if !keys.base.values.is_empty() {
            out.layers.push(keys);
        }
        if let Some(addopts) = &ini.addopts {
            let at = format!("{}:{}", path.display(), addopts.line);
            let name = path.display().to_string();
            let taken = take(
                &addopts.items,
                cwd,
                &format!("{at}: addopts"),
                Layer {
                    name,
                    path: Some(path.to_path_buf()),
                    via: Some("addopts".into()),
                    ..Layer::default()
                },
                addopts.line,
                &mut out,
            )?;
            if let Some(rest) = taken {
                let rest = pytest_ini::join(&rest);
                out.rewritten.push((
                    "addopts (for pytest)".into(),
                    rest.clone(),
                    format!("{at} without rtest's options"),
                ));
                out.override_args = vec!["-o".into(), format!("addopts={rest}")];
            }
        }
    }
    if let Some(text) = env_addopts.filter(|t| !t.trim().is_empty()) {
        let words =
            pytest_ini::split(text).map_err(|e| Error::usage(format!("PYTEST_ADDOPTS: {e}")))?;
        let taken = take(
            &words,
            cwd,
            "PYTEST_ADDOPTS",
            Layer {
                name: "PYTEST_ADDOPTS".into(),
                ..Layer::default()
            },
            0,
            &mut out,
        )?;
        if let Some(rest) = taken {
            let rest = pytest_ini::join(&rest);
            out.rewritten.push((
                "PYTEST_ADDOPTS (for pytest)".into(),
                rest.clone(),
                "PYTEST_ADDOPTS without rtest's options".into(),
            ));
            out.env_addopts = Some(rest);
        }
    }
    Ok(out)
}

/// xdist's `rsyncdirs` / `rsyncignore` ini keys, relative to the file.
fn ini_keys_layer(ini: &PytestIni) -> Layer {
    let name = ini.path.display().to_string();
    let mut table = Table::default();
    for (key, value) in [
        ("rsyncdirs", &ini.rsyncdirs),
        ("rsyncignore", &ini.rsyncignore),
    ] {
        if let Some(v) = value {
            let items = v.items.iter().map(|i| Value::String(i.clone())).collect();
            layer::put(&mut table, &name, key, v.line, items);
        }
    }
    Layer {
        name,
        path: Some(ini.path.clone()),
        base: table,
        ..Layer::default()
    }
}

/// Parse `words` as a command line; rtest's options become `layer`
/// (pushed to `out`). Returns the words pytest should still get, when
/// rtest took anything.
fn take(
    words: &[String],
    cwd: &Path,
    what: &str,
    mut layer: Layer,
    line: usize,
    out: &mut PytestConfig,
) -> Result<Option<Vec<String>>, Error> {
    let raw = args::parse(words).map_err(|e| Error::usage(format!("{what}: {e}")))?;
    let name = layer.name.clone();
    let table = &mut layer.base;
    let mut set = |key: &str, values: Vec<Value>| {
        layer::put(table, &name, key, line, values);
    };
    let abs = |p: &PathBuf| Value::String(normalize(&cwd.join(p)).display().to_string());
    let string = |s: &str| Value::String(s.to_string());
    if let Some(n) = raw.numprocesses {
        set("numprocesses", vec![string(&n.to_string())]);
    }
    if let Some(n) = raw.maxprocesses {
        set("maxprocesses", vec![Value::from(n)]);
    }
    if let Some(d) = &raw.dist {
        set("dist", vec![string(d)]);
    }
    if !raw.tx.is_empty() {
        set("tx", raw.tx.iter().map(|t| string(t)).collect());
    }
    if !raw.rsyncdirs.is_empty() {
        set("rsyncdirs", raw.rsyncdirs.iter().map(abs).collect());
    }
    if !raw.rsyncignore.is_empty() {
        set(
            "rsyncignore",
            raw.rsyncignore.iter().map(|g| string(g)).collect(),
        );
    }
    if let Some(n) = raw.max_worker_restart {
        set("max-worker-restart", vec![Value::from(n)]);
    }
    if let Some(n) = raw.maxfail {
        set("maxfail", vec![Value::from(n)]);
    }
    if let Some(t) = raw.timeout {
        set("timeout", vec![Value::from(t)]);
    }
    if let Some(t) = raw.startup_timeout {
        set("startup-timeout", vec![Value::from(t)]);
    }
    if let Some(p) = &raw.junitxml {
        set("junitxml", vec![abs(p)]);
    }
    if let Some(p) = &raw.report_log {
        set("report-log", vec![abs(p)]);
    }
    let mut ignored = Vec::new();
    for (flag, given) in [
        ("--shard", raw.shard.is_some()),
        ("--profile", raw.profile.is_some()),
        ("--no-config", raw.no_config),
        ("--no-provision", raw.no_provision),
        ("--require-all-hosts", raw.require_all_hosts),
    ] {
        if given {
            ignored.push(flag);
        }
    }
    for flag in &ignored {
        out.warnings.push(format!(
            "{what}: {flag} is ignored there: give it on rtest's command line or in [tool.rtest]"
        ));
    }
    let took = !layer.base.values.is_empty()
        || !ignored.is_empty()
        || raw.max_sched_chunk.is_some()
        || raw.loadscope_reorder.is_some()
        || raw.testrun_uid.is_some();
    if raw.basetemp.is_some() {
        out.basetemp = raw.basetemp.clone();
    }
    // Run-wide xdist options without a config key: the later source
    // (`PYTEST_ADDOPTS`) wins, the command line over both.
    if raw.max_sched_chunk.is_some() {
        out.max_sched_chunk = raw.max_sched_chunk;
    }
    if raw.loadscope_reorder.is_some() {
        out.loadscope_reorder = raw.loadscope_reorder;
    }
    if raw.testrun_uid.is_some() {
        out.testrun_uid = raw.testrun_uid.clone();
    }
    if !layer.base.values.is_empty() {
        out.layers.push(layer);
    }
    Ok(took.then(|| {
        let mut rest = raw.pytest_args.clone();
        if let Some(b) = &raw.basetemp {
            rest.push(format!("--basetemp={b}"));
        }
        rest
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ini(text: &str) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pytest.ini");
        std::fs::write(&p, text).unwrap();
        (t, p)
    }

    #[test]
    fn xdist_options_leave_addopts_and_the_rest_stays_for_pytest() {
        let (t, p) = ini("[pytest]\n\naddopts = -n 1 --dist loadfile -v --tb=short -x\n");
        let c = read(t.path(), Some(&p), Some("--tx 2*popen -p no:cacheprovider")).unwrap();
        assert_eq!(
            c.override_args,
            ["-o", "addopts=-v --tb=short"].map(String::from).to_vec()
        );
        assert_eq!(c.env_addopts.as_deref(), Some("-p no:cacheprovider"));
        let addopts = &c.layers[0];
        assert_eq!(addopts.base.values["numprocesses"], "1");
        assert_eq!(addopts.base.values["dist"], "loadfile");
        assert_eq!(addopts.base.values["maxfail"], 1);
        assert_eq!(
            addopts.location(None, "dist"),
            format!("{}:3 addopts", p.display())
        );
        assert_eq!(c.layers[1].location(None, "tx"), "PYTEST_ADDOPTS");
    }

    #[test]
    fn xdists_chunk_and_run_id_leave_addopts_too() {
        let (t, p) = ini("[pytest]\naddopts = --maxschedchunk 3 -ra\n");
        let c = read(t.path(), Some(&p), Some("--testrunuid=ci-42")).unwrap();
        assert_eq!(
            c.override_args,
            ["-o", "addopts=-r a"].map(String::from).to_vec()
        );
        assert_eq!(c.env_addopts.as_deref(), Some(""));
        assert_eq!(c.max_sched_chunk, Some(3));
        assert_eq!(c.testrun_uid.as_deref(), Some("ci-42"));
    }

    #[test]
    fn nothing_taken_nothing_rewritten() {
        let (t, p) = ini("[pytest]\naddopts = -ra --basetemp=/tmp/b\nrsyncdirs = src\n");
        std::fs::create_dir(t.path().join("src")).unwrap();
        let c = read(t.path(), Some(&p), Some("-q")).unwrap();
        assert!(c.override_args.is_empty());
        assert_eq!(c.env_addopts, None);
        assert_eq!(c.basetemp.as_deref(), Some("/tmp/b"));
        assert_eq!(c.layers[0].base.values["rsyncdirs"][0], "src");
    }

    #[test]
    fn bad_values_name_the_line() {
        let (t, p) = ini("[pytest]\naddopts = -n many\n");
        let e = read(t.path(), Some(&p), None).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:2: addopts: -n/--numprocesses", p.display())),
            "{e}"
        );
        let e = read(t.path(), None, Some("--dist '"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "PYTEST_ADDOPTS: no closing quotation");
    }
}
