//! The Deribit adapter against the simulator (a different implementation of the wire
//! protocol, in the testkit): session setup, auth by signature, typed methods, heartbeats,
//! recovery after a drop, book resync after a gap, private channels, credit metering.

use std::time::Duration;

use websockex_nova::{Event, Events, ReconnectPolicy};
use websockex_nova_deribit::channels::Interval;
use websockex_nova_deribit::types::OrderRequest;
use websockex_nova_deribit::{
    BookEvent, Credentials, DeribitClient, DeribitConfig, Endpoint, TypedEvent,
};
use websockex_nova_testkit::deribit::{DeribitSim, SimConfig};

const T: Duration = Duration::from_secs(10);

fn config(sim: &DeribitSim) -> DeribitConfig {
    DeribitConfig::new(Endpoint::Custom(sim.url()))
        .with_credentials(Credentials::client_signature("demo-key", "demo-secret"))
}

async fn connect(sim: &DeribitSim, config: &DeribitConfig) -> (DeribitClient, Events) {
    let (client, events) = config
        .builder()
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_secs(1),
        ))
        .connect()
        .await
        .expect("connect");
    let _ = sim;
    (DeribitClient::from_client(client), events)
}

fn methods_on(sim: &DeribitSim, conn: usize) -> Vec<String> {
    sim.methods()
        .into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, m)| m)
        .collect()
}

#[tokio::test]
async fn session_setup_then_signature_auth_then_typed_methods() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, _events) = connect(&sim, &config(&sim)).await;
    let first = methods_on(&sim, 0);
    assert_eq!(
        first[..3],
        ["public/hello", "public/set_heartbeat", "public/auth"]
    );
    assert!(sim.is_authenticated(0));
    assert_eq!(sim.auth_requests("client_signature"), 1);

    assert!(deribit.get_time().await.unwrap() > 1_600_000_000_000);
    assert!(deribit.test().await.unwrap()["version"].is_string());
    let ticker = deribit.ticker("BTC-PERPETUAL").await.unwrap();
    assert_eq!(ticker.instrument_name, "BTC-PERPETUAL");
    let book = deribit
        .get_order_book("BTC-PERPETUAL", Some(5))
        .await
        .unwrap();
    assert!(!book.bids.is_empty() && !book.asks.is_empty());
    assert!(book.bids[0].0 < book.asks[0].0, "a sane spread");
    let instruments = deribit.get_instruments("BTC", None).await.unwrap();
    assert!(instruments
        .iter()
        .any(|i| i.instrument_name == "BTC-PERPETUAL"));
    let summary = deribit.get_account_summary("BTC").await.unwrap();
    assert_eq!(summary.currency, "BTC");

    // An unknown instrument: the venue's error object, with the table's verdict.
    let err = deribit.ticker("NOPE-PERPETUAL").await.unwrap_err();
    let api = err.api_error().expect("an API error");
    assert_eq!(api.code, -32602);
    assert_eq!(
        websockex_nova_deribit::errors::action(api.code),
        websockex_nova_deribit::errors::Action::Surface
    );

    // Orders: a resting limit order, listed, then cancelled.
    let bid = book.bids[0].0;
    let placed = deribit
        .buy(&OrderRequest::limit(
            "BTC-PERPETUAL",
            10.0,
            (bid * 0.9).round(),
        ))
        .await
        .unwrap();
    assert_eq!(placed.order.order_state, "open");
    let open = deribit.get_open_orders_by_currency("BTC").await.unwrap();
    assert!(open.iter().any(|o| o.order_id == placed.order.order_id));
    let cancelled = deribit.cancel(&placed.order.order_id).await.unwrap();
    assert_eq!(cancelled.order_state, "cancelled");
    let missing = deribit.cancel("SIM-404").await.unwrap_err();
    assert_eq!(missing.api_error().map(|e| e.code), Some(10004));
    deribit.client().close().await.unwrap();
}

#[tokio::test]
async fn after_a_drop_auth_comes_before_resubscribe_and_the_book_resyncs() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, mut events) = connect(&sim, &config(&sim)).await;
    let mut ticker = deribit
        .subscribe_ticker("BTC-PERPETUAL", Interval::Ms100)
        .await
        .unwrap();
    let mut book = deribit
        .subscribe_book("BTC-PERPETUAL", Interval::Ms100)
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(T, book.next()).await.unwrap(),
        Some(BookEvent::Snapshot)
    );
    assert!(matches!(
        tokio::time::timeout(T, ticker.next()).await.unwrap(),
        Some(TypedEvent::Data(_))
    ));

    sim.faults().drop_all();
    // The book learns of the reconnect, then gets a fresh snapshot.
    let mut saw = Vec::new();
    while !saw.contains(&BookEvent::Snapshot) {
        saw.push(tokio::time::timeout(T, book.next()).await.unwrap().unwrap());
    }
    assert!(saw.contains(&BookEvent::Reconnected), "{saw:?}");
    let second = methods_on(&sim, 1);
    let auth = second.iter().position(|m| m == "public/auth").unwrap();
    let sub = second
        .iter()
        .position(|m| m.ends_with("/subscribe"))
        .unwrap();
    assert!(auth < sub, "auth before resubscribe: {second:?}");
    assert_eq!(sim.subscriptions(1).len(), 2, "both channels restored");
    loop {
        match tokio::time::timeout(T, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Resubscribed { channels, .. } => {
                assert_eq!(channels, 2);
                break;
            }
            _ => continue,
        }
    }

    // A skipped book change: a gap, a resync, a consistent book again.
    assert!(sim.faults().book_gap(Some("BTC-PERPETUAL")) >= 1);
    let mut saw = Vec::new();
    loop {
        let e = tokio::time::timeout(T, book.next()).await.unwrap().unwrap();
        saw.push(e);
        if matches!(e, BookEvent::Snapshot)
            && saw.iter().any(|e| matches!(e, BookEvent::Gap { .. }))
        {
            break;
        }
    }
    assert!(!book.book().is_resyncing());
    assert_eq!(book.gaps(), 1);
    let (bid, ask) = (
        book.book().best_bid().unwrap(),
        book.book().best_ask().unwrap(),
    );
    assert!(bid.0 < ask.0);
    deribit.client().close().await.unwrap();
}

#[tokio::test]
async fn private_channels_need_auth_and_deliver_order_updates() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, _events) = connect(&sim, &config(&sim)).await;
    let mut orders = deribit
        .subscribe_user_orders("BTC-PERPETUAL")
        .await
        .unwrap();
    let last = deribit.ticker("BTC-PERPETUAL").await.unwrap();
    let price = (last.best_bid_price.unwrap() * 0.8).round();
    let placed = deribit
        .buy(&OrderRequest::limit("BTC-PERPETUAL", 10.0, price))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(T, orders.next())
            .await
            .unwrap()
            .unwrap()
        {
            TypedEvent::Data(order) if order.order_id == placed.order.order_id => break,
            _ => continue,
        }
    }
    deribit.client().close().await.unwrap();

    // Without credentials, the private subscribe is refused.
    let public = DeribitConfig::new(Endpoint::Custom(sim.url()));
    let (anon, _events) = connect(&sim, &public).await;
    assert!(anon.subscribe_user_orders("BTC-PERPETUAL").await.is_err());
    anon.client().close().await.unwrap();
}

#[tokio::test]
async fn bad_credentials_stop_after_one_attempt() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let config = DeribitConfig::new(Endpoint::Custom(sim.url()))
        .with_credentials(Credentials::client_credentials("demo-key", "wrong"));
    let err = config.builder().connect().await.unwrap_err();
    assert!(err.is_auth() && !err.is_transient(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.auth_requests("client_credentials"), 1);
    assert_eq!(sim.upgraded(), 1);
}

#[tokio::test]
async fn a_burst_stays_within_the_credit_pool() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, _events) = connect(&sim, &config(&sim)).await;
    // 150 requests at 500 credits each from a 50,000 pool: without metering, 10028 and a
    // terminated session; with the adapter's model, a short wait and no rejection.
    let calls = (0..150).map(|_| deribit.get_time());
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(sim.credits_rejected(), 0);
    assert_eq!(sim.connections().len(), 1, "never disconnected");
    deribit.client().close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_answered_so_the_session_lives_on() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, _events) = connect(&sim, &config(&sim)).await;
    // Two minutes of virtual time with a 15 s heartbeat: every test_request answered.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        sim.heartbeats_answered() >= 5,
        "{}",
        sim.heartbeats_answered()
    );
    assert!(sim.closes().is_empty(), "{:?}", sim.closes());
    assert!(deribit.get_time().await.is_ok());
    deribit.client().close().await.unwrap();
}

#[tokio::test]
async fn an_undecodable_book_message_is_announced_and_the_book_resyncs() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, _events) = connect(&sim, &config(&sim)).await;
    let mut book = deribit
        .subscribe_book("BTC-PERPETUAL", Interval::Ms100)
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(T, book.next()).await.unwrap(),
        Some(BookEvent::Snapshot)
    );
    let channel = sim
        .subscriptions(0)
        .into_iter()
        .find(|c| c.starts_with("book."))
        .unwrap();
    let garbage = serde_json::json!({
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {"channel": channel, "data": {"bids": "not a list"}},
    })
    .to_string();
    assert!(sim.faults().send_raw(
        0,
        websockex_nova_testkit::raw_frame(true, 0x1, garbage.as_bytes())
    ));
    // Never skipped in silence: announced, then a fresh snapshot.
    let mut saw = Vec::new();
    while saw.last() != Some(&BookEvent::Snapshot) || !saw.contains(&BookEvent::Malformed) {
        saw.push(tokio::time::timeout(T, book.next()).await.unwrap().unwrap());
    }
    assert!(saw.contains(&BookEvent::Malformed), "{saw:?}");
    assert_eq!(book.gaps(), 1);
    deribit.client().close().await.unwrap();
}
