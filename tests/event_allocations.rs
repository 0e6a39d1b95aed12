//! The encoder's allocation promise, counted: a typical event costs one allocation, of exactly
//! its encoded size (a counting global allocator in this test binary, counted per thread).

mod common;

use common::alloc::{allocations_in, Counting};
use std::time::Duration;
use tower_sse::Event;

#[global_allocator]
static ALLOC: Counting = Counting;

fn assert_one_exact_allocation(what: &str, build: impl FnOnce() -> Event) {
    let (event, count, bytes) = allocations_in(build);
    println!(
        "{what}: {count} allocation(s), {bytes} bytes for {} encoded",
        event.len()
    );
    assert_eq!(count, 1, "{what}: allocations");
    assert_eq!(bytes, event.len() as u64, "{what}: bytes allocated");
}

#[test]
fn typical_events_take_one_exact_allocation() {
    assert_one_exact_allocation("plain message", || Event::message("hello"));
    assert_one_exact_allocation("multi-line message", || {
        Event::message("line one\r\nline two\nline three\r")
    });
    assert_one_exact_allocation("name and id", || {
        Event::builder().event("price").id("1042").build().unwrap()
    });
    assert_one_exact_allocation("name, id, retry and data", || {
        Event::builder()
            .event("chat")
            .id("room-7:42")
            .retry(Duration::from_secs(3))
            .data("many\nlines\n\n\n")
            .build()
            .unwrap()
    });
    let data = "x".repeat(100);
    assert_one_exact_allocation("100-byte data with a name", || {
        Event::builder().event("tick").data(&data).build().unwrap()
    });
}

#[test]
fn the_count_sees_a_second_allocation() {
    // The counter itself: two events built in one closure are two allocations.
    let (_, count, _) = allocations_in(|| (Event::message("a"), Event::message("b")));
    assert_eq!(count, 2);
}
