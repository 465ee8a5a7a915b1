//! No secret anywhere: TLS is decided by the address a connection really uses (a loopback name
//! with a remote `hostaddr` is remote: the password is never sent in clear), a URL whose
//! password cannot be read unambiguously is refused without echo, and a table of hostile
//! passwords leaks no part of itself into any output: text and JSON logs, errors, `doctor`,
//! `status`, config errors, panics.

mod common;

use std::process::Command;

use common::{cluster, run_bin, Run, TestDb};

/// A PostgreSQL "server" that refuses TLS and, should a client go on without it, asks for the
/// password in clear text and writes down whatever it receives. Listens on 10.77.0.1:5432
/// inside the test's own network namespace.
const FAKE_SERVER: &str = r#"
import socket, struct, sys
out = open(sys.argv[1], "wb")
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.77.0.1", 5432)); srv.listen(5)
open(sys.argv[1] + ".ready", "w").close()
while True:
    conn, _ = srv.accept()
    try:
        while True:
            head = conn.recv(8)
            if len(head) < 8: break
            length, code = struct.unpack("!ii", head)
            body = conn.recv(length - 8) if length > 8 else b""
            if code == 80877103:          # SSLRequest
                out.write(b"SSLRequest\n"); out.flush(); conn.sendall(b"N"); continue
            out.write(b"startup:" + body + b"\n"); out.flush()
            conn.sendall(b"R" + struct.pack("!ii", 8, 3))   # AuthenticationCleartextPassword
            msg = conn.recv(1024)
            out.write(b"password:" + msg + b"\n"); out.flush()
            break
    finally:
        conn.close()
"#;

/// Run `script` in a network namespace of its own where 10.77.0.1 is an address of this
/// (isolated) machine, not a loopback one: nothing leaves the namespace.
fn in_private_network(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-n", "sh", "-c"])
        .arg(format!(
            "set -e; ip link set lo up; ip addr add 10.77.0.1/32 dev lo; {script}"
        ))
        .output()
        .expect("unshare -n (needs root and util-linux, iproute2)")
}

#[test]
fn a_loopback_name_with_a_remote_hostaddr_never_gets_the_password_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let server = dir.path().join("server.py");
    std::fs::write(&server, FAKE_SERVER).unwrap();
    let url = "postgresql://reconciler:S3CRETpw@localhost:5432/db?hostaddr=10.77.0.1";
    let script = format!(
        "python3 {server} {capture} </dev/null >/dev/null 2>&1 & SERVER=$!; \
         while [ ! -e {capture}.ready ]; do sleep 0.05; done; \
         env -i PATH=\"$PATH\" SYNQALL_RECONCILER_CONFIG={empty} DATABASE_URL='{url}' \
           {bin} --reconcile-now > {out} 2>&1 || echo \"exit=$?\" >> {out}; \
         python3 -c \"import socket,struct; s=socket.create_connection(('10.77.0.1',5432)); \
s.sendall(struct.pack('!ii',8,196608)); s.recv(9); s.sendall(b'pcontrol-pw')\" ; sleep 0.2; \
         kill $SERVER",
        server = server.display(),
        capture = capture.display(),
        empty = common::empty_config_file(),
        bin = common::BIN,
        out = dir.path().join("out").display(),
    );
    let ran = in_private_network(&script);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let output = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let captured = std::fs::read_to_string(&capture).unwrap();
    // The control client proves the fake server does capture what a client sends in clear.
    assert!(captured.contains("control-pw"), "{captured}");
    assert!(output.contains("exit=1"), "{output}");
    assert!(
        captured.starts_with("SSLRequest"),
        "TLS was asked first: {captured}"
    );
    assert!(
        !captured.contains("S3CRET"),
        "the password went out in clear: {captured}"
    );
    assert!(!output.contains("S3CRET"), "{output}");

    // And asked not to use TLS at all: refused before any traffic.
    let out = run_bin(
        &["--reconcile-now"],
        &[(
            "DATABASE_URL",
            "postgresql://reconciler:S3CRETpw@localhost:5432/db?hostaddr=10.77.0.1&sslmode=disable",
        )],
        &[],
    );
    let out = tokio::runtime::Runtime::new().unwrap().block_on(out);
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("TLS is required"), "{}", out.stderr);
}

/// Passwords that break naive URL handling, quoting or log lines.
const HOSTILE: &[&str] = &[
    "pw@S3CRETxyz",
    "a@b#c%zz+/=",
    "quo'te\"dq\"sQUOTEd",
    "new\nLINEbreak",
    "sp ace\tTABbed",
    "uni\u{202E}BIDIcode",
    "back\\SLASHed",
    "semi;COLON&amp",
];

/// Every fragment of `secret` of 4 or more letters or digits.
fn fragments(secret: &str) -> Vec<String> {
    secret
        .split(|c: char| !c.is_alphanumeric())
        .filter(|f| f.len() >= 4)
        .map(str::to_string)
        .collect()
}

fn assert_no_fragment(secret: &str, what: &str, out: &Run) {
    for fragment in fragments(secret) {
        for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !text.contains(&fragment),
                "{what}: {stream} holds {fragment:?} of {secret:?}:\n{text}"
            );
        }
    }
}

/// Percent-encode everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn hostile_passwords_leak_nothing_into_any_output() {
    let db = TestDb::migrated().await;
    let org = db.org("Drifted", Some(0)).await;
    let user = db.user().await;
    db.member(user, org, 30).await;
    db.completed_call(user, org, 10).await;
    let port = cluster().port();
    for (i, secret) in HOSTILE.iter().enumerate() {
        let login = format!("hostile_{i}_{}", db.name);
        let sql_secret = secret.replace('\'', "''");
        db.exec(&format!(
            "CREATE ROLE {login} LOGIN PASSWORD '{sql_secret}' IN ROLE synqall_reconciler"
        ))
        .await;
        let raw = format!("postgres://{login}:{secret}@127.0.0.1:{port}/{}", db.name);
        let encoded = format!(
            "postgres://{login}:{}@127.0.0.1:{port}/{}",
            encode(secret),
            db.name
        );
        let wrong = format!(
            "postgres://{login}:{}x@127.0.0.1:{port}/{}",
            encode(secret),
            db.name
        );
        let json = [("SYNQALL_RECONCILER_LOG_FORMAT", "json")];
        let fault = [("SYNQALL_RECONCILER_TEST_FAULT", "repair")];
        let runs = [
            ("raw URL", raw.as_str(), &["--reconcile-now"][..], &[][..]),
            (
                "raw URL, JSON",
                raw.as_str(),
                &["--reconcile-now"][..],
                &json[..],
            ),
            (
                "wrong password",
                wrong.as_str(),
                &["--reconcile-now"][..],
                &[][..],
            ),
            ("pass", encoded.as_str(), &["--reconcile-now"][..], &[][..]),
            (
                "pass, JSON",
                encoded.as_str(),
                &["--reconcile-now"][..],
                &json[..],
            ),
            ("doctor", encoded.as_str(), &["doctor"][..], &[][..]),
            (
                "doctor --json",
                encoded.as_str(),
                &["doctor", "--json"][..],
                &[][..],
            ),
            ("status", encoded.as_str(), &["status"][..], &[][..]),
            (
                "panic",
                encoded.as_str(),
                &["--reconcile-now"][..],
                &fault[..],
            ),
        ];
        for (what, url, args, env) in runs {
            let out = run_bin(args, &[("DATABASE_URL", url)], env).await;
            assert_no_fragment(secret, what, &out);
            match what {
                "raw URL" | "raw URL, JSON" if secret.contains(['@', '#', '%', '+', '/']) => {
                    assert_eq!(out.code(), 78, "{what} {secret:?}: {}", out.stderr);
                    assert!(out.stderr.contains("percent-encode"), "{}", out.stderr);
                }
                "pass" => assert_eq!(out.code(), 0, "{what} {secret:?}: {}", out.stderr),
                "wrong password" => assert_eq!(out.code(), 1, "{}", out.stderr),
                _ => {}
            }
        }
        // A config file with a syntax error on the URL's line quotes nothing of it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let toml_secret = secret
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        std::fs::write(
            &path,
            format!("[database]\nurl = \"postgres://u:{toml_secret}@db.example.invalid/x\" oops\n"),
        )
        .unwrap();
        let out = run_bin(
            &["--reconcile-now", "--config", path.to_str().unwrap()],
            &[],
            &[],
        )
        .await;
        assert_eq!(out.code(), 78, "{}", out.stderr);
        assert!(
            out.stderr.contains("config.toml"),
            "the file is named: {}",
            out.stderr
        );
        assert_no_fragment(secret, "config error", &out);
    }
}
