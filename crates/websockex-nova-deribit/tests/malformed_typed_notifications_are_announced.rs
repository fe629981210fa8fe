//! A Deribit notification whose `data` does not fit the channel's type is announced on its
//! typed stream as `TypedEvent::Malformed` with a `Decode` error, never skipped in silence;
//! the stream and the link go on, and the next good notification arrives as `Data`.

use std::time::Duration;

use serde_json::json;
use websockex_nova::{Event, ReconnectPolicy};
use websockex_nova_deribit::channels::Interval;
use websockex_nova_deribit::{DeribitClient, DeribitConfig, Endpoint, TypedEvent};
use websockex_nova_testkit::deribit::{DeribitSim, SimConfig};

const T: Duration = Duration::from_secs(10);

async fn connect(sim: &DeribitSim) -> (DeribitClient, websockex_nova::Events) {
    let (client, events) = DeribitConfig::new(Endpoint::Custom(sim.url()))
        .builder()
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_secs(1),
        ))
        .connect()
        .await
        .expect("connect");
    (DeribitClient::from_client(client), events)
}

/// No `Disconnected` (nor anything but state changes and `Connected`) so far: the link held.
fn assert_link_held(events: &mut websockex_nova::Events, sim: &DeribitSim) {
    while let Some(e) = events.try_next() {
        assert!(
            matches!(e, Event::StateChanged { .. } | Event::Connected { .. }),
            "unexpected event {e:?}"
        );
    }
    assert_eq!(sim.connections(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_platform_state_that_does_not_decode_is_malformed_and_the_next_one_is_data() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, mut events) = connect(&sim).await;
    let mut platform = deribit.subscribe_platform_state().await.unwrap();

    // `maintenance` is a bool.
    assert_eq!(
        sim.faults()
            .notify("platform_state", &json!({"maintenance": "soon"})),
        1
    );
    assert_eq!(
        sim.faults()
            .notify("platform_state", &json!({"maintenance": false})),
        1
    );
    match tokio::time::timeout(T, platform.next()).await.unwrap() {
        Some(TypedEvent::Malformed(e)) => {
            assert!(e.is_decode(), "{e:?}");
            assert!(
                e.to_string().contains("expected a boolean"),
                "says what is wrong: {e}"
            );
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    match tokio::time::timeout(T, platform.next()).await.unwrap() {
        Some(TypedEvent::Data(state)) => assert_eq!(state.maintenance, Some(false)),
        other => panic!("expected Data, got {other:?}"),
    }
    assert_link_held(&mut events, &sim);
    assert!(deribit.get_time().await.is_ok(), "requests still work");
    deribit.client().close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_ticker_with_the_wrong_shape_is_malformed_between_good_ones() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    let (deribit, mut events) = connect(&sim).await;
    let mut ticker = deribit
        .subscribe_ticker("BTC-PERPETUAL", Interval::Ms100)
        .await
        .unwrap();
    assert!(matches!(
        tokio::time::timeout(T, ticker.next()).await.unwrap(),
        Some(TypedEvent::Data(_))
    ));

    let channel = "ticker.BTC-PERPETUAL.100ms";
    assert_eq!(sim.subscriptions(0), [channel]);
    // `instrument_name` is a string and `timestamp` is required.
    let wrong = json!({"instrument_name": 42, "best_bid_price": "high"});
    assert_eq!(sim.faults().notify(channel, &wrong), 1);
    // The simulator keeps publishing: good tickers may come first, but the malformed one is
    // announced, and good ones follow it.
    let mut good_before = 0;
    loop {
        match tokio::time::timeout(T, ticker.next()).await.unwrap() {
            Some(TypedEvent::Data(t)) => {
                assert_eq!(t.instrument_name, "BTC-PERPETUAL");
                good_before += 1;
                assert!(good_before < 100, "the malformed ticker never showed");
            }
            Some(TypedEvent::Malformed(e)) => {
                assert!(e.is_decode(), "{e:?}");
                break;
            }
            other => panic!("expected Data or Malformed, got {other:?}"),
        }
    }
    match tokio::time::timeout(T, ticker.next()).await.unwrap() {
        Some(TypedEvent::Data(t)) => assert_eq!(t.instrument_name, "BTC-PERPETUAL"),
        other => panic!("expected Data after Malformed, got {other:?}"),
    }
    assert_link_held(&mut events, &sim);
    deribit.client().close().await.unwrap();
}
