//! Build script: the commit rtest is built from, for `rtest --version`.
//!
//! Taken from git when building in a checkout; `RTEST_COMMIT` (and
//! `RTEST_COMMIT_DATE`) set by hand win, for builds from a source archive.
//! Without either, `--version` prints the version alone.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RTEST_COMMIT");
    println!("cargo:rerun-if-env-changed=RTEST_COMMIT_DATE");
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let commit = from_env("RTEST_COMMIT").or_else(|| git(&["rev-parse", "--short=9", "HEAD"]));
    let date = from_env("RTEST_COMMIT_DATE").or_else(|| git(&["log", "-1", "--format=%cs"]));
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        // A new commit moves HEAD or the branch it names.
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    let text = match (commit, date) {
        (Some(c), Some(d)) => format!(" ({c} {d})"),
        (Some(c), None) => format!(" ({c})"),
        _ => String::new(),
    };
    println!("cargo:rustc-env=RTEST_BUILD_COMMIT={text}");
}
