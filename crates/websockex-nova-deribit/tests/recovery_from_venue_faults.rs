//! The venue's own ways of ending a session, against the simulator: an unanswered
//! heartbeat (close 4000), exhausted credits (10028, then the session is terminated), an
//! expiring token; and secrets never reaching a log line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use websockex_nova::{Event, Events, ReconnectPolicy};
use websockex_nova_deribit::channels::Interval;
use websockex_nova_deribit::{Credentials, DeribitClient, DeribitConfig, Endpoint, TypedEvent};
use websockex_nova_testkit::deribit::{DeribitSim, SimConfig};

const T: Duration = Duration::from_secs(60);

async fn connect(sim: &DeribitSim, credentials: Credentials) -> (DeribitClient, Events) {
    let (client, events) = DeribitConfig::new(Endpoint::Custom(sim.url()))
        .with_credentials(credentials)
        .builder()
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_millis(200),
            Duration::from_secs(5),
        ))
        .connect()
        .await
        .expect("connect");
    (DeribitClient::from_client(client), events)
}

fn signature() -> Credentials {
    Credentials::client_signature("demo-key", "demo-secret")
}

/// Events until `stop` matches, as short names.
async fn until(events: &mut Events, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(T, events.next())
            .await
            .expect("event in time")
            .expect("stream open");
        let done = stop(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_heartbeat_closes_with_4000_then_everything_is_restored() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, mut events) = connect(&sim, signature()).await;
    let mut ticker = deribit
        .subscribe_ticker("BTC-PERPETUAL", Interval::Ms100)
        .await
        .unwrap();
    // The venue stops hearing our answers.
    sim.faults().ignore_heartbeat_answers(true);
    let seen = until(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let Some(Event::Disconnected { code, .. }) = seen.last() else {
        unreachable!()
    };
    assert_eq!(code.map(|c| c.as_u16()), Some(4000));
    sim.faults().ignore_heartbeat_answers(false);
    let seen = until(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    let names: Vec<&str> = seen.iter().map(Event::name).collect();
    let auth = names.iter().position(|n| *n == "authenticated").unwrap();
    let resub = names.iter().position(|n| *n == "resubscribed").unwrap();
    assert!(auth < resub, "{names:?}");
    // Ticks flow again on the same stream, after the gap marker.
    loop {
        match tokio::time::timeout(T, ticker.next())
            .await
            .unwrap()
            .unwrap()
        {
            TypedEvent::Resubscribed => break,
            _ => continue,
        }
    }
    assert!(matches!(
        tokio::time::timeout(T, ticker.next()).await.unwrap(),
        Some(TypedEvent::Data(_))
    ));
    deribit.client().close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn exhausted_credits_back_off_without_a_reconnect_storm() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, mut events) = connect(&sim, signature()).await;
    sim.faults().exhaust_credits(None);
    // The next request finds the pool dry: 10028, and the venue ends the session.
    let err = deribit.get_time().await.unwrap_err();
    assert!(
        err.api_error().map(|e| e.code) == Some(10028) || err.is_disconnected(),
        "{err:?}"
    );
    until(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    // Ten seconds later: one reconnect, not a storm; the session works again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.upgraded() <= 3, "{} connections", sim.upgraded());
    assert!(deribit.get_time().await.is_ok());
    deribit.client().close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_token_is_refreshed_before_expiry_and_the_subscription_stays() {
    let sim = DeribitSim::start(SimConfig::default().with_token_ttl(Duration::from_secs(120)))
        .await
        .unwrap();
    let (deribit, mut events) = connect(&sim, signature()).await;
    let mut portfolio = deribit.subscribe_user_portfolio("BTC").await.unwrap();
    // Refresh margin 60 s: the refresh is due at 60 s, long before the 120 s expiry.
    let seen = until(&mut events, |e| {
        matches!(
            e,
            Event::Authenticated {
                refreshed: true,
                ..
            }
        )
    })
    .await;
    assert!(!seen.iter().any(|e| matches!(e, Event::Disconnected { .. })));
    assert!(sim.auth_requests("refresh_token") >= 1);
    // Past the original expiry: still one connection, private calls and the private
    // subscription still work.
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert_eq!(sim.upgraded(), 1);
    assert!(deribit.get_account_summary("BTC").await.is_ok());
    assert_eq!(sim.subscriptions(0).len(), 1);
    let _ = &mut portfolio;
    deribit.client().close().await.unwrap();
}

/// A `MakeWriter` that keeps everything in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn secrets_never_appear_in_any_log_line() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = DeribitSim::start(SimConfig::default().with_credentials("other-key", "s3cr3t-other"))
        .await
        .unwrap();
    // The secret travels in the request with client_credentials: the worst case.
    let (deribit, _events) = connect(
        &sim,
        Credentials::client_credentials("other-key", "s3cr3t-other"),
    )
    .await;
    let _sub = deribit.subscribe_user_portfolio("BTC").await.unwrap();
    deribit.get_account_summary("BTC").await.unwrap();
    sim.faults().drop_all();
    tokio::time::sleep(Duration::from_millis(500)).await;
    deribit.get_time().await.unwrap();
    deribit.client().close().await.unwrap();
    // And a refusal, whose error is logged.
    let refused = DeribitConfig::new(Endpoint::Custom(sim.url()))
        .with_credentials(Credentials::client_credentials("other-key", "wr0ng-s3cret"))
        .builder()
        .connect()
        .await
        .unwrap_err();
    tracing::error!(error = %refused, debug = ?refused, "refused");

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("authenticated"),
        "the logs are really captured"
    );
    for secret in ["s3cr3t-other", "wr0ng-s3cret"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
    // Tokens are secrets too: none of the simulator's tokens may show.
    assert!(!logs.contains("access_token\":\""), "a token leaked");
}

#[tokio::test(start_paused = true)]
async fn maintenance_is_announced_and_its_errors_say_back_off() {
    use websockex_nova_deribit::errors::{action, Action};
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, _events) = connect(&sim, signature()).await;
    let mut platform = deribit.subscribe_platform_state().await.unwrap();
    sim.faults().set_maintenance(true);
    loop {
        match tokio::time::timeout(T, platform.next())
            .await
            .unwrap()
            .unwrap()
        {
            TypedEvent::Data(state) if state.maintenance == Some(true) => break,
            _ => continue,
        }
    }
    let err = deribit.get_account_summary("BTC").await.unwrap_err();
    let code = err.api_error().expect("an API error").code;
    assert_eq!(code, 11051);
    assert_eq!(action(code), Action::Backoff);
    sim.faults().set_maintenance(false);
    assert!(deribit.get_account_summary("BTC").await.is_ok());
    deribit.client().close().await.unwrap();
}
