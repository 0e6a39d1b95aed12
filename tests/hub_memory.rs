//! Memory bound of a subscriber that never reads, measured in live allocations (a counting
//! global allocator in this test binary), which no load on the machine can change.

mod common;

use common::alloc::{Counting, Live};
use tower_sse::{hub::Hub, Event};

#[global_allocator]
static ALLOC: Counting = Counting;

#[tokio::test]
async fn a_subscriber_that_never_reads_costs_bounded_memory() {
    let hub = Hub::builder().history(1024).history_bytes(2 << 20).build();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    sub.join();
    let payload = "x".repeat(1024);
    // Fill the history to its cap, then let 100k events (about 100 MiB) go by.
    for _ in 0..2_000 {
        topic
            .publish(Event::message(&payload))
            .now()
            .unwrap()
            .unwrap();
    }
    let before = Live::now();
    for _ in 0..100_000 {
        topic
            .publish(Event::message(&payload))
            .now()
            .unwrap()
            .unwrap();
    }
    let grown = Live::now().since(before);
    println!(
        "live allocations grew by {} ({} bytes) while 100k 1 KiB events were published",
        grown.count, grown.bytes
    );
    assert!(topic.history_len() <= 1024);
    // Each published event replaces the oldest one: the history and the never-reading
    // subscriber hold exactly as much as before.
    assert!(grown.count.abs() <= 16, "{grown:?}");
    assert!(grown.bytes.abs() <= 64 * 1024, "{grown:?}");
    assert_eq!(topic.subscribers(), 1);
    drop(sub);
    assert_eq!(topic.subscribers(), 0);
}
