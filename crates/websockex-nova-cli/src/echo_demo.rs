//! `nova demo --echo`: the framework's story on a plain in-process echo server.
//!
//! A client connects to the testkit echo server started right here, sends a numbered line
//! every tick and counts the echoes. Midway the server drops every connection (a network
//! fault), later it goes away entirely and comes back on the same port (an outage). The
//! client recovers from both by itself; lines typed during the outage wait in the offline
//! queue and are echoed after the reconnect. It ends with a summary and exits nonzero if
//! a line went missing. (The Deribit simulator version of this demo comes with the Deribit
//! adapter.)

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use websockex_nova::{Client, Event, Frame, Jitter, ReconnectPolicy, State};
use websockex_nova_testkit::{Script, TestServer};

use crate::report::event_text;

struct Screen {
    start: Instant,
    fancy: bool,
}

impl Screen {
    fn line(&self, tag: &str, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        if self.fancy {
            let color = match tag {
                "fault" => "\x1b[31m",
                "event" => "\x1b[36m",
                "ok" => "\x1b[32m",
                _ => "\x1b[0m",
            };
            eprintln!("\x1b[2m{t:7.3}s\x1b[0m {color}{tag:>6}\x1b[0m  {text}");
        } else {
            eprintln!("{t:7.3}s {tag:>6}  {text}");
        }
    }
}

/// Runs the demo.
pub(crate) async fn run(duration: Duration, tick: Duration) -> ExitCode {
    let screen = Screen {
        start: Instant::now(),
        fancy: std::io::stderr().is_terminal(),
    };
    let mut server = match TestServer::start(Script::echo()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nova: demo: cannot start the echo server: {e}");
            return ExitCode::FAILURE;
        }
    };
    screen.line(
        "setup",
        &format!("echo server listening on {}", server.url()),
    );
    let connected = Client::builder(server.url())
        .reconnect(ReconnectPolicy::jittered(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Jitter::Full,
        ))
        .ping_interval(Some(Duration::from_millis(500)))
        .ping_timeout(Some(Duration::from_secs(2)))
        .connect()
        .await;
    let (client, mut events) = match connected {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("nova: demo: {e}");
            return ExitCode::FAILURE;
        }
    };

    let total = duration;
    let drop_at = total.mul_f64(0.3);
    let outage_at = total.mul_f64(0.55);
    let outage_for = total.mul_f64(0.15).max(Duration::from_millis(300));
    let stop_sending_at = total.mul_f64(0.85);

    // The sender: one numbered line per tick; every send resolves once written (or queued
    // while offline and written after the reconnect).
    let sender = {
        let client = client.clone();

        tokio::spawn(async move {
            let start = Instant::now();
            let mut sent = 0u64;
            let mut failed = 0u64;
            let mut interval = tokio::time::interval(tick);
            while start.elapsed() < stop_sending_at {
                interval.tick().await;
                match client.send(Frame::text(format!("line {sent}"))).await {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        failed += 1;
                        eprintln!("send failed: {e}");
                    }
                }
            }
            (sent, failed)
        })
    };

    let mut echoed = BTreeSet::new();
    let mut reconnects = 0u32;
    let mut faults = 0u32;
    let mut phase = 0;
    let deadline = tokio::time::Instant::now() + total;
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Message(frame)) => {
                    if let Some(n) = frame.as_text().and_then(|t| t.strip_prefix("line ")).and_then(|n| n.parse::<u64>().ok()) {
                        echoed.insert(n);
                    }
                }
                Some(Event::StateChanged { .. }) => {}
                Some(event) => {
                    if matches!(event, Event::Connected { attempt, .. } if attempt > 1) {
                        reconnects += 1;
                    }
                    if let Some(text) = event_text(&event) {
                        screen.line("event", &text);
                    }
                    if matches!(event, Event::Closed { .. }) {
                        break;
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                let elapsed = screen.start.elapsed();
                if phase == 0 && elapsed >= drop_at {
                    phase = 1;
                    faults += 1;
                    screen.line("fault", &format!("server drops every TCP connection ({} echoed so far)", echoed.len()));
                    server.drop_connections();
                } else if phase == 1 && elapsed >= outage_at {
                    phase = 2;
                    faults += 1;
                    screen.line("fault", &format!("server goes away for {outage_for:.1?}"));
                    server.stop().await;
                } else if phase == 2 && elapsed >= outage_at + outage_for {
                    phase = 3;
                    match server.restart().await {
                        Ok(()) => screen.line("fault", "server is back on the same port"),
                        Err(e) => screen.line("fault", &format!("server could not restart: {e}")),
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }

    let (sent, failed) = sender.await.unwrap_or((0, 0));
    // Give the last echoes a moment to arrive.
    let settle = tokio::time::Instant::now() + Duration::from_secs(1);
    while (echoed.len() as u64) < sent && tokio::time::Instant::now() < settle {
        match tokio::time::timeout_at(settle, events.next()).await {
            Ok(Some(Event::Message(frame))) => {
                if let Some(n) = frame
                    .as_text()
                    .and_then(|t| t.strip_prefix("line "))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    echoed.insert(n);
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let state = client.status().state;
    let _ = client.close().await;
    let missing: Vec<u64> = (0..sent).filter(|n| !echoed.contains(n)).collect();

    println!("demo summary");
    println!("  faults injected   {faults} (drop, outage)");
    println!("  reconnects        {reconnects}");
    println!("  lines sent        {sent} (send errors: {failed})");
    println!("  lines echoed      {}", echoed.len());
    println!("  in flight at a fault {} (written, then the link died before the echo: TCP gives no receipt)", missing.len());
    println!("  state before close {}", state);
    // A line written just before a fault can die with the link; at most one per fault.
    let ok =
        missing.len() as u32 <= faults && failed == 0 && reconnects >= 2 && state == State::Ready;
    if ok {
        screen.line(
            "ok",
            "every line came back; the client recovered on its own",
        );
        ExitCode::SUCCESS
    } else {
        screen.line(
            "fault",
            &format!("demo failed: missing {missing:?}, reconnects {reconnects}, state {state}"),
        );
        ExitCode::FAILURE
    }
}
