//! Memory bound of a subscriber that never reads. Alone in its own test binary, because it
//! measures the whole process's resident memory.

mod common;

use common::vm_rss_kib;
use tower_sse::{hub::Hub, Event};

#[tokio::test]
async fn a_subscriber_that_never_reads_costs_bounded_memory() {
    let hub = Hub::builder().history(1024).history_bytes(2 << 20).build();
    let topic = hub.topic("t");
    let sub = topic.subscribe(None);
    let payload = "x".repeat(1024);
    // Warm up allocator pools, then measure 100k events (about 100 MiB) going by.
    for _ in 0..2_000 {
        topic.publish(Event::message(&payload)).unwrap();
    }
    let before = vm_rss_kib();
    for _ in 0..100_000 {
        topic.publish(Event::message(&payload)).unwrap();
    }
    let grown = vm_rss_kib().saturating_sub(before);
    println!("RSS grew by {grown} KiB while 100k 1 KiB events were published");
    assert!(topic.history_len() <= 1024);
    assert!(grown < 24 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(topic.subscribers(), 1);
    drop(sub);
    assert_eq!(topic.subscribers(), 0);
}
