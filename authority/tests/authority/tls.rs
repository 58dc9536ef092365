//! TLS (rustls) on the gRPC listener: `tollgate ctl` and a sidecar connect over https with
//! the CA they are given; plaintext and untrusted clients are refused.

use clap::Parser;
use tollgate_authority::cli::ctl::{CtlArgs, execute};
use tollgate_authority::config::TlsConfig;
use tollgate_authority::server::start;
use tollgate_proto::v1::{self as pb, sidecar_service_client::SidecarServiceClient};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::common::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    ctl: CtlArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_ctl_and_sidecars_and_refuses_plaintext_or_untrusted_clients() {
    if skip_without_store("tls_serves_ctl_and_sidecars_and_refuses_plaintext_or_untrusted_clients")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut opts = options(dir.path(), 0);
    opts.config.tls = Some(TlsConfig {
        cert: cert.clone(),
        key,
    });
    let running = start(opts).await.unwrap();
    let port = running.grpc_addr.port();
    let https = format!("https://localhost:{port}");
    let cert_arg = cert.display().to_string();

    // ctl over TLS, trusting the server's certificate.
    let ctl = |extra: Vec<&str>| {
        let mut argv = vec!["ctl", "--authority", &https, "--admin-token", ADMIN];
        argv.extend(extra);
        let args = Cli::try_parse_from(argv).unwrap().ctl;
        execute(args)
    };
    let out = ctl(vec!["--ca-cert", &cert_arg, "tenant", "create", "acme"])
        .await
        .unwrap();
    assert!(out.contains("created tenant acme"), "{out}");
    // Without that CA the certificate is not trusted: the call fails, nothing is created.
    let err = ctl(vec!["tenant", "create", "globex"]).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot reach the authority"),
        "{err:#}"
    );

    // A sidecar registers over TLS.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ck.cert.pem()))
        .domain_name("localhost");
    let ch = Endpoint::from_shared(https.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reg = SidecarServiceClient::new(ch)
        .register(req(
            pb::RegisterRequest {
                sidecar_id: "pod-tls".into(),
                tenants: vec!["acme".into()],
                public_key: key_for("pod-tls").verifying_key().to_bytes().to_vec(),
                next_seq: 1,
                agent: "test".into(),
                ..Default::default()
            },
            Some(SC_ACME),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reg.policies.len(), 1, "registered for acme over TLS");

    // Plaintext HTTP/2 to the TLS port gets no answer.
    let plain = format!("http://127.0.0.1:{port}");
    let answered = match SidecarServiceClient::connect(plain).await {
        Err(_) => false,
        Ok(mut c) => c
            .register(req(
                pb::RegisterRequest {
                    sidecar_id: "pod-plain".into(),
                    tenants: vec!["acme".into()],
                    ..Default::default()
                },
                Some(SC_ACME),
            ))
            .await
            .is_ok(),
    };
    assert!(!answered, "a plaintext call was answered");
    let tenants = ctl(vec!["--ca-cert", &cert_arg, "tenant", "list"])
        .await
        .unwrap();
    assert!(!tenants.contains("globex"), "{tenants}");
    running.shutdown().await.unwrap();
}
