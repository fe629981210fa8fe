//! The transport seam: TCP (+ TLS) + WebSocket framing, behind four calls.
//!
//! Everything above this module sees only [`Connector::open`] (TCP and TLS),
//! [`Connector::upgrade`] (HTTP upgrade) and a [`Link`] with `recv`, `send` and `close`.
//! The one backend today is tokio-websockets (strict Autobahn conformance, ~5 KiB per idle
//! connection, SIMD masking; see DESIGN §5). A second backend (for permessage-deflate,
//! HTTP/2 WebSockets or SOCKS5) would add a variant to [`Link`] behind a feature.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::{HeaderMap, HeaderValue, Uri};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, WebSocketStream};

use crate::config::{self, ClientConfig, RootCertificates};
use crate::error::{self, Error, ErrorKind, TimeoutKind};
use crate::frame::Frame;

type Stream = MaybeTlsStream<TcpStream>;

/// Opens links to one URL. Built once per connection from its configuration.
pub(crate) struct Connector {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<tokio_websockets::Connector>,
    builder: ClientBuilder<'static>,
    /// The subprotocols offered; the server's choice must be one of them.
    offered: Vec<String>,
    connect_timeout: Duration,
    upgrade_timeout: Duration,
    max_message: usize,
}

impl Connector {
    pub(crate) fn new(cfg: &ClientConfig) -> Result<Self, Error> {
        let uri = config::parse_url(&cfg.url)?;
        let secure = uri.scheme_str() == Some("wss");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let mut builder = ClientBuilder::from_uri(uri.clone())
            .limits(tokio_websockets::Limits::default().max_payload_len(Some(cfg.max_message_size)))
            .config(tokio_websockets::Config::default().frame_size(cfg.max_frame_size.max(1)));
        for (name, value) in &cfg.headers {
            let (n, v) = config::header(name, value)?;
            builder = builder
                .add_header(n, v)
                .map_err(|e| error::from_ws(e, cfg.max_message_size))?;
        }
        if !cfg.subprotocols.is_empty() {
            let offer = HeaderValue::try_from(cfg.subprotocols.join(", "))
                .map_err(|e| Error::config("invalid subprotocol list").with_source(e))?;
            builder = builder
                .add_header(SEC_WEBSOCKET_PROTOCOL, offer)
                .map_err(|e| error::from_ws(e, cfg.max_message_size))?;
        }
        let tls = if secure {
            Some(tls_connector(cfg)?)
        } else {
            None
        };
        Ok(Connector {
            uri,
            host,
            port,
            tls,
            builder,
            offered: cfg.subprotocols.clone(),
            connect_timeout: cfg.connect_timeout,
            upgrade_timeout: cfg.upgrade_timeout,
            max_message: cfg.max_message_size,
        })
    }

    /// The host part of the URL (for spans and logs).
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// TCP connect (with `TCP_NODELAY`) and, for `wss://`, the TLS handshake.
    pub(crate) async fn open(&self) -> Result<Stream, Error> {
        let fut = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    Error::new(ErrorKind::Connect)
                        .with_context(format!("{}:{}", self.host, self.port))
                        .with_source(e)
                })?;
            // Requests are small and latency-bound; Nagle would hold them back.
            tcp.set_nodelay(true)
                .map_err(|e| Error::new(ErrorKind::Connect).with_source(e))?;
            match &self.tls {
                None => Ok(MaybeTlsStream::Plain(tcp)),
                Some(tls) => tls.wrap(&self.host, tcp).await.map_err(|e| {
                    let err = error::from_ws(e, self.max_message);
                    if matches!(err.kind(), ErrorKind::Io) {
                        Error::new(ErrorKind::Tls).with_source(err)
                    } else {
                        err
                    }
                }),
            }
        };
        tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| Error::timeout(TimeoutKind::Connect, self.connect_timeout))?
    }

    /// The HTTP upgrade on an open stream.
    pub(crate) async fn upgrade(&self, stream: Stream) -> Result<Link, Error> {
        let (ws, response) =
            tokio::time::timeout(self.upgrade_timeout, self.builder.connect_on(stream))
                .await
                .map_err(|_| Error::timeout(TimeoutKind::Upgrade, self.upgrade_timeout))?
                .map_err(|e| {
                    error::from_ws(e, self.max_message).with_context(self.uri.to_string())
                })?;
        // The link is dropped unused on a bad choice: the handshake is not complete, so
        // there is no close handshake to run (RFC 6455 §4.1, §7.1.7).
        let subprotocol = chosen_subprotocol(&self.offered, response.headers()).map_err(|why| {
            Error::new(ErrorKind::SubprotocolNotOffered)
                .with_context(format!("{}: {why}", self.uri))
        })?;
        Ok(Link {
            ws: Box::new(ws),
            subprotocol,
            max_message: self.max_message,
        })
    }
}

/// The subprotocol the server chose, checked against the offer. RFC 6455 §4.1: the client
/// fails the connection when the server's `Sec-WebSocket-Protocol` is not one of the values
/// it offered (which includes any value when it offered none). The value must be one
/// subprotocol, compared exactly. (tokio-websockets keeps only the last of repeated headers.)
fn chosen_subprotocol(offered: &[String], headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(SEC_WEBSOCKET_PROTOCOL) else {
        return Ok(None);
    };
    let Ok(chosen) = value.to_str().map(str::trim) else {
        return Err("the server's Sec-WebSocket-Protocol is not visible ASCII".to_owned());
    };
    if offered.iter().any(|p| p == chosen) {
        Ok(Some(chosen.to_owned()))
    } else if offered.is_empty() {
        Err(format!(
            "the server chose subprotocol {chosen:?}, but none was offered"
        ))
    } else {
        Err(format!(
            "the server chose subprotocol {chosen:?}, which was not offered ({})",
            offered.join(", ")
        ))
    }
}

fn tls_connector(cfg: &ClientConfig) -> Result<tokio_websockets::Connector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match cfg.tls.roots {
        RootCertificates::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootCertificates::Native => {
            #[cfg(feature = "native-roots")]
            {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::config("no usable native root certificates found"));
                }
            }
            #[cfg(not(feature = "native-roots"))]
            return Err(Error::config(
                "native root certificates need the `native-roots` feature",
            ));
        }
    }
    for der in &cfg.tls.extra_roots_der {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| Error::config("invalid extra root certificate").with_source(e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Tls).with_source(e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_websockets::Connector::Rustls(
        tokio_rustls::TlsConnector::from(Arc::new(tls)),
    ))
}

/// One established WebSocket link.
pub(crate) struct Link {
    // Boxed: the stream is ~1.3 KiB (the TLS variant), and every future that holds the
    // link by value would otherwise carry it inline, more than once.
    ws: Box<WebSocketStream<Stream>>,
    pub(crate) subprotocol: Option<String>,
    max_message: usize,
}

impl Link {
    /// The next frame; `None` when the stream ended.
    ///
    /// Cancel safe. Pings are answered by the backend on the next read or write.
    pub(crate) async fn recv(&mut self) -> Option<Result<Frame, Error>> {
        match self.ws.next().await? {
            Ok(msg) => Some(Ok(Frame::from_message(msg))),
            Err(e) => Some(Err(error::from_ws(e, self.max_message))),
        }
    }

    /// The next frame if the backend can produce one without waiting (from data already
    /// read); `None` when it would have to wait for the socket.
    pub(crate) fn try_recv(&mut self) -> Option<Option<Result<Frame, Error>>> {
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        match self.ws.poll_next_unpin(&mut cx) {
            std::task::Poll::Pending => None,
            std::task::Poll::Ready(item) => Some(item.map(|r| {
                r.map(Frame::from_message)
                    .map_err(|e| error::from_ws(e, self.max_message))
            })),
        }
    }

    /// Writes and flushes one frame, within `timeout`.
    pub(crate) async fn send(&mut self, frame: Frame, timeout: Duration) -> Result<(), Error> {
        frame.validate_outgoing()?;
        let max = self.max_message;
        tokio::time::timeout(timeout, self.ws.send(frame.into_message()))
            .await
            .map_err(|_| Error::timeout(TimeoutKind::Write, timeout))?
            .map_err(|e| error::from_ws(e, max))
    }

    /// Runs the rest of a close handshake: sends `frame` (if any), then reads until the
    /// peer's close (or end of stream) or `timeout`, so the backend can also flush the
    /// close reply it queued after a protocol error or a server close.
    pub(crate) async fn finish_close(&mut self, frame: Option<Frame>, timeout: Duration) -> bool {
        let work = async {
            if let Some(frame) = frame {
                if self.ws.send(frame.into_message()).await.is_err() {
                    return false;
                }
            }
            while let Some(item) = self.ws.next().await {
                if item.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(false)
    }
}
