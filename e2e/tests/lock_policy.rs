//! The chart's RR name lock (`charts/namegate/templates/lock-policy.yaml`, docs/creators.md) on the real
//! kube-apiserver: a ValidatingAdmissionPolicy whose CEL re-encodes `spec.signalFingerprint` into the name
//! it must have, so every creator is serialised by the same 409 as the gateway.

use std::collections::BTreeMap;

use crd_schema::rr::RemediationRequest;
use crd_schema::{Attempt, Fingerprint, meta, name};
use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use namegate_e2e::{
    client, fresh_namespace, install_crd, install_lock_policy, random_fingerprint, sample_rr,
};
use rand::Rng;
use serde_json::json;

/// A namespace with the CRD and the lock policy enforced; returns the RR API and the policy name.
async fn locked(prefix: &str) -> (Client, Api<RemediationRequest>, String) {
    let client = client().await;
    install_crd(&client).await;
    let ns = fresh_namespace(&client, prefix).await;
    let policy = install_lock_policy(&client, &ns).await;
    (client.clone(), Api::namespaced(client, &ns), policy)
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        field_manager: None,
    }
}

/// The API server's refusal of a create: status code, reason and message. Panics on success.
fn refusal(result: Result<RemediationRequest, kube::Error>, what: &str) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.reason, s.message),
        Err(e) => panic!("{what}: expected the API server's refusal, got {e:?}"),
        Ok(rr) => panic!(
            "{what}: created {:?}, the lock policy must refuse it",
            rr.metadata.name
        ),
    }
}

/// Asserts that creating `rr` is refused by `policy` with a message containing every `needle`.
async fn assert_refused(
    api: &Api<RemediationRequest>,
    policy: &str,
    rr: &RemediationRequest,
    needles: &[&str],
) {
    let what = format!("create {:?}", rr.metadata.name);
    let (code, reason, message) = refusal(api.create(&PostParams::default(), rr).await, &what);
    assert_eq!(
        (code, reason.as_str()),
        (422, "Invalid"),
        "{what}: {message}"
    );
    assert!(
        message.contains(&format!("ValidatingAdmissionPolicy '{policy}'")),
        "{what}: refused by something else: {message}"
    );
    for n in needles {
        assert!(
            message.contains(n),
            "{what}: {n:?} missing from the message: {message}"
        );
    }
}

fn renamed(rr: &RemediationRequest, new_name: &str) -> RemediationRequest {
    let mut rr = rr.clone();
    rr.metadata.name = Some(new_name.to_owned());
    rr
}

fn with_attempt_label(rr: &RemediationRequest, value: Option<&str>) -> RemediationRequest {
    let mut rr = rr.clone();
    let labels = rr.metadata.labels.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => labels.insert(meta::ATTEMPT_LABEL.into(), v.into()),
        None => labels.remove(meta::ATTEMPT_LABEL),
    };
    rr
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn kubernaut_style_random_names_are_refused_with_the_expected_name() {
    let (_, api, policy) = locked("e2e-lock-kubernaut").await;
    for _ in 0..5 {
        let (fp, workload) = random_fingerprint();
        let hex = fp.to_hex();
        // kubernaut's gateway names an RR `rr-{fingerprint[:12]}-{uuid[:8]}`.
        let kubernaut = format!("rr-{}-{:08x}", &hex[..12], rand::random::<u32>());
        let rr = renamed(&sample_rr(&fp, Attempt::FIRST, &workload), &kubernaut);
        let expected = name::name(&fp, Attempt::FIRST);
        assert_refused(
            &api,
            &policy,
            &rr,
            &[
                &kubernaut,
                &format!("expected {expected} (attempt 1) or {expected}-<n>"),
                &hex,
            ],
        )
        .await;
    }
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn a_name_that_is_not_its_own_fingerprints_is_refused() {
    let (_, api, policy) = locked("e2e-lock-other").await;
    let (fp, workload) = random_fingerprint();
    let (other, _) = random_fingerprint();
    let expected = name::name(&fp, Attempt::FIRST);
    for attempt in [1, 2, 17] {
        let a = Attempt::new(attempt).unwrap();
        // The name (and its label) of another workload's fingerprint.
        let rr = renamed(&sample_rr(&fp, a, &workload), &name::name(&other, a));
        assert_refused(&api, &policy, &rr, &[&format!("expected {expected} ")]).await;
    }
    // Non-canonical spellings of this fingerprint's own names.
    let rr = sample_rr(&fp, Attempt::FIRST, &workload);
    for bad in [
        format!("{expected}-1"),
        format!("{expected}-0"),
        format!("{expected}-02"),
        format!("{expected}-10000000"),
        format!("{expected}-2x"),
        format!("{expected}x"),
        expected[..expected.len() - 1].to_owned(),
    ] {
        assert_refused(&api, &policy, &renamed(&rr, &bad), &[&expected]).await;
    }
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn the_attempt_label_must_match_the_name() {
    let (_, api, policy) = locked("e2e-lock-label").await;
    let (fp, workload) = random_fingerprint();
    let rr = sample_rr(&fp, Attempt::new(3).unwrap(), &workload);
    assert_refused(
        &api,
        &policy,
        &with_attempt_label(&rr, None),
        &["expected label namegate.io/attempt=3, it is missing"],
    )
    .await;
    assert_refused(
        &api,
        &policy,
        &with_attempt_label(&rr, Some("2")),
        &["expected label namegate.io/attempt=3, got 2"],
    )
    .await;
    api.create(&PostParams::default(), &rr)
        .await
        .expect("the right label passes");
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn gateway_shaped_creates_pass_and_the_lock_still_answers_409() {
    let (_, api, _) = locked("e2e-lock-pass").await;
    let (fp, workload) = random_fingerprint();
    for n in [1, 2, 10, 9_999_999] {
        let rr = sample_rr(&fp, Attempt::new(n).unwrap(), &workload);
        let created = api
            .create(&PostParams::default(), &rr)
            .await
            .unwrap_or_else(|e| panic!("attempt {n}: the gateway's RR must pass: {e:?}"));
        assert_eq!(created.metadata.name, rr.metadata.name);
        let again = api.create(&PostParams::default(), &rr).await;
        let (code, reason, _) = refusal(again, "the second create");
        assert_eq!(
            (code, reason.as_str()),
            (409, "AlreadyExists"),
            "the name is still the lock"
        );
    }
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn existing_rrs_are_untouched_only_creates_are_checked() {
    let client = client().await;
    install_crd(&client).await;
    let ns = fresh_namespace(&client, "e2e-lock-legacy").await;
    let api: Api<RemediationRequest> = Api::namespaced(client.clone(), &ns);
    let (fp, workload) = random_fingerprint();
    let legacy_name = format!("rr-{}-1c2b5576", &fp.to_hex()[..12]);
    let mut legacy = renamed(&sample_rr(&fp, Attempt::FIRST, &workload), &legacy_name);
    legacy.metadata.labels = None;
    api.create(&PostParams::default(), &legacy)
        .await
        .expect("a legacy RR created before the policy");

    let policy = install_lock_policy(&client, &ns).await;
    // Updates of the legacy RR (what the migration and kubernaut's controllers do) still pass.
    api.patch(
        &legacy_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {meta::ATTEMPT_LABEL: "1"}}})),
    )
    .await
    .expect("updating a legacy RR under the policy");
    api.patch_status(
        &legacy_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"overallPhase": "Completed"}})),
    )
    .await
    .expect("a status write to a legacy RR under the policy");
    // A new RR under a legacy-style name is refused.
    let again = renamed(&legacy, &format!("rr-{}-2d3c6687", &fp.to_hex()[..12]));
    assert_refused(&api, &policy, &again, &[&name::name(&fp, Attempt::FIRST)]).await;

    // The binding holds for the release namespace only: elsewhere the API server does not check names.
    let other = fresh_namespace(&client, "e2e-lock-unbound").await;
    Api::<RemediationRequest>::namespaced(client, &other)
        .create(&dry_run(), &again)
        .await
        .expect("namespaces outside the binding are not checked");
}

/// The CEL re-encoding in the policy equals `crd_schema::name` (the gateway's encoding) over many random
/// fingerprints and attempts: each valid name is accepted by a server-side dry-run create, and the same RR
/// with one character of the name's base32 body changed is refused with the right name in the message.
#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn cel_encoding_equals_crd_schema_over_random_fingerprints() {
    const CASES: usize = 300;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let (_, api, policy) = locked("e2e-lock-prop").await;
    let mut rng = rand::rng();
    let cases: Vec<(Fingerprint, Attempt, usize, usize)> = (0..CASES)
        .map(|i| {
            let fp = Fingerprint::from_bytes(rng.random());
            // Every case kind of attempt: the first, small ones, the largest, any.
            let n = match i % 4 {
                0 => 1,
                1 => rng.random_range(2..=20),
                2 => Attempt::MAX,
                _ => rng.random_range(1..=Attempt::MAX),
            };
            let pos = rng.random_range(0..name::BODY_LEN);
            (
                fp,
                Attempt::new(n).unwrap(),
                pos,
                rng.random_range(1..32usize),
            )
        })
        .collect();
    let failures: Vec<String> = futures::stream::iter(cases)
        .map(|(fp, attempt, pos, shift)| {
            let api = api.clone();
            let policy = policy.clone();
            async move {
                let rr = sample_rr(&fp, attempt, "prop");
                let good = name::name(&fp, attempt);
                if let Err(e) = api.create(&dry_run(), &rr).await {
                    return Some(format!("{good} (fp {fp}, attempt {attempt}) refused: {e}"));
                }
                // One character of the body changed to another base32 character.
                let mut bytes = good.clone().into_bytes();
                let at = name::PREFIX.len() + pos;
                let idx = ALPHABET.iter().position(|c| *c == bytes[at]).unwrap();
                bytes[at] = ALPHABET[(idx + shift) % 32];
                let bad = String::from_utf8(bytes).unwrap();
                let expected = format!("expected {} ", name::name(&fp, Attempt::FIRST));
                match api.create(&dry_run(), &renamed(&rr, &bad)).await {
                    Err(kube::Error::Api(s))
                        if s.code == 422
                            && s.message.contains(&policy)
                            && s.message.contains(&expected) =>
                    {
                        None
                    }
                    other => Some(format!("{bad} (fp {fp}) must be refused: {other:?}")),
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {CASES} cases disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
