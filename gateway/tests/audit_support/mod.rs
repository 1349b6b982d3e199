//! Shared harness of the audit tests: one suite, two engines.
//!
//! - SQLite: a fresh file in a temporary directory per test.
//! - PostgreSQL: a fresh database `t_<uuid>` per test on the server named by
//!   `NAMEGATE_TEST_POSTGRES_URL` (set by `scripts/test` from `scripts/lib/pg up`). PostgreSQL tests
//!   are `#[ignore]`d so a plain `cargo test` needs no server; run with `--include-ignored` they FAIL
//!   when the variable is missing — never skip silently.
//!
//! Outages are real: on PostgreSQL a TCP proxy between the store and the server that can cut every
//! connection and refuse new ones (what a network partition or a server restart looks like from the
//! client; the full-server stop is `audit_outage.rs`); on SQLite another connection holding the
//! database's write lock longer than the store's busy timeout.

#![allow(dead_code)] // each test binary uses a different part of the harness
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use namegate::audit::store::{AuditStore, Engine, StoreConfig};
use namegate::audit::{AuditEvent, EventOutcome, EventType};
use sqlx::{AssertSqlSafe, Connection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

pub const PG_ENV: &str = "NAMEGATE_TEST_POSTGRES_URL";

/// Runs each listed async test body `fn name(TestDb)` once per engine: `name::sqlite`,
/// `name::sqlite_writer` (SQLite opened as the audit writer opens it: appends on a connection of their
/// own, synchronously; `StoreConfig::for_batch_writer`) and `name::postgres` (ignored unless
/// PostgreSQL is provided).
#[allow(unused_macros)] // not every test binary uses it
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::audit_support::init_logging();
                    super::$name(super::audit_support::TestDb::sqlite().await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite_writer() {
                    super::audit_support::init_logging();
                    super::$name(super::audit_support::TestDb::sqlite_writer().await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: run scripts/test"]
                async fn postgres() {
                    super::audit_support::init_logging();
                    super::$name(super::audit_support::TestDb::postgres().await).await
                }
            }
        )*
    };
}

/// One isolated store location.
#[derive(Debug)]
pub struct TestDb {
    pub engine: Engine,
    /// Where the store connects (through the proxy on PostgreSQL).
    pub url: String,
    /// Direct connection URL as the owner (bypasses the proxy): for tampering and inspection.
    pub owner_url: String,
    pub dir: tempfile::TempDir,
    proxy: Option<Proxy>,
    admin_url: Option<String>,
    db_name: Option<String>,
    lock_holder: Mutex<Option<sqlx::SqliteConnection>>,
    /// [`TestDb::config`] is the audit writer's ([`StoreConfig::for_batch_writer`]).
    writer_config: bool,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        Self {
            engine: Engine::Sqlite,
            owner_url: url.clone(),
            url,
            dir,
            proxy: None,
            admin_url: None,
            db_name: None,
            lock_holder: Mutex::new(None),
            writer_config: false,
        }
    }

    /// SQLite, every store opened with the audit writer's settings.
    pub async fn sqlite_writer() -> Self {
        Self {
            writer_config: true,
            ..Self::sqlite().await
        }
    }

    pub async fn postgres() -> Self {
        let admin_url = std::env::var(PG_ENV).unwrap_or_else(|_| {
            panic!(
                "{PG_ENV} is not set: PostgreSQL tests need a server (scripts/test starts one with \
                 scripts/lib/pg up)"
            )
        });
        let db_name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {admin_url}: {e}"));
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{db_name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let owner_url = with_database(&admin_url, &db_name);
        let proxy = Proxy::start(&owner_url).await;
        let url = proxy.url_for(&owner_url);
        Self {
            engine: Engine::Postgres,
            url,
            owner_url,
            dir: tempfile::tempdir().expect("temp dir"),
            proxy: Some(proxy),
            admin_url: Some(admin_url),
            db_name: Some(db_name),
            lock_holder: Mutex::new(None),
            writer_config: false,
        }
    }

    /// Store settings for tests: short timeouts so an outage is noticed quickly.
    pub fn config(&self) -> StoreConfig {
        let mut cfg = StoreConfig::new(&self.url);
        cfg.acquire_timeout = Duration::from_millis(1500);
        cfg.busy_timeout = Duration::from_millis(200);
        if self.writer_config {
            cfg = cfg.for_batch_writer();
        }
        cfg
    }

    pub async fn open(&self) -> AuditStore {
        AuditStore::open_with(&self.config())
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }

    /// Runs SQL (several statements allowed) as the database owner, bypassing the store.
    pub async fn exec_owner(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.engine {
            Engine::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.owner_url).await?;
                let r = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
                r.map(|_| ())
            }
            Engine::Postgres | Engine::DataStorage => {
                let mut c = sqlx::PgConnection::connect(&self.owner_url).await?;
                let r = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
                r.map(|_| ())
            }
        }
    }

    /// Rewrites one row as the owner, getting around the append-only trigger the way an attacker with
    /// owner rights would.
    pub async fn tamper(&self, set: &str, event_id: &str) {
        let sql = match self.engine {
            Engine::Sqlite => format!(
                "DROP TRIGGER IF EXISTS audit_events_refuse_update; \
                 UPDATE audit_events SET {set} WHERE event_id = '{event_id}';"
            ),
            Engine::Postgres | Engine::DataStorage => format!(
                "BEGIN; SET LOCAL session_replication_role = replica; \
                 UPDATE audit_events SET {set} WHERE event_id = '{event_id}'; COMMIT;"
            ),
        };
        self.exec_owner(&sql).await.expect("tamper as owner");
    }

    /// Deletes one row as the owner, around the trigger.
    pub async fn tamper_delete(&self, event_id: &str) {
        let sql = match self.engine {
            Engine::Sqlite => format!(
                "DROP TRIGGER IF EXISTS audit_events_refuse_delete; \
                 DELETE FROM audit_events WHERE event_id = '{event_id}';"
            ),
            Engine::Postgres | Engine::DataStorage => format!(
                "BEGIN; SET LOCAL session_replication_role = replica; \
                 DELETE FROM audit_events WHERE event_id = '{event_id}'; COMMIT;"
            ),
        };
        self.exec_owner(&sql).await.expect("delete as owner");
    }

    /// The migration's controlled rewrite of one correlation ID (docs/migration.md): `correlation_id := new`, the old
    /// value kept in `legacy_correlation_id`, through the guard each engine provides.
    pub async fn migrate_correlation(&self, old: &str, new: &str) -> Result<(), sqlx::Error> {
        let rewrite = format!(
            "UPDATE audit_events SET legacy_correlation_id = correlation_id, correlation_id = '{new}' \
             WHERE correlation_id = '{old}' AND legacy_correlation_id IS NULL;"
        );
        let sql = match self.engine {
            Engine::Sqlite => format!(
                "BEGIN IMMEDIATE; \
                 INSERT INTO audit_migration_guard (id, holder, acquired_at) VALUES (1, 'test', 'now'); \
                 {rewrite} DELETE FROM audit_migration_guard; COMMIT;"
            ),
            Engine::Postgres | Engine::DataStorage => {
                format!("BEGIN; SET LOCAL namegate.migration = 'on'; {rewrite} COMMIT;")
            }
        };
        self.exec_owner(&sql).await
    }

    /// Makes the store unreachable for writes until [`TestDb::outage_end`].
    pub async fn outage_begin(&self) {
        match self.engine {
            Engine::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.owner_url)
                    .await
                    .expect("lock holder connection");
                sqlx::raw_sql("BEGIN EXCLUSIVE")
                    .execute(&mut c)
                    .await
                    .expect("take the write lock");
                *self.lock_holder.lock().await = Some(c);
            }
            Engine::Postgres | Engine::DataStorage => {
                self.proxy.as_ref().expect("proxy").cut().await
            }
        }
    }

    pub async fn outage_end(&self) {
        match self.engine {
            Engine::Sqlite => {
                if let Some(mut c) = self.lock_holder.lock().await.take() {
                    sqlx::raw_sql("ROLLBACK")
                        .execute(&mut c)
                        .await
                        .expect("release the write lock");
                    let _ = c.close().await;
                }
            }
            Engine::Postgres | Engine::DataStorage => self.proxy.as_ref().expect("proxy").restore(),
        }
    }

    /// Drops the PostgreSQL test database (SQLite: the temp dir goes with `self`).
    pub async fn cleanup(self) {
        if let (Some(admin_url), Some(db)) = (&self.admin_url, &self.db_name)
            && let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await
        {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_and_path = &base[scheme_end..];
    let host = host_and_path
        .split_once('/')
        .map_or(host_and_path, |(h, _)| h);
    let mut out = format!("{}{host}/{db}", &base[..scheme_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A TCP proxy in front of PostgreSQL that can simulate an outage: `cut` closes every proxied
/// connection and makes new ones fail at once; `restore` lets connections through again.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_url: &str) -> Self {
        let upstream = host_port(upstream_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = {
            let down = down.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            // As the driver does on its own socket: no Nagle delay (40 ms per
                            // round trip with delayed ACKs).
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    let mut conns = conns.lock().await;
                    conns.retain(|h| !h.is_finished());
                    conns.push(task.abort_handle());
                }
            })
        };
        Self {
            port,
            down,
            conns,
            accept,
        }
    }

    pub fn url_for(&self, upstream_url: &str) -> String {
        let hp = host_port(upstream_url);
        upstream_url.replacen(&hp, &format!("127.0.0.1:{}", self.port), 1)
    }

    pub async fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for h in self.conns.lock().await.drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// Logs of the code under test, when `NAMEGATE_TEST_LOG` is set (an `EnvFilter`, e.g. `debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("NAMEGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// An event for correlation `cid`, numbered `n` (in `event_data.n`), about RR object `rr_uid`.
pub fn event(cid: &str, n: u64, rr_uid: Option<&str>) -> AuditEvent {
    let mut ev = AuditEvent::new(EventType::SignalDeduplicated, EventOutcome::Success, cid);
    ev.fingerprint = Some("ab".repeat(32));
    ev.namespace = Some("prod".into());
    ev.actor_type = Some("ServiceAccount".into());
    ev.actor_id = Some("system:serviceaccount:monitoring:alertmanager".into());
    ev.event_data =
        serde_json::json!({ "n": n, "rr_uid": rr_uid, "signal_name": "KubePodCrashLooping" })
            .into();
    ev
}

/// Polls `check` until it returns true or `timeout` passes (then panics with `what`).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
