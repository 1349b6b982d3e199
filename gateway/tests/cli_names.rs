//! The creator kit's script commands (docs/creators.md): `namegate name` and `namegate fingerprint`
//! print exactly what `crd-schema` computes, one bare value per line, and refuse bad input with exit 2.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use crd_schema::{Attempt, Fingerprint, Target, name};

fn namegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_namegate"))
        .args(args)
        .output()
        .expect("running namegate")
}

fn stdout_line(out: &Output) -> String {
    assert!(
        out.status.success(),
        "namegate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line for scripts: {text:?}");
    text.trim_end().to_owned()
}

#[test]
fn name_prints_the_lock_name_of_each_attempt() {
    for input in [
        "prod:Deployment:payment-api",
        ":Node:worker-7",
        "east-1:ns:StatefulSet:db",
    ] {
        let fp = Fingerprint::of_input(input);
        let hex = fp.to_hex();
        assert_eq!(
            stdout_line(&namegate(&["name", "--fingerprint", &hex])),
            name::name(&fp, Attempt::FIRST)
        );
        for n in [1, 2, 42, Attempt::MAX] {
            let a = Attempt::new(n).unwrap();
            assert_eq!(
                stdout_line(&namegate(&[
                    "name",
                    "--fingerprint",
                    &hex,
                    "--attempt",
                    &n.to_string()
                ])),
                name::name(&fp, a),
                "attempt {n}"
            );
        }
    }
}

#[test]
fn name_refuses_bad_fingerprints_and_attempts() {
    let hex = Fingerprint::of_input("prod:Deployment:x").to_hex();
    for (args, needle) in [
        (
            vec!["name", "--fingerprint", &hex[..63]],
            "64 lowercase hex",
        ),
        (
            vec!["name", "--fingerprint", &hex.to_uppercase()],
            "64 lowercase hex",
        ),
        (
            vec!["name", "--fingerprint", &hex, "--attempt", "0"],
            "from 1 to 9999999",
        ),
        (
            vec!["name", "--fingerprint", &hex, "--attempt", "10000000"],
            "from 1 to 9999999",
        ),
        (vec!["name", "--fingerprint", &hex, "--attempt", "-3"], ""),
    ] {
        let out = namegate(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a name");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn fingerprint_prints_bare_values_for_scripts() {
    let target = Target {
        cluster: Some("east-1".into()),
        namespace: "prod".into(),
        kind: "Deployment".into(),
        name: "payment-api".into(),
        api_version: None,
    };
    let base = [
        "fingerprint",
        "--cluster",
        "east-1",
        "--namespace",
        "prod",
        "--kind",
        "Deployment",
        "--name",
        "payment-api",
        "--output",
    ];
    let run = |output: &str| {
        let mut args = base.to_vec();
        args.push(output);
        stdout_line(&namegate(&args))
    };
    let fp = target.fingerprint();
    assert_eq!(run("fingerprint"), fp.to_hex());
    assert_eq!(run("name"), name::name(&fp, Attempt::FIRST));
    assert_eq!(run("input"), target.fingerprint_input());
    // The name of a fingerprint printed by one command is what the other prints for attempt 1.
    assert_eq!(
        stdout_line(&namegate(&["name", "--fingerprint", &run("fingerprint")])),
        run("name")
    );
}
