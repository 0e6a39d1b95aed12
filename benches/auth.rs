//! What grant checks cost at fan-out: one 1 KiB event delivered to 10,000 hub subscribers,
//! the same hub and topic read
//!
//! - `plain`: by subscriptions made without grants (the baseline);
//! - `granted`: by subscriptions made with [`Subscription::granted`](tower_sse::hub::Subscription::granted),
//!   the event without an audience (every subscriber checks there is none);
//! - `audience`: by the same granted subscriptions, the event for an audience of 16 subjects
//!   (the 10,000 subscribers are 16 users' tabs), so that every subscriber looks itself up in
//!   the audience and receives the event.
//!
//! `cargo bench --bench auth` prints criterion's estimates, then a table measured interleaved
//! (short timed batches of each case alternating with the baseline, the median of the
//! per-round differences) that a machine whose speed drifts during the run cannot skew: the
//! cost of the check per delivered event per subscriber, in nanoseconds.
#![allow(missing_docs)]

use criterion::{criterion_group, Criterion, Throughput};
use futures_util::{FutureExt, StreamExt};
use std::hint::black_box;
use tower_sse::{
    hub::{Hub, Subscription, Topic},
    Event, Grants,
};

const SUBSCRIBERS: usize = 10_000;
const USERS: usize = 16;

struct Case {
    topic: Topic,
    subscriptions: Vec<Subscription>,
    event: Event,
}

impl Case {
    fn round(&mut self) {
        self.topic
            .publish(self.event.clone())
            .now()
            .unwrap()
            .unwrap();
        for sub in &mut self.subscriptions {
            black_box(sub.next().now_or_never().unwrap().unwrap());
        }
    }
}

fn user(i: usize) -> String {
    format!("user-{:02}", i % USERS)
}

/// The three cases, each on its own topic of one hub.
fn cases() -> [Case; 3] {
    let hub = Hub::new();
    let payload = "x".repeat(1024);
    let plain_topic = hub.topic("plain");
    let plain = Case {
        subscriptions: (0..SUBSCRIBERS)
            .map(|_| plain_topic.subscribe(None))
            .collect(),
        topic: plain_topic,
        event: Event::message(&payload),
    };
    let granted = |name: &str| -> Vec<Subscription> {
        let topic = hub.topic(name);
        (0..SUBSCRIBERS)
            .map(|i| {
                let grants = Grants::new().subject(user(i)).exact(name);
                topic.subscribe(None).granted(&grants).unwrap()
            })
            .collect()
    };
    let no_audience = Case {
        subscriptions: granted("granted"),
        topic: hub.topic("granted"),
        event: Event::message(&payload),
    };
    let audience = Case {
        subscriptions: granted("audience"),
        topic: hub.topic("audience"),
        event: Event::message(&payload).with_audience((0..USERS).map(user)),
    };
    [plain, no_audience, audience]
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("grants");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.sample_size(30);
    let [mut plain, mut granted, mut audience] = cases();
    group.bench_function("1k_to_10k/plain", |b| b.iter(|| plain.round()));
    group.bench_function("1k_to_10k/granted", |b| b.iter(|| granted.round()));
    group.bench_function("1k_to_10k/audience", |b| b.iter(|| audience.round()));
    group.finish();
}

criterion_group!(benches, fan_out);

/// Nanoseconds per delivery over `iters` publishes of `case`.
fn ns_per_delivery(case: &mut Case, iters: usize) -> f64 {
    let start = std::time::Instant::now();
    for _ in 0..iters {
        case.round();
    }
    start.elapsed().as_secs_f64() * 1e9 / (iters * SUBSCRIBERS) as f64
}

/// The median over `rounds` of (time of `case` − time of `base`) per delivery, each timed over
/// `iters` publishes, the two alternating which goes first.
fn extra_ns_per_delivery(rounds: usize, iters: usize, case: &mut Case, base: &mut Case) -> f64 {
    let time = |c: &mut Case| ns_per_delivery(c, iters);
    let mut extra: Vec<f64> = (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let mine = time(case);
                mine - time(base)
            } else {
                let theirs = time(base);
                time(case) - theirs
            }
        })
        .collect();
    extra.sort_by(f64::total_cmp);
    extra[extra.len() / 2]
}

fn interleaved_table() {
    let [mut plain, mut granted, mut audience] = cases();
    println!("\ngrant checks at fan-out, interleaved (median over rounds), per delivered event per subscriber");
    let baseline = ns_per_delivery(&mut plain, 20);
    println!("{:<44} {:>8.1} ns", "plain delivery (baseline)", baseline);
    let granted_extra = extra_ns_per_delivery(41, 20, &mut granted, &mut plain);
    let audience_extra = extra_ns_per_delivery(41, 20, &mut audience, &mut plain);
    println!(
        "{:<44} {:>+8.1} ns",
        "granted, no audience: extra", granted_extra
    );
    println!(
        "{:<44} {:>+8.1} ns",
        "granted, audience of 16: extra", audience_extra
    );
}

fn main() {
    if std::env::args().any(|a| a == "--interleaved-only") {
        interleaved_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    interleaved_table();
}
