//! The fan-out hub: replay, lag policies, bounded memory, presence, counters.

mod common;

use futures_util::{FutureExt, StreamExt};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tower_sse::{
    decode::{Decoder, Message},
    hub::{Hub, LagPolicy, Subscription, Topic, EVICTED, HISTORY_LOST, MISSED},
    Event, LastEventId,
};

/// Everything the subscription has ready now, decoded as a client would.
fn ready_messages(sub: &mut Subscription, decoder: &mut Decoder) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        out.extend(decoder.feed(event.as_bytes()));
    }
    out
}

/// Publishes on the in-memory hub, where the outcome is known at once.
fn put(topic: &Topic, event: Event) -> String {
    topic.publish(event).now().unwrap().unwrap()
}

fn id(s: &str) -> LastEventId {
    LastEventId::parse(s.as_bytes()).unwrap()
}

fn data(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.data.clone()).collect()
}

fn numbers(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn ids_are_assigned_monotonic_per_topic_and_kept_when_given() {
    let hub = Hub::new();
    let a = hub.topic("a");
    let b = hub.topic("b");
    let ids: Vec<String> = (0..5)
        .map(|i| put(&a, Event::message(i.to_string())))
        .collect();
    let seqs: Vec<u64> = ids
        .iter()
        .map(|id| id.rsplit_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(
        put(&b, Event::message("x")).rsplit_once('-').unwrap().1,
        "1"
    );
    let own = Event::builder().id("mine").data("y").build().unwrap();
    assert_eq!(put(&a, own), "mine");
}

#[tokio::test]
async fn every_subscriber_gets_the_same_bytes_encoded_once() {
    let hub = Hub::new();
    let topic = hub.topic("t");
    let mut subs: Vec<Subscription> = (0..100).map(|_| topic.subscribe(None)).collect();
    put(&topic, Event::message("x".repeat(1024)));
    let mut pointers = Vec::new();
    for sub in &mut subs {
        let event = sub.next().await.unwrap();
        pointers.push(event.as_bytes().as_ptr());
    }
    assert!(
        pointers.windows(2).all(|w| w[0] == w[1]),
        "one allocation shared by all"
    );
    let stats = hub.stats();
    assert_eq!(stats.published, 1);
    drop(subs);
    assert_eq!(hub.stats().delivered, 100);
}

#[test]
fn publishing_works_from_plain_threads() {
    let hub = Hub::builder().max_lag(1_000, u64::MAX).build();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let topic = topic.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    put(&topic, Event::message(i.to_string()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut count = 0;
    while let Some(Some(_)) = sub.next().now_or_never() {
        count += 1;
    }
    assert_eq!(count, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_meets_live_without_gap_or_duplicate_under_concurrent_publishing() {
    const N: u32 = 20_000;
    let hub = Hub::builder()
        .history(N as usize)
        .max_lag(N as u64, u64::MAX)
        .build();
    let topic = hub.topic("seam");
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();

    let publisher = {
        let topic = topic.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            for i in 0..N {
                let id = put(&topic, Event::message(i.to_string()));
                ids.lock().unwrap().push(id);
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    // Subscribers that resume from some event while publishing goes on.
    let mut readers = Vec::new();
    for k in 0..40u32 {
        let topic = topic.clone();
        let ids = ids.clone();
        readers.push(tokio::spawn(async move {
            let from = loop {
                let known = ids.lock().unwrap().len() as u32;
                let target = k * (N / 40);
                if known > target {
                    break target;
                }
                tokio::task::yield_now().await;
            };
            let last = ids.lock().unwrap()[from as usize].clone();
            let mut sub = topic.subscribe(Some(&id(&last)));
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            while got.last().map(String::as_str) != Some(&(N - 1).to_string()) {
                let event = sub.next().await.unwrap();
                got.extend(decoder.feed(event.as_bytes()).into_iter().map(|m| m.data));
            }
            (from, got)
        }));
    }
    publisher.await.unwrap();
    for reader in readers {
        let (from, got) = reader.await.unwrap();
        assert_eq!(got, numbers(from + 1..N), "resumed after event {from}");
    }
    assert_eq!(
        hub.stats().evicted + hub.stats().skipped + hub.stats().history_lost,
        0
    );
}

#[tokio::test]
async fn evict_policy_ends_the_stream_and_resume_loses_nothing() {
    let hub = Hub::builder()
        .max_lag(10, u64::MAX)
        .lag_policy(LagPolicy::Evict)
        .build();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    let mut decoder = Decoder::new();
    for i in 0..5 {
        put(&topic, Event::message(i.to_string()));
    }
    let first = ready_messages(&mut sub, &mut decoder);
    assert_eq!(data(&first), numbers(0..5));
    let last_seen = first.last().unwrap().last_event_id.clone();

    // The client stalls while 20 more are published.
    for i in 5..25 {
        put(&topic, Event::message(i.to_string()));
    }
    let evicted = ready_messages(&mut sub, &mut decoder);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].event, EVICTED);
    assert_eq!(evicted[0].data, r#"{"behind":20}"#);
    assert_eq!(
        decoder.retry(),
        None,
        "the body sending it adds the come-back block"
    );
    // The final event carries no id: the client resumes from its last real event.
    assert_eq!(decoder.last_event_id(), last_seen);
    assert_eq!(sub.next().await, None, "the stream ends");
    assert_eq!(topic.subscribers(), 0);
    let stats = hub.stats();
    assert_eq!((stats.evicted, stats.subscribers), (1, 0));

    // Reconnecting with Last-Event-ID replays exactly what was missed.
    let mut again = topic.subscribe(Some(&id(&last_seen)));
    let replay = ready_messages(&mut again, &mut Decoder::new());
    assert_eq!(data(&replay), numbers(5..25));
}

#[tokio::test]
async fn skip_policy_jumps_ahead_with_a_missed_event() {
    let hub = Hub::builder()
        .max_lag(10, u64::MAX)
        .lag_policy(LagPolicy::Skip)
        .build();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    let mut decoder = Decoder::new();
    for i in 0..30 {
        put(&topic, Event::message(i.to_string()));
    }
    // The 29 before the newest are missed; the newest is delivered at once.
    let got = ready_messages(&mut sub, &mut decoder);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event, MISSED);
    assert_eq!(got[0].data, r#"{"missed":29}"#);
    assert_eq!(
        (got[1].event.as_str(), got[1].data.as_str()),
        ("message", "29")
    );
    // The control event has no id: the client's last id is the newest event's.
    assert_eq!(got[0].last_event_id, "");
    assert_ne!(got[1].last_event_id, "");
    // Live again after the gap.
    put(&topic, Event::message("live"));
    let live = ready_messages(&mut sub, &mut decoder);
    assert_eq!(data(&live), ["live"]);
    assert_eq!(hub.stats().skipped, 29);
    assert_eq!(topic.subscribers(), 1);
}

#[tokio::test]
async fn skip_delivers_a_newest_event_larger_than_the_byte_bound() {
    let hub = Hub::builder()
        .max_lag(1_000, 50)
        .lag_policy(LagPolicy::Skip)
        .build();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    for i in 0..3 {
        put(&topic, Event::message(format!("{i}{}", "x".repeat(99))));
    }
    let got = ready_messages(&mut sub, &mut Decoder::new());
    assert_eq!(
        got.len(),
        2,
        "one missed event, then the newest, then nothing"
    );
    assert_eq!(got[0].data, r#"{"missed":2}"#);
    assert!(got[1].data.starts_with('2'));
}

#[tokio::test]
async fn lag_is_also_bounded_in_bytes() {
    let hub = Hub::builder()
        .max_lag(1_000, 1200)
        .lag_policy(LagPolicy::Skip)
        .build();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    // About 113 bytes an event with its hub id: ten fit in 1200 bytes, eleven do not.
    for _ in 0..10 {
        put(&topic, Event::message("x".repeat(90)));
    }
    assert_eq!(
        ready_messages(&mut sub, &mut Decoder::new()).len(),
        10,
        "within the bound"
    );
    for _ in 0..11 {
        put(&topic, Event::message("x".repeat(90)));
    }
    let got = ready_messages(&mut sub, &mut Decoder::new());
    assert_eq!(got[0].event, MISSED);
}

#[tokio::test]
async fn a_subscriber_whose_next_event_left_the_history_is_lagging() {
    let hub = Hub::builder()
        .history(5)
        .max_lag(1_000, u64::MAX)
        .lag_policy(LagPolicy::Skip)
        .build();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    for i in 0..8 {
        put(&topic, Event::message(i.to_string()));
    }
    assert_eq!(topic.history_len(), 5);
    let got = ready_messages(&mut sub, &mut Decoder::new());
    assert_eq!(got[0].event, MISSED);
    assert_eq!(got[0].data, r#"{"missed":7}"#);
    assert_eq!(data(&got[1..]), ["7"]);
}

#[tokio::test]
async fn dropping_subscribers_frees_them_and_unused_topics_go_away() {
    let hub = Hub::new();
    let topic = hub.topic("room");
    let mut subs: Vec<Subscription> = (0..1_000).map(|_| topic.subscribe(None)).collect();
    // Not streaming yet: not counted.
    assert_eq!(topic.subscribers(), 0);
    subs.iter_mut().for_each(Subscription::join);
    assert_eq!(topic.subscribers(), 1_000);
    assert_eq!(hub.stats().subscribers, 1_000);
    drop(subs);
    assert_eq!(topic.subscribers(), 0);
    assert_eq!(hub.stats().subscribers, 0);
    // A topic with no history, no subscriber and no handle disappears with its last subscriber.
    drop(topic);
    let sub = hub.topic("room").subscribe(None);
    assert_eq!(hub.topic_names(), ["room"]);
    drop(sub);
    assert!(hub.topic_names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn history_expires_by_age_and_prune_removes_idle_topics() {
    let hub = Hub::builder().history_age(Duration::from_secs(60)).build();
    let topic = hub.topic("t");
    let old = put(&topic, Event::message("old"));
    tokio::time::advance(Duration::from_secs(30)).await;
    put(&topic, Event::message("newer"));
    let mut sub = topic.subscribe_with_recent(None, 10);
    assert_eq!(
        data(&ready_messages(&mut sub, &mut Decoder::new())),
        ["old", "newer"]
    );
    drop(sub);

    tokio::time::advance(Duration::from_secs(31)).await;
    // Expired events are not counted, even before anything else touches the topic.
    assert_eq!(topic.history_len(), 1);
    let mut sub = topic.subscribe_with_recent(None, 10);
    assert_eq!(
        data(&ready_messages(&mut sub, &mut Decoder::new())),
        ["newer"]
    );
    // Resuming right after the expired event is still exact: nothing after it expired.
    let mut resumed = topic.subscribe(Some(&id(&old)));
    assert_eq!(
        data(&ready_messages(&mut resumed, &mut Decoder::new())),
        ["newer"]
    );
    drop((sub, resumed));

    assert_eq!(hub.prune(), 0, "a handle is still held");
    drop(topic);
    assert_eq!(hub.prune(), 0, "history is still fresh");
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(hub.prune(), 1);
    assert!(hub.topic_names().is_empty());
}

#[tokio::test]
async fn odd_last_event_ids_get_history_lost_never_a_partial_replay() {
    let hub = Hub::builder().history(5).build();
    let topic = hub.topic("t");
    let ids: Vec<String> = (0..20)
        .map(|i| put(&topic, Event::message(i.to_string())))
        .collect();
    let run = ids[0].split_once('-').unwrap().0.to_owned();
    let cases = [
        "garbage".to_owned(),
        ids[2].clone(),                // too old
        "deadbeef-3".to_owned(),       // another run
        format!("{run}-999"),          // from the future
        format!("{run}-{}", u64::MAX), // overflow bait
        format!("{run}-x"),            // not a number
        format!("{run}-18-extra"),     // trailing junk
    ];
    for (n, case) in cases.iter().enumerate() {
        let mut sub = topic.subscribe(Some(&id(case)));
        put(&topic, Event::message(format!("live{n}")));
        let got = ready_messages(&mut sub, &mut Decoder::new());
        assert_eq!(got.len(), 2, "{case}: {got:?}");
        assert_eq!(got[0].event, HISTORY_LOST, "{case}");
        assert_eq!(
            got[1].data,
            format!("live{n}"),
            "{case}: then live, no replay"
        );
    }
    assert_eq!(hub.stats().history_lost, cases.len() as u64);
}

#[tokio::test]
async fn resuming_from_the_event_just_dropped_is_still_exact() {
    let hub = Hub::builder().history(5).build();
    let topic = hub.topic("t");
    let ids: Vec<String> = (0..10)
        .map(|i| put(&topic, Event::message(i.to_string())))
        .collect();
    // History holds 5..10; the client saw 4, so nothing it needs is gone.
    let mut sub = topic.subscribe(Some(&id(&ids[4])));
    let got = ready_messages(&mut sub, &mut Decoder::new());
    assert_eq!(data(&got), numbers(5..10));
    assert_eq!(hub.stats().history_lost, 0);
}

#[tokio::test]
async fn publisher_chosen_ids_resume_by_exact_match() {
    let hub = Hub::new();
    let topic = hub.topic("t");
    for name in ["a", "b", "c"] {
        let event = Event::builder().id(name).data(name).build().unwrap();
        put(&topic, event);
    }
    let mut sub = topic.subscribe(Some(&id("b")));
    assert_eq!(data(&ready_messages(&mut sub, &mut Decoder::new())), ["c"]);
}

#[tokio::test]
async fn recent_history_for_new_subscribers() {
    let hub = Hub::new();
    let topic = hub.topic("t");
    for i in 0..10 {
        put(&topic, Event::message(i.to_string()));
    }
    let mut sub = topic.subscribe_with_recent(None, 3);
    assert_eq!(
        data(&ready_messages(&mut sub, &mut Decoder::new())),
        numbers(7..10)
    );
}

#[tokio::test]
async fn presence_hooks_see_counts_may_publish_and_may_panic() {
    let joins = Arc::new(AtomicUsize::new(0));
    let hub = Hub::builder()
        .on_join({
            let joins = joins.clone();
            move |topic, count| {
                joins.fetch_add(1, Ordering::SeqCst);
                put(
                    topic,
                    Event::builder()
                        .event("join")
                        .data(count.to_string())
                        .build()
                        .unwrap(),
                );
            }
        })
        .on_leave(|topic, count| {
            put(
                topic,
                Event::builder()
                    .event("leave")
                    .data(count.to_string())
                    .build()
                    .unwrap(),
            );
            if count == 0 {
                panic!("a buggy hook");
            }
        })
        .build();
    let topic = hub.topic("room");
    let mut alice = topic.subscribe(None);
    alice.join();
    let mut bob = topic.subscribe(None);
    bob.join();
    // A subscription that never streams (a refused response) leaves no trace.
    drop(topic.subscribe(None));
    let mut decoder = Decoder::new();
    let got = ready_messages(&mut alice, &mut decoder);
    // The hook runs once the subscriber is in, so alice sees her own join, then bob's.
    let seen: Vec<(&str, &str)> = got
        .iter()
        .map(|m| (m.event.as_str(), m.data.as_str()))
        .collect();
    assert_eq!(seen, [("join", "1"), ("join", "2")]);
    drop(bob);
    let got = ready_messages(&mut alice, &mut decoder);
    assert_eq!(
        (got[0].event.as_str(), got[0].data.as_str()),
        ("leave", "1")
    );
    drop(alice); // the hook panics; the panic is contained
    assert_eq!(joins.load(Ordering::SeqCst), 2);
    assert_eq!(topic.subscribers(), 0);
}

#[tokio::test]
async fn comment_only_events_pass_without_ids() {
    let hub = Hub::new();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    let comment = Event::builder().comment("note").build().unwrap();
    assert_eq!(put(&topic, comment), "");
    let event = sub.next().await.unwrap();
    assert_eq!(event.as_bytes(), ": note\n");
}

#[tokio::test]
async fn close_flushes_published_events_then_the_final_event_then_ends() {
    let hub = Hub::new();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    let mut waiting = topic.subscribe(None);
    assert!(
        waiting.next().now_or_never().is_none(),
        "pending before close"
    );
    put(&topic, Event::message("accepted before shutdown"));
    let bye = Event::builder()
        .event("shutdown")
        .retry(Duration::from_secs(5))
        .data("restarting")
        .build()
        .unwrap();
    hub.close(Some(bye));
    let mut decoder = Decoder::new();
    let got = ready_messages(&mut sub, &mut decoder);
    assert_eq!(data(&got), ["accepted before shutdown", "restarting"]);
    assert_eq!(got[1].event, "shutdown");
    assert_eq!(decoder.retry(), Some(5000));
    assert_eq!(sub.next().await, None);
    // A subscriber that was waiting when the hub closed is woken and gets the same.
    let got = ready_messages(&mut waiting, &mut Decoder::new());
    assert_eq!(data(&got), ["accepted before shutdown", "restarting"]);
    assert_eq!(waiting.next().await, None);
    assert_eq!(topic.subscribers(), 0);
    // A late subscriber ends at once, after the final event.
    let mut late = hub.topic("other").subscribe(None);
    assert_eq!(
        data(&ready_messages(&mut late, &mut Decoder::new())),
        ["restarting"]
    );
    assert_eq!(late.next().await, None);
}

/// The hub's three control events, on a topic of this name: `history-lost` for an unknown
/// `Last-Event-ID`, then `missed` and `evicted` for a subscriber that fell behind.
async fn control_events(topic: &str) -> Vec<Event> {
    let mut control = Vec::new();
    let hub = Hub::new();
    let lost = hub
        .topic(topic)
        .subscribe(Some(&id("nowhere")))
        .next()
        .await;
    control.push(lost.unwrap());
    for policy in [LagPolicy::Skip, LagPolicy::Evict] {
        let hub = Hub::builder()
            .max_lag(2, u64::MAX)
            .lag_policy(policy)
            .build();
        let topic = hub.topic(topic);
        let mut sub = topic.subscribe(None);
        sub.join();
        for i in 0..5 {
            put(&topic, Event::message(i.to_string()));
        }
        control.push(sub.next().await.unwrap());
    }
    control
}

#[tokio::test]
async fn control_events_carry_no_id_and_no_eventsource_name() {
    let control = control_events("t").await;
    let names: Vec<String> = control
        .iter()
        .map(|event| Decoder::new().feed(event.as_bytes())[0].event.clone())
        .collect();
    assert_eq!(names, [HISTORY_LOST, MISSED, EVICTED]);
    for event in &control {
        assert_eq!(event.id(), None, "{event:?}");
    }
    for name in names {
        assert!(!["error", "open", "message"].contains(&name.as_str()));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn evictions_skips_and_lost_histories_are_logged() {
    let (_, logs) = common::logs_of(control_events("ticker")).await;
    assert!(
        logs.contains("INFO") && logs.contains("hub subscriber evicted for falling behind"),
        "{logs}"
    );
    assert!(logs.contains("behind=5"), "{logs}");
    assert!(
        logs.contains("hub subscriber skipped events topic=\"ticker\" missed=4"),
        "{logs}"
    );
    assert!(logs.contains("hub subscriber told history-lost"), "{logs}");
}

#[tokio::test]
async fn an_id_past_the_history_is_told_then_gets_the_recent_events() {
    let hub = Hub::builder().history(10).build();
    let topic = hub.topic("inbox");
    let first = put(&topic, Event::message("0"));
    for i in 1..30 {
        put(&topic, Event::message(i.to_string()));
    }
    let mut decoder = Decoder::new();
    // Away longer than the history: told, then the newest `recent` it holds, then live.
    let mut back = topic.subscribe_with_recent(Some(&id(&first)), 3);
    let got = ready_messages(&mut back, &mut decoder);
    assert_eq!(got[0].event, HISTORY_LOST);
    assert_eq!(data(&got[1..]), numbers(27..30));
    // With `subscribe`, none: told, then live.
    let mut plain = topic.subscribe(Some(&id(&first)));
    let got = ready_messages(&mut plain, &mut Decoder::new());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, HISTORY_LOST);
    put(&topic, Event::message("30"));
    assert_eq!(data(&ready_messages(&mut back, &mut decoder)), ["30"]);
}

#[tokio::test(start_paused = true)]
async fn an_id_from_another_topic_or_an_earlier_one_of_the_same_name_is_no_position() {
    let hub = Hub::builder().history_age(Duration::from_secs(60)).build();
    let (alice, bob) = (hub.topic("alice"), hub.topic("bob"));
    let from_alice = put(&alice, Event::message("for alice"));
    put(&bob, Event::message("for bob 1"));
    put(&bob, Event::message("for bob 2"));
    // Only history-lost is ready for a subscriber resuming from `last` (nothing replayed).
    let only_told = |topic: &Topic, last: &str| {
        let mut sub = topic.subscribe(Some(&id(last)));
        let got = ready_messages(&mut sub, &mut Decoder::new());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].event, HISTORY_LOST);
    };
    // Alice's first id is not "bob's first event": bob is told, never skipped silently.
    only_told(&bob, &from_alice);
    // A topic whose history expired and was pruned numbers anew, under another tag: an id
    // from before is unknown, not the new topic's first event.
    let old = put(&hub.topic("scratch"), Event::message("old"));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(hub.prune() >= 1);
    assert!(hub.get("scratch").is_none());
    let scratch = hub.topic("scratch");
    put(&scratch, Event::message("new 1"));
    put(&scratch, Event::message("new 2"));
    only_told(&scratch, &old);
}
