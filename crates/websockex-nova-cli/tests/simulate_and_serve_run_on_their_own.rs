//! `nova simulate deribit` and `nova serve` as a user runs them: real processes that print
//! their URL on stdout, a real client on it. The simulator's periodic faults reach the
//! client (a drop, a book gap) and it recovers; the echo server echoes; a port that is
//! taken is a one-line error and a nonzero exit.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{start_server, NOVA, WAIT};
use tokio::process::{Child, Command};
use websockex_nova::{Client, Event, ReconnectPolicy};
use websockex_nova_deribit::channels::Interval;
use websockex_nova_deribit::{BookEvent, Credentials, DeribitClient, DeribitConfig, Endpoint};

/// Starts `nova ARGS` (stderr kept for the test to read) and checks the URL it printed.
async fn start(args: &[&str]) -> (Child, String) {
    let (child, url) = start_server(args, Stdio::piped()).await;
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    (child, url)
}

#[tokio::test]
async fn the_simulator_serves_the_demo_key_and_its_faults_reach_the_client() {
    let (mut sim, url) = start(&[
        "simulate",
        "deribit",
        "--drop-every",
        "1500ms",
        "--gap-every",
        "400ms",
    ])
    .await;
    let config = DeribitConfig::new(Endpoint::Custom(url))
        .with_credentials(Credentials::client_signature("demo-key", "demo-secret"));
    let (client, mut events) = config
        .builder()
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .connect()
        .await
        .expect("the demo key authenticates");
    let deribit = DeribitClient::from_client(client);
    // A drop may land in the middle of a call: a real user retries, so does the test.
    let mut book = loop {
        match deribit.subscribe_book("BTC-PERPETUAL", Interval::Raw).await {
            Ok(book) => break book,
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    };

    // Both faults arrive by themselves, and the book is consistent again after each.
    let (mut gap, mut reconnected) = (false, false);
    while !(gap && reconnected && !book.book().is_resyncing()) {
        match tokio::time::timeout(WAIT, book.next())
            .await
            .expect("book events")
        {
            Some(BookEvent::Gap { .. }) => gap = true,
            Some(BookEvent::Reconnected) => reconnected = true,
            Some(_) => {}
            None => panic!("the book stream ended"),
        }
    }
    loop {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("events")
        {
            Some(Event::Resubscribed { channels, .. }) => {
                assert_eq!(channels, 1);
                break;
            }
            Some(_) => continue,
            None => panic!("the event stream ended"),
        }
    }
    let time = loop {
        match deribit.get_time().await {
            Ok(t) => break t,
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    };
    assert!(time > 1_600_000_000_000, "requests work");

    // The simulator said what it did, on stderr.
    deribit.client().close().await.unwrap();
    sim.kill().await.unwrap();
    let mut err = String::new();
    let mut stderr = sim.stderr.take().unwrap();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err)
        .await
        .unwrap();
    assert!(err.contains("demo key: demo-key / demo-secret"), "{err}");
    assert!(
        err.contains("nova: fault: dropping every connection"),
        "{err}"
    );
    assert!(err.contains("nova: fault: book gap on"), "{err}");
}

#[tokio::test]
async fn the_simulator_can_start_in_maintenance() {
    let (_sim, url) = start(&["simulate", "deribit", "--maintenance"]).await;
    // No credentials: the public session comes up (hello, heartbeat and time still work, as
    // on Deribit); market methods answer 11051.
    let (deribit, _events) = DeribitClient::connect(&DeribitConfig::new(Endpoint::Custom(url)))
        .await
        .unwrap();
    assert!(deribit.get_time().await.is_ok());
    let answer = deribit.ticker("BTC-PERPETUAL").await.unwrap_err();
    assert_eq!(answer.api_error().map(|e| e.code), Some(11051), "{answer}");
}

#[tokio::test]
async fn serve_echoes_and_a_taken_port_is_a_one_line_error() {
    let (_server, url) = start(&["serve"]).await;
    let (client, mut events) = Client::builder(url.clone()).connect().await.unwrap();
    client.send_text("hello").await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
            Some(Event::Message(frame)) => {
                assert_eq!(frame.as_text(), Some("hello"));
                break;
            }
            Some(_) => continue,
            None => panic!("events ended"),
        }
    }

    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    for args in [
        vec!["serve", "--listen", addr],
        vec!["simulate", "deribit", "--listen", addr],
    ] {
        let out = tokio::time::timeout(WAIT, Command::new(NOVA).args(&args).output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("nova: cannot listen on {addr}:")),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}
