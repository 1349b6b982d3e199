//! The migration of kubernaut DataStorage databases, on real PostgreSQL (`NAMEGATE_TEST_POSTGRES_URL`,
//! started by `scripts/test` with `scripts/lib/pg up`), through the real `namegate-migrate` binary.
//! The databases come from the fixture generator; what each ID *is* comes from the generator's own
//! record, so outcomes are compared with the truth, and chains are checked with the DataStorage
//! verification that reproduces DataStorage's vectors (`datastorage_vectors.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use namegate_migrate::datastorage::canonical::HmacKey;
use namegate_migrate::datastorage::db;
use namegate_migrate::datastorage::migrate::{ATTESTATION_TYPE, MAP_TABLE, PLAN_TABLE};
use namegate_migrate::datastorage::verify::{self, ChainClass};
use namegate_migrate::fixture::{self, Fixture, FixtureConfig};
use rand::{Rng, SeedableRng};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const KEY: &str = "namegate-test-key";

struct Db {
    url: String,
    dir: tempfile::TempDir,
    /// Dropped with the test (also when it fails).
    _db: pg_support::TempDatabase,
}

impl Db {
    async fn new() -> Self {
        let db = pg_support::TempDatabase::create("ds").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("audit-hmac-key.yaml"),
            format!("hmacKey: {KEY}\n"),
        )
        .unwrap();
        Self {
            url: db.url.clone(),
            dir,
            _db: db,
        }
    }

    async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    async fn generate(&self, cfg: &FixtureConfig) -> Fixture {
        let mut c = self.conn().await;
        fixture::generate(&mut c, cfg).await.unwrap()
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_namegate-migrate"));
        cmd.arg("--audit-url")
            .arg(&self.url)
            .arg("--hmac-key-file")
            .arg(self.dir.path().join("audit-hmac-key.yaml"))
            .args(extra);
        cmd
    }

    fn migrate(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }

    /// Everything of `audit_events` (and the migration's table without its wall-clock column).
    async fn state(&self) -> String {
        let mut c = self.conn().await;
        let events: String = sqlx::query_scalar(
            "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY event_id)), '') FROM audit_events t",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(MAP_TABLE)
            .fetch_one(&mut c)
            .await
            .unwrap();
        let map: String = if exists {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT coalesce(md5(string_agg(concat_ws(',', legacy_correlation_id, correlation_id, \
                 fingerprint, attempt, legacy_format, chain_class, legacy_tail_hash, legacy_events, \
                 attestation_event_id), '|' ORDER BY legacy_correlation_id)), '') FROM {MAP_TABLE}"
            )))
            .fetch_one(&mut c)
            .await
            .unwrap()
        } else {
            String::new()
        };
        format!("{events}/{map}")
    }

    async fn ids(&self) -> BTreeSet<String> {
        let mut c = self.conn().await;
        sqlx::query_scalar("SELECT DISTINCT correlation_id::text FROM audit_events")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    async fn mapping(&self) -> BTreeMap<String, String> {
        let mut c = self.conn().await;
        sqlx::query_as::<_, (String, String)>(AssertSqlSafe(format!(
            "SELECT legacy_correlation_id, correlation_id FROM {MAP_TABLE}"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }
}

fn stdout(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn key() -> HmacKey {
    HmacKey::new(KEY)
}

/// Every new name's chain verifies by DataStorage's rules, ends with an attestation that holds the
/// old tail hashes, and no row lost its HMAC.
async fn assert_new_chains_verify(db: &Db, fx: &Fixture, mapping: &BTreeMap<String, String>) {
    let mut c = db.conn().await;
    let targets: BTreeSet<&String> = mapping.values().collect();
    for name in targets {
        let rows = db::load(&mut c, std::slice::from_ref(name)).await.unwrap();
        let v = verify::verify(&rows, Some(&key())).unwrap();
        assert!(v.is_valid(), "{name}: {v:?}");
        let last = rows.last().unwrap();
        assert_eq!(last.event_type, ATTESTATION_TYPE, "{name}");
        assert_eq!(last.hash_algorithm, "hmac-sha256");
        // The attestation names every legacy ID of the remediation and its old tail hash.
        let legacy = last.event_data["legacy"].as_array().unwrap();
        for entry in legacy {
            let old = entry["correlation_id"].as_str().unwrap();
            assert_eq!(mapping.get(old), Some(name));
            assert!(entry["tail_event_hash"].as_str().unwrap().len() == 64);
        }
        // The remediation's IDs all moved here together.
        let rem = fx
            .remediations
            .iter()
            .find(|r| mapping.get(&r.rr_name) == Some(name))
            .unwrap();
        for id in &rem.correlation_ids {
            assert_eq!(mapping.get(id), Some(name), "{id} of {}", rem.rr_name);
        }
        assert_eq!(legacy.len(), rem.correlation_ids.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn dry_run_run_second_run_and_opt_in_rechain() {
    let db = Db::new().await;
    let fx = db.generate(&FixtureConfig::default()).await;
    assert!(fx.rows > 500, "{}", fx.rows);
    let before = db.state().await;

    // Dry run: a plan, nothing written (not even the migration's table).
    let dry = db.migrate(&["--dry-run"]);
    let out = stdout(&dry);
    assert_eq!(dry.status.code(), Some(2), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert!(out.contains("would rewrite legacy-uuid-suffix"), "{out}");
    assert_eq!(db.state().await, before, "a dry run wrote something");

    // The run: valid chains migrate, the rest is reported and untouched.
    let run = db.migrate(&[]);
    let out = stdout(&run);
    assert_eq!(run.status.code(), Some(2), "{out}");
    let mapping = db.mapping().await;
    let ids = db.ids().await;
    let valid: Vec<_> = fx.migratable(&[ChainClass::Valid]).collect();
    assert!(valid.len() > 10, "{}", valid.len());
    for rem in &fx.remediations {
        let should = valid.iter().any(|r| r.rr_name == rem.rr_name);
        for id in &rem.correlation_ids {
            assert_eq!(
                mapping.contains_key(id),
                should,
                "{id}: {:?}\n{out}",
                rem.classes
            );
            assert_eq!(ids.contains(id), !should, "{id}");
            if !should {
                assert!(out.contains(id.as_str()), "{id} not reported\n{out}");
            }
        }
    }
    // Look-alike UUIDs and other IDs are never touched.
    for (id, truth) in &fx.ids {
        if !matches!(truth, fixture::Truth::Legacy { .. }) {
            assert!(ids.contains(id) && !mapping.contains_key(id), "{id}");
        }
    }
    assert_new_chains_verify(&db, &fx, &mapping).await;
    // Every resolvable remediation got a number (kept in the plan even when its chain stayed), in
    // first-event order per fingerprint, 1..n.
    let mut c = db.conn().await;
    let planned: BTreeMap<String, String> = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(
        format!("SELECT legacy_correlation_id, correlation_id FROM {PLAN_TABLE}"),
    ))
    .fetch_all(&mut c)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut by_fp: BTreeMap<String, Vec<(jiff::Timestamp, String)>> = BTreeMap::new();
    for rem in fx
        .remediations
        .iter()
        .filter(|r| r.fingerprint_in_events && !r.prefix_mismatch)
    {
        let new = planned
            .get(&rem.rr_name)
            .unwrap_or_else(|| panic!("{} has no planned name", rem.rr_name));
        by_fp
            .entry(rem.fingerprint.to_hex())
            .or_default()
            .push((rem.first_event, new.clone()));
    }
    for (fp, mut list) in by_fp {
        list.sort();
        let attempts: Vec<u32> = list
            .iter()
            .map(|(_, n)| match crd_schema::CorrelationId::parse(n) {
                crd_schema::CorrelationId::Rr(p) => p.attempt.get(),
                other => panic!("{n} is not a new name: {other:?}"),
            })
            .collect();
        let want: Vec<u32> = (1..=u32::try_from(attempts.len()).unwrap()).collect();
        assert_eq!(attempts, want, "{fp}");
    }

    // The AU-9 trigger is back on.
    let mut c = db.conn().await;
    let err = sqlx::query("UPDATE audit_events SET correlation_id = 'x' WHERE correlation_id = $1")
        .bind(mapping.values().next().unwrap())
        .execute(&mut c)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("23514")
    );

    // A second run changes nothing and says so.
    let after = db.state().await;
    let again = db.migrate(&[]);
    let out2 = stdout(&again);
    assert!(out2.contains("nothing to change"), "{out2}");
    assert_eq!(db.state().await, after);

    // Opt-in: ordering-only failures re-chained; tampered and purged chains still left.
    let rechain = db.migrate(&[
        "--rechain-class",
        "same-second-ties",
        "--rechain-class",
        "out-of-order",
    ]);
    let out3 = stdout(&rechain);
    assert_eq!(rechain.status.code(), Some(2), "{out3}");
    let mapping = db.mapping().await;
    let ordering: Vec<_> = fx
        .migratable(&[
            ChainClass::Valid,
            ChainClass::SameSecondTies,
            ChainClass::OutOfOrder,
        ])
        .collect();
    assert!(
        ordering.len() > valid.len() + 2,
        "{} vs {}",
        ordering.len(),
        valid.len()
    );
    for rem in &fx.remediations {
        let should = ordering.iter().any(|r| r.rr_name == rem.rr_name);
        assert_eq!(
            mapping.contains_key(&rem.rr_name),
            should,
            "{}: {:?}",
            rem.rr_name,
            rem.classes
        );
    }
    assert_new_chains_verify(&db, &fx, &mapping).await;
    for (legacy, new) in &mapping {
        assert_eq!(
            planned.get(legacy),
            Some(new),
            "{legacy} moved to its planned name"
        );
    }
    // The re-chained ones keep every old link in their attestation.
    let mut c = db.conn().await;
    let tied = fx
        .remediations
        .iter()
        .find(|r| {
            r.classes.values().any(|c| *c == ChainClass::SameSecondTies)
                && mapping.contains_key(&r.rr_name)
        })
        .unwrap();
    let rows = db::load(&mut c, &[mapping[&tied.rr_name].clone()])
        .await
        .unwrap();
    let att = &rows.last().unwrap().event_data["legacy"][0];
    assert_eq!(att["chain_class"], "same-second-ties");
    assert!(!att["links"].as_array().unwrap().is_empty());

    // DataStorage's writer appends after the migration: it links to the newest row by
    // (event_timestamp, event_id) — the attestation — and the chain still verifies.
    let name = mapping[&tied.rr_name].clone();
    let head = rows
        .iter()
        .max_by(|a, b| (a.event_timestamp, &a.event_id).cmp(&(b.event_timestamp, &b.event_id)))
        .unwrap();
    let mut next = rows[0].clone();
    next.event_id = uuid::Uuid::new_v4().to_string();
    next.event_timestamp = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    next.event_date = next
        .event_timestamp
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    next.event_type = "orchestrator.lifecycle.completed".into();
    next.event_data = serde_json::json!({"event_type": "orchestrator.lifecycle.completed"});
    next.hash_algorithm = "hmac-sha256".into();
    let prev = head.event_hash.clone().unwrap();
    next.event_hash = Some(next.compute_hash(&prev, Some(&key())).unwrap());
    next.previous_event_hash = Some(prev);
    db::insert(&mut c, std::slice::from_ref(&next))
        .await
        .unwrap();
    let after = db::load(&mut c, std::slice::from_ref(&name)).await.unwrap();
    assert_eq!(after.len(), rows.len() + 1);
    assert!(verify::verify(&after, Some(&key())).unwrap().is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn sigkill_at_random_points_then_resume_ends_in_the_same_state() {
    let cfg = FixtureConfig {
        remediations: 120,
        ..FixtureConfig::default()
    };
    let args = ["--rechain-class", "same-second-ties", "--batch-rows", "40"];
    // The killed runs read the scan in pages of 7 IDs, the reference in one page: the state must
    // not depend on where pages end either.
    let paged = [&args[..], &["--scan-page", "7"]].concat();
    let reference = Db::new().await;
    reference.generate(&cfg).await;
    let reference_start = reference.state().await;
    let done = reference.migrate(&args);
    assert_eq!(done.status.code(), Some(2), "{}", stdout(&done));
    let want = reference.state().await;

    let db = Db::new().await;
    let fx = db.generate(&cfg).await;
    let start_state = db.state().await;
    assert_eq!(
        start_state, reference_start,
        "the generator is deterministic"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut kills = 0;
    let mut changed_between_kills = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = start_state.clone();
    while kills < 6 && Instant::now() < deadline {
        let mut child = db.command(&paged).stdout(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        match child.try_wait().unwrap() {
            Some(_) => break, // finished before the kill
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        let now = db.state().await;
        if now != last {
            changed_between_kills += 1;
        }
        last = now;
    }
    assert!(kills >= 1, "the binary always finished before being killed");
    let finish = db.migrate(&paged);
    assert_eq!(finish.status.code(), Some(2), "{}", stdout(&finish));
    assert_eq!(
        db.state().await,
        want,
        "killed {kills} times ({changed_between_kills} with progress); {} vs {}",
        db.url,
        reference.url
    );
    assert_new_chains_verify(&db, &fx, &db.mapping().await).await;
}

/// A figure of the report's summary (`  label: N …`).
fn figure(out: &str, label: &str) -> usize {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in\n{out}"))
}

/// What a run holds in memory does not grow with the number of remediations: it reads the scan a
/// page at a time and resolves one fingerprint group at a time, so it holds at most a page, a group
/// and a batch of correlation IDs (docs/migration.md, "Scale: bounded memory"). Before the walk it
/// held every ID of the database at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn a_run_holds_one_page_one_group_and_one_batch_of_ids() {
    let db = Db::new().await;
    let fx = db
        .generate(&FixtureConfig {
            remediations: 150,
            ..FixtureConfig::default()
        })
        .await;
    // The largest fingerprint group, from the generator's record of what each ID is.
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (id, truth) in &fx.ids {
        let key = match truth {
            fixture::Truth::Legacy { remediation } => {
                fx.remediations[*remediation].fingerprint.to_hex()[..12].to_owned()
            }
            _ => id.clone(),
        };
        *groups.entry(key).or_default() += 1;
    }
    let biggest = groups.values().copied().max().unwrap();
    let (page, batch) = (16, 40);
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec![
            "--batch-rows",
            "40",
            "--scan-page",
            "16",
            "--rechain-class",
            "same-second-ties",
        ];
        args.extend_from_slice(extra);
        let run = db.migrate(&args);
        let out = stdout(&run);
        assert_eq!(run.status.code(), Some(2), "{out}");
        let held = figure(&out, "most IDs held at once:");
        let examined = figure(&out, "correlation IDs examined:");
        assert!(examined >= 200, "{examined}");
        assert!(
            held <= page + batch + 2 * biggest,
            "held {held} IDs at once (page {page}, batch {batch} rows, largest group {biggest})\n{out}"
        );
        println!("held {held} of {examined} IDs at once");
        assert!(held * 3 < examined, "held {held} of {examined}");
    }
    assert!(!db.mapping().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn insert_seq_schema_and_replication_role_bypass() {
    let db = Db::new().await;
    let fx = db
        .generate(&FixtureConfig {
            insert_seq: true,
            remediations: 30,
            ..FixtureConfig::default()
        })
        .await;
    let run = db.migrate(&[
        "--bypass",
        "replication-role",
        "--rechain-class",
        "same-second-ties",
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", stdout(&run));
    let mapping = db.mapping().await;
    assert!(!mapping.is_empty());
    assert_new_chains_verify(&db, &fx, &mapping).await;
    // The newer DataStorage's "newest by insert_seq" agrees with the new chain order.
    let mut c = db.conn().await;
    for name in mapping.values().collect::<BTreeSet<_>>() {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT insert_seq FROM audit_events WHERE correlation_id = $1 \
             ORDER BY event_timestamp, event_id",
        )
        .bind(name)
        .fetch_all(&mut c)
        .await
        .unwrap();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and the real kube-apiserver: run scripts/test"]
async fn live_legacy_rrs_are_labelled_on_the_real_api_server() {
    use crd_schema::meta::{ATTEMPT_LABEL, CORRELATION_ANNOTATION};
    use crd_schema::{Attempt, RemediationRequest};
    use kube::api::{Api, PostParams};

    let client = namegate_e2e::client().await;
    namegate_e2e::install_crd(&client).await;
    let ns = namegate_e2e::fresh_namespace(&client, "migrate").await;
    let rrs: Api<RemediationRequest> = Api::namespaced(client.clone(), &ns);

    let db = Db::new().await;
    let fx = db
        .generate(&FixtureConfig {
            remediations: 40,
            ..FixtureConfig::default()
        })
        .await;
    let legacy_rr = |name: &str, fp: &crd_schema::Fingerprint| {
        let mut rr = namegate_e2e::sample_rr(fp, Attempt::new(1).unwrap(), "app");
        rr.metadata.name = Some(name.to_owned());
        rr.metadata.labels = None;
        rr.metadata.annotations = None;
        rr
    };
    let live: Vec<_> = fx.remediations.iter().filter(|r| r.live).collect();
    assert!(live.len() >= 3);
    for r in &live {
        rrs.create(
            &PostParams::default(),
            &legacy_rr(&r.rr_name, &r.fingerprint),
        )
        .await
        .unwrap();
    }
    // A live legacy RR with no trail in the database: labelled from its own spec.
    let fp = crd_schema::Fingerprint::of_input("prod:Deployment:trailless");
    let trailless = format!("rr-{}-0c0ffee0", &fp.to_hex()[..12]);
    rrs.create(&PostParams::default(), &legacy_rr(&trailless, &fp))
        .await
        .unwrap();

    let args = ["--live-rrs", "--namespace", ns.as_str()];
    let run = db.migrate(&args);
    let out = stdout(&run);
    assert_eq!(run.status.code(), Some(2), "{out}");
    let mapping = db.mapping().await;
    let mut labelled = 0;
    for r in &live {
        let obj = rrs.get(&r.rr_name).await.unwrap();
        let labels = obj.metadata.labels.unwrap_or_default();
        let annotations = obj.metadata.annotations.unwrap_or_default();
        match mapping.get(&r.rr_name) {
            Some(new) => {
                let p = match crd_schema::CorrelationId::parse(new) {
                    crd_schema::CorrelationId::Rr(p) => p,
                    other => panic!("{other:?}"),
                };
                assert_eq!(labels.get(ATTEMPT_LABEL), Some(&p.attempt.to_string()));
                assert_eq!(annotations.get(CORRELATION_ANNOTATION), Some(new));
                assert_eq!(p.fingerprint, r.fingerprint);
                labelled += 1;
            }
            None => {
                // Its trail did not move (unresolved or unverified): no attempt settled yet.
                assert!(!labels.contains_key(ATTEMPT_LABEL), "{}", r.rr_name);
            }
        }
    }
    assert!(labelled >= 1, "{out}");
    let t = rrs.get(&trailless).await.unwrap();
    assert_eq!(
        t.metadata.labels.unwrap_or_default().get(ATTEMPT_LABEL),
        Some(&"1".to_owned())
    );
    assert_eq!(
        t.metadata
            .annotations
            .unwrap_or_default()
            .get(CORRELATION_ANNOTATION),
        Some(&crd_schema::name::name(&fp, Attempt::new(1).unwrap()))
    );
    assert!(
        out.contains(&format!("live RRs labelled:          {}", labelled + 1)),
        "{out}"
    );

    // Second run: nothing to patch, nothing to rewrite.
    let again = db.migrate(&args);
    let out2 = stdout(&again);
    assert!(out2.contains("nothing to change"), "{out2}");
    assert!(out2.contains("live RRs labelled:          0"), "{out2}");
}
