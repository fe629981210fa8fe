//! The connection comes back after every kind of fault, waiting the configured backoff, and
//! works again afterwards (DESIGN §4.5).
//!
//! Each test asserts the whole event sequence (state changes left out): the `Disconnected`
//! event with the right error kind and close code, `Reconnecting` with the delay the policy
//! prescribes, then `Connected` again, and an echo over the new link.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::{Client, ReconnectPolicy};
use websockex_nova_testkit::{Plan, Received, Script, Step, TestServer};

fn exponential() -> ReconnectPolicy {
    ReconnectPolicy::exponential(ms(100), Duration::from_secs(5))
}

#[tokio::test(start_paused = true)]
async fn after_the_server_drops_the_tcp_connection() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::EchoN(1), Step::Drop]),
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    client.send_text("first").await.unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "message first",
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "connected#2",
        ]
    );
    assert_echo(&client, &mut events, "after reconnect").await;
    assert_eq!(server.upgraded(), 2);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_drop_connections() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    assert_echo(&client, &mut events, "one").await;
    server.drop_connections();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["disconnected#1 Io", "reconnecting#2 100ms", "connected#2"]
    );
    assert_echo(&client, &mut events, "two").await;
    // A second outage right away: the counter was not reset (the link was up only briefly),
    // so the delay keeps growing.
    server.drop_connections();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["disconnected#2 Io", "reconnecting#3 200ms", "connected#3"]
    );
    assert_echo(&client, &mut events, "three").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_the_upgrade_is_refused_with_503() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Refuse { status: 503 },
        Plan::Refuse { status: 503 },
        Plan::Refuse { status: 503 },
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "disconnected#1 UpgradeRejected { status: 503 }",
            "reconnecting#2 100ms",
            "disconnected#2 UpgradeRejected { status: 503 }",
            "reconnecting#3 200ms",
            "disconnected#3 UpgradeRejected { status: 503 }",
            "reconnecting#4 400ms",
            "connected#4",
        ]
    );
    assert_echo(&client, &mut events, "finally").await;
    assert_eq!((server.accepted(), server.upgraded()), (4, 1));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_the_server_drops_before_the_upgrade_with_linear_backoff() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::DropBeforeUpgrade,
        Plan::DropBeforeUpgrade,
        Plan::DropBeforeUpgrade,
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::linear(ms(50), ms(25), ms(90)))
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 50ms",
            "disconnected#2 Io",
            "reconnecting#3 75ms",
            "disconnected#3 Io",
            // Capped at max_delay.
            "reconnecting#4 90ms",
            "connected#4",
        ]
    );
    assert_echo(&client, &mut events, "up").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_the_upgrade_hangs() {
    let server = TestServer::start(Script::sequence(vec![Plan::Hang, Plan::echo()]))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .upgrade_timeout(ms(300))
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "disconnected#1 Timeout(Upgrade)",
            "reconnecting#2 100ms",
            "connected#2",
        ]
    );
    assert_echo(&client, &mut events, "past the hang").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_the_server_closes_with_a_code() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::Close {
            code: 1001,
            reason: "going away".into(),
        }]),
        Plan::Accept(vec![Step::Close {
            code: 4000,
            reason: "venue maintenance".into(),
        }]),
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 3).await,
        [
            "connected#1",
            r#"disconnected#1 ClosedByServer(1001 "going away") code=1001"#,
            "reconnecting#2 100ms",
            "connected#2",
            r#"disconnected#2 ClosedByServer(4000 "venue maintenance") code=4000"#,
            "reconnecting#3 200ms",
            "connected#3",
        ]
    );
    assert_echo(&client, &mut events, "still here").await;
    // The client answered each close handshake, echoing the server's code.
    let closes: Vec<_> = server
        .received()
        .into_iter()
        .filter(|r| matches!(r, Received::Close { .. }))
        .collect();
    assert_eq!(
        closes,
        [
            Received::Close {
                conn: 0,
                code: Some(1001),
                reason: String::new()
            },
            Received::Close {
                conn: 1,
                code: Some(4000),
                reason: String::new()
            },
        ]
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_the_server_restarts_on_the_same_port() {
    let mut server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    assert_echo(&client, &mut events, "before").await;

    server.stop().await;
    // While the server is down, attempts fail with a connect error and the delay grows.
    let down = trace_until(&mut events, |e| {
        matches!(e, websockex_nova::Event::Reconnecting { attempt: 3, .. })
    })
    .await;
    assert_eq!(
        down,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "disconnected#2 Connect",
            "reconnecting#3 200ms",
        ]
    );
    server.restart().await.unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#3"]);
    assert_echo(&client, &mut events, "after").await;
    assert_eq!(server.texts(), ["before", "after"]);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_a_stalled_peer_is_detected_by_keepalive() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::Stall]),
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .ping_interval(Some(ms(200)))
        .ping_timeout(Some(ms(700)))
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 2).await,
        [
            "connected#1",
            "disconnected#1 Timeout(Keepalive)",
            "reconnecting#2 100ms",
            "connected#2",
        ]
    );
    assert_echo(&client, &mut events, "alive").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backoff_resets_only_after_the_link_stayed_up() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential().with_reset_after(Duration::from_secs(2)))
        .ping_interval(None)
        .ping_timeout(None)
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    server.drop_connections();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["disconnected#1 Io", "reconnecting#2 100ms", "connected#2"]
    );
    // Up only briefly: the next delay grows.
    server.drop_connections();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["disconnected#2 Io", "reconnecting#3 200ms", "connected#3"]
    );
    // Up for longer than reset_after: back to the initial delay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.drop_connections();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["disconnected#3 Io", "reconnecting#4 100ms", "connected#4"]
    );
    assert_echo(&client, &mut events, "reset").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_follow_the_seeded_rng() {
    use rand::{rngs::StdRng, SeedableRng};
    use websockex_nova::reconnect::Backoff;
    use websockex_nova::Jitter;

    let policy = ReconnectPolicy::jittered(ms(100), Duration::from_secs(5), Jitter::Full);
    // The same seed drives a standalone Backoff: the delays the connection reports must be
    // exactly those.
    let mut expected = Backoff::with_rng(policy.clone(), Box::new(StdRng::seed_from_u64(42)));
    let expected: Vec<String> = (2..=4)
        .map(|attempt| {
            format!(
                "reconnecting#{attempt} {:?}",
                expected.next_delay().unwrap()
            )
        })
        .collect();

    let server = TestServer::start(Script::sequence(vec![
        Plan::Refuse { status: 503 },
        Plan::Refuse { status: 502 },
        Plan::DropBeforeUpgrade,
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(policy)
        .backoff_rng(StdRng::seed_from_u64(42))
        .spawn()
        .unwrap();
    let trace = trace_until_connected(&mut events, 1).await;
    let delays: Vec<&String> = trace
        .iter()
        .filter(|t| t.starts_with("reconnecting"))
        .collect();
    assert_eq!(delays, expected.iter().collect::<Vec<_>>());
    assert_eq!(trace.last().unwrap(), "connected#4");
    assert_echo(&client, &mut events, "jitter").await;
    client.close().await.unwrap();
}
