//! The injector served over real HTTPS on 127.0.0.1: a self-signed certificate made with
//! rcgen, a rustls client that trusts only that certificate, and hyper on both ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tollgate_injector::Injector;
use tollgate_injector::cli::InjectorArgs;
use tollgate_injector::server::{Server, ServerError};
use tollgate_injector::tls::{self, ReloadingCert};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: InjectorArgs,
}

/// A fresh self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
fn self_signed() -> (String, String, CertificateDer<'static>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().clone(),
    )
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-injector-https-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_pair(dir: &Path, cert_pem: &str, key_pem: &str) {
    std::fs::write(dir.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), key_pem).unwrap();
}

struct Running {
    addr: SocketAddr,
    trusted: CertificateDer<'static>,
    cert: Arc<ReloadingCert>,
    dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn start() -> Running {
    let dir = temp_dir();
    let (cert_pem, key_pem, der) = self_signed();
    write_pair(&dir, &cert_pem, &key_pem);
    start_with(dir, der).await
}

/// Serves the `tls.crt` and `tls.key` in `dir`; clients will trust `trusted`.
async fn start_with(dir: PathBuf, trusted: CertificateDer<'static>) -> Running {
    let flags = Flags::try_parse_from(["injector", "--tenants", "acme"]).unwrap();
    let injector = Injector::new(flags.args.config().unwrap());
    let cert = Arc::new(
        ReloadingCert::load(dir.join("tls.crt"), dir.join("tls.key")).expect("load the PEM files"),
    );
    let config = tls::server_config(cert.clone()).unwrap();
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, injector)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        trusted,
        cert,
        dir,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task
            .await
            .expect("server task")
            .expect("server stops cleanly");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection from a client that trusts only `trusted`, checking the name `localhost`.
async fn connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
) -> Result<TlsStream, Box<dyn std::error::Error + Send + Sync>> {
    connect_as(addr, trusted, "localhost").await
}

/// A TLS connection that checks the certificate against `server_name`.
async fn connect_as(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    server_name: &str,
) -> Result<TlsStream, Box<dyn std::error::Error + Send + Sync>> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    Ok(TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(server_name.to_owned())?, tcp)
        .await?)
}

/// One HTTPS request from a client that trusts only `trusted`.
async fn call(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, String, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
    let tls = connect(addr, trusted).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "tollgate-injector.tollgate.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, content_type, bytes))
}

fn review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "agents",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": "agent-0", "annotations": { "tollgate.dev/inject": "true" } },
                "spec": { "containers": [{ "name": "agent", "image": "example/agent:1" }] },
            },
        },
    })
}

#[tokio::test]
async fn mutate_over_https_returns_a_patch_that_injects_the_sidecar() {
    let server = start().await;
    let review = review();
    let (status, content_type, body) = call(
        server.addr,
        &server.trusted,
        Method::POST,
        "/mutate",
        review.to_string().into_bytes(),
    )
    .await
    .expect("HTTPS call");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["kind"], "AdmissionReview");
    let response = &out["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "tollgate-sidecar");
    assert_eq!(pod["spec"]["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(
        pod["spec"]["containers"][0]["env"][0]["value"],
        "/var/run/tollgate/region"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["tollgate.dev/status"],
        "injected"
    );

    // The review is counted, and a bad body too.
    call(
        server.addr,
        &server.trusted,
        Method::POST,
        "/mutate",
        b"nope".to_vec(),
    )
    .await
    .unwrap();
    let (status, content_type, body) = call(
        server.addr,
        &server.trusted,
        Method::GET,
        "/metrics",
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("tollgate_injector_reviews_total{result=\"injected\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_injector_reviews_total{result=\"denied\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_injector_bad_requests_total 1"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_unknown_paths_and_wrong_methods() {
    let server = start().await;
    let (status, _, body) = call(
        server.addr,
        &server.trusted,
        Method::GET,
        "/healthz",
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ok\n");
    let (status, _, _) = call(
        server.addr,
        &server.trusted,
        Method::GET,
        "/mutate",
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, body) = call(
        server.addr,
        &server.trusted,
        Method::GET,
        "/metricz",
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("POST /mutate"));
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_an_admission_review_is_http_400_with_a_message() {
    let server = start().await;
    let (status, content_type, body) = call(
        server.addr,
        &server.trusted,
        Method::POST,
        "/mutate",
        b"{\"kind\": \"Pod\"}".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(content_type.starts_with("text/plain"));
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("not an admission.k8s.io/v1 AdmissionReview"),
        "{text}"
    );

    let (status, _, body) = call(
        server.addr,
        &server.trusted,
        Method::POST,
        "/mutate",
        b"garbage".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("not JSON"));

    // An oversized body is refused from its declared length, before any of it is read.
    let mut tls = connect(server.addr, &server.trusted).await.unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        tollgate_injector::server::MAX_BODY + 1
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tls.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let server = start().await;
    let (_, _, stranger) = self_signed();
    let result = call(server.addr, &stranger, Method::GET, "/healthz", Vec::new()).await;
    assert!(
        result.is_err(),
        "the handshake must fail against an untrusted certificate"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_after_reload() {
    let server = start().await;
    assert!(
        !server.cert.reload().unwrap(),
        "unchanged files: nothing to reload"
    );

    // A half-written rotation (garbage key) keeps the old certificate in service.
    std::fs::write(server.dir.join("tls.key"), "not a key").unwrap();
    assert!(server.cert.reload().is_err());
    call(
        server.addr,
        &server.trusted,
        Method::GET,
        "/healthz",
        Vec::new(),
    )
    .await
    .expect("the previous certificate is still served");

    let (cert_pem, key_pem, rotated) = self_signed();
    write_pair(&server.dir, &cert_pem, &key_pem);
    assert!(server.cert.reload().unwrap());
    let (status, _, _) = call(server.addr, &rotated, Method::GET, "/healthz", Vec::new())
        .await
        .expect("the new certificate is served");
    assert_eq!(status, StatusCode::OK);
    assert!(
        call(
            server.addr,
            &server.trusted,
            Method::GET,
            "/healthz",
            Vec::new()
        )
        .await
        .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_or_mismatched_pem_files_are_clear_errors() {
    let dir = temp_dir();
    let err = ReloadingCert::load(dir.join("nope.crt"), dir.join("nope.key")).unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");
    let (cert_a, _, _) = self_signed();
    let (_, key_b, _) = self_signed();
    write_pair(&dir, &cert_a, &key_b);
    let err = ReloadingCert::load(dir.join("tls.crt"), dir.join("tls.key")).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    std::fs::write(dir.join("tls.crt"), "no pem here").unwrap();
    let err = ReloadingCert::load(dir.join("tls.crt"), dir.join("tls.key")).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn fixture(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

/// Copies a fixture directory, so the server owns (and the test may remove) its files.
fn copy_fixture(dir: &str) -> PathBuf {
    let to = temp_dir();
    for file in ["tls.crt", "tls.key"] {
        std::fs::copy(fixture(dir).join(file), to.join(file)).unwrap();
    }
    to
}

fn pem_cert(path: &Path) -> CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap()
}

/// The chart's two certificate sources, as the API server sees them: the Helm-generated RSA
/// (PKCS#1) certificate verified with the chart's caBundle, and a cert-manager style ECDSA
/// (SEC1) key, both for the injector Service's DNS name.
#[tokio::test]
async fn serves_the_certificates_the_chart_makes() {
    for (dir, trust) in [
        ("helm-generated", "ca.crt"),
        ("cert-manager-ecdsa", "tls.crt"),
    ] {
        let trusted = pem_cert(&fixture(dir).join(trust));
        let server = start_with(copy_fixture(dir), trusted.clone()).await;
        let mut tls = connect_as(server.addr, &trusted, "tollgate-injector.tollgate.svc")
            .await
            .unwrap_or_else(|e| panic!("{dir}: handshake failed: {e}"));
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: tollgate-injector.tollgate.svc\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{dir}: {answer}");
        assert!(answer.ends_with("ok\n"), "{dir}: {answer}");
        server.stop().await;
    }
}
