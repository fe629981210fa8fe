//! `nova --metrics ADDR connect`: the Prometheus endpoint is scraped with a real HTTP
//! client, the exposition is parsed, and the counters match what the session did (8 lines
//! echoed across a dropped connection and a reconnect). The JSON logs on stderr (at DEBUG)
//! parse line by line, and neither they nor the exposition contain the key in the URL.

mod common;

use std::collections::HashMap;
use std::process::Stdio;

use common::{next_line, NOVA, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStderr, Command};
use websockex_nova_testkit::{Script, TestServer};

const URL_KEY: &str = "k3y-in-the-url-0451";

/// Reads stderr until a `--events json` line (not a tracing line) has `event == name`;
/// keeps every line read in `seen`.
async fn wait_event(
    err: &mut Lines<BufReader<ChildStderr>>,
    seen: &mut Vec<String>,
    name: &str,
) -> serde_json::Value {
    loop {
        let line = next_line(err).await;
        seen.push(line.clone());
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["event"] == name && v.get("level").is_none() {
                return v;
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /metrics with a real HTTP client; the exposition parsed into `name{labels}` → value.
async fn scrape(port: u16) -> (String, HashMap<String, f64>) {
    let body = tokio::task::spawn_blocking(move || {
        ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .expect("scrape")
            .body_mut()
            .read_to_string()
            .expect("body")
    })
    .await
    .unwrap();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid exposition");
    let mut values = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        values.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    (body, values)
}

#[tokio::test]
async fn the_scraped_counters_match_the_session() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let port = free_port();
    let url = format!("{}?apikey={URL_KEY}", server.url());
    let mut client = Command::new(NOVA)
        .args([
            "--metrics",
            &format!("127.0.0.1:{port}"),
            "--log",
            "websockex_nova=debug",
            "--log-format",
            "json",
            "connect",
            &url,
            "--events",
            "json",
            "--reconnect",
            "exponential",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nova connect");
    let mut stdin = client.stdin.take().unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(client.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();

    wait_event(&mut err, &mut seen, "connected").await;
    for i in 0..5 {
        stdin.write_all(format!("m{i}\n").as_bytes()).await.unwrap();
        assert_eq!(next_line(&mut out).await, format!("m{i}"));
    }
    server.drop_connections();
    let again = wait_event(&mut err, &mut seen, "connected").await;
    assert_eq!(again["attempt"], 2);
    for i in 5..8 {
        stdin.write_all(format!("m{i}\n").as_bytes()).await.unwrap();
        assert_eq!(next_line(&mut out).await, format!("m{i}"));
    }

    let (body, m) = scrape(port).await;
    let get = |key: &str| {
        *m.get(key)
            .unwrap_or_else(|| panic!("{key} not in the exposition:\n{body}"))
    };
    let conn = "connection=connect";
    assert_eq!(
        get(&format!(
            "websockex_nova_messages_sent_total{{{conn},kind=text}}"
        )),
        8.0
    );
    assert_eq!(
        get(&format!(
            "websockex_nova_messages_received_total{{{conn},kind=text}}"
        )),
        8.0
    );
    assert_eq!(
        get(&format!("websockex_nova_sent_bytes_total{{{conn}}}")),
        16.0
    );
    assert_eq!(
        get(&format!(
            "websockex_nova_connections_opened_total{{{conn}}}"
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "websockex_nova_connections_closed_total{{{conn}}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!("websockex_nova_connections_open{{{conn}}}")),
        1.0
    );
    assert_eq!(
        get(&format!("websockex_nova_reconnects_total{{{conn}}}")),
        1.0
    );
    assert_eq!(
        get(&format!(
            "websockex_nova_errors_total{{category=Io,{conn}}}"
        )),
        1.0
    );
    assert!(!body.contains(URL_KEY));

    drop(stdin); // EOF: nova closes cleanly and exits
    while let Some(line) = tokio::time::timeout(WAIT, err.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        seen.push(line);
    }
    let status = tokio::time::timeout(WAIT, client.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let mut traced = 0;
    for line in &seen {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains(URL_KEY), "{line}");
        if v.get("level").is_some() {
            traced += 1;
            assert_eq!(v["target"], "websockex_nova", "{line}");
        }
    }
    let names: Vec<&str> = seen
        .iter()
        .filter_map(|l| l.split("\"event\":\"").nth(1)?.split('"').next())
        .collect();
    for want in ["disconnected", "reconnecting", "connected", "closed"] {
        assert!(names.contains(&want), "{want} not logged: {names:?}");
    }
    assert!(traced > 10, "{traced} tracing lines");
}
