//! The committed CRD under `charts/` must be exactly what the Rust types generate, or the chart would
//! install a schema that prunes fields the code writes (or accepts ones it cannot read).

use std::path::Path;

#[test]
fn committed_crd_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/namegate/crds/remediationrequests.yaml");
    let generated = crd_schema::rr::crd_yaml();
    if std::env::var_os("UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate with UPDATE_CRD=1 cargo test -p crd-schema --test crd_drift",
        path.display()
    );
}
