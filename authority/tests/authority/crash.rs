//! The authority killed with SIGKILL during ingest and restarted loses no acknowledged
//! batch and doubles none. The server runs in a child process: this test binary
//! re-executes itself in the `server_role` role.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

const DIR_ENV: &str = "TOLLGATE_TEST_CRASH_DIR";

/// Not a test on its own: the server process of `sigkill_during_ingest_*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run in a child process by sigkill_during_ingest_loses_no_acked_batch_and_doubles_none"]
async fn server_role() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        eprintln!("server_role: {DIR_ENV} not set; nothing to do");
        return;
    };
    let dir = PathBuf::from(dir);
    let mut opts = options(&dir, 0);
    opts.http = None;
    let running = tollgate_authority::server::start(opts).await.unwrap();
    let tmp = dir.join("port.tmp");
    std::fs::write(&tmp, running.grpc_addr.port().to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("port")).unwrap();
    running.wait().await.unwrap();
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_server(dir: &Path) -> (ServerProcess, String) {
    let _ = std::fs::remove_file(dir.join("port"));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "authority::crash::server_role",
            "--nocapture",
        ])
        .env(DIR_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = ServerProcess(child);
    for _ in 0..1200 {
        if let Ok(p) = std::fs::read_to_string(dir.join("port")) {
            return (proc, format!("http://127.0.0.1:{}", p.trim()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server process did not start within 60 s");
}

const BATCHES: u64 = 300;
const RECORDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_no_acked_batch_and_doubles_none() {
    if skip_without_store("sigkill_during_ingest_loses_no_acked_batch_and_doubles_none") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = spawn_server(dir.path()).await;
    setup_tenant(&url, "acme", 1000).await;

    let mut sc = Sidecar::connect(&url, "pod-1", SC_ACME, &["acme"]).await;
    let batches: Vec<pb::UsageBatch> = (1..=BATCHES)
        .map(|s| sc.batch(s, "acme", RECORDS))
        .collect();
    let up = sc.up.clone();
    let to_send = batches.clone();
    let sender = tokio::spawn(async move {
        for b in to_send {
            if up
                .send(pb::SessionUp {
                    msg: Some(session_up::Msg::Batch(b)),
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // Read acks until a third of the batches are acknowledged, then SIGKILL the server
    // while the rest are in flight.
    let mut acked = BTreeSet::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), sc.down.message()).await {
            Ok(Ok(Some(m))) => {
                if let Some(pb::session_down::Msg::Ack(a)) = m.msg {
                    assert_eq!(a.status, pb::AckStatus::Accepted as i32, "{a:?}");
                    acked.insert(a.seq);
                    if acked.len() as u64 == BATCHES / 3 {
                        server.0.kill().unwrap();
                        server.0.wait().unwrap();
                    }
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => panic!("no message within 60 s"),
        }
    }
    sender.abort();
    assert!(
        acked.len() as u64 >= BATCHES / 3,
        "acked {} before the kill",
        acked.len()
    );
    // Acks already in flight when the kill came may still arrive; usually some batches
    // were never acknowledged (they are re-sent below).
    eprintln!("acknowledged before the kill: {} of {BATCHES}", acked.len());
    drop(server);

    // Restart on the same database and key.
    let (server, url) = spawn_server(dir.path()).await;
    let mut sc = Sidecar::connect(&url, "pod-1", SC_ACME, &["acme"]).await;
    let durable = sc.registered.durable_through_seq;
    let max_acked = *acked.iter().max().unwrap();
    assert!(
        durable >= max_acked,
        "durable {durable} < acknowledged {max_acked}: an acknowledged batch was lost"
    );
    // Re-send everything: acknowledged batches must come back as duplicates.
    let up = sc.up.clone();
    let sender = tokio::spawn(async move {
        for b in batches {
            up.send(pb::SessionUp {
                msg: Some(session_up::Msg::Batch(b)),
            })
            .await
            .unwrap();
        }
    });
    let mut seen = BTreeSet::new();
    while (seen.len() as u64) < BATCHES {
        let a = sc.next_ack().await;
        if acked.contains(&a.seq) {
            assert_eq!(
                a.status,
                pb::AckStatus::Duplicate as i32,
                "acknowledged batch {} posted again",
                a.seq
            );
        } else {
            assert!(
                a.status == pb::AckStatus::Accepted as i32
                    || a.status == pb::AckStatus::Duplicate as i32,
                "{a:?}"
            );
        }
        seen.insert(a.seq);
    }
    sender.await.unwrap();
    let st = statement(&url, "acme").await;
    assert_eq!(
        st.calls,
        BATCHES * RECORDS as u64,
        "every record posted exactly once"
    );
    assert_eq!(st.total_micro, BATCHES * RECORDS as u64 * 100);
    drop(server);
}
