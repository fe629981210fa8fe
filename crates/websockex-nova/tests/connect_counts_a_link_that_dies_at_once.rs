//! `connect()` resolves once the link was Ready, even if the server drops it at once: the
//! connection did come up, and the event stream says what followed. (A race between the
//! status and the task's end used to turn this into an error now and then; run it often.)

use websockex_nova::{Client, Event, ReconnectPolicy};
use websockex_nova_testkit::{Plan, Script, Step, TestServer};

#[tokio::test]
async fn a_link_dropped_right_after_the_upgrade_still_counts_as_connected() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Drop])))
        .await
        .unwrap();
    for _ in 0..50 {
        let (client, mut events) = Client::builder(server.url())
            .reconnect(ReconnectPolicy::never())
            .connect()
            .await
            .expect("the link was Ready once");
        assert!(client.status().connects >= 1);
        let mut saw_connected = false;
        while let Some(event) = events.next().await {
            match event {
                Event::Connected { .. } => saw_connected = true,
                Event::Closed { error } => {
                    assert!(error.expect("the drop").is_disconnected());
                    break;
                }
                _ => {}
            }
        }
        assert!(saw_connected);
    }
}
