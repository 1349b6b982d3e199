//! DataStorage's own hash vectors (tests/fixtures/kubernaut-datastorage-vectors.json, computed by
//! kubernaut's code; see tests/fixtures/README.md), reproduced byte for byte, and its verification
//! reproduced on chains built from them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64_free::decode_base64;
use namegate_migrate::datastorage::canonical::{HmacKey, Row};
use namegate_migrate::datastorage::verify::{self, ChainClass, TamperKind};
use serde_json::Value;

mod base64_free {
    /// Standard base64 (with padding), enough for the vectors' `hashed_message_base64`.
    pub fn decode_base64(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let mut acc = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                acc |= val(*c) << (18 - 6 * i);
            }
            let n = chunk.len() * 6 / 8;
            for i in 0..n {
                out.push((acc >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}

fn vectors() -> Vec<Value> {
    let text = include_str!("fixtures/kubernaut-datastorage-vectors.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn row(v: &Value) -> Row {
    let r = &v["row"];
    let ts: jiff::Timestamp = r["event_timestamp"].as_str().unwrap().parse().unwrap();
    Row {
        event_id: s(&r["event_id"]).unwrap(),
        event_timestamp: ts,
        event_date: ts.to_zoned(jiff::tz::TimeZone::UTC).date(),
        event_version: s(&r["event_version"]).unwrap(),
        event_type: s(&r["event_type"]).unwrap(),
        event_category: s(&r["event_category"]).unwrap(),
        event_action: s(&r["event_action"]).unwrap(),
        event_outcome: s(&r["event_outcome"]).unwrap(),
        correlation_id: s(&r["correlation_id"]).unwrap(),
        parent_event_id: s(&r["parent_event_id"]),
        parent_event_date: r["parent_event_date"].as_str().map(|d| d.parse().unwrap()),
        resource_type: s(&r["resource_type"]).unwrap(),
        resource_id: s(&r["resource_id"]).unwrap(),
        namespace: s(&r["namespace"]),
        cluster_id: s(&r["cluster_id"]),
        actor_type: s(&r["actor_type"]).unwrap(),
        actor_id: s(&r["actor_id"]).unwrap(),
        actor_ip: s(&r["actor_ip"]),
        severity: s(&r["severity"]),
        duration_ms: r["duration_ms"].as_i64().map(|d| i32::try_from(d).unwrap()),
        error_code: s(&r["error_code"]),
        error_message: s(&r["error_message"]),
        retention_days: i32::try_from(r["retention_days"].as_i64().unwrap()).unwrap(),
        is_sensitive: r["is_sensitive"].as_bool().unwrap(),
        // The JSON text as a client sends it, parsed the way the migration parses jsonb output.
        event_data: serde_json::from_str(&r["event_data"].to_string()).unwrap(),
        event_hash: s(&v["event_hash"]),
        previous_event_hash: s(&v["previous_event_hash"]),
        hash_algorithm: s(&r["hash_algorithm"]).unwrap(),
    }
}

fn key_of(v: &Value) -> Option<HmacKey> {
    v["hmac_key"].as_str().map(|k| HmacKey::new(k.as_bytes()))
}

#[test]
fn every_vector_is_reproduced_byte_for_byte() {
    let vs = vectors();
    assert_eq!(vs.len(), 4);
    for v in &vs {
        let name = v["name"].as_str().unwrap();
        let r = row(v);
        let c = r.canonical_json();
        assert_eq!(
            c,
            v["canonical_json"].as_str().unwrap(),
            "{name}: canonical JSON"
        );
        let prev = v["previous_event_hash"].as_str().unwrap();
        let mut message = prev.as_bytes().to_vec();
        message.extend_from_slice(c.as_bytes());
        assert_eq!(
            message,
            decode_base64(v["hashed_message_base64"].as_str().unwrap()),
            "{name}: hashed message"
        );
        let h = r.compute_hash(prev, key_of(v).as_ref()).unwrap();
        assert_eq!(h, v["event_hash"].as_str().unwrap(), "{name}: event_hash");
    }
}

#[test]
fn the_hmac_vector_needs_its_key_and_only_its_key() {
    let v = &vectors()[2];
    let r = row(v);
    let prev = v["previous_event_hash"].as_str().unwrap();
    assert!(r.compute_hash(prev, None).unwrap_err().is_missing_key());
    let wrong = r
        .compute_hash(prev, Some(&HmacKey::new("other-key")))
        .unwrap();
    assert_ne!(wrong, v["event_hash"].as_str().unwrap());
}

#[test]
fn the_three_vector_chain_verifies_like_datastorage_and_edits_are_caught() {
    let vs = vectors();
    let key = key_of(&vs[2]);
    let chain: Vec<Row> = vs[..3].iter().map(row).collect();
    let a = verify::classify(&chain, key.as_ref()).unwrap();
    assert!(a.verification.is_valid(), "{a:?}");
    assert_eq!(a.verification.total_events, 3);
    assert_eq!(a.verification.verified_events, 3);
    assert_eq!(a.class, ChainClass::Valid);

    // Without the key DataStorage answers 500, not "tampered".
    assert!(verify::verify(&chain, None).unwrap_err().is_missing_key());

    // An edited event_data: one entry, no cascade (the next row links to the stored hash).
    let mut edited = chain.clone();
    edited[1].event_data["occurrence_count"] = serde_json::json!(2);
    let a = verify::classify(&edited, key.as_ref()).unwrap();
    assert_eq!(a.verification.tampered.len(), 1);
    assert_eq!(
        a.verification.tampered[0].kind,
        TamperKind::EventHashMismatch
    );
    assert_eq!(a.verification.verified_events, 2);
    assert_eq!(a.class, ChainClass::Tampered);

    // The algorithm downgrade DataStorage's verifier accepts (hash_algorithm is not hashed): our
    // classification of the *original* chain is unaffected, and a re-chain keeps each row's own.
    let mut rechained = chain.clone();
    let tail = verify::rechain(&mut rechained, "rr-new-name", key.as_ref()).unwrap();
    assert_eq!(rechained[2].hash_algorithm, "hmac-sha256");
    assert_eq!(rechained[2].event_hash.as_deref(), Some(tail.as_str()));
    assert!(verify::verify(&rechained, key.as_ref()).unwrap().is_valid());
    assert!(rechained.iter().all(|r| r.correlation_id == "rr-new-name"));
    assert_eq!(rechained[0].previous_event_hash.as_deref(), Some(""));
}

#[test]
fn same_second_writes_fail_datastorage_but_are_told_apart_from_tampering() {
    let vs = vectors();
    let key = key_of(&vs[2]);
    // v2 moved into v1's second: written after v1 (linked to it) but sorted first by event_id?
    // v2's event_id 2222… sorts after 1111…, so give v2 v1's timestamp and a smaller ID, re-hash it
    // as the writer would have, and re-link v3.
    let mut chain: Vec<Row> = vs[..3].iter().map(row).collect();
    chain[1].event_timestamp = chain[0].event_timestamp;
    chain[1].event_id = "01111111-1111-4111-8111-111111111111".into();
    let h1 = chain[0].event_hash.clone().unwrap();
    chain[1].previous_event_hash = Some(h1.clone());
    let h2 = chain[1].compute_hash(&h1, None).unwrap();
    chain[1].event_hash = Some(h2.clone());
    chain[2].previous_event_hash = Some(h2.clone());
    chain[2].event_hash = Some(chain[2].compute_hash(&h2, key.as_ref()).unwrap());
    let a = verify::classify(&chain, key.as_ref()).unwrap();
    assert!(!a.verification.is_valid());
    assert_eq!(a.class, ChainClass::SameSecondTies);
    // Re-chaining in verification order repairs it.
    verify::rechain(&mut chain, "rr-x", key.as_ref()).unwrap();
    assert!(verify::verify(&chain, key.as_ref()).unwrap().is_valid());
}
