//! Builds realistic kubernaut DataStorage databases on PostgreSQL, for the tests and the bench
//! (docs/migration.md, "Fixtures").
//!
//! DataStorage's schema (`datastorage/schema.sql`: monthly partitions, the AU-9 trigger), optionally
//! with the newer `insert_seq` column, and remediations the way kubernaut's services wrote them:
//! whole-second timestamps, several services' events under one RR name, the gateway's two events of an
//! admission in one batch, the writer's "link to the newest row by (timestamp, event_id)" rule, HMAC
//! key rollout in the middle of chains. Alongside: all three legacy formats (the unix-seconds era with its
//! RR-UID-keyed orchestrator and AI events, the uuid-suffix era), several attempts per fingerprint,
//! trails with no fingerprint anywhere, IDs that only look like RR UIDs, chains that fail DataStorage's
//! verification only because of same-second ordering or a late event, chains whose head was purged and
//! really tampered ones. The [`Fixture`] returned says what each ID is, so tests compare the migration's
//! outcome with the truth rather than with itself.

use std::collections::BTreeMap;

use crd_schema::Fingerprint;
use jiff::{SignedDuration, Timestamp, ToSpan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::datastorage::canonical::{HmacKey, Row};
use crate::datastorage::db::{self, DbError};
use crate::datastorage::verify::ChainClass;

/// The SQL of DataStorage's `audit_events` (see the file's header).
pub const SCHEMA_SQL: &str = include_str!("datastorage/schema.sql");

/// Namespace of kubernaut's RRs (its controller namespace).
pub const RR_NAMESPACE: &str = "kubernaut-system";

#[derive(Clone, Debug)]
pub struct FixtureConfig {
    pub seed: u64,
    /// Legacy remediations (RRs) to generate.
    pub remediations: usize,
    /// Average number of remediations per fingerprint (≥ 1): several attempts per fingerprint.
    pub attempts_per_fingerprint: usize,
    /// The HMAC key of keyed chains (`None`: every chain unkeyed).
    pub hmac_key: Option<String>,
    /// The newer schema variant with `insert_seq`.
    pub insert_seq: bool,
    /// Extra duplicate signals per remediation (`gateway.signal.deduplicated`), on average.
    pub duplicates: usize,
    /// Generate the special cases (ties, late events, purged heads, tampering, unresolvable IDs,
    /// look-alikes). Off for the bench's bulk, which still gets whatever ties arise naturally.
    pub special_cases: bool,
}

impl Default for FixtureConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            remediations: 60,
            attempts_per_fingerprint: 3,
            hmac_key: Some("namegate-test-key".to_owned()),
            insert_seq: false,
            duplicates: 1,
            special_cases: true,
        }
    }
}

/// What a generated correlation ID is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Truth {
    /// A legacy RR name or UID: `remediation` indexes [`Fixture::remediations`].
    Legacy { remediation: usize },
    /// A UUID that is not an RR UID (NR UID, admission UID, DataStorage self-audit, random).
    LookAlike,
    /// Some other non-RR ID (`config-reload-…`, `nr-approval-…`, readable crd.failed IDs).
    Other,
}

/// One generated legacy remediation.
#[derive(Clone, Debug)]
pub struct Remediation {
    pub rr_name: String,
    pub rr_uid: String,
    /// Correlation IDs the remediation's events were written under (the name, and the UID in the
    /// UID era).
    pub correlation_ids: Vec<String>,
    pub fingerprint: Fingerprint,
    /// What the migration can learn the fingerprint from: `false` means no event carries it (only a
    /// live RR could tell).
    pub fingerprint_in_events: bool,
    /// The name's prefix disagrees with the fingerprint its events carry.
    pub prefix_mismatch: bool,
    /// The expected class of each correlation ID's chain.
    pub classes: BTreeMap<String, ChainClass>,
    pub first_event: Timestamp,
    /// Whether the RR should still exist in the cluster (the newest remediation of some fingerprints).
    pub live: bool,
    pub format: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Fixture {
    pub remediations: Vec<Remediation>,
    pub ids: BTreeMap<String, Truth>,
    pub rows: usize,
}

impl Fixture {
    /// Remediations whose every chain is in one of `classes` and whose fingerprint is knowable
    /// from the events: what a migration allowed to re-chain `classes` must rewrite.
    pub fn migratable(&self, classes: &[ChainClass]) -> impl Iterator<Item = &Remediation> {
        self.remediations.iter().filter(move |r| {
            r.fingerprint_in_events
                && !r.prefix_mismatch
                && r.classes.values().all(|c| classes.contains(c))
        })
    }
}

/// Creates DataStorage's schema (and the `insert_seq` variant) in an empty database, with monthly
/// partitions from `first_month` to four months after `now` (what DataStorage's startup ensures).
pub async fn create_schema(
    conn: &mut PgConnection,
    insert_seq: bool,
    first_month: jiff::civil::Date,
) -> Result<(), DbError> {
    sqlx::raw_sql(SCHEMA_SQL).execute(&mut *conn).await?;
    if insert_seq {
        sqlx::raw_sql(
            "CREATE SEQUENCE audit_events_insert_seq; \
             ALTER TABLE audit_events ADD COLUMN insert_seq bigint NOT NULL \
               DEFAULT nextval('audit_events_insert_seq');",
        )
        .execute(&mut *conn)
        .await?;
    }
    let last = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .first_of_month()
        .saturating_add(4.months());
    let mut m = first_month.first_of_month();
    while m < last {
        create_partition(conn, m).await?;
        m = m.saturating_add(1.month());
    }
    Ok(())
}

/// `audit_events_YYYY_MM`, as DataStorage's `EnsureMonthlyPartitions` creates it.
pub async fn create_partition(
    conn: &mut PgConnection,
    month: jiff::civil::Date,
) -> Result<(), DbError> {
    let from = month.first_of_month();
    let to = from.saturating_add(1.month());
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS audit_events_{} PARTITION OF audit_events FOR VALUES FROM ('{from}') TO ('{to}')",
        from.strftime("%Y_%m")
    );
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The generator's state.
struct Gen {
    rng: StdRng,
    key: Option<HmacKey>,
    /// Rows waiting to be inserted.
    pending: Vec<Row>,
    rows: usize,
}

/// Era boundaries of kubernaut's RR names (see docs/migration.md, "Legacy formats").
fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Gen {
    fn uuid(&mut self) -> String {
        let mut b: [u8; 16] = self.rng.random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(b).to_string()
    }

    async fn flush(&mut self, conn: &mut PgConnection, force: bool) -> Result<(), DbError> {
        if self.pending.len() >= 2000 || (force && !self.pending.is_empty()) {
            let rows = std::mem::take(&mut self.pending);
            self.rows += rows.len();
            db::insert(conn, &rows).await?;
        }
        Ok(())
    }
}

/// One event before hashing.
struct Ev {
    at: Timestamp,
    event_type: &'static str,
    category: &'static str,
    action: &'static str,
    actor: (&'static str, String),
    resource: (&'static str, String),
    data: Value,
    /// Written in the same batch as the previous event (links to it whatever the timestamps).
    same_batch: bool,
}

fn row_of(g: &mut Gen, cid: &str, e: &Ev, keyed: bool) -> Row {
    Row {
        event_id: g.uuid(),
        event_timestamp: e.at,
        event_date: e.at.to_zoned(jiff::tz::TimeZone::UTC).date(),
        event_version: "1.0".into(),
        event_type: e.event_type.into(),
        event_category: e.category.into(),
        event_action: e.action.into(),
        event_outcome: "success".into(),
        correlation_id: cid.into(),
        parent_event_id: None,
        parent_event_date: None,
        resource_type: e.resource.0.into(),
        resource_id: e.resource.1.clone(),
        namespace: Some(RR_NAMESPACE.into()),
        cluster_id: None,
        actor_type: e.actor.0.into(),
        actor_id: e.actor.1.clone(),
        actor_ip: None,
        severity: Some("info".into()),
        duration_ms: None,
        error_code: None,
        error_message: None,
        retention_days: 2555,
        is_sensitive: false,
        event_data: e.data.clone(),
        event_hash: None,
        previous_event_hash: None,
        hash_algorithm: if keyed {
            "hmac-sha256"
        } else {
            "sha256-unkeyed"
        }
        .into(),
    }
}

/// How the random `event_id`s of events sharing a second relate to their write order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ties {
    /// As in kubernaut: random (about half of the same-second pairs break verification).
    Random,
    /// Increasing in write order: same-second events verify.
    Ordered,
    /// Decreasing in write order: every same-second group breaks verification.
    Reversed,
}

/// Writes one chain the way DataStorage's writer does: each event links to the newest row by
/// `(event_timestamp, event_id)` at the time it is written, or to the previous event of its batch.
/// Events are given in write order. `keyed_from`: index from which rows are HMAC (key rollout).
fn chain(g: &mut Gen, cid: &str, events: &[Ev], keyed_from: Option<usize>, ties: Ties) -> Vec<Row> {
    let mut ids: Vec<String> = events.iter().map(|_| g.uuid()).collect();
    if ties != Ties::Random {
        let mut i = 0;
        while i < events.len() {
            let mut j = i + 1;
            while j < events.len() && events[j].at == events[i].at {
                j += 1;
            }
            ids[i..j].sort();
            if ties == Ties::Reversed {
                ids[i..j].reverse();
            }
            i = j;
        }
    }
    let mut rows: Vec<Row> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let keyed = keyed_from.is_some_and(|k| i >= k) && g.key.is_some();
        let mut r = row_of(g, cid, e, keyed);
        r.event_id = ids[i].clone();
        let prev = if e.same_batch && i > 0 {
            rows[i - 1].event_hash.clone().unwrap_or_default()
        } else {
            rows.iter()
                .max_by(|a, b| {
                    (a.event_timestamp, &a.event_id).cmp(&(b.event_timestamp, &b.event_id))
                })
                .and_then(|h| h.event_hash.clone())
                .unwrap_or_default()
        };
        let key = g.key.clone();
        let h = r.compute_hash(&prev, key.as_ref()).unwrap_or_default();
        r.previous_event_hash = Some(prev);
        r.event_hash = Some(h);
        rows.push(r);
    }
    rows
}

fn gateway_payload(
    event_type: &str,
    fp: &Fingerprint,
    rr: &str,
    workload: &str,
    dedup: bool,
) -> Value {
    let mut d = json!({
        "event_type": event_type,
        "signal_type": "alert",
        "signal_name": "HighMemoryUsage",
        "namespace": "prod",
        "fingerprint": fp.to_hex(),
        "remediation_request": format!("{RR_NAMESPACE}/{rr}"),
        "signal_labels": {"alertname": "HighMemoryUsage", "namespace": "prod"},
        "signal_annotations": {},
        "original_payload": {"fingerprint": "5d8f1e0a2b3c4d5e", "status": "firing",
                             "labels": {"deployment": workload}},
    });
    if dedup {
        d["deduplication_status"] = json!("duplicate");
        d["occurrence_count"] = json!(2);
    } else {
        d["deduplication_status"] = json!("new");
        d["severity"] = json!("critical");
        d["resource_kind"] = json!("Deployment");
        d["resource_name"] = json!(workload);
    }
    d
}

/// Generates the database content described by `cfg` into the (empty) database behind `conn`,
/// creating the schema first.
pub async fn generate(conn: &mut PgConnection, cfg: &FixtureConfig) -> Result<Fixture, DbError> {
    create_schema(conn, cfg.insert_seq, jiff::civil::date(2025, 11, 1)).await?;
    let mut g = Gen {
        rng: StdRng::seed_from_u64(cfg.seed),
        key: cfg.hmac_key.clone().map(HmacKey::new),
        pending: Vec::new(),
        rows: 0,
    };
    let mut fx = Fixture::default();
    let fingerprints = (cfg.remediations / cfg.attempts_per_fingerprint.max(1)).max(1);
    let unix_era = ts("2025-11-20T00:00:00Z");
    let uid_era = ts("2025-12-29T00:00:00Z");
    let uuid_era = ts("2026-01-24T00:00:00Z");
    let wf_fp_era = ts("2026-04-19T00:00:00Z");
    let end = ts("2026-10-31T00:00:00Z");
    let span = end.as_second() - unix_era.as_second();
    let mut by_fp: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..cfg.remediations {
        let fp_index = g.rng.random_range(0..fingerprints);
        let workload = format!("app-{fp_index}");
        let fp = Fingerprint::of_input(&format!("prod:Deployment:{workload}"));
        let start = Timestamp::from_second(unix_era.as_second() + g.rng.random_range(0..span))
            .unwrap_or(unix_era);
        let p12 = &fp.to_hex()[..12];
        let (rr_name, format) = if start < uuid_era {
            (
                format!("rr-{p12}-{}", start.as_second()),
                "legacy-unix-suffix",
            )
        } else {
            let suffix: u32 = g.rng.random();
            (format!("rr-{p12}-{suffix:08x}"), "legacy-uuid-suffix")
        };
        let rr_uid = g.uuid();
        let uid_keyed = start >= uid_era && start < uuid_era;
        // Special cases, by index so every kind occurs in small fixtures.
        let case = if cfg.special_cases { i % 10 } else { 9 };
        let no_fingerprint = case == 3 && start >= uuid_era && start < wf_fp_era;
        let prefix_mismatch = case == 5;
        let mut rem = Remediation {
            rr_name: rr_name.clone(),
            rr_uid: rr_uid.clone(),
            correlation_ids: vec![rr_name.clone()],
            fingerprint: fp,
            fingerprint_in_events: !no_fingerprint,
            prefix_mismatch,
            classes: BTreeMap::new(),
            first_event: start,
            live: false,
            format,
        };
        // The name's trail, in write order, one second apart unless tied.
        let mut t = start;
        let mut next = |g: &mut Gen, tie: bool| {
            if !tie {
                t = plus(t, SignedDuration::from_secs(g.rng.random_range(1..30)));
            }
            t
        };
        let gw_fp = if prefix_mismatch {
            Fingerprint::of_input(&format!("prod:Deployment:{workload}-other"))
        } else {
            fp
        };
        let mut name_events = Vec::new();
        if !no_fingerprint {
            let at = next(&mut g, false);
            name_events.push(Ev {
                at,
                event_type: "gateway.signal.received",
                category: "gateway",
                action: "received",
                actor: ("external", "prometheus-alertmanager".into()),
                resource: ("Signal", gw_fp.to_hex()),
                data: gateway_payload(
                    "gateway.signal.received",
                    &gw_fp,
                    &rr_name,
                    &workload,
                    false,
                ),
                same_batch: false,
            });
            // crd.created in the same batch and (always, with whole seconds) the same second.
            name_events.push(Ev {
                at,
                event_type: "gateway.crd.created",
                category: "gateway",
                action: "created",
                actor: ("gateway", "crd-creator".into()),
                resource: ("RemediationRequest", rr_name.clone()),
                data: {
                    let mut d =
                        gateway_payload("gateway.crd.created", &gw_fp, &rr_name, &workload, false);
                    d["occurrence_count"] = json!(1);
                    d
                },
                same_batch: true,
            });
        }
        let services: [(&str, &str, &str); 4] = [
            (
                "signalprocessing.enrichment.completed",
                "signalprocessing",
                "enrichment",
            ),
            (
                "workflowexecution.workflow.started",
                "workflowexecution",
                "started",
            ),
            ("notification.message.sent", "notification", "sent"),
            (
                "effectiveness.assessment.completed",
                "effectiveness",
                "assessed",
            ),
        ];
        for (et, cat, action) in services {
            let at = next(&mut g, false);
            name_events.push(Ev {
                at,
                event_type: et,
                category: cat,
                action,
                actor: ("service", format!("{cat}-service")),
                resource: (cat_resource(cat), rr_name.clone()),
                data: json!({"event_type": et, "rr_name": rr_name}),
                same_batch: false,
            });
        }
        let duplicates = if no_fingerprint { 0 } else { cfg.duplicates };
        for _ in 0..duplicates {
            let at = next(&mut g, false);
            name_events.push(Ev {
                at,
                event_type: "gateway.signal.deduplicated",
                category: "gateway",
                action: "deduplicated",
                actor: ("external", "prometheus-alertmanager".into()),
                resource: ("Signal", gw_fp.to_hex()),
                data: gateway_payload(
                    "gateway.signal.deduplicated",
                    &gw_fp,
                    &rr_name,
                    &workload,
                    true,
                ),
                same_batch: false,
            });
        }
        // Orchestrator and AI events: under the UID in the UID era, else under the name.
        let mut ro_events = Vec::new();
        for (et, cat, action) in [
            ("orchestrator.lifecycle.started", "orchestration", "started"),
            ("aianalysis.analysis.completed", "analysis", "completed"),
            (
                "remediation.workflow_created",
                "orchestration",
                "workflow_created",
            ),
        ] {
            let at = next(&mut g, false);
            let mut data = json!({"event_type": et, "rr_name": rr_name});
            if et == "remediation.workflow_created" && at >= wf_fp_era {
                data["signal_fingerprint"] = json!(gw_fp.to_hex());
            }
            ro_events.push(Ev {
                at,
                event_type: et,
                category: cat,
                action,
                actor: ("service", format!("{cat}-service")),
                resource: ("RemediationRequest", rr_name.clone()),
                data,
                same_batch: false,
            });
        }
        if !uid_keyed {
            name_events.append(&mut ro_events);
            name_events.sort_by_key(|e| e.at);
        }
        // Same-second ties: two consecutive events share a second, written in an order that
        // contradicts their random event_ids about half the time.
        let ties = case == 1 || (case == 9 && g.rng.random_bool(0.1));
        if ties && name_events.len() > 4 {
            let k = name_events.len() - 2;
            name_events[k + 1].at = name_events[k].at;
        }
        let late = case == 2;
        if late && name_events.len() > 4 {
            // A DLQ replay: written last, with the timestamp of the middle of the trail.
            let mut e = name_events.remove(2);
            e.same_batch = false;
            name_events.push(e);
        }
        let keyed_from = match (&cfg.hmac_key, i % 3) {
            (None, _) | (_, 0) => None,
            (_, 1) => Some(0),
            _ => Some(name_events.len() / 2),
        };
        let tie_mode = if ties {
            Ties::Reversed
        } else if cfg.special_cases {
            Ties::Ordered
        } else {
            Ties::Random
        };
        let mut name_rows = chain(&mut g, &rr_name, &name_events, keyed_from, tie_mode);
        let mut class = if ties {
            ChainClass::SameSecondTies
        } else {
            ChainClass::Valid
        };
        if tie_mode == Ties::Random {
            // kubernaut's own outcome: DataStorage's verification (checked against its vectors)
            // passes, or fails because of a same-second pair.
            let valid = crate::datastorage::verify::verify(&name_rows, g.key.as_ref())
                .is_ok_and(|v| v.is_valid());
            if !valid {
                class = ChainClass::SameSecondTies;
            }
        }
        if late {
            class = ChainClass::OutOfOrder;
        }
        if case == 4 && name_rows.len() > 3 {
            // Retention purged the first two rows.
            name_rows.drain(..2);
            class = ChainClass::HeadMissing;
        }
        if case == 6 {
            // Edited after the fact with the trigger bypassed: the hash no longer matches.
            let k = name_rows.len() / 2;
            name_rows[k].event_data["tampered"] = json!(true);
            class = ChainClass::Tampered;
        }
        if case == 7 {
            // A row deleted from the middle of the chain.
            let k = name_rows.len() / 2;
            name_rows.remove(k);
            class = ChainClass::Tampered;
        }
        rem.classes.insert(rr_name.clone(), class);
        rem.first_event = name_rows
            .iter()
            .map(|r| r.event_timestamp)
            .min()
            .unwrap_or(start);
        g.pending.extend(name_rows);
        if uid_keyed {
            let uid_rows = chain(
                &mut g,
                &rr_uid,
                &ro_events,
                keyed_from.map(|_| 0),
                Ties::Ordered,
            );
            rem.first_event = rem
                .first_event
                .min(uid_rows[0].event_timestamp.min(rem.first_event));
            g.pending.extend(uid_rows);
            rem.correlation_ids.push(rr_uid.clone());
            rem.classes.insert(rr_uid.clone(), ChainClass::Valid);
            fx.ids
                .insert(rr_uid.clone(), Truth::Legacy { remediation: i });
        }
        fx.ids
            .insert(rr_name.clone(), Truth::Legacy { remediation: i });
        by_fp.entry(fp_index).or_default().push(i);
        fx.remediations.push(rem);
        // IDs around the remediation that are not RR IDs.
        if cfg.special_cases && i % 4 == 0 {
            let at = plus(start, SignedDuration::from_secs(5));
            let nr_uid = g.uuid();
            let look = [
                (
                    nr_uid,
                    Ev {
                        at,
                        event_type: "notification.message.sent",
                        category: "notification",
                        action: "sent",
                        actor: ("service", "notification-service".into()),
                        resource: ("NotificationRequest", format!("nr-manual-{i}")),
                        data: json!({"event_type": "notification.message.sent", "channel": "slack"}),
                        same_batch: false,
                    },
                ),
                (
                    g.uuid(),
                    Ev {
                        at,
                        event_type: "actiontype.admission.validated",
                        category: "actiontype",
                        action: "validated",
                        actor: ("user", "admin@example.com".into()),
                        resource: ("ActionType", "restart-pod".into()),
                        data: json!({"event_type": "actiontype.admission.validated"}),
                        same_batch: false,
                    },
                ),
            ];
            for (id, ev) in look {
                let rows = chain(&mut g, &id, std::slice::from_ref(&ev), None, Ties::Ordered);
                g.pending.extend(rows);
                fx.ids.insert(id, Truth::LookAlike);
            }
            // DataStorage self-audit: unhashed, random UUID.
            let id = g.uuid();
            let mut r = row_of(
                &mut g,
                &id,
                &Ev {
                    at,
                    event_type: "datastorage.ratelimit.denied",
                    category: "security",
                    action: "denied",
                    actor: ("service", "datastorage".into()),
                    resource: ("security", id.clone()),
                    data: json!({"event_type": "datastorage.ratelimit.denied"}),
                    same_batch: false,
                },
                false,
            );
            r.resource_id = id.clone();
            g.pending.push(r);
            fx.ids.insert(id, Truth::LookAlike);
            // An authwebhook NR event and a config reload.
            for (id, et) in [
                (
                    format!("nr-approval-{rr_name}"),
                    "notification.approval.requested",
                ),
                (
                    format!("config-reload-gateway-{}", at.as_nanosecond()),
                    "gateway.config.reloaded",
                ),
            ] {
                let ev = Ev {
                    at,
                    event_type: et,
                    category: "gateway",
                    action: "other",
                    actor: ("service", "authwebhook".into()),
                    resource: ("Other", id.clone()),
                    data: json!({"event_type": et}),
                    same_batch: false,
                };
                let rows = chain(&mut g, &id, std::slice::from_ref(&ev), None, Ties::Ordered);
                g.pending.extend(rows);
                fx.ids.insert(id, Truth::Other);
            }
        }
        g.flush(conn, false).await?;
    }
    // The newest remediation of every other fingerprint is still live.
    for (k, (_, list)) in by_fp.iter().enumerate() {
        if k % 2 == 0
            && let Some(newest) = list.iter().max_by_key(|i| fx.remediations[**i].first_event)
        {
            fx.remediations[*newest].live = true;
        }
    }
    g.flush(conn, true).await?;
    fx.rows = g.rows;
    Ok(fx)
}

fn cat_resource(cat: &str) -> &'static str {
    match cat {
        "signalprocessing" => "SignalProcessing",
        "workflowexecution" => "WorkflowExecution",
        "notification" => "NotificationRequest",
        _ => "EffectivenessAssessment",
    }
}

fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(t)
}
