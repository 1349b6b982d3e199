//! The audit store over TLS to a real PostgreSQL (docs/security.md, "Transport"): the test makes its
//! own CA and server certificate, turns `ssl = on` in the test server (ALTER SYSTEM + reload, undone at
//! the end), and opens the store with `sslmode=require` and `sslmode=verify-full`.
#![allow(clippy::unwrap_used)]

mod audit_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use audit_support::{PG_ENV, TestDb, with_database};
use namegate::audit::store::AuditStore;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sqlx::{AssertSqlSafe, Connection};

/// A CA (returned as PEM) and a server certificate for `localhost` only, signed by it, written into
/// `dir` readable by the PostgreSQL server's user.
fn certificates(dir: &Path, owner_uid: Option<u32>) -> String {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "namegate test PostgreSQL CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text, mode) in [
        ("server.crt", cert.pem(), 0o644),
        ("server.key", key.serialize_pem(), 0o600),
        ("ca.crt", ca_cert.pem(), 0o644),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = owner_uid {
            std::os::unix::fs::chown(&path, Some(uid), None).unwrap();
        }
    }
    ca_cert.pem()
}

/// Runs each `;`-separated statement on its own (ALTER SYSTEM refuses a transaction block).
async fn admin_exec(admin_url: &str, sql: &str) {
    let mut c = sqlx::PgConnection::connect(admin_url).await.unwrap();
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::raw_sql(AssertSqlSafe(stmt.to_owned()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
    let _ = c.close().await;
}

/// Whether the store's own connection is encrypted (pg_stat_ssl of its backend).
async fn connection_is_tls(url: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let _ = c.close().await;
    ssl
}

/// `url` with `host` instead of its host and `query` appended.
fn variant(url: &str, host: &str, query: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let port = hostport.rsplit_once(':').map(|(_, p)| p).unwrap_or("5432");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    format!("{scheme}://{userinfo}{host}:{port}/{path}?{query}")
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn the_store_connects_with_sslmode_require_and_verify_full() {
    let admin_url = std::env::var(PG_ENV).unwrap_or_else(|_| panic!("{PG_ENV} is not set"));
    let dir = tempfile::tempdir().unwrap();
    // The server runs as `postgres` when the tests run as root (scripts/lib/pg): it must own the key.
    let pg_uid = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok());
    let ca = certificates(dir.path(), pg_uid);
    let ca_path = dir.path().join("ca.crt");
    let d = dir.path().display();
    admin_exec(
        &admin_url,
        &format!(
            "ALTER SYSTEM SET ssl_cert_file = '{d}/server.crt'; \
             ALTER SYSTEM SET ssl_key_file = '{d}/server.key'; \
             ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();"
        ),
    )
    .await;
    // Each check is collected, so ssl is turned off again even when one fails.
    let db = TestDb::postgres().await;
    let other = tempfile::tempdir().unwrap();
    let outcome = async {
        let base = with_database(&admin_url, db.owner_url.rsplit('/').next().unwrap());
        let base = base.split('?').next().unwrap().to_owned();
        let require = variant(&base, "127.0.0.1", "sslmode=require");
        let full = variant(
            &base,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", ca_path.display()),
        );
        let wrong_name = variant(
            &base,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", ca_path.display()),
        );
        certificates(other.path(), None);
        let other_ca = variant(
            &base,
            "localhost",
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                other.path().join("ca.crt").display()
            ),
        );
        let mut failures = Vec::new();
        // The server may take a moment to apply the reload.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while sqlx::PgConnection::connect(&require).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                failures.push("the server never accepted sslmode=require".to_owned());
                return failures;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for (what, url) in [("require", &require), ("verify-full", &full)] {
            match AuditStore::open(url, None).await {
                Ok(store) => {
                    if let Err(e) = store.ping().await {
                        failures.push(format!("{what}: the store does not answer: {e}"));
                    }
                }
                Err(e) => failures.push(format!("{what}: the store did not open: {e}")),
            }
            if !connection_is_tls(url).await {
                failures.push(format!("{what}: the connection is not encrypted"));
            }
        }
        for (what, url) in [
            (
                "verify-full against a name the certificate does not carry",
                &wrong_name,
            ),
            ("verify-full with another CA", &other_ca),
        ] {
            if AuditStore::open(url, None).await.is_ok() {
                failures.push(format!("{what}: the store opened"));
            }
        }
        let _ = ca;
        failures
    }
    .await;
    admin_exec(
        &admin_url,
        "ALTER SYSTEM RESET ssl; ALTER SYSTEM RESET ssl_cert_file; \
         ALTER SYSTEM RESET ssl_key_file; SELECT pg_reload_conf();",
    )
    .await;
    db.cleanup().await;
    assert!(outcome.is_empty(), "{outcome:#?}");
}
