//! Compile-time guarantees of the public types: the `Client` handle can be cloned and shared
//! across tasks and threads, errors can cross threads and live in `Box<dyn Error + Send +
//! Sync>`, and the connection future can be spawned on a multi-threaded runtime.
//!
//! The checks are in `const` items, so this file fails to *compile* if a guarantee breaks.

use websockex_nova::{ClientBuilder, Connection, Error, Event, Events, Frame, Status};

const fn handle<T: Send + Sync + Clone + 'static>() {}
const fn error<T: Send + Sync + 'static + std::error::Error>() {}
const fn sendable<T: Send + 'static>() {}

const _: () = handle::<websockex_nova::Client>();
const _: () = error::<Error>();
const _: () = sendable::<Connection>();
const _: () = sendable::<Events>();
const _: () = sendable::<Event>();
const _: () = sendable::<ClientBuilder>();
const _: () = handle::<Frame>();
const _: () = handle::<Status>();

#[test]
fn errors_box_into_the_usual_dyn_error() {
    fn boxed(e: Error) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        Box::new(e)
    }
    let _ = boxed;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_runs_on_a_multi_threaded_runtime() {
    let server = websockex_nova_testkit::TestServer::start(websockex_nova_testkit::Script::echo())
        .await
        .unwrap();
    let (client, mut events, connection) = websockex_nova::Client::builder(server.url())
        .build()
        .unwrap();
    let task = tokio::spawn(connection);
    let other = client.clone();
    tokio::spawn(async move { other.send_text("from another task").await })
        .await
        .unwrap()
        .unwrap();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Message(f) => {
                assert_eq!(f.as_text(), Some("from another task"));
                break;
            }
            _ => continue,
        }
    }
    client.close().await.unwrap();
    assert!(matches!(task.await, Ok(Ok(()))));
}
