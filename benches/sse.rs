//! Side by side with axum's `Sse` (the baseline), measured in the same run:
//!
//! - `encode/*`: building one event — small text, ~100-byte JSON with name and id, 4 KiB of
//!   multi-line data;
//! - `body/*`: 100,000 ready events pulled through the response body, every frame collected
//!   (both boxed into `axum::body::Body`, as an axum handler returns them; plus `SseBody`
//!   unboxed, as a hyper service returns it);
//! - `broadcast/*`: one 1 KiB event delivered to 10,000 subscribers: the hub, against the usual
//!   axum pattern (`tokio::sync::broadcast`, then an `Event` built per subscriber).
//!
//! `cargo bench --bench sse` runs them all and ends with two tables of speed-ups (axum's time
//! divided by ours: above 1 means tower-sse is faster): one from criterion's estimates of this
//! run, and one measured interleaved — short timed batches of ours and axum's, alternating, the
//! median of the per-round ratios — which a machine whose speed drifts during the run cannot
//! skew. `cargo bench --bench sse -- --interleaved-only` prints the second table alone.
#![allow(missing_docs)]

use axum::response::{sse as axum_sse, IntoResponse};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use futures_util::{stream, FutureExt, StreamExt};
use http_body_util::BodyExt;
use std::{convert::Infallible, hint::black_box, time::Duration};
use tower_sse::{hub::Hub, Event, KeepAlive, SseBody};

fn json_payload() -> String {
    // About 100 bytes of JSON, as a dashboard or chat message would carry.
    serde_json::json!({
        "symbol": "ACME",
        "price": 123.45,
        "change": -0.0125,
        "volume": 1_234_567,
        "ts": 1_700_000_000_000_u64,
    })
    .to_string()
}

fn multiline_4k() -> String {
    let line = "x".repeat(63);
    let mut s = String::with_capacity(4096);
    while s.len() + 64 <= 4096 {
        s.push_str(&line);
        s.push('\n');
    }
    s
}

fn encode(c: &mut Criterion) {
    let json = json_payload();
    let big = multiline_4k();
    let mut group = c.benchmark_group("encode");

    group.bench_function("small/tower-sse", |b| {
        b.iter(|| Event::message(black_box("hello world")))
    });
    group.bench_function("small/axum", |b| {
        b.iter(|| axum_sse::Event::default().data(black_box("hello world")))
    });

    group.bench_function("json/tower-sse", |b| {
        b.iter(|| {
            Event::builder()
                .event("price")
                .id("1042")
                .data(black_box(&json))
                .build()
                .unwrap()
        })
    });
    group.bench_function("json/axum", |b| {
        b.iter(|| {
            axum_sse::Event::default()
                .event("price")
                .id("1042")
                .data(black_box(&json))
        })
    });

    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("multiline_4k/tower-sse", |b| {
        b.iter(|| Event::message(black_box(&big)))
    });
    group.bench_function("multiline_4k/axum", |b| {
        b.iter(|| axum_sse::Event::default().data(black_box(&big)))
    });
    group.finish();
}

const BODY_EVENTS: usize = 100_000;

async fn drain<B>(mut body: B) -> usize
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
    }
    frames.iter().map(|f| f.len()).sum()
}

/// The same 100,000 events for both bodies: a ~100-byte JSON price with a name and an id.
fn body_events(json: &str) -> (Vec<Event>, Vec<axum_sse::Event>) {
    let ours = (0..BODY_EVENTS)
        .map(|i| {
            Event::builder()
                .event("price")
                .id(i.to_string())
                .data(json)
                .build()
                .unwrap()
        })
        .collect();
    let theirs = (0..BODY_EVENTS)
        .map(|i| {
            axum_sse::Event::default()
                .event("price")
                .id(i.to_string())
                .data(json)
        })
        .collect();
    (ours, theirs)
}

fn body(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let json = json_payload();
    let (ours, theirs) = body_events(&json);

    let mut group = c.benchmark_group("body");
    group.throughput(Throughput::Elements(BODY_EVENTS as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("100k/tower-sse", |b| {
        b.iter_batched(
            || ours.clone(),
            |events| {
                let body = SseBody::new(stream::iter(events)).keep_alive(KeepAlive::new());
                runtime.block_on(drain(axum::body::Body::new(body)))
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("100k/tower-sse-unboxed", |b| {
        b.iter_batched(
            || ours.clone(),
            |events| {
                let body = SseBody::new(stream::iter(events)).keep_alive(KeepAlive::new());
                runtime.block_on(drain(body))
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("100k/axum", |b| {
        b.iter_batched(
            || theirs.clone(),
            |events| {
                runtime.block_on(async {
                    // axum's keep-alive timer needs the runtime when the response is built.
                    let sse = axum_sse::Sse::new(stream::iter(events).map(Ok::<_, Infallible>))
                        .keep_alive(axum_sse::KeepAlive::default());
                    drain(sse.into_response().into_body()).await
                })
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

const SUBSCRIBERS: usize = 10_000;

fn broadcast(c: &mut Criterion) {
    let payload = "x".repeat(1024);
    let mut group = c.benchmark_group("broadcast");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.sample_size(30);

    let hub = Hub::new();
    let topic = hub.topic("bench");
    let mut subscriptions: Vec<_> = (0..SUBSCRIBERS).map(|_| topic.subscribe(None)).collect();
    group.bench_function("1k_to_10k/tower-sse", |b| {
        b.iter(|| {
            topic
                .publish(Event::message(&payload))
                .now()
                .unwrap()
                .unwrap();
            for sub in &mut subscriptions {
                black_box(sub.next().now_or_never().unwrap().unwrap());
            }
        })
    });
    drop(subscriptions);

    let (tx, _) = tokio::sync::broadcast::channel::<String>(16);
    let mut receivers: Vec<_> = (0..SUBSCRIBERS).map(|_| tx.subscribe()).collect();
    group.bench_function("1k_to_10k/axum", |b| {
        b.iter(|| {
            tx.send(payload.clone()).unwrap();
            for rx in &mut receivers {
                let message = rx.try_recv().unwrap();
                let _ = black_box(axum_sse::Event::default().data(message));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encode, body, broadcast);

/// Criterion's mean estimate for one benchmark of this run, in nanoseconds.
fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_owned());
    let path = format!("{target}/criterion/{group}/{name}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Times `rounds` alternating batches of `ours` and `theirs` (each run `iters` times, after
/// `setup` outside the timing) and returns the median of the per-round time ratios.
fn interleaved<T>(
    rounds: usize,
    iters: usize,
    mut setup: impl FnMut() -> (T, T),
    mut ours: impl FnMut(T),
    mut theirs: impl FnMut(T),
) -> f64 {
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Inputs are prepared before the clock starts; the batch is timed as a whole.
        let mut time = |f: &mut dyn FnMut(T), pick: usize| {
            let inputs: Vec<T> = (0..iters)
                .map(|_| {
                    let (a, b) = setup();
                    if pick == 0 {
                        a
                    } else {
                        b
                    }
                })
                .collect();
            let start = std::time::Instant::now();
            for input in inputs {
                f(input);
            }
            start.elapsed()
        };
        // Alternate which goes first, so neither always runs on a warmer cache.
        let (mine, base) = if round % 2 == 0 {
            let m = time(&mut ours, 0);
            (m, time(&mut theirs, 1))
        } else {
            let b = time(&mut theirs, 1);
            (time(&mut ours, 0), b)
        };
        ratios.push(base.as_secs_f64() / mine.as_secs_f64());
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    ratios[ratios.len() / 2]
}

fn interleaved_table() {
    let json = json_payload();
    let big = multiline_4k();
    println!("\ninterleaved speed-ups (median of per-round ratios, axum / tower-sse)");
    let row = |name: &str, ratio: f64| println!("{name:<40} {ratio:>8.2}x");

    row(
        "encode/small",
        interleaved(
            41,
            20_000,
            || ((), ()),
            |()| drop(black_box(Event::message(black_box("hello world")))),
            |()| {
                drop(black_box(
                    axum_sse::Event::default().data(black_box("hello world")),
                ))
            },
        ),
    );
    row(
        "encode/json",
        interleaved(
            41,
            20_000,
            || ((), ()),
            |()| {
                drop(black_box(
                    Event::builder()
                        .event("price")
                        .id("1042")
                        .data(black_box(&json))
                        .build(),
                ))
            },
            |()| {
                drop(black_box(
                    axum_sse::Event::default()
                        .event("price")
                        .id("1042")
                        .data(black_box(&json)),
                ))
            },
        ),
    );
    row(
        "encode/multiline_4k",
        interleaved(
            41,
            2_000,
            || ((), ()),
            |()| drop(black_box(Event::message(black_box(&big)))),
            |()| drop(black_box(axum_sse::Event::default().data(black_box(&big)))),
        ),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (ours, theirs) = body_events(&json);
    row(
        "body/100k (both boxed)",
        interleaved(
            15,
            1,
            || (Ok(ours.clone()), Err(theirs.clone())),
            |events: Result<Vec<Event>, Vec<axum_sse::Event>>| {
                let body = SseBody::new(stream::iter(events.unwrap())).keep_alive(KeepAlive::new());
                black_box(runtime.block_on(drain(axum::body::Body::new(body))));
            },
            |events| {
                runtime.block_on(async {
                    let events = events.unwrap_err();
                    let sse = axum_sse::Sse::new(stream::iter(events).map(Ok::<_, Infallible>))
                        .keep_alive(axum_sse::KeepAlive::default());
                    black_box(drain(sse.into_response().into_body()).await)
                });
            },
        ),
    );

    let payload = "x".repeat(1024);
    let hub = Hub::new();
    let topic = hub.topic("bench");
    let mut subscriptions: Vec<_> = (0..SUBSCRIBERS).map(|_| topic.subscribe(None)).collect();
    let (tx, _) = tokio::sync::broadcast::channel::<String>(16);
    let mut receivers: Vec<_> = (0..SUBSCRIBERS).map(|_| tx.subscribe()).collect();
    row(
        "broadcast/1k_to_10k",
        interleaved(
            21,
            20,
            || ((), ()),
            |()| {
                topic
                    .publish(Event::message(&payload))
                    .now()
                    .unwrap()
                    .unwrap();
                for sub in &mut subscriptions {
                    black_box(sub.next().now_or_never().unwrap().unwrap());
                }
            },
            |()| {
                tx.send(payload.clone()).unwrap();
                for rx in &mut receivers {
                    let message = rx.try_recv().unwrap();
                    let _ = black_box(axum_sse::Event::default().data(message));
                }
            },
        ),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--interleaved-only") {
        interleaved_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();

    println!(
        "\n{:<34} {:>14} {:>14} {:>9}",
        "benchmark", "tower-sse", "axum", "speed-up"
    );
    let rows = [
        ("encode", "small", "tower-sse"),
        ("encode", "json", "tower-sse"),
        ("encode", "multiline_4k", "tower-sse"),
        ("body", "100k", "tower-sse"),
        ("body", "100k", "tower-sse-unboxed"),
        ("broadcast", "1k_to_10k", "tower-sse"),
    ];
    for (group, case, ours) in rows {
        let mine = mean_ns(group, &format!("{case}_{ours}"));
        let base = mean_ns(group, &format!("{case}_axum"));
        if let (Some(mine), Some(base)) = (mine, base) {
            println!(
                "{:<34} {:>11.1} ns {:>11.1} ns {:>8.2}x",
                format!("{group}/{case} ({ours})"),
                mine,
                base,
                base / mine
            );
        }
    }
    interleaved_table();
}
