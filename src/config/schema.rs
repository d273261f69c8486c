//! The config file format as Rust types, for the JSON Schema in
//! `schemas/config.json` (editors use it for `conftest.toml` and
//! `[tool.rtest]`). The parser accepts exactly these keys
//! ([`super::layer::KEYS`]); a test checks the two agree.

use schemars::JsonSchema;
use std::collections::BTreeMap;

/// `numprocesses`: a whole number, `auto` or `logical`.
fn numprocesses_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "enum": ["auto", "logical"]}
        ]
    })
}

macro_rules! config_struct {
    ($(#[$meta:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(JsonSchema)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct $name {
            $($extra)*
            /// Where workers run: tx specs such as `popen//python=python3.12`,
            /// `ssh=ci@build1//python=python3`, `socket=host:8888`, with an
            /// optional `N*` prefix. Lists accumulate from the outermost file
            /// inward; `--tx` adds to them.
            tx: Option<Vec<String>>,
            /// Local workers: a number, `auto` or `logical` (`-n`).
            #[schemars(schema_with = "numprocesses_schema")]
            numprocesses: Option<u32>,
            /// At most this many local workers, whatever `numprocesses` says
            /// (`--maxprocesses`, as in pytest-xdist).
            maxprocesses: Option<u32>,
            /// Distribution mode (`--dist`).
            dist: Option<super::DistMode>,
            /// Directories synced to remote workers, relative to this file.
            rsyncdirs: Option<Vec<String>>,
            /// Globs left out of the sync: without `/` they match a basename
            /// anywhere, with `/` a path relative to this file's directory.
            rsyncignore: Option<Vec<String>>,
            /// Arguments passed to pytest before the command line's.
            pytest_args: Option<Vec<String>>,
            /// Seconds after which a test's worker is killed and the test
            /// fails (0: no timeout).
            timeout: Option<f64>,
            /// Seconds a worker may take to start and report its collection
            /// before it is killed, saying where it hung (0: none; default
            /// 300).
            startup_timeout: Option<f64>,
            /// How many crashed workers may be replaced (default: 4 per
            /// worker).
            max_worker_restart: Option<u32>,
            /// Stop after this many failures (0: never).
            maxfail: Option<u32>,
            /// JUnit XML output, relative to this file.
            junitxml: Option<String>,
            /// pytest-reportlog JSON lines output, relative to this file.
            report_log: Option<String>,
        }
    };
}

config_struct! {
    /// An rtest config file (`conftest.toml`, or `[tool.rtest]` in
    /// `pyproject.toml`; `conftest.kdl` has the same keys as nodes).
    ConfigFile {
        /// Named profiles, chosen with `--profile NAME` or `RTEST_PROFILE`.
        profile: Option<BTreeMap<String, ProfileTable>>,
    }
}

config_struct! {
    /// A profile: the same keys, applied over the file's top-level keys.
    ProfileTable {
        /// A profile whose keys apply first.
        inherits: Option<String>,
    }
}

/// The JSON Schema of the config format.
pub fn config_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ConfigFile)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_has_exactly_the_parsers_keys() {
        let schema = super::config_schema();
        let props = schema["properties"].as_object().unwrap();
        let mut keys: Vec<&str> = props
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "profile")
            .collect();
        keys.sort();
        let mut parser: Vec<&str> = super::super::layer::KEYS.iter().map(|(k, _)| *k).collect();
        parser.sort();
        assert_eq!(keys, parser);
    }
}
