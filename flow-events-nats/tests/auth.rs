//! Credentials against nats-servers of their own (the shared one has no
//! authentication): user and password, in the URL or the settings, and a
//! token; a wrong one is a configuration error that never shows the secret.
//!
//! Each test starts `nats-server` (JetStream on, in a temporary directory)
//! on a free port and stops it at the end. Without the binary the tests are
//! skipped, unless `CI=true`, where they fail.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flow_events_core::{Backend, BackendErrorKind, Config};
use flow_events_nats::{NatsBackend, NatsConfig};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A nats-server of the test's own, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts one with the authentication flags `auth`; `None` when there
    /// is no nats-server (outside CI).
    fn start(test: &str, auth: &[&str]) -> Option<Self> {
        if !Path::new(NATS_SERVER).exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{NATS_SERVER} is missing and CI=true");
            }
            eprintln!("skipping {test}: {NATS_SERVER} is missing");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temporary directory");
        let child = Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .args(auth)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn backend(
        &self,
        url: &str,
        nats: impl FnOnce(flow_events_nats::NatsConfigBuilder) -> flow_events_nats::NatsConfigBuilder,
    ) -> NatsBackend {
        let url = url.replace("PORT", &self.port.to_string());
        let nats = nats(
            NatsConfig::builder()
                .with_url(url)
                .with_connect_timeout(Duration::from_secs(3)),
        )
        .build()
        .expect("config");
        NatsBackend::new(&Config::default(), nats)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_password() {
    let Some(server) = Server::start(
        "user_and_password",
        &["--user", "alice", "--pass", "s3cret-pw"],
    ) else {
        return;
    };
    let in_url = server.backend("nats://alice:s3cret-pw@127.0.0.1:PORT", |n| n);
    in_url
        .connect()
        .await
        .expect("credentials in the URL")
        .close()
        .await;
    let in_settings = server.backend("nats://127.0.0.1:PORT", |n| {
        n.with_user_and_password("alice", "s3cret-pw")
    });
    in_settings
        .connect()
        .await
        .expect("credentials in the settings")
        .close()
        .await;

    for backend in [
        server.backend("nats://alice:wrong-pw-1@127.0.0.1:PORT", |n| n),
        server.backend("nats://127.0.0.1:PORT", |n| {
            n.with_user_and_password("alice", "wrong-pw-1")
        }),
        server.backend("nats://127.0.0.1:PORT", |n| n),
    ] {
        let e = backend.connect().await.err().expect("refused");
        assert_eq!(e.kind(), BackendErrorKind::Configuration, "{e}");
        assert!(e.message().contains("authorization"), "{e}");
        let shown = format!("{e} {e:?} {backend:?}");
        assert!(!shown.contains("wrong-pw-1"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token() {
    let Some(server) = Server::start("token", &["--auth", "t0ken-abc"]) else {
        return;
    };
    let in_url = server.backend("nats://t0ken-abc@127.0.0.1:PORT", |n| n);
    in_url
        .connect()
        .await
        .expect("token in the URL")
        .close()
        .await;
    let in_settings = server.backend("nats://127.0.0.1:PORT", |n| n.with_token("t0ken-abc"));
    in_settings
        .connect()
        .await
        .expect("token in the settings")
        .close()
        .await;
    let wrong = server.backend("nats://bad-t0ken@127.0.0.1:PORT", |n| n);
    let e = wrong.connect().await.err().expect("refused");
    assert_eq!(e.kind(), BackendErrorKind::Configuration, "{e}");
    let shown = format!("{e} {e:?} {wrong:?} {}", wrong.info().url);
    assert!(!shown.contains("bad-t0ken"), "{shown}");
}

/// A CA and a server certificate for `localhost` signed by it, written to
/// `dir`: (CA file, certificate file, key file).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let files = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&files.0, ca.pem()).expect("write ca");
    std::fs::write(&files.1, leaf.pem()).expect("write cert");
    std::fs::write(&files.2, leaf_key.serialize_pem()).expect("write key");
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_configured_ca() {
    let certs = tempfile::tempdir().expect("temporary directory");
    let (ca, cert, key) = certificates(certs.path());
    let (cert, key) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    let Some(server) = Server::start(
        "tls_with_the_configured_ca",
        &["--tls", "--tlscert", &cert, "--tlskey", &key],
    ) else {
        return;
    };
    let trusted = server.backend("tls://localhost:PORT", |n| n.with_tls_ca_file(&ca));
    trusted
        .connect()
        .await
        .expect("TLS with the configured CA")
        .close()
        .await;
    let required = server.backend("nats://localhost:PORT", |n| {
        n.with_tls(true).with_tls_ca_file(&ca)
    });
    required
        .connect()
        .await
        .expect("NATS_TLS=true on a nats:// URL")
        .close()
        .await;
    // Without the CA the server's certificate is not trusted: a
    // configuration error, not something to retry in a hot loop.
    let untrusted = server.backend("tls://localhost:PORT", |n| n);
    let e = untrusted.connect().await.err().expect("refused");
    assert_eq!(e.kind(), BackendErrorKind::Configuration, "{e}");
}
