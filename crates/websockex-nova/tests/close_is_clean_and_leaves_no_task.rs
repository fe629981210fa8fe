//! Closing is clean (DESIGN §4.7): `close()` or dropping the last `Client` runs the close
//! handshake, stops reconnecting and ends the task. No task outlives its connection.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::{Client, CloseCode, Event, ReconnectPolicy, State};
use websockex_nova_testkit::{Received, Script, TestServer};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (briefly) until the runtime is back to `baseline` live tasks; returns the count.
async fn settle_tasks(baseline: usize) -> usize {
    for _ in 0..200 {
        if alive_tasks() == baseline {
            break;
        }
        tokio::time::sleep(ms(1)).await;
    }
    alive_tasks()
}

fn closes(server: &TestServer) -> Vec<Received> {
    server
        .received()
        .into_iter()
        .filter(|r| matches!(r, Received::Close { .. }))
        .collect()
}

fn normal_close(conn: usize) -> Received {
    Received::Close {
        conn,
        code: Some(1000),
        reason: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn close_runs_the_handshake_and_ends_the_task() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let baseline = alive_tasks();

    let (client, mut events, connection) = Client::builder(server.url()).build().unwrap();
    let task = tokio::spawn(connection);
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    assert_echo(&client, &mut events, "hello").await;
    assert!(alive_tasks() > baseline);

    client.close().await.unwrap();
    assert_eq!(client.status().state, State::Closed);
    let result = tokio::time::timeout(T, task)
        .await
        .expect("task did not end");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    // The stream ends right after Closed { error: None }.
    assert_eq!(
        drain(&mut events).await,
        ["ready->closing", "closing->closed", "closed"]
    );
    assert!(events.next().await.is_none());

    assert_eq!(closes(&server), [normal_close(0)]);
    wait_server_idle(&server).await;
    assert_eq!(
        settle_tasks(baseline).await,
        baseline,
        "a task outlived its connection"
    );
    // Closing again is harmless.
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_closes_cleanly() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let baseline = alive_tasks();

    let (client, mut events, connection) = Client::builder(server.url()).build().unwrap();
    let task = tokio::spawn(connection);
    let second = client.clone();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    assert_echo(&second, &mut events, "from the clone").await;

    drop(client);
    // One handle is left: nothing happens.
    assert_echo(&second, &mut events, "still open").await;
    drop(second);

    let result = tokio::time::timeout(T, task)
        .await
        .expect("task did not end");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    assert_eq!(
        drain(&mut events).await,
        ["ready->closing", "closing->closed", "closed"]
    );
    assert_eq!(closes(&server), [normal_close(0)]);
    wait_server_idle(&server).await;
    assert_eq!(settle_tasks(baseline).await, baseline);
}

#[tokio::test(start_paused = true)]
async fn the_high_level_api_closes_cleanly_too() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let baseline = alive_tasks();

    let (client, mut events) = Client::builder(server.url()).connect().await.unwrap();
    assert_eq!(client.status().state, State::Ready);
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    client
        .close_with(CloseCode::new(4001).unwrap(), "done for today")
        .await
        .unwrap();
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");
    assert_eq!(
        closes(&server),
        [Received::Close {
            conn: 0,
            code: Some(4001),
            reason: "done for today".into()
        }]
    );
    wait_server_idle(&server).await;
    assert_eq!(settle_tasks(baseline).await, baseline);
}

#[tokio::test(start_paused = true)]
async fn close_during_backoff_stops_reconnecting_at_once() {
    let mut server = TestServer::start(Script::echo()).await.unwrap();
    let baseline = alive_tasks();

    let (client, mut events, connection) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_secs(10),
            Duration::from_secs(60),
        ))
        .build()
        .unwrap();
    let task = tokio::spawn(connection);
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    server.stop().await;
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await,
        ["disconnected#1 Io", "reconnecting#2 10s"]
    );
    let accepted = server.accepted();

    let before = tokio::time::Instant::now();
    client.close().await.unwrap();
    assert!(
        before.elapsed() < Duration::from_secs(10),
        "close did not wait out the backoff"
    );
    let result = tokio::time::timeout(T, task)
        .await
        .expect("task did not end");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    assert_eq!(
        drain(&mut events).await,
        ["backoff->closing", "closing->closed", "closed"]
    );

    // No attempt after the close.
    server.restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(server.accepted(), accepted);
    server.stop().await;
    assert_eq!(
        settle_tasks(baseline - 1).await,
        baseline - 1,
        "only the stopped accept loop is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_event_stream_does_not_stall_the_connection() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let baseline = alive_tasks();
    let (client, events, connection) = Client::builder(server.url())
        .event_capacity(2)
        .build()
        .unwrap();
    let task = tokio::spawn(connection);
    drop(events);
    client.ready().await.unwrap();
    for i in 0..20 {
        client.send_text(format!("m{i}")).await.unwrap();
    }
    assert!(server.wait_received(20, T).await.len() >= 20);
    client.close().await.unwrap();
    assert!(matches!(task.await, Ok(Ok(()))));
    wait_server_idle(&server).await;
    assert_eq!(settle_tasks(baseline).await, baseline);
}

/// Lifecycle events are not dropped in normal operation, so a full event stream makes the
/// connection wait for room; but `close()` is signalled past the queue and the final events
/// then wait at most the close timeout, so a consumer that neither reads nor drops its
/// `Events` cannot make `close()` hang.
#[tokio::test(start_paused = true)]
async fn close_completes_even_when_nobody_reads_a_full_event_stream() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, events, connection) = Client::builder(server.url())
        .event_capacity(2)
        .build()
        .unwrap();
    let task = tokio::spawn(connection);
    // Ready is visible on the status; the stream now holds two state changes and the
    // connection waits to add `Connected`.
    client.ready().await.unwrap();

    // A consumer that neither reads nor drops its stream must not make close() hang:
    // the final events wait at most the close timeout (5 s by default), then are dropped.
    let closing = tokio::spawn({
        let client = client.clone();
        async move { client.close().await }
    });
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .expect("close() completes although nobody reads the events")
        .unwrap()
        .unwrap();
    assert!(matches!(task.await, Ok(Ok(()))));
    assert_eq!(client.status().state, State::Closed);
    drop(events);
    assert!(server.wait_received(1, T).await.contains(&normal_close(0)));
}
