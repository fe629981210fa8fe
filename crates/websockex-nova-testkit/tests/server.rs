//! Integration tests: the testkit server against the tokio-websockets client.

use std::net::TcpStream as StdTcpStream;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue};
use tokio::net::TcpStream;
use tokio_websockets::proto::ProtocolError;
use tokio_websockets::{ClientBuilder, Limits, MaybeTlsStream, Message, WebSocketStream};
use websockex_nova_testkit::{
    raw_frame, ticker_notification, Plan, Received, Script, Step, TestServer,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const T: Duration = Duration::from_secs(2);

async fn connect(url: &str) -> Ws {
    ClientBuilder::new()
        .uri(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
        .0
}

async fn connect_err(url: &str) -> tokio_websockets::Error {
    match ClientBuilder::new().uri(url).unwrap().connect().await {
        Ok(_) => panic!("connect to {url} should fail"),
        Err(e) => e,
    }
}

/// Next message, with a timeout so a broken test fails instead of hanging.
async fn next(ws: &mut Ws) -> Option<Result<Message, tokio_websockets::Error>> {
    tokio::time::timeout(T, ws.next())
        .await
        .expect("timed out waiting for a message")
}

async fn next_text(ws: &mut Ws) -> String {
    let msg = next(ws).await.expect("stream ended").expect("error");
    msg.as_text().expect("not text").to_owned()
}

/// Read to the end; returns the close code if a close frame arrived.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    let mut code = None;
    while let Some(Ok(msg)) = next(ws).await {
        if let Some((c, _)) = msg.as_close() {
            code = Some(u16::from(c));
        }
    }
    code
}

#[tokio::test]
async fn echo_text_and_binary() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    assert!(server.url().starts_with("ws://127.0.0.1:"));
    let mut ws = connect(&server.url()).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hi");
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let bin = next(&mut ws).await.unwrap().unwrap();
    assert!(bin.is_binary());
    assert_eq!(&bin.as_payload()[..], &[1, 2, 3]);
    ws.close().await.unwrap();

    let got = server.wait_received(3, T).await;
    assert_eq!(
        got,
        vec![
            Received::Text {
                conn: 0,
                text: "hi".into()
            },
            Received::Binary {
                conn: 0,
                data: vec![1, 2, 3]
            },
            Received::Close {
                conn: 0,
                code: Some(1000),
                reason: String::new()
            },
        ]
    );
    assert_eq!(server.texts(), vec!["hi"]);
    assert_eq!((server.accepted(), server.upgraded()), (1, 1));
    assert!(server.wait_open_at_most(0, T).await);
}

#[tokio::test]
async fn refuse_returns_the_status() {
    let server = TestServer::start(Script::plan(Plan::Refuse { status: 401 }))
        .await
        .unwrap();
    let err = connect_err(&server.url()).await;
    assert!(err.to_string().contains("401"), "{err}");
    assert!(matches!(
        err,
        tokio_websockets::Error::Upgrade(tokio_websockets::upgrade::Error::DidNotSwitchProtocols(
            401
        ))
    ));
    assert_eq!((server.accepted(), server.upgraded()), (1, 0));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn drop_before_upgrade_and_hang() {
    let server = TestServer::start(Script::sequence(vec![Plan::DropBeforeUpgrade, Plan::Hang]))
        .await
        .unwrap();
    connect_err(&server.url()).await;
    let hang = tokio::time::timeout(
        Duration::from_millis(200),
        ClientBuilder::new().uri(&server.url()).unwrap().connect(),
    )
    .await;
    assert!(hang.is_err(), "the handshake should hang");
    assert_eq!((server.accepted(), server.upgraded()), (2, 0));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn drop_step_closes_without_close_frame() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![
        Step::SendText("a".into()),
        Step::Drop,
    ])))
    .await
    .unwrap();
    let mut ws = connect(&server.url()).await;
    assert_eq!(next_text(&mut ws).await, "a");
    assert_eq!(close_code(&mut ws).await, None);
}

#[tokio::test]
async fn close_code_arrives_at_the_client() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Close {
        code: 4001,
        reason: "custom".into(),
    }])))
    .await
    .unwrap();
    let mut ws = connect(&server.url()).await;
    let msg = next(&mut ws).await.unwrap().unwrap();
    let (code, reason) = msg.as_close().unwrap();
    assert_eq!((u16::from(code), reason), (4001, "custom"));
    assert!(next(&mut ws).await.is_none());
    // The client's close reply is recorded.
    let got = server.wait_received(1, T).await;
    assert!(matches!(
        got[0],
        Received::Close {
            code: Some(4001),
            ..
        }
    ));
}

#[tokio::test]
async fn invalid_utf8_is_a_protocol_error() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::InvalidUtf8])))
        .await
        .unwrap();
    let mut ws = connect(&server.url()).await;
    let err = next(&mut ws).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            tokio_websockets::Error::Protocol(ProtocolError::InvalidUtf8)
        ),
        "{err:?}"
    );
    // The client answers with close 1007, which the server (in Serve) records.
    while next(&mut ws).await.is_some() {}
    let got = server.wait_received(1, T).await;
    assert!(
        matches!(
            got.first(),
            Some(Received::Close {
                code: Some(1007),
                ..
            })
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn reserved_opcode_and_oversized_frames() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::ReservedOpcode]),
        Plan::Accept(vec![Step::Oversized { len: 70_000 }]),
    ]))
    .await
    .unwrap();
    let mut ws = connect(&server.url()).await;
    let err = next(&mut ws).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            tokio_websockets::Error::Protocol(ProtocolError::InvalidOpcode)
        ),
        "{err:?}"
    );

    let (mut ws, _) = ClientBuilder::new()
        .uri(&server.url())
        .unwrap()
        .limits(Limits::default().max_payload_len(Some(1_000)))
        .connect()
        .await
        .unwrap();
    let err = next(&mut ws).await.unwrap().unwrap_err();
    assert!(
        matches!(err, tokio_websockets::Error::PayloadTooLong { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn raw_frames_and_pings() {
    let mut fragmented = raw_frame(false, 0x1, b"he");
    fragmented.extend(raw_frame(true, 0x0, b"llo"));
    let server = TestServer::start(Script::plan(Plan::Accept(vec![
        Step::SendRaw(fragmented),
        Step::Ping(b"p1".to_vec()),
        Step::Serve,
    ])))
    .await
    .unwrap();
    let mut ws = connect(&server.url()).await;
    assert_eq!(next_text(&mut ws).await, "hello");
    let ping = next(&mut ws).await.unwrap().unwrap();
    assert!(ping.is_ping());
    // Reading again flushes the automatic pong; send our own ping too.
    ws.send(Message::ping("p2")).await.unwrap();
    let pong = next(&mut ws).await.unwrap().unwrap();
    assert!(pong.is_pong());
    assert_eq!(&pong.as_payload()[..], b"p2");
    assert!(server.wait_for(T, |s| s.control().len() >= 2).await);
    let control = server.control();
    assert!(control.contains(&Received::Pong {
        conn: 0,
        data: b"p1".to_vec()
    }));
    assert!(control.contains(&Received::Ping {
        conn: 0,
        data: b"p2".to_vec()
    }));
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn restart_on_the_same_port() {
    let mut server = TestServer::start(Script::echo()).await.unwrap();
    let url = server.url();
    let addr = server.addr();
    let mut ws = connect(&url).await;
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "one");

    server.restart().await.unwrap();
    assert_eq!(server.addr(), addr);
    // The old connection was dropped without a close frame.
    assert_eq!(close_code(&mut ws).await, None);

    let mut ws = connect(&url).await;
    ws.send(Message::text("two")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "two");
    assert_eq!(server.upgraded(), 2);
    assert_eq!(server.texts(), vec!["one", "two"]);
}

#[tokio::test]
async fn stop_frees_the_port_and_start_on_reuses_it() {
    let mut server = TestServer::start(Script::echo()).await.unwrap();
    let addr = server.addr();
    let mut ws = connect(&server.url()).await;
    server.stop().await;
    assert!(!server.is_listening());
    assert_eq!(server.open(), 0);
    assert_eq!(close_code(&mut ws).await, None);
    assert!(StdTcpStream::connect(addr).is_err());
    drop(server);

    let server = TestServer::start_on(addr, Script::echo()).await.unwrap();
    assert_eq!(server.addr(), addr);
    let mut ws = connect(&server.url()).await;
    ws.send(Message::text("back")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "back");
}

#[tokio::test]
async fn dropping_the_server_ends_its_connections() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Stall])))
        .await
        .unwrap();
    let mut ws = connect(&server.url()).await;
    drop(server);
    assert_eq!(close_code(&mut ws).await, None);
}

#[tokio::test]
async fn requests_record_path_headers_and_subprotocol() {
    let server = TestServer::start(Script::echo().subprotocols(["v2", "v3"]))
        .await
        .unwrap();
    let url = format!("ws://{}/ws/api/v2?x=1", server.addr());
    let (mut ws, response) = ClientBuilder::new()
        .uri(&url)
        .unwrap()
        .add_header(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("secret"),
        )
        .unwrap()
        .add_header(
            HeaderName::from_static("sec-websocket-protocol"),
            HeaderValue::from_static("v1, v3, v2"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "v3"
    );
    ws.close().await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/ws/api/v2?x=1");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].header("X-Api-Key"), Some("secret"));
    assert!(reqs[0]
        .headers
        .contains(&("x-api-key".to_owned(), "secret".to_owned())));
    assert_eq!(reqs[0].subprotocols(), vec!["v1", "v3", "v2"]);
}

#[tokio::test]
async fn stream_delivers_exactly_count_then_close_1000() {
    const COUNT: usize = 5_000;
    let message = ticker_notification(42, 200);
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Stream {
        count: COUNT,
        message: message.clone(),
    }])))
    .await
    .unwrap();
    let mut ws = connect(&server.url()).await;
    let mut n = 0usize;
    let code = loop {
        let msg = next(&mut ws).await.expect("ended before close").unwrap();
        if let Some((code, _)) = msg.as_close() {
            break u16::from(code);
        }
        assert_eq!(msg.as_text(), Some(message.as_str()));
        n += 1;
    };
    assert_eq!((n, code), (COUNT, 1000));
    assert!(next(&mut ws).await.is_none());
    let got = server.wait_received(1, T).await;
    assert!(matches!(
        got[0],
        Received::Close {
            code: Some(1000),
            ..
        }
    ));
}

#[tokio::test]
async fn push_and_echo_n_then_continue() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![
        Step::Push {
            count: 3,
            text: "x".into(),
        },
        Step::EchoN(1),
        Step::SendText("after".into()),
        Step::Close {
            code: 1000,
            reason: String::new(),
        },
    ])))
    .await
    .unwrap();
    let mut ws = connect(&server.url()).await;
    for _ in 0..3 {
        assert_eq!(next_text(&mut ws).await, "x");
    }
    ws.send(Message::text("e")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "e");
    assert_eq!(next_text(&mut ws).await, "after");
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn sequence_picks_plan_by_connection_and_repeats_the_last() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Refuse { status: 503 },
        Plan::Accept(vec![Step::SendText("second".into())]),
        Plan::Accept(vec![Step::SendText("later".into())]),
    ]))
    .await
    .unwrap();
    assert!(connect_err(&server.url()).await.to_string().contains("503"));
    let mut ws = connect(&server.url()).await;
    assert_eq!(next_text(&mut ws).await, "second");
    for _ in 0..2 {
        let mut ws = connect(&server.url()).await;
        assert_eq!(next_text(&mut ws).await, "later");
    }
    assert_eq!((server.accepted(), server.upgraded()), (4, 3));
}

#[tokio::test]
async fn per_connection_and_set_script() {
    let server = TestServer::start(Script::per_connection(|i| {
        Plan::Accept(vec![Step::SendText(format!("conn {i}"))])
    }))
    .await
    .unwrap();
    for i in 0..3 {
        let mut ws = connect(&server.url()).await;
        assert_eq!(next_text(&mut ws).await, format!("conn {i}"));
    }
    // A new script counts its own connections from 0.
    server.set_script(Script::sequence(vec![
        Plan::Refuse { status: 429 },
        Plan::echo(),
    ]));
    assert!(connect_err(&server.url()).await.to_string().contains("429"));
    let mut ws = connect(&server.url()).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hi");
    assert_eq!(
        server.received(),
        vec![Received::Text {
            conn: 4,
            text: "hi".into()
        }]
    );
}

#[tokio::test]
async fn panicking_plan_function_only_drops_that_connection() {
    let server = TestServer::start(Script::per_connection(|i| {
        if i == 0 {
            panic!("boom (expected by the test)");
        }
        Plan::echo()
    }))
    .await
    .unwrap();
    connect_err(&server.url()).await;
    let mut ws = connect(&server.url()).await;
    ws.send(Message::text("ok")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ok");
}

#[tokio::test]
async fn broadcast_and_drop_connections() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Serve])))
        .await
        .unwrap();
    let mut a = connect(&server.url()).await;
    let mut b = connect(&server.url()).await;
    assert!(server.wait_upgraded(2, T).await);
    assert!(server.wait_for(T, |s| s.open() == 2).await);
    assert!(server.wait_for(T, |s| s.serving() == 2).await);
    assert_eq!(server.broadcast("news"), 2);
    assert_eq!(next_text(&mut a).await, "news");
    assert_eq!(next_text(&mut b).await, "news");

    server.drop_connections();
    assert_eq!(server.open(), 0);
    assert_eq!(close_code(&mut a).await, None);
    assert_eq!(close_code(&mut b).await, None);
    // Still listening.
    let _c = connect(&server.url()).await;
    assert!(server.wait_upgraded(3, T).await);
}

#[tokio::test]
async fn stall_never_answers_pings() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Stall])))
        .await
        .unwrap();
    let mut ws = connect(&server.url()).await;
    ws.send(Message::ping("hb")).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(150), ws.next()).await;
    assert!(r.is_err(), "a stalled server must not answer");
    assert_eq!(server.open(), 1);
    server.drop_connections();
    assert_eq!(close_code(&mut ws).await, None);
}
