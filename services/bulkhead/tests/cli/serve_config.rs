//! `serve` and `up` refuse configurations that would weaken identity before
//! they start anything.

use std::process::Command;

fn serve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("serve")
        .args(args)
        .env_clear()
        .output()
        .expect("bulkhead serve runs")
}

#[test]
fn client_secrets_shorter_than_32_bytes_are_refused() {
    let common = [
        "--database-url",
        "postgres://nowhere/none",
        "--platform-database-url",
        "postgres://nowhere/none",
        "--jwks-file",
        "/nonexistent",
    ];
    let short = "x".repeat(31);
    let long = "x".repeat(32);
    for (args, refused) in [
        (
            vec!["auth", "--service-client", &format!("task={short}")],
            true,
        ),
        (vec!["task", "--client-secret", short.as_str()], true),
        (
            vec!["auth", "--service-client", &format!("task={long}")],
            false,
        ),
        (vec!["task", "--client-secret", long.as_str()], false),
    ] {
        let out = serve(&[args.as_slice(), &common].concat());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: it has no database anyway");
        assert_eq!(
            said.contains("at least 32 bytes"),
            refused,
            "{args:?}: {said}"
        );
        if refused {
            assert_eq!(out.status.code(), Some(2), "a usage error: {said}");
        }
    }
}

#[test]
fn plaintext_off_this_machine_needs_insecure_plaintext() {
    let common = [
        "--database-url",
        "postgres://nowhere/none",
        "--platform-database-url",
        "postgres://nowhere/none",
        "--jwks-file",
        "/nonexistent",
        "--metrics-listen",
        "127.0.0.1:0",
        "--insecure-no-revocations",
    ];
    for (args, says) in [
        (
            vec!["--listen", "0.0.0.0:0"],
            Some("serving without --tls-cert/--tls-key"),
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--auth-url",
                "http://auth.internal:50051",
            ],
            Some("--auth-url http://auth.internal:50051"),
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tenant-url",
                "http://10.0.0.7:50052",
            ],
            Some("--tenant-url http://10.0.0.7:50052"),
        ),
        // On this machine, or said out loud: past the check (and then the
        // missing key set stops it).
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--auth-url",
                "http://127.0.0.1:50051",
            ],
            None,
        ),
        (
            vec![
                "--listen",
                "0.0.0.0:0",
                "--auth-url",
                "http://auth:50051",
                "--insecure-plaintext",
            ],
            None,
        ),
    ] {
        let out = serve(&[&["task"], args.as_slice(), &common].concat());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        match says {
            Some(what) => {
                assert!(
                    said.contains("plaintext off this machine"),
                    "{args:?}: {said}"
                );
                assert!(said.contains(what), "{args:?}: {said}");
                assert!(said.contains("--insecure-plaintext"), "{args:?}: {said}");
            }
            None => {
                assert!(
                    !said.contains("plaintext off this machine"),
                    "{args:?}: {said}"
                );
                assert!(said.contains("nonexistent"), "{args:?}: {said}");
            }
        }
    }
}

#[test]
fn a_service_that_cannot_hear_revocations_needs_to_say_so() {
    let common = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--database-url",
        "postgres://127.0.0.1:1/none",
        "--platform-database-url",
        "postgres://127.0.0.1:1/none",
        "--signing-key-file",
        "/nonexistent",
    ];
    for (args, refused) in [
        (vec!["task"], true),
        (vec!["audit", "--auth-url", "http://127.0.0.1:50051"], true),
        (vec!["tenant", "--insecure-no-revocations"], false),
    ] {
        let out = serve(&[args.as_slice(), &common].concat());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: no database anyway");
        assert_eq!(
            said.contains("must hear Auth's revocations"),
            refused,
            "{args:?}: {said}"
        );
    }
}

/// `up` serves plaintext: on a non-loopback --host only when told so, and
/// the refusal comes before it starts anything.
#[test]
fn up_off_this_machine_needs_insecure_plaintext() {
    let up = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["up", "--data-dir", "/dev/null/nowhere"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .output()
            .expect("bulkhead up runs")
    };
    for (args, refused) in [
        (vec!["--host", "0.0.0.0"], true),
        (vec!["--host", "::"], true),
        (vec!["--host", "192.0.2.1"], true),
        (vec!["--host", "0.0.0.0", "--insecure-plaintext"], false),
        (vec!["--host", "127.0.0.9"], false),
    ] {
        let out = up(&args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?}: its data folder cannot be made anyway"
        );
        assert_eq!(
            said.contains("serves plaintext") && said.contains("--insecure-plaintext"),
            refused,
            "{args:?}: {said}"
        );
    }
}

/// With `--tls-client-ca`, a service that calls its peers with a service
/// identity must present its own certificate, naming its client id: said at
/// start, not found out at the first refused call.
#[test]
fn mutual_tls_needs_the_services_own_certificate_naming_it() {
    let ca = bulkhead_testkit::certs::TestCa::new("serve test CA");
    let server = ca.server("server");
    let task = ca.client("task", &["task"]);
    let audit = ca.client("audit", &["audit"]);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let (ca_file, cert, key) = (path(&ca.ca_file()), path(&server.cert), path(&server.key));
    let common = [
        "task",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--database-url",
        "postgres://nowhere/none",
        "--platform-database-url",
        "postgres://nowhere/none",
        "--jwks-file",
        "/nonexistent",
        "--auth-url",
        "https://localhost:1",
        "--client-secret",
        "a client secret of at least 32 bytes",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca_file,
        "--tls-client-ca",
        &ca_file,
    ];
    let (task_cert, task_key) = (path(&task.cert), path(&task.key));
    let (audit_cert, audit_key) = (path(&audit.cert), path(&audit.key));
    for (identity, says) in [
        (vec![], Some("needs its own")),
        (
            vec![
                "--tls-client-cert",
                &audit_cert,
                "--tls-client-key",
                &audit_key,
            ],
            Some("is not valid for DNS:task"),
        ),
        (
            vec![
                "--tls-client-cert",
                &task_cert,
                "--tls-client-key",
                &task_key,
            ],
            None,
        ),
    ] {
        let out = serve(&[common.as_slice(), &identity].concat());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{identity:?}: no database anyway");
        match says {
            Some(what) => assert!(said.contains(what), "{identity:?}: {said}"),
            None => {
                assert!(
                    !said.contains("needs its own") && !said.contains("is not valid for"),
                    "{identity:?}: {said}"
                );
                assert!(said.contains("nonexistent"), "{identity:?}: {said}");
            }
        }
    }
}

/// The fairness flags are read and checked before anything starts: a zero
/// limit or a burst without a rate is a usage error.
#[test]
fn fairness_limits_that_make_no_sense_are_refused() {
    let common = [
        "task",
        "--database-url",
        "postgres://nowhere/none",
        "--platform-database-url",
        "postgres://nowhere/none",
        "--jwks-file",
        "/nonexistent",
    ];
    for (args, usage_error) in [
        (vec!["--tenant-rate-per-second", "0"], true),
        (vec!["--tenant-concurrency", "0"], true),
        (vec!["--max-in-flight", "0"], true),
        (vec!["--tenant-burst", "10"], true),
        (
            vec![
                "--tenant-rate-per-second",
                "20",
                "--tenant-burst",
                "40",
                "--tenant-concurrency",
                "4",
                "--tenant-queue",
                "16",
                "--max-in-flight",
                "128",
                "--service-reserve",
                "16",
            ],
            false,
        ),
    ] {
        let out = serve(&[common.as_slice(), &args].concat());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: it has no database anyway");
        assert_eq!(
            out.status.code() == Some(2),
            usage_error,
            "{args:?}: {said}"
        );
    }
}
