//! The interpreters of a run: which local Python workers and the
//! controller use, and a venv with pytest for one that has none.

use crate::error::Error;
use crate::gateway::provision;
use crate::plan::Plan;
use crate::spec::Transport;
use std::path::Path;

/// The interpreter local workers use when no spec or config names one, and
/// the rule that chose it, in order: the virtualenv the rtest binary is
/// installed in (`.venv/bin/rtest`, not a pipx or uv tool environment);
/// the active virtualenv (`$VIRTUAL_ENV`); a `.venv` in the rootdir (uv's
/// default); `python3` on the PATH.
pub fn choose_default_python(rootdir: Option<&Path>) -> (String, &'static str) {
    let exe = std::env::current_exe().ok();
    let active = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty());
    choose(exe.as_deref(), active.as_deref().map(Path::new), rootdir)
}

fn choose(
    exe: Option<&Path>,
    active: Option<&Path>,
    rootdir: Option<&Path>,
) -> (String, &'static str) {
    let python_of = |venv: &Path| {
        let p = venv.join("bin").join("python");
        p.exists().then_some(p)
    };
    // bin/rtest inside a virtualenv (pyvenv.cfg beside bin/): installed
    // there for that project, unless it is a tool's own environment.
    if let Some(venv) = exe.and_then(Path::parent).and_then(Path::parent) {
        let tool = ["uv-receipt.toml", "pipx_metadata.json"]
            .iter()
            .any(|marker| venv.join(marker).exists());
        if venv.join("pyvenv.cfg").is_file() && !tool {
            if let Some(p) = python_of(venv) {
                return (
                    p.display().to_string(),
                    "the virtualenv rtest is installed in",
                );
            }
        }
    }
    if let Some(p) = active.and_then(python_of) {
        return (
            p.display().to_string(),
            "the active virtualenv ($VIRTUAL_ENV)",
        );
    }
    if let Some(p) = rootdir
        .map(|r| r.join(".venv"))
        .as_deref()
        .and_then(python_of)
    {
        return (p.display().to_string(), "the rootdir's .venv");
    }
    ("python3".to_string(), "python3 on the PATH")
}

/// Check every local interpreter once; give those without pytest a
/// provisioned venv (unless `--no-provision`). Returns notes for the header.
pub fn prepare_interpreters(plan: &mut Plan, no_provision: bool) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    let mut resolved: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for i in 0..plan.workers.len() {
        if plan.workers[i].transport != Transport::Popen {
            continue;
        }
        let python = plan.workers[i].python.clone();
        if let Some(r) = resolved.get(&python) {
            plan.workers[i].python = r.clone();
            continue;
        }
        let probe = provision::probe(&python)?;
        let use_python = if probe.has_pytest {
            python.clone()
        } else if no_provision {
            return Err(Error::usage(format!(
                "python {python:?} (Python {}.{}.{}) has no pytest and --no-provision was given: install it with `{} -m pip install pytest`, or drop --no-provision to let rtest create a venv with pytest",
                probe.version.0, probe.version.1, probe.version.2, probe.executable
            )));
        } else {
            let mut say = |m: &str| eprintln!("rtest: {m}");
            let venv = provision::provision(&python, &probe, &mut say)?;
            notes.push(format!(
                "provisioned: {python} has no pytest; using {}",
                venv.display()
            ));
            venv.display().to_string()
        };
        resolved.insert(python, use_python.clone());
        plan.workers[i].python = use_python;
    }
    Ok(notes)
}

/// The interpreter of the controller (the local pytest session plugins
/// see): the one local workers use, else the default one if it has pytest.
pub fn controller_python(plan: &Plan) -> Option<String> {
    if let Some(w) = plan
        .workers
        .iter()
        .find(|w| w.transport == Transport::Popen)
    {
        return Some(w.python.clone());
    }
    let python = plan.default_python.0.clone();
    match provision::probe(&python) {
        Ok(p) if p.has_pytest => Some(python),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn venv(at: &Path, marker: Option<&str>) {
        std::fs::create_dir_all(at.join("bin")).unwrap();
        std::fs::write(at.join("bin/python"), "").unwrap();
        std::fs::write(at.join("bin/rtest"), "").unwrap();
        std::fs::write(at.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        if let Some(m) = marker {
            std::fs::write(at.join(m), "").unwrap();
        }
    }

    #[test]
    fn the_default_python_follows_the_rules_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (own, active, project, tool) = (
            d.path().join("own"),
            d.path().join("active"),
            d.path().join("project"),
            d.path().join("tool"),
        );
        venv(&own, None);
        venv(&active, None);
        venv(&project.join(".venv"), None);
        venv(&tool, Some("uv-receipt.toml"));
        let py = |v: &Path| v.join("bin/python").display().to_string();
        let exe = own.join("bin/rtest");
        assert_eq!(
            choose(Some(&exe), Some(&active), Some(&project)),
            (py(&own), "the virtualenv rtest is installed in")
        );
        // a uv/pipx tool environment is not the project's
        let exe = tool.join("bin/rtest");
        assert_eq!(
            choose(Some(&exe), Some(&active), Some(&project)),
            (py(&active), "the active virtualenv ($VIRTUAL_ENV)")
        );
        let cargo_built = d.path().join("target/debug/rtest");
        assert_eq!(
            choose(Some(&cargo_built), None, Some(&project)),
            (py(&project.join(".venv")), "the rootdir's .venv")
        );
        assert_eq!(
            choose(
                Some(&cargo_built),
                Some(&d.path().join("gone")),
                Some(d.path())
            ),
            ("python3".to_string(), "python3 on the PATH")
        );
    }
}
