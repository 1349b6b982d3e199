//! Installing namegate's CRD over kubernaut's must lose none of the validation kubernaut's
//! orchestrator relies on: every enum, format, pattern, length and range bound, CEL rule and list
//! type of kubernaut's schema (an unmodified copy in `tests/fixtures/`) is present and equal in
//! namegate's, nothing kubernaut keeps open is narrowed, and namegate requires no field kubernaut
//! does not (a writer that omits zero values must be accepted). See `docs/reliability.md`.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use kube::CustomResourceExt;
use serde_json::Value;

/// The keys that validate a value. A difference in any of them is a lost (or added) rule.
const RULES: [&str; 14] = [
    "enum",
    "format",
    "pattern",
    "maxLength",
    "minLength",
    "minimum",
    "maximum",
    "maxItems",
    "minItems",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "type",
];

fn kubernaut() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernaut.ai_remediationrequests.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn namegate() -> Value {
    serde_json::to_value(crd_schema::RemediationRequest::crd()).unwrap()
}

fn schema_of(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

/// Walks kubernaut's schema and reports every rule namegate's lacks or changes.
fn compare(k: &Value, n: &Value, path: &str, out: &mut Vec<String>) {
    if n.is_null() {
        out.push(format!("{path}: missing in namegate's schema"));
        return;
    }
    for key in RULES {
        let (kv, nv) = (&k[key], &n[key]);
        // Numbers compare by value: the API types render `0` as `0.0`.
        let same = kv == nv || (kv.is_number() && kv.as_f64() == nv.as_f64());
        if !kv.is_null() && !same {
            out.push(format!(
                "{path}: {key} is {nv} in namegate's, {kv} in kubernaut's"
            ));
        }
    }
    // Required: namegate may not require what kubernaut leaves optional.
    let k_req: Vec<&Value> = k["required"].as_array().into_iter().flatten().collect();
    for r in n["required"].as_array().into_iter().flatten() {
        if !k_req.contains(&r) {
            out.push(format!("{path}: namegate requires {r}, kubernaut does not"));
        }
    }
    if let Some(props) = k["properties"].as_object() {
        for (name, sub) in props {
            compare(sub, &n["properties"][name], &format!("{path}.{name}"), out);
        }
    }
    if !k["items"].is_null() {
        compare(&k["items"], &n["items"], &format!("{path}[]"), out);
    }
    if !k["additionalProperties"].is_null() && k["additionalProperties"].is_object() {
        compare(
            &k["additionalProperties"],
            &n["additionalProperties"],
            &format!("{path}{{}}"),
            out,
        );
    }
}

#[test]
fn namegate_keeps_every_status_validation_of_kubernaut() {
    let (k, n) = (kubernaut(), namegate());
    let mut lost = Vec::new();
    compare(
        &schema_of(&k)["properties"]["status"],
        &schema_of(&n)["properties"]["status"],
        "status",
        &mut lost,
    );
    assert!(lost.is_empty(), "validation lost:\n{}", lost.join("\n"));
}

#[test]
fn namegate_keeps_every_spec_rule_of_kubernaut_it_does_not_deliberately_tighten() {
    let (k, n) = (kubernaut(), namegate());
    let mut lost = Vec::new();
    compare(
        &schema_of(&k)["properties"]["spec"],
        &schema_of(&n)["properties"]["spec"],
        "spec",
        &mut lost,
    );
    // Only the spec-level CEL message differs (same rule, `self == oldSelf`).
    lost.retain(|l| !l.starts_with("spec: x-kubernetes-validations"));
    let rule = |v: &Value| v["x-kubernetes-validations"][0]["rule"].clone();
    assert_eq!(
        rule(&schema_of(&n)["properties"]["spec"]),
        rule(&schema_of(&k)["properties"]["spec"])
    );
    // namegate requires spec fields kubernaut's gateway always sets; those are listed here.
    let deliberate = [
        "spec: namegate requires \"signalName\", kubernaut does not",
        "spec: namegate requires \"severity\", kubernaut does not",
        "spec: namegate requires \"signalType\", kubernaut does not",
        "spec: namegate requires \"targetType\", kubernaut does not",
        "spec: namegate requires \"targetResource\", kubernaut does not",
        "spec: namegate requires \"firingTime\", kubernaut does not",
        "spec: namegate requires \"receivedTime\", kubernaut does not",
    ];
    lost.retain(|l| !deliberate.contains(&l.as_str()));
    assert!(
        lost.is_empty(),
        "spec validation lost:\n{}",
        lost.join("\n")
    );
}

#[test]
fn same_group_version_scope_and_status_subresource() {
    let (k, n) = (kubernaut(), namegate());
    for key in ["group", "scope"] {
        assert_eq!(n["spec"][key], k["spec"][key], "{key}");
    }
    assert_eq!(n["spec"]["names"]["plural"], k["spec"]["names"]["plural"]);
    assert_eq!(n["spec"]["names"]["kind"], k["spec"]["names"]["kind"]);
    assert_eq!(
        n["spec"]["versions"][0]["name"],
        k["spec"]["versions"][0]["name"]
    );
    assert_eq!(
        n["spec"]["versions"][0]["subresources"]["status"],
        k["spec"]["versions"][0]["subresources"]["status"]
    );
}
