//! A throw-away database on the test PostgreSQL (`NAMEGATE_TEST_POSTGRES_URL`): created by
//! [`TempDatabase::create`], dropped when the value is dropped — also when the test fails (a panic
//! unwinds through the drop), so a long-lived PostgreSQL does not fill up with test databases.
//! Best effort: a process killed outright leaves its database behind (`scripts/lib/pg` clusters are
//! throw-away; drop leftovers with `DROP DATABASE`, they are named `<prefix>_<uuid>`).

use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub const PG_ENV: &str = "NAMEGATE_TEST_POSTGRES_URL";

pub struct TempDatabase {
    admin: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl TempDatabase {
    /// `CREATE DATABASE "<prefix>_<uuid v7>"` on the server of `NAMEGATE_TEST_POSTGRES_URL`.
    pub async fn create(prefix: &str) -> Self {
        let admin = std::env::var(PG_ENV).unwrap_or_else(|_| {
            panic!("{PG_ENV} is not set: these tests need PostgreSQL (scripts/test starts it)")
        });
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let mut c = PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
        let (base, _) = admin.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Self { admin, name, url }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime (possibly while unwinding), which cannot be blocked
        // on: a thread of its own with its own runtime does the dropping. `WITH (FORCE)` ends
        // connections the test (or a killed binary's) still holds.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut c = PgConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let r = sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
                let _ = c.close().await;
                r
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("test database {} not dropped: {e}", self.name),
            Err(_) => eprintln!(
                "test database {} not dropped: the dropping thread panicked",
                self.name
            ),
        }
    }
}
