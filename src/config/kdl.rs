//! `conftest.kdl`: KDL 2 documents (KDL 1 accepted too).
//!
//! ```kdl
//! numprocesses 4
//! dist "loadfile"
//! tx "popen//python=python3.12"
//! tx "ssh" host="build1" user="ci" python="python3.12" count=2
//! rsyncdirs "src" "tests"
//! profile "ci" {
//!     inherits "default"
//!     numprocesses 8
//! }
//! ```

use super::layer::{put, render_at, Layer, SyntaxError, Table};
use kdl::{KdlDocument, KdlNode, KdlValue};
use serde_json::Value;
use std::path::Path;

fn json(v: &KdlValue) -> Value {
    match v {
        KdlValue::String(s) => Value::String(s.clone()),
        KdlValue::Integer(i) => i64::try_from(*i).map(Value::from).unwrap_or(Value::Null),
        KdlValue::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        KdlValue::Bool(b) => Value::Bool(*b),
        KdlValue::Null => Value::Null,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parse a `conftest.kdl`.
pub fn parse(path: &Path, text: &str) -> Result<Layer, SyntaxError> {
    let name = path.display().to_string();
    let doc = KdlDocument::parse(text).map_err(|e| {
        let first = e.diagnostics.first();
        let offset = first.map_or(0, |d| d.span.offset());
        let message = first
            .and_then(|d| d.message.clone())
            .unwrap_or_else(|| "invalid KDL".to_string());
        let help = first.and_then(|d| d.help.clone());
        render_at(&name, text, offset, &message, help.as_deref())
    })?;
    let mut layer = Layer {
        name: name.clone(),
        path: Some(path.to_path_buf()),
        ..Layer::default()
    };
    let mut base = Table::default();
    for node in doc.nodes() {
        let key = node.name().value();
        let line = line_of(text, node.span().offset());
        if key == "profile" {
            let Some(pname) = node
                .entries()
                .iter()
                .find(|e| e.name().is_none())
                .and_then(|e| e.value().as_string())
            else {
                return Err(render_at(
                    &name,
                    text,
                    node.span().offset(),
                    "profile needs a name: profile \"ci\" { ... }",
                    None,
                ));
            };
            let mut table = Table::default();
            layer.profile_lines.insert(pname.to_string(), line);
            if let Some(children) = node.children() {
                for child in children.nodes() {
                    let ckey = child.name().value();
                    let cline = line_of(text, child.span().offset());
                    if ckey == "inherits" {
                        match child.entries().first().and_then(|e| e.value().as_string()) {
                            Some(parent) => {
                                layer.inherits.insert(pname.to_string(), parent.to_string());
                            }
                            None => {
                                return Err(render_at(
                                    &name,
                                    text,
                                    child.span().offset(),
                                    "inherits needs a profile name: inherits \"base\"",
                                    None,
                                ))
                            }
                        }
                        continue;
                    }
                    let values = node_values(&name, text, child)?;
                    if let Some(w) = put(&mut table, &name, ckey, cline, values) {
                        layer.warnings.push(w);
                    }
                }
            }
            layer.profiles.insert(pname.to_string(), table);
            continue;
        }
        let values = node_values(&name, text, node)?;
        if let Some(w) = put(&mut base, &name, key, line, values) {
            layer.warnings.push(w);
        }
    }
    layer.base = base;
    Ok(layer)
}

/// A node's arguments as values; a structured `tx` node becomes a spec
/// string.
fn node_values(name: &str, text: &str, node: &KdlNode) -> Result<Vec<Value>, SyntaxError> {
    let has_props = node.entries().iter().any(|e| e.name().is_some());
    if node.name().value() == "tx" && (has_props || node.children().is_some()) {
        return structured_tx(name, text, node).map(|s| vec![Value::String(s)]);
    }
    if has_props {
        let prop = node
            .entries()
            .iter()
            .find(|e| e.name().is_some())
            .map(|e| e.span().offset())
            .unwrap_or(0);
        return Err(render_at(
            name,
            text,
            prop,
            &format!("\"{}\" takes values, not properties", node.name().value()),
            None,
        ));
    }
    Ok(node.entries().iter().map(|e| json(e.value())).collect())
}

/// `tx "ssh" host="build1" user="ci" port=22 python="python3" count=2
/// chdir="w" id="x" nice=5 dont_write_bytecode=#true ssh_config="f" { env FOO="1" }`,
/// `tx "exec" command="docker exec -i ci" ...`
fn structured_tx(name: &str, text: &str, node: &KdlNode) -> Result<String, SyntaxError> {
    let at = |off: usize, msg: &str| render_at(name, text, off, msg, None);
    let transport = node
        .entries()
        .iter()
        .find(|e| e.name().is_none())
        .and_then(|e| e.value().as_string())
        .ok_or_else(|| at(node.span().offset(), "structured tx needs the transport first: tx \"popen\" ..., tx \"ssh\" host=..., tx \"socket\" host=... port=..., tx \"exec\" command=..."))?
        .to_string();
    let mut props = std::collections::BTreeMap::new();
    for e in node.entries().iter().filter(|e| e.name().is_some()) {
        let key = e.name().map(|n| n.value().to_string()).unwrap_or_default();
        let val = match e.value() {
            KdlValue::String(s) => s.clone(),
            KdlValue::Integer(i) => i.to_string(),
            KdlValue::Bool(b) => b.to_string(),
            other => other.to_string(),
        };
        if ![
            "host",
            "user",
            "port",
            "python",
            "chdir",
            "id",
            "nice",
            "count",
            "dont_write_bytecode",
            "ssh_config",
            "command",
        ]
        .contains(&key.as_str())
        {
            return Err(at(e.span().offset(), &format!("unknown tx property \"{key}\" (known: host, user, port, command, python, chdir, id, nice, count, dont_write_bytecode, ssh_config)")));
        }
        props.insert(key, (val, e.span().offset()));
    }
    let get = |k: &str| props.get(k).map(|(v, _)| v.clone());
    let mut spec = String::new();
    if let Some(c) = get("count") {
        spec.push_str(&format!("{c}*"));
    }
    match transport.as_str() {
        "popen" => spec.push_str("popen"),
        "ssh" => {
            let host = get("host")
                .ok_or_else(|| at(node.span().offset(), "tx \"ssh\" needs host=\"...\""))?;
            spec.push_str("ssh=");
            if let Some(u) = get("user") {
                spec.push_str(&format!("{u}@"));
            }
            spec.push_str(&host);
            if let Some(p) = get("port") {
                spec.push_str(&format!(":{p}"));
            }
        }
        "socket" => {
            let host = get("host")
                .ok_or_else(|| at(node.span().offset(), "tx \"socket\" needs host=\"...\""))?;
            let port = get("port")
                .ok_or_else(|| at(node.span().offset(), "tx \"socket\" needs port=..."))?;
            spec.push_str(&format!("socket={host}:{port}"));
        }
        "exec" => {
            let command = get("command").ok_or_else(|| {
                at(
                    node.span().offset(),
                    "tx \"exec\" needs command=\"...\" (as in command=\"kubectl exec -i runner-0 --\")",
                )
            })?;
            spec.push_str(&format!("exec={command}"));
        }
        other => {
            return Err(at(
                node.span().offset(),
                &format!("unknown transport \"{other}\" (expected popen, ssh, socket or exec)"),
            ))
        }
    }
    for k in ["python", "chdir", "id", "nice", "ssh_config"] {
        if let Some(v) = get(k) {
            spec.push_str(&format!("//{k}={v}"));
        }
    }
    if get("dont_write_bytecode").as_deref() == Some("true") {
        spec.push_str("//dont_write_bytecode");
    }
    if let Some(children) = node.children() {
        for child in children.nodes() {
            if child.name().value() != "env" {
                return Err(at(
                    child.span().offset(),
                    "a tx node's children can only be env NAME=\"value\"",
                ));
            }
            for e in child.entries() {
                match (e.name(), e.value().as_string()) {
                    (Some(n), Some(v)) => spec.push_str(&format!("//env:{}={v}", n.value())),
                    _ => return Err(at(e.span().offset(), "env takes NAME=\"value\" properties")),
                }
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Layer {
        parse(Path::new("/r/conftest.kdl"), text).unwrap_or_else(|e| panic!("{}", e.rendered))
    }

    #[test]
    fn scalars_lists_and_lines() {
        let l = p("numprocesses 4\ndist \"loadfile\"\nrsyncdirs \"src\" \"tests\"\nrsyncdirs \"more\"\ntimeout 2.5\n");
        assert_eq!(l.base.values["numprocesses"], 4);
        assert_eq!(l.base.values["dist"], "loadfile");
        assert_eq!(
            l.base.values["rsyncdirs"],
            serde_json::json!(["src", "tests", "more"])
        );
        assert_eq!(l.base.values["timeout"], 2.5);
        assert_eq!(l.base.lines["dist"], 2);
        assert_eq!(l.location(None, "timeout"), "/r/conftest.kdl:5");
    }

    #[test]
    fn structured_tx_becomes_a_spec() {
        let l = p("tx \"ssh\" host=\"build1\" user=\"ci\" python=\"python3.12\" count=2 {\n  env FOO=\"1\"\n}\ntx \"popen//python=python3\"\n");
        assert_eq!(
            l.base.values["tx"],
            serde_json::json!([
                "2*ssh=ci@build1//python=python3.12//env:FOO=1",
                "popen//python=python3"
            ])
        );
    }

    #[test]
    fn structured_exec_tx_becomes_a_spec() {
        let l = p("tx \"exec\" command=\"kubectl exec -i runner-0 --\" python=\"python3\" id=\"pod\"\ntx \"exec=docker exec -i ci//chdir=/w\"\n");
        assert_eq!(
            l.base.values["tx"],
            serde_json::json!([
                "exec=kubectl exec -i runner-0 --//python=python3//id=pod",
                "exec=docker exec -i ci//chdir=/w"
            ])
        );
        let e = parse(
            Path::new("/r/conftest.kdl"),
            "tx \"exec\" python=\"python3\"\n",
        )
        .unwrap_err();
        assert!(e.rendered.contains("needs command="), "{}", e.rendered);
    }

    #[test]
    fn profiles_and_inherits() {
        let l = p("numprocesses 2\nprofile \"ci\" {\n  inherits \"base\"\n  numprocesses 8\n}\n");
        assert_eq!(l.profiles["ci"].values["numprocesses"], 8);
        assert_eq!(l.inherits["ci"], "base");
        assert_eq!(l.location(Some("ci"), "numprocesses"), "/r/conftest.kdl:4");
    }

    #[test]
    fn kdl_v1_documents_are_accepted() {
        let l = p("dist \"each\"\nmaxfail 3\nrsyncignore \"*.tmp\" \"build/\"\n");
        assert_eq!(l.base.values["maxfail"], 3);
        // KDL 1 only: bare `true` and r"raw" strings (KDL 2 spells them
        // #true and #"raw"#)
        let l = p("tx \"popen\" dont_write_bytecode=true\njunitxml r\"out\\j.xml\"\n");
        assert_eq!(
            l.base.values["tx"],
            serde_json::json!(["popen//dont_write_bytecode"])
        );
        assert_eq!(l.base.values["junitxml"], "out\\j.xml");
        // and KDL 2 spellings
        let l = p("tx \"popen\" dont_write_bytecode=#true\n");
        assert_eq!(
            l.base.values["tx"],
            serde_json::json!(["popen//dont_write_bytecode"])
        );
    }

    #[test]
    fn unknown_keys_warn_with_location() {
        let l = p("numprocesses 2\nnumproceses 3\n");
        assert_eq!(
            l.warnings,
            vec!["/r/conftest.kdl:2: unknown key \"numproceses\" (ignored)"]
        );
    }

    #[test]
    fn syntax_errors_show_line_and_caret() {
        let e = parse(Path::new("c.kdl"), "numprocesses 2\ndist \"load\n").unwrap_err();
        assert!(e.rendered.starts_with("c.kdl:2:"), "{}", e.rendered);
        assert!(e.rendered.contains("2 | dist \"load"), "{}", e.rendered);
        assert!(e.rendered.contains('^'), "{}", e.rendered);
        let e = parse(Path::new("c.kdl"), "tx \"ssh\" hots=\"x\"\n").unwrap_err();
        assert!(
            e.rendered.contains("unknown tx property \"hots\""),
            "{}",
            e.rendered
        );
    }
}
