//! The interpreters of a run: which local Python workers and the
//! controller use, and a venv with pytest for one that has none.

use crate::error::Error;
use crate::gateway::provision;
use crate::plan::Plan;
use crate::spec::Transport;
use std::path::PathBuf;

/// The interpreter workers use when a spec names none.
pub fn default_python() -> String {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(venv).join("bin").join("python");
        if p.exists() {
            return p.display().to_string();
        }
    }
    "python3".to_string()
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
    let python = default_python();
    match provision::probe(&python) {
        Ok(p) if p.has_pytest => Some(python),
        _ => None,
    }
}
