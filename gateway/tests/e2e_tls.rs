//! TLS on the ingestion port with a real client (reqwest over rustls) trusting a CA the test makes,
//! and certificate rotation without a restart (docs/security.md, "Transport").
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{Cluster, ReplicaOptions, webhook};
use tokio_rustls::rustls;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "namegate test CA");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A serving certificate for 127.0.0.1 and localhost; returns its DER (to recognise it).
fn issue(ca: &Ca, cn: &str, dir: &Path) -> Vec<u8> {
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    // Written next to the live files and renamed over them, like a Secret volume update.
    for (name, text) in [("tls.crt", cert.pem()), ("tls.key", key.serialize_pem())] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    cert.der().to_vec()
}

fn client(ca: &Ca) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .tls_info(true)
        .build()
        .unwrap()
}

/// The certificate the server presented for one request, and the answer's status.
async fn served(client: &reqwest::Client, port: u16) -> (Vec<u8>, u16) {
    let resp = client
        .post(format!(
            "https://127.0.0.1:{port}/api/v1/signals/prometheus"
        ))
        .json(&webhook(&[("tls-checkout", "KubePodCrashLooping")]))
        .send()
        .await
        .unwrap();
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec();
    (der, resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn ingestion_over_tls_serves_a_rotated_certificate_without_restart() {
    let ca = ca();
    let certs = tempfile::tempdir().unwrap();
    let first = issue(&ca, "namegate-1", certs.path());
    let dir = certs.path().display().to_string();
    let c = Cluster::start_with(
        "e2e-tls",
        &[ReplicaOptions {
            extra_args: vec![
                "--tls-cert-file".into(),
                format!("{dir}/tls.crt"),
                "--tls-key-file".into(),
                format!("{dir}/tls.key"),
            ],
            ..ReplicaOptions::default()
        }],
    )
    .await;
    let port = c.replicas[0].port;
    let https = client(&ca);

    let (der, status) = served(&https, port).await;
    assert_eq!(der, first, "the configured certificate is served");
    assert_eq!(status, 201);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/signals/prometheus"))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().unwrap().status() != 200,
        "{plain:?}"
    );

    // Rotate: new files, same paths; the next handshakes serve the new certificate.
    let second = issue(&ca, "namegate-2", certs.path());
    assert_ne!(first, second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client each time: a pooled connection would keep the old session.
        let (der, status) = served(&client(&ca), port).await;
        assert_eq!(status, 202, "the same signal again is a duplicate");
        if der == second {
            break;
        }
        assert_eq!(der, first);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken rotation (garbage key) keeps the last good certificate.
    std::fs::write(certs.path().join("tls.key"), "not a key").unwrap();
    let (der, _) = served(&client(&ca), port).await;
    assert_eq!(
        der, second,
        "a broken rotation keeps the previous certificate"
    );
}
