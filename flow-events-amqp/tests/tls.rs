//! `amqps://` through a TLS-terminating proxy in front of the test broker,
//! with a certificate authority made for the test.

mod common;

use std::sync::Arc;

use common::CleanupSubscription;
use common::{Fixture, WAIT, unique};
use flow_events_core::{Backend, BackendErrorKind, Decision, Event, Subscription, TopicPattern};
use flow_events_testkit::steps::publish_confirmed;
use futures_util::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

/// A CA (PEM) and a TLS proxy for `localhost` signed by it.
struct TlsProxy {
    ca_pem: String,
    port: u16,
    stop: CancellationToken,
}

impl TlsProxy {
    async fn start() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                    };
                    let acceptor = acceptor.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut broker) = TcpStream::connect(common::BROKER).await else {
                            return;
                        };
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut tls, &mut broker) => {}
                        }
                    });
                }
            }
        });
        Self {
            ca_pem: ca.pem(),
            port,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_publishes_and_consumes() {
    require_broker!("amqps_publishes_and_consumes");
    let proxy = TlsProxy::start().await;
    let mut fx = Fixture::with(
        "tls",
        |c| c,
        |o| {
            o.with_url(proxy.url())
                .with_tls_ca_pem(proxy.ca_pem.clone())
        },
    );
    let name = unique("tls");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = session
        .subscribe(&Subscription::new(&name, TopicPattern::all()).expect("subscription"))
        .await
        .expect("subscribe");
    let sent = Event::try_new("secure.thing", serde_json::json!({"ok": true})).expect("event");
    publish_confirmed(&*session, &sent).await;
    let got = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("delivery");
    assert_eq!(got.delivery.event(), &sent);
    got.acker.settle(Decision::Ack).await.expect("ack");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_with_an_unknown_authority_is_a_configuration_error() {
    require_broker!("amqps_with_an_unknown_authority_is_a_configuration_error");
    let proxy = TlsProxy::start().await;
    let fx = Fixture::with("tlsbad", |c| c, |o| o.with_url(proxy.url()));
    let err = match fx.backend.connect().await {
        Ok(_) => panic!("connected without trusting the certificate"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), BackendErrorKind::Configuration, "{err}");
    assert!(err.message().contains("certificate"), "{err}");
}
