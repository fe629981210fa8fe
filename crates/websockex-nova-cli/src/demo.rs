//! `nova demo`: the README's main job. A Deribit client against the simulator started
//! right here: it authenticates (`client_signature` with the demo key), subscribes to a
//! ticker and a book, and shows them live; then the simulator drops every connection and
//! later skips a book change. The client recovers from both by itself (reconnect, re-auth,
//! resubscribe, book resync) and the demo ends with a summary; it exits nonzero if the
//! client did not recover. On a terminal it draws one live screen; piped, it prints one
//! line per event.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use websockex_nova::{Event, ReconnectPolicy, State};
use websockex_nova_deribit::channels::Interval;
use websockex_nova_deribit::{
    BookEvent, Credentials, DeribitClient, DeribitConfig, Endpoint, TypedEvent,
};
use websockex_nova_testkit::deribit::{DeribitSim, SimConfig};

use crate::parse_duration;
use crate::report::event_text;

/// `nova demo` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// How long the demo runs.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Run the plain echo-server demo instead.
    #[arg(long)]
    echo: bool,
    /// Echo demo only: interval between lines sent.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    tick: Duration,
}

const INSTRUMENT: &str = "BTC-PERPETUAL";

#[derive(Default)]
struct Tally {
    ticks: u64,
    book_updates: u64,
    snapshots: u64,
    gaps: u64,
    reconnects: u32,
    auths: u32,
    resubscribes: u32,
    mark: Option<f64>,
    last_rtt: Option<Duration>,
    /// Server time (`usOut − usIn`) and delivery delay (receipt − `usOut`) of the last answer.
    server_us: Option<(u128, u128)>,
    /// Now minus the ticker's exchange timestamp: what the feed's latency looks like.
    ticker_age_ms: Option<i64>,
    log: Vec<String>,
}

/// Runs the demo.
pub(crate) async fn run(args: Args) -> ExitCode {
    if args.echo {
        return crate::echo_demo::run(args.duration, args.tick).await;
    }
    let start = Instant::now();
    let fancy = std::io::stdout().is_terminal();
    let say = |tally: &mut Tally, line: String| {
        let line = format!("{:7.3}s  {line}", start.elapsed().as_secs_f64());
        if !fancy {
            eprintln!("{line}");
        }
        tally.log.push(line);
    };
    let mut tally = Tally::default();

    let sim = match DeribitSim::start(SimConfig::default()).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("nova: demo: cannot start the Deribit simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    say(
        &mut tally,
        format!("Deribit simulator listening on {}", sim.url()),
    );
    let config = DeribitConfig::new(Endpoint::Custom(sim.url()))
        .with_credentials(Credentials::client_signature("demo-key", "demo-secret"));
    let (builder, timing) = config.builder_with_timing();
    let (_, collectors) = crate::telemetry::collector("demo");
    let connected = builder
        .metrics(collectors)
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .connect()
        .await;
    let (client, mut events) = match connected {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("nova: demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deribit = DeribitClient::with_timing(client.clone(), timing.clone());
    let (mut ticker, mut book) = match tokio::try_join!(
        deribit.subscribe_ticker(INSTRUMENT, Interval::Ms100),
        deribit.subscribe_book(INSTRUMENT, Interval::Ms100),
    ) {
        Ok(streams) => streams,
        Err(e) => {
            eprintln!("nova: demo: subscribe failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    say(
        &mut tally,
        format!("authenticated; subscribed to ticker and book of {INSTRUMENT}"),
    );

    let faults = sim.faults();
    let total = args.duration;
    let drop_at = total.mul_f64(0.3);
    let gap_at = total.mul_f64(0.6);
    let mut phase = 0;
    let mut screen = tokio::time::interval(Duration::from_millis(250));
    let mut probe = tokio::time::interval(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + total;
    let mut window = (Instant::now(), 0u64);
    let mut rate = 0.0;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            Some(event) = events.next() => match event {
                Event::Connected { attempt, .. } if attempt > 1 => {
                    tally.reconnects += 1;
                    say(&mut tally, format!("reconnected (attempt {attempt})"));
                }
                Event::Authenticated { refreshed, .. } => {
                    tally.auths += 1;
                    if tally.auths > 1 {
                        say(&mut tally, format!("re-authenticated{}", if refreshed { " (refresh)" } else { "" }));
                    }
                }
                Event::Resubscribed { channels, .. } => {
                    tally.resubscribes += 1;
                    say(&mut tally, format!("resubscribed {channels} channels"));
                }
                Event::StateChanged { .. } | Event::Message(_) => {}
                other => {
                    if let Some(text) = event_text(&other) {
                        say(&mut tally, text);
                    }
                }
            },
            Some(event) = ticker.next() => {
                if let TypedEvent::Data(t) = event {
                    tally.ticks += 1;
                    tally.mark = t.mark_price.or(tally.mark);
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    tally.ticker_age_ms = Some(now_ms - t.timestamp as i64);
                }
            }
            Some(event) = book.next() => match event {
                BookEvent::Updated => tally.book_updates += 1,
                BookEvent::Snapshot => {
                    tally.snapshots += 1;
                    if tally.snapshots > 1 {
                        say(&mut tally, "book snapshot: consistent again".to_owned());
                    }
                }
                BookEvent::Gap { expected, got } => {
                    tally.gaps += 1;
                    say(&mut tally, format!("book gap (expected prev_change_id {expected}, got {got}): resyncing"));
                }
                BookEvent::Reconnected => say(&mut tally, "book waits for a fresh snapshot".to_owned()),
                _ => {}
            },
            _ = probe.tick() => {
                let sent = Instant::now();
                if deribit.test().await.is_ok() {
                    tally.last_rtt = Some(sent.elapsed());
                    tally.server_us = timing
                        .server_time()
                        .zip(timing.delivery_delay())
                        .map(|(s, d)| (s.as_micros(), d.as_micros()));
                }
            }
            _ = screen.tick() => {
                let elapsed = start.elapsed();
                let count = tally.ticks + tally.book_updates;
                let dt = window.0.elapsed().as_secs_f64();
                if dt >= 1.0 {
                    rate = (count - window.1) as f64 / dt;
                    window = (Instant::now(), count);
                }
                if phase == 0 && elapsed >= drop_at {
                    phase = 1;
                    faults.drop_all();
                    say(&mut tally, "FAULT: the venue drops every connection".to_owned());
                } else if phase == 1 && elapsed >= gap_at {
                    phase = 2;
                    faults.book_gap(Some(INSTRUMENT));
                    say(&mut tally, format!("FAULT: the venue skips a {INSTRUMENT} book change"));
                }
                if fancy {
                    draw(&tally, &book, client.status().state, rate, elapsed, total);
                }
            }
        }
    }

    let state = client.status().state;
    let _ = client.close().await;
    let recovered = tally.reconnects >= 1
        && tally.auths >= 2
        && tally.resubscribes >= 1
        && tally.gaps >= 1
        && tally.snapshots >= 2
        && tally.ticks > 0
        && state == State::Ready;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "demo summary");
    let _ = writeln!(out, "  ticker updates      {}", tally.ticks);
    let _ = writeln!(
        out,
        "  book updates        {} ({} snapshots)",
        tally.book_updates, tally.snapshots
    );
    let _ = writeln!(out, "  faults injected     2 (connection drop, book gap)");
    let _ = writeln!(out, "  reconnects          {}", tally.reconnects);
    let _ = writeln!(out, "  authentications     {}", tally.auths);
    let _ = writeln!(out, "  resubscribes        {}", tally.resubscribes);
    let _ = writeln!(out, "  book gaps resynced  {}", tally.gaps);
    let _ = writeln!(out, "  state before close  {state}");
    let _ = writeln!(
        out,
        "  verdict             {}",
        if recovered {
            "recovered from every fault on its own"
        } else {
            "DID NOT RECOVER"
        }
    );
    if recovered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn draw(
    tally: &Tally,
    book: &websockex_nova_deribit::BookStream,
    state: State,
    rate: f64,
    elapsed: Duration,
    total: Duration,
) {
    let b = book.book();
    let fmt = |x: Option<(f64, f64)>| x.map_or("—".to_owned(), |(p, a)| format!("{p:.1} × {a}"));
    let mut s = String::new();
    s.push_str("\x1b[H\x1b[2J");
    s.push_str(&format!(
        "websockex-nova · Deribit demo · {:.1}s / {:.0}s\n\n",
        elapsed.as_secs_f64(),
        total.as_secs_f64()
    ));
    s.push_str(&format!("  state      {state}\n"));
    s.push_str(&format!(
        "  {INSTRUMENT}  mark {}\n",
        tally.mark.map_or("—".into(), |m| format!("{m:.2}"))
    ));
    s.push_str(&format!("  best bid   {}\n", fmt(b.best_bid())));
    s.push_str(&format!("  best ask   {}\n", fmt(b.best_ask())));
    s.push_str(&format!(
        "  book       {}\n",
        if b.is_resyncing() {
            "RESYNCING"
        } else {
            "consistent"
        }
    ));
    s.push_str(&format!("  msgs/s     {rate:.0}\n"));
    let rtt = tally.last_rtt.map_or("—".into(), |d| {
        format!("{:.2} ms (public/test round trip)", d.as_secs_f64() * 1e3)
    });
    let age = tally
        .ticker_age_ms
        .map_or("—".into(), |a| format!("{a} ms"));
    let server = tally.server_us.map_or("—".into(), |(s, d)| {
        format!("server {s} µs (usOut − usIn) · delivery {d} µs (receipt − usOut)")
    });
    s.push_str(&format!("  latency    {server}\n"));
    s.push_str(&format!("             {rtt} · ticker age {age}\n\n"));
    for line in tally.log.iter().rev().take(10).rev() {
        s.push_str(&format!("  {line}\n"));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}
