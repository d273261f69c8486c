//! Property tests: what users and peers hand rtest (tx specs, config
//! files, pytest's ini, frames from an agent or a network peer) never
//! panics it, and every rejection names the input. `PROPTEST_CASES` makes
//! a longer run (the book's "Reliability" chapter has the figures).

use crate::config::{kdl, load, pytest_ini, toml, Input};
use crate::protocol;
use crate::spec::TxSpec;
use proptest::prelude::*;
use std::path::Path;

/// Pieces tx specs are made of, and noise.
fn spec_part() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("popen".to_string()),
        Just("ssh=ci@build1:2222".to_string()),
        Just("ssh=".to_string()),
        Just("socket=host:8888".to_string()),
        Just("socket=:".to_string()),
        Just("python=python3.12".to_string()),
        Just("chdir=/w".to_string()),
        Just("env:A=b c".to_string()),
        Just("env:=x".to_string()),
        Just("id=w1".to_string()),
        Just("nice=5".to_string()),
        Just("nice=-99999999999".to_string()),
        Just("dont_write_bytecode".to_string()),
        Just("ssh_config=cfg".to_string()),
        Just("exec=kubectl exec -i runner-0 --".to_string()),
        Just("exec=sh -c 'cd //srv && exec \"$@\"' sh".to_string()),
        Just("exec='unclosed".to_string()),
        Just("exec=".to_string()),
        "exec=[a-z '\"/\\\\-]{0,16}",
        "[0-9]{0,3}\\*popen",
        "\\PC{0,12}",
    ]
}

/// Lines a config file might have, right or wrong.
fn kdl_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "(numprocesses|dist|timeout|maxfail|junitxml|tx|rsyncdirs|rsyncignore|pytest-args|startup-timeout|maxprocesses|bogus) (\"[a-z0-9*/=.:]{0,12}\"|[0-9]{1,4}|-[0-9]|#true|null)",
        "profile \"[a-z]{1,4}\" \\{",
        "\\}",
        "tx \"ssh\" host=\"h\" (count|port|nice)=[0-9]{1,3}",
        "inherits \"[a-z]{1,4}\"",
        "\\PC{0,30}",
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "(numprocesses|dist|timeout|maxfail|junitxml|report-log|startup-timeout|maxprocesses|bogus) = (\"[a-z0-9*/=.:]{0,12}\"|[0-9]{1,4}|-[0-9]|true|\\[\\]|1\\.5)",
        "(tx|rsyncdirs|rsyncignore|pytest-args) = \\[(\"[a-z0-9*/=.:]{0,12}\", ?){0,3}\\]",
        "\\[profile\\.[a-z]{1,4}\\]",
        "inherits = \"[a-z]{1,4}\"",
        "\\PC{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn tx_specs_parse_or_name_themselves(parts in prop::collection::vec(spec_part(), 0..6)) {
        let spec = parts.join("//");
        match spec.parse::<TxSpec>() {
            Ok(parsed) => prop_assert!(parsed.count >= 1),
            Err(e) => prop_assert!(e.to_string().contains(&format!("\"{spec}\"")), "{e}"),
        }
    }

    #[test]
    fn exec_commands_round_trip(argv in prop::collection::vec("[a-z/ '\"=:.$-]{1,10}", 1..5)) {
        // Whatever words the command has, the spec rtest prints parses
        // back to the same words.
        let spec = TxSpec {
            transport: crate::spec::Transport::Exec { argv },
            ..TxSpec::popen(Some("python3".into()))
        };
        let again: TxSpec = spec.to_string().parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(again, spec);
    }

    #[test]
    fn any_text_as_a_tx_spec_never_panics(spec in "\\PC{0,80}") {
        if let Err(e) = spec.parse::<TxSpec>() {
            prop_assert!(e.to_string().starts_with("failed to parse tx spec"));
        }
    }

    #[test]
    fn conftest_kdl_parses_or_points_at_the_file(lines in prop::collection::vec(kdl_line(), 0..8)) {
        let text = lines.join("\n");
        if let Err(e) = kdl::parse(Path::new("/r/conftest.kdl"), &text) {
            prop_assert!(e.rendered.starts_with("/r/conftest.kdl:"), "{}", e.rendered);
        }
    }

    #[test]
    fn conftest_toml_and_pyproject_parse_or_point_at_the_file(
        lines in prop::collection::vec(toml_line(), 0..8),
    ) {
        let text = lines.join("\n");
        if let Err(e) = toml::parse(Path::new("/r/conftest.toml"), &text, "") {
            prop_assert!(e.rendered.starts_with("/r/conftest.toml:"), "{}", e.rendered);
        }
        let pyproject = format!("[tool.rtest]\n{text}");
        if let Err(e) = toml::parse(Path::new("/r/pyproject.toml"), &pyproject, "tool.rtest") {
            prop_assert!(e.rendered.starts_with("/r/pyproject.toml:"), "{}", e.rendered);
        }
    }

    #[test]
    fn shell_splitting_never_panics(text in "\\PC{0,60}") {
        if let Ok(words) = pytest_ini::split(&text) {
            // What it splits, joined back, splits the same.
            prop_assert_eq!(pytest_ini::split(&pytest_ini::join(&words)).unwrap(), words);
        }
    }

    #[test]
    fn any_bytes_as_a_frame_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = protocol::decode(&bytes);
    }

    #[test]
    fn any_stream_of_frames_is_read_or_refused(
        frames in prop::collection::vec(
            prop_oneof![
                // Well framed, any payload.
                prop::collection::vec(any::<u8>(), 0..80).prop_map(|p| {
                    let mut f = (p.len() as u32).to_be_bytes().to_vec();
                    f.extend(p);
                    f
                }),
                // Well framed, JSON of a known type with wrong fields.
                "\\{\"t\": \"(report|finished|ready|collected|configured|workeroutput|node_configured|x)\"(, \"[a-z]{1,3}\": (1|\"s\"|null|\\[\\]))?\\}"
                    .prop_map(|p| {
                        let mut f = (p.len() as u32).to_be_bytes().to_vec();
                        f.extend(p.into_bytes());
                        f
                    }),
                // Raw noise (lengths far out, cut frames).
                prop::collection::vec(any::<u8>(), 0..12),
            ],
            0..6,
        ),
    ) {
        let stream: Vec<u8> = frames.concat();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut reader = &stream[..];
            // Every read ends: a frame, or an error; never a hang or panic.
            for _ in 0..stream.len() + 1 {
                if protocol::read_frame(&mut reader).await.is_err() {
                    break;
                }
            }
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn config_loading_merges_or_names_file_and_key(
        kdl_lines in prop::collection::vec(kdl_line(), 0..6),
        toml_lines in prop::collection::vec(toml_line(), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("pytest.ini"), "[pytest]\n").unwrap();
        std::fs::create_dir(root.join("pkg")).unwrap();
        std::fs::write(root.join("conftest.kdl"), kdl_lines.join("\n")).unwrap();
        std::fs::write(root.join("pkg/conftest.toml"), toml_lines.join("\n")).unwrap();
        let got = load(&Input {
            cwd: root.to_path_buf(),
            args: vec!["pkg".into()],
            ..Input::default()
        });
        if let Err(e) = got {
            let named = e.0.contains("conftest.kdl") || e.0.contains("conftest.toml");
            prop_assert!(named, "{}", e.0);
        }
    }
}
