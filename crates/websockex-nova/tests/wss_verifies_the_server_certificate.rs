//! `wss://` end to end: rustls (ring) verifies the server's certificate against the roots
//! the client trusts; an untrusted certificate is a TLS error that stops the connection
//! (retrying cannot fix it).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use websockex_nova::{Client, ErrorKind, Event, Frame, ReconnectPolicy};

struct TlsEchoServer {
    url: String,
    ca_der: Vec<u8>,
    _task: tokio::task::JoinHandle<()>,
}

async fn tls_echo_server() -> TlsEchoServer {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = cert.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der.clone().into()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok((_, mut ws)) = tokio_websockets::ServerBuilder::new().accept(tls).await
                else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    TlsEchoServer {
        url: format!("wss://localhost:{port}/"),
        ca_der: cert_der,
        _task: task,
    }
}

#[tokio::test]
async fn wss_echo_with_a_trusted_custom_root() {
    let server = tls_echo_server().await;
    let (client, mut events) = Client::builder(server.url.clone())
        .add_root_certificate_der(server.ca_der.clone())
        .connect()
        .await
        .unwrap();
    client.send_text("over TLS").await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(Event::Message(Frame::Text(t))) => return t.as_str().to_owned(),
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(echoed, "over TLS");
    client.close().await.unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error_that_stops() {
    let server = tls_echo_server().await;
    let err = Client::builder(server.url.clone())
        // Mozilla's roots do not include our self-signed test certificate.
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Tls, "{err:?}");
    assert!(!err.is_transient());
    assert!(
        std::error::Error::source(&err).is_some(),
        "the rustls cause is kept"
    );
}
