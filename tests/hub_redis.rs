//! Hubs in separate "processes" (each with its own Redis connections) sharing topics through a
//! real `redis-server` that each test starts, kills and restarts itself.
//!
//! Each needs `redis-server`, so each is `#[ignore]`d: a plain `cargo test` lists them as
//! ignored; `cargo test --all-features -- --ignored` (which `.ci/run` runs) runs them, and fails
//! them when `redis-server` is missing.

mod common;

use common::hub::*;

use common::redis::RedisServer;
use futures_util::{FutureExt, StreamExt};
use std::time::Duration;
use tower_sse::{
    decode::{Decoder, Message},
    hub::{redis::RedisBroker, Hub, PublishError, HISTORY_LOST},
    Event,
};

/// Whether the ids increase strictly within their epoch, `<epoch>-<offset>`.
fn offsets(messages: &[Message]) -> Vec<(String, u64)> {
    messages
        .iter()
        .map(|m| {
            let (epoch, offset) = m.last_event_id.rsplit_once('-').unwrap();
            (epoch.to_owned(), offset.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn two_and_three_hubs_deliver_every_event_in_one_order() {
    let server = RedisServer::start().await;
    let nodes: Vec<_> = (0..3).map(|_| node(&server).0).collect();
    let mut subs = Vec::new();
    for hub in &nodes {
        subs.push(live(hub, &nodes[0], "room").await);
    }
    // Every node publishes at once.
    let mut publishers = Vec::new();
    for (n, hub) in nodes.iter().enumerate() {
        let hub = hub.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..100 {
                publish(&hub, "room", &format!("{n}:{i}")).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut seen = Vec::new();
    for sub in &mut subs {
        seen.push(take(sub, 300).await);
    }
    for other in &seen[1..] {
        assert_eq!(data(other), data(&seen[0]), "one order on every node");
        assert_eq!(
            other.iter().map(|m| &m.last_event_id).collect::<Vec<_>>(),
            seen[0].iter().map(|m| &m.last_event_id).collect::<Vec<_>>()
        );
    }
    // Each publisher's events in its own order, none lost, none twice.
    for n in 0..3 {
        let mine: Vec<_> = data(&seen[0])
            .into_iter()
            .filter(|d| d.starts_with(&format!("{n}:")))
            .collect();
        let want: Vec<_> = (0..100).map(|i| format!("{n}:{i}")).collect();
        assert_eq!(mine, want);
    }
    let offsets = offsets(&seen[0]);
    assert!(offsets
        .windows(2)
        .all(|w| w[0].0 == w[1].0 && w[1].1 == w[0].1 + 1));
    assert_eq!(nodes[0].stats().publish_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_client_resumes_on_another_node_under_concurrent_publishing() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _) = node(&server);
    let (c, _) = node(&server);
    const N: u32 = 60;
    for trial in 0..25u32 {
        let topic = format!("resume-{trial}");
        let mut on_a = live(&a, &c, &topic).await;
        let publisher = {
            let c = c.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                for i in 1..=N {
                    publish(&c, &topic, &i.to_string()).await;
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        // Read some on A, while C publishes, then reconnect to B with the last id.
        let k = 1 + (trial * 7) % (N - 1);
        let first = take(&mut on_a, k as usize).await;
        drop(on_a);
        let last = first.last().unwrap().last_event_id.clone();
        let mut on_b = b.topic(&topic).subscribe(Some(&id(&last)));
        let rest = take(&mut on_b, (N - k) as usize).await;
        publisher.await.unwrap();
        let mut all = data(&first);
        all.extend(data(&rest));
        assert_eq!(all, numbers(1..=N), "trial {trial}: resumed after {k}");
        assert!(
            on_b.next().now_or_never().is_none(),
            "trial {trial}: nothing more"
        );
    }
    assert_eq!(b.stats().history_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn ids_too_old_or_unknown_get_history_lost_on_any_node() {
    let server = RedisServer::start().await;
    let (a, _) = node_with(&server, Hub::builder().history(10));
    let (b, _) = node_with(&server, Hub::builder().history(10));
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 1..=30 {
            ids.push(publish(&a, "t", &i.to_string()).await);
        }
        ids
    };
    // Recent enough: exact replay on the other node.
    let mut sub = b.topic("t").subscribe(Some(&id(&ids[24])));
    assert_eq!(data(&take(&mut sub, 5).await), numbers(26..=30));
    for stale in [
        ids[4].clone(),
        "garbage".to_owned(),
        "0123456789ab-3".to_owned(),
    ] {
        let mut sub = b.topic("t").subscribe(Some(&id(&stale)));
        let got = take(&mut sub, 1).await;
        assert_eq!(got[0].event, HISTORY_LOST, "{stale}");
        publish(&a, "t", "live").await;
        assert_eq!(data(&take(&mut sub, 1).await), ["live"], "then live events");
    }
    assert_eq!(b.stats().history_lost, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn flushall_loses_the_history_and_everyone_is_told() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _) = node(&server);
    let mut on_a = live(&a, &b, "t").await;
    let mut last = String::new();
    for i in 1..=5 {
        last = publish(&b, "t", &i.to_string()).await;
    }
    assert_eq!(data(&take(&mut on_a, 5).await), numbers(1..=5));
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut server.admin().await)
        .await
        .unwrap();
    // A client resuming elsewhere is told at once.
    let mut resumed = b.topic("t").subscribe(Some(&id(&last)));
    assert_eq!(take(&mut resumed, 1).await[0].event, HISTORY_LOST);
    // The next event starts a new epoch: the live subscriber is told, then gets it.
    let fresh = publish(&b, "t", "after").await;
    assert!(fresh.ends_with("-1"), "{fresh}");
    assert_ne!(
        fresh.rsplit_once('-').unwrap().0,
        last.rsplit_once('-').unwrap().0
    );
    let got = take(&mut on_a, 2).await;
    assert_eq!(got[0].event, HISTORY_LOST);
    assert_eq!(
        (got[1].data.as_str(), got[1].last_event_id.as_str()),
        ("after", fresh.as_str())
    );
    assert_eq!(data(&take(&mut resumed, 1).await), ["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_dropped_connection_is_filled_from_the_stream_without_a_gap() {
    let server = RedisServer::start().await;
    let (a, broker_a) = node(&server);
    let (b, broker_b) = node(&server);
    let mut on_a = live(&a, &b, "t").await;
    let mut on_b = live(&b, &a, "t").await;
    for i in 1..=10 {
        publish(&a, "t", &i.to_string()).await;
    }
    // Cut both pub/sub connections; publishing goes on through the other connection.
    kill_pubsub_connections(&server).await;
    for i in 11..=30 {
        publish(&a, "t", &i.to_string()).await;
    }
    eventually("brokers reconnect", || async {
        broker_a.reconnects() > 0 && broker_b.reconnects() > 0
    })
    .await;
    for i in 31..=40 {
        publish(&b, "t", &i.to_string()).await;
    }
    assert_eq!(data(&take(&mut on_a, 40).await), numbers(1..=40));
    assert_eq!(data(&take(&mut on_b, 40).await), numbers(1..=40));
    assert_eq!(a.stats().history_lost + b.stats().history_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_redis_restart_mid_stream_keeps_streams_open_and_order_exact() {
    let mut server = RedisServer::start().await;
    let (a, broker_a) = node(&server);
    let (b, broker_b) = node(&server);
    let mut on_a = live(&a, &b, "t").await;
    let mut on_b = live(&b, &a, "t").await;
    let mut last = String::new();
    for i in 1..=20 {
        let hub = if i % 2 == 0 { &a } else { &b };
        last = publish(hub, "t", &i.to_string()).await;
    }
    assert_eq!(data(&take(&mut on_a, 20).await), numbers(1..=20));
    assert_eq!(data(&take(&mut on_b, 20).await), numbers(1..=20));

    server.kill();
    // Publishing fails with a typed error in bounded time; nothing waits forever.
    for _ in 0..3 {
        let failed = tokio::time::timeout(PATIENCE, a.topic("t").publish(Event::message("lost")))
            .await
            .expect("publish answers while Redis is down");
        assert!(
            matches!(
                failed,
                Err(PublishError::Unavailable(_) | PublishError::Timeout(_))
            ),
            "{failed:?}"
        );
    }
    assert_eq!(a.stats().publish_failed, 3);
    // Streams stay open meanwhile.
    assert!(on_a.next().now_or_never().is_none());

    server.restart().await;
    eventually("brokers reconnect", || async {
        broker_a.is_connected() && broker_b.is_connected()
    })
    .await;
    // The publishing connections reconnect by themselves; until they have, a publish may still
    // see the old connection's end. Warm both up on another topic, then publish for real.
    for hub in [&a, &b] {
        eventually("publishing works again", || async {
            hub.topic("warm-up")
                .publish(Event::message("x"))
                .await
                .is_ok()
        })
        .await;
    }
    for i in 21..=40 {
        let hub = if i % 2 == 0 { &a } else { &b };
        publish(hub, "t", &i.to_string()).await;
    }
    // Redis lost the old epoch: each subscriber is told so once, then gets every new event.
    for sub in [&mut on_a, &mut on_b] {
        let got = take(sub, 21).await;
        assert_eq!(got[0].event, HISTORY_LOST);
        assert_eq!(data(&got[1..]), numbers(21..=40));
        let offsets = offsets(&got[1..]);
        assert_eq!(offsets[0].1, 1);
        assert!(offsets.windows(2).all(|w| w[1].1 == w[0].1 + 1));
    }
    // A client that comes back with an id from before the restart is told too.
    let (c, _) = node(&server);
    let mut resumed = c.topic("t").subscribe(Some(&id(&last)));
    assert_eq!(take(&mut resumed, 1).await[0].event, HISTORY_LOST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_thousand_subscribers_share_one_pubsub_connection_per_node() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _) = node(&server);
    let mut subs = Vec::new();
    for hub in [&a, &b] {
        for topic in 0..10 {
            let name = format!("t{topic}");
            subs.push(live(hub, &a, &name).await);
            for _ in 0..49 {
                let mut sub = hub.topic(&name).subscribe(None);
                sub.join();
                subs.push(sub);
            }
        }
    }
    assert_eq!(subs.len(), 1000);
    for topic in 0..10 {
        publish(&b, &format!("t{topic}"), "to all").await;
    }
    for sub in &mut subs {
        assert_eq!(data(&take(sub, 1).await), ["to all"]);
    }
    let mut admin = server.admin().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let pubsub: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    println!("CLIENT LIST with 1,000 subscribers on 2 nodes:\n{list}");
    assert_eq!(pubsub.lines().count(), 2, "one pub/sub connection per node");
    // Per node: the pub/sub connection and one for publishing and reading; plus ours.
    assert!(list.lines().count() <= 5, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn junk_on_a_channel_is_dropped_and_counted_and_own_ids_are_refused() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let mut sub = live(&a, &a, "t").await;
    let mut admin = server.admin().await;
    for junk in [
        "nonsense",
        "abc 99 id: 1\ndata: x\n\n",
        "abc 99 data: x\n\nevent: forged\ndata: y\n\n",
        "a-b 99 data: x\n\n",
        // Well formed, but from nowhere: a gap, which makes the node sync, and is then dropped.
        "abc 99 data: x\n\n",
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("tower-sse:c:t")
            .arg(junk)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    publish(&a, "t", "real").await;
    let got = take(&mut sub, 1).await;
    assert_eq!(data(&got), ["real"]);
    // Nothing else arrived (a marker of `live` still on its way aside).
    let mut decoder = Decoder::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        for message in decoder.feed(event.as_bytes()) {
            assert_eq!(message.data, MARKER, "{message:?}");
        }
    }
    assert_eq!(a.stats().rejected, 4, "the last one was a gap, not junk");

    let own = Event::builder().id("mine").data("x").build().unwrap();
    assert!(matches!(
        a.topic("t").publish(own).await,
        Err(PublishError::OwnId)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_node_subscribes_while_it_has_subscribers_and_per_node_policies_still_apply() {
    let server = RedisServer::start().await;
    let joins = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = joins.clone();
    let (a, _) = node_with(
        &server,
        Hub::builder().max_lag(3, 1 << 20).on_join(move |_, _| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }),
    );
    let (b, _) = node(&server);
    let mut admin = server.admin().await;
    let numsub = |admin: &mut redis::aio::MultiplexedConnection| {
        let mut admin = admin.clone();
        async move {
            let got: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("tower-sse:c:t")
                .query_async(&mut admin)
                .await
                .unwrap();
            got.1
        }
    };
    assert_eq!(numsub(&mut admin).await, 0, "nobody follows yet");
    let mut reader = live(&a, &b, "t").await;
    let mut idle = a.topic("t").subscribe(None);
    idle.join();
    assert_eq!(numsub(&mut admin).await, 1, "one subscription for the node");
    assert_eq!(joins.load(std::sync::atomic::Ordering::Relaxed), 2);
    // The lag policy applies per node: the subscriber that does not read is evicted.
    for i in 1..=10 {
        publish(&b, "t", &i.to_string()).await;
        assert_eq!(data(&take(&mut reader, 1).await), [i.to_string()]);
    }
    let mut decoder = Decoder::new();
    let first = tokio::time::timeout(PATIENCE, idle.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        decoder.feed(first.as_bytes())[0].event,
        tower_sse::hub::EVICTED
    );
    assert_eq!(a.stats().evicted, 1);
    drop((reader, idle));
    // The last subscriber gone, the node unsubscribes.
    eventually("the node unsubscribes", || async {
        numsub(&mut admin.clone()).await == 0
    })
    .await;
    // And follows again for a new subscriber, with the history in between.
    let last = publish(&b, "t", "11").await;
    publish(&b, "t", "12").await;
    let mut back = a.topic("t").subscribe(Some(&id(&last)));
    assert_eq!(data(&take(&mut back, 1).await), ["12"]);
    assert_eq!(numsub(&mut admin).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_gap_longer_than_the_history_is_told_as_history_lost() {
    let server = RedisServer::start().await;
    // A node whose history is 5 events, and which waits at least 3 s before reconnecting.
    let broker = RedisBroker::new(server.client())
        .publish_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_secs(3), Duration::from_secs(3));
    let a = Hub::builder().history(5).broker(broker.clone()).build();
    let (b, _) = node(&server);
    let mut on_a = live(&a, &b, "t").await;
    for i in 1..=10 {
        publish(&b, "t", &i.to_string()).await;
        assert_eq!(data(&take(&mut on_a, 1).await), [i.to_string()]);
    }
    kill_pubsub_connections(&server).await;
    // While node A is away, more is published than its history can bring back.
    for i in 11..=30 {
        publish(&b, "t", &i.to_string()).await;
    }
    let got = take(&mut on_a, 1).await;
    assert_eq!(got[0].event, HISTORY_LOST, "{got:?}");
    assert_eq!(broker.reconnects(), 1);
    // Then what the history still had, up to the newest, with no gap among them.
    let rest = take(&mut on_a, 5).await;
    assert_eq!(data(&rest), numbers(26..=30));
    publish(&b, "t", "31").await;
    assert_eq!(data(&take(&mut on_a, 1).await), ["31"]);
    assert_eq!(a.stats().history_lost, 1);
}

// One thread, so that the publish tasks log where `logs_of` listens.
#[tokio::test]
async fn a_redis_that_never_answers_fails_publishes_in_bounded_time_and_bounds_the_queue() {
    // Accepts connections and never answers: no redis-server needed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let broker = RedisBroker::new(client)
        .publish_timeout(Duration::from_secs(2))
        .max_pending(1);
    let hub = Hub::builder().broker(broker.clone()).build();
    let topic = hub.topic("t");
    let (first, second) = (
        topic.publish(Event::message("1")),
        topic.publish(Event::message("2")),
    );
    let (answers, logs) = common::logs_of(tokio::time::timeout(PATIENCE, async {
        (first.await, second.await)
    }))
    .await;
    let (first, second) = answers.expect("both publishes answer");
    assert_eq!(logs.matches("hub publish failed").count(), 2, "{logs}");
    let results = [first, second];
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Err(PublishError::Overloaded)))
            .count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(
                r,
                Err(PublishError::Timeout(_) | PublishError::Unavailable(_))
            ))
            .count(),
        1,
        "{results:?}"
    );
    assert_eq!(hub.stats().publish_failed, 2);
    assert!(!broker.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn an_idle_topic_expires_and_its_next_event_starts_a_new_epoch() {
    let server = RedisServer::start().await;
    let broker = RedisBroker::new(server.client()).topic_ttl(Duration::from_secs(1));
    let a = Hub::builder().broker(broker).build();
    let first = publish(&a, "t", "before").await;
    let ttl: i64 = redis::cmd("TTL")
        .arg("tower-sse:s:t")
        .query_async(&mut server.admin().await)
        .await
        .unwrap();
    assert!((0..=1).contains(&ttl), "the history expires: {ttl}");
    // Wait until Redis has dropped the idle topic (it expires keys within a second or so).
    eventually("the topic expires", || async {
        let exists: i64 = redis::cmd("EXISTS")
            .arg("tower-sse:m:t")
            .query_async(&mut server.admin().await)
            .await
            .unwrap();
        exists == 0
    })
    .await;
    let second = publish(&a, "t", "after").await;
    assert!(second.ends_with("-1"), "{second}");
    assert_ne!(first.split('-').next(), second.split('-').next());
    let (b, _) = node(&server);
    let mut resumed = b.topic("t").subscribe(Some(&id(&first)));
    assert_eq!(take(&mut resumed, 1).await[0].event, HISTORY_LOST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn the_stream_is_trimmed_by_count_and_by_age() {
    let server = RedisServer::start().await;
    let xlen = |key: &'static str| {
        let server = &server;
        async move {
            let len: i64 = redis::cmd("XLEN")
                .arg(key)
                .query_async(&mut server.admin().await)
                .await
                .unwrap();
            len
        }
    };
    // By count: `MAXLEN ~ 10` keeps 10 and at most one block of Redis's (100 entries) more.
    let (a, _) = node_with(&server, Hub::builder().history(10));
    for i in 0..300 {
        publish(&a, "count", &i.to_string()).await;
    }
    let kept = xlen("tower-sse:s:count").await;
    assert!((10..=110).contains(&kept), "{kept}");
    // By age: once the first 150 events are older than the age, the next publish drops their
    // first full block.
    let (b, _) = node_with(&server, Hub::builder().history_age(Duration::from_secs(1)));
    for i in 0..150 {
        publish(&b, "age", &i.to_string()).await;
    }
    assert_eq!(xlen("tower-sse:s:age").await, 150);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publish(&b, "age", "new").await;
    let kept = xlen("tower-sse:s:age").await;
    assert!(kept <= 51, "{kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn hubs_with_another_prefix_share_nothing() {
    let server = RedisServer::start().await;
    let with_prefix = |prefix: &str| {
        Hub::builder()
            .broker(RedisBroker::new(server.client()).prefix(prefix))
            .build()
    };
    let (app_a, app_a_too, app_b) = (with_prefix("a"), with_prefix("a"), with_prefix("b"));
    let mut same_app = live(&app_a_too, &app_a, "t").await;
    let mut other_app = live(&app_b, &app_b, "t").await;
    publish(&app_a, "t", "for a").await;
    publish(&app_b, "t", "for b").await;
    assert_eq!(data(&take(&mut same_app, 1).await), ["for a"]);
    assert_eq!(data(&take(&mut other_app, 1).await), ["for b"]);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut server.admin().await)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("a:") || k.starts_with("b:")),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_client_resuming_on_a_node_behind_redis_continues_right_after_its_id() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _, _proxy) = lagging_node(&server, Duration::from_millis(300), Hub::builder()).await;
    // B follows the topic (it has a subscriber), 300 ms behind Redis.
    let _watcher = live(&b, &a, "t").await;
    let mut ids = Vec::new();
    for i in 1..=60 {
        ids.push(publish(&a, "t", &i.to_string()).await);
    }
    // The client read up to 55 on A and moves to B at once: B has not received 55 yet.
    let mut moved = b.topic("t").subscribe(Some(&id(&ids[54])));
    assert_eq!(data(&take(&mut moved, 5).await), numbers(56..=60));
    publish(&a, "t", "61").await;
    assert_eq!(data(&take(&mut moved, 1).await), ["61"]);
    assert_eq!(b.stats().history_lost, 0);

    // An id of the current epoch beyond what Redis holds is not waited for: it is lost.
    let epoch = ids[0].rsplit_once('-').unwrap().0;
    let mut forged = b.topic("t").subscribe(Some(&id(&format!("{epoch}-9999"))));
    let first = tokio::time::timeout(PATIENCE, forged.next())
        .await
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(first.as_bytes())
        .unwrap()
        .contains(HISTORY_LOST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_history_read_made_for_an_earlier_follow_is_never_applied_to_a_later_one() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _, _proxy) = lagging_node(&server, Duration::from_millis(50), Hub::builder()).await;
    let topic = b.topic("t");
    for cycle in 0..40 {
        publish(&a, "t", &format!("churn {cycle}")).await;
        let mut sub = topic.subscribe(None);
        sub.join(); // B follows, and starts a read that is still on its way when it unfollows
        tokio::time::sleep(Duration::from_millis(cycle % 7)).await;
        drop(sub);
    }
    let before = publish(&a, "t", "just before").await;
    let mut sub = topic.subscribe(Some(&id(&before)));
    sub.join();
    publish(&a, "t", "next").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["next"]);
    publish(&a, "t", "after").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["after"]);
    assert_eq!(b.stats().history_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn history_age_gives_one_answer_on_every_node() {
    let server = RedisServer::start().await;
    let aged = || Hub::builder().history_age(Duration::from_secs(1));
    let (a, _) = node_with(&server, aged());
    let (b, _) = node_with(&server, aged());
    // A follows the topic and gets the events live; B reads them from Redis later.
    let _watcher = live(&a, &a, "t").await;
    let first = publish(&a, "t", "one").await;
    publish(&a, "t", "two").await;
    publish(&a, "t", "three").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut on_a = a.topic("t").subscribe(Some(&id(&first)));
    let mut on_b = b.topic("t").subscribe(Some(&id(&first)));
    for (node, sub) in [("A", &mut on_a), ("B", &mut on_b)] {
        let got = take(sub, 1).await;
        assert_eq!(
            got[0].event, HISTORY_LOST,
            "on {node}: two and three are older than 1 s"
        );
    }
    let now = publish(&a, "t", "now").await;
    for sub in [&mut on_a, &mut on_b] {
        let got = take(sub, 1).await;
        assert_eq!(
            (got[0].data.as_str(), got[0].last_event_id.as_str()),
            ("now", now.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn every_event_the_builder_makes_crosses_redis_and_costs_nothing_after_it() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _) = node(&server);
    let mut on_a = live(&a, &a, "t").await;
    let mut on_b = live(&b, &a, "t").await;
    let odd = [
        Event::builder()
            .event("")
            .data("empty name")
            .build()
            .unwrap(),
        Event::builder().event(" spaced ").data("").build().unwrap(),
        Event::builder()
            .comment("")
            .data(" lead\r\ntrail ")
            .build()
            .unwrap(),
        Event::builder().data("after").build().unwrap(),
    ];
    for event in odd.iter().cloned() {
        tokio::time::timeout(PATIENCE, a.topic("t").publish(event))
            .await
            .unwrap()
            .unwrap();
    }
    for sub in [&mut on_a, &mut on_b] {
        let got = take(sub, 4).await;
        let seen: Vec<(&str, &str)> = got
            .iter()
            .map(|m| (m.event.as_str(), m.data.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("message", "empty name"),
                (" spaced ", ""),
                ("message", " lead\ntrail "),
                ("message", "after")
            ]
        );
    }
    assert_eq!((a.stats().rejected, b.stats().history_lost), (0, 0));

    // One junk entry in the stream costs nothing after it, live or read back.
    let mut admin = server.admin().await;
    let (epoch, head) = {
        let last = publish(&a, "t", "last good").await;
        let (epoch, head) = last.rsplit_once('-').unwrap();
        (epoch.to_owned(), head.parse::<u64>().unwrap())
    };
    take(&mut on_a, 1).await;
    let _: i64 = redis::cmd("HINCRBY")
        .arg("tower-sse:m:t")
        .arg("s")
        .arg(1)
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("tower-sse:s:t")
        .arg("*")
        .arg("o")
        .arg(head + 1)
        .arg("d")
        .arg("id: forged\ndata: x\n\n")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("tower-sse:c:t")
        .arg(format!("{epoch} {} 1 id: forged\ndata: x\n\n", head + 1))
        .query_async(&mut admin)
        .await
        .unwrap();
    publish(&a, "t", "still here").await;
    assert_eq!(data(&take(&mut on_a, 1).await), ["still here"]);
    let (c, _) = node(&server);
    let mut resumed = c
        .topic("t")
        .subscribe(Some(&id(&format!("{epoch}-{head}"))));
    assert_eq!(data(&take(&mut resumed, 1).await), ["still here"]);
    assert_eq!(c.stats().history_lost, 0);
}

/// "the Redis engine runs one read at a time per topic, so a burst of resumes shares its reads":
/// 300 clients resume at once on a node 200 ms behind Redis, each from an event that node has
/// not received yet, and each asks for a read begun after it before the node's broker gets to
/// run (one thread: the broker runs when the test yields). One read per request would be 300.
/// Then 100 more resume one after another while reads are under way.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_burst_of_resumes_on_a_lagging_node_shares_its_history_reads() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _, _proxy) = lagging_node(&server, Duration::from_millis(200), Hub::builder()).await;
    let _watcher = live(&b, &a, "t").await;
    let mut ids = Vec::new();
    for i in 1..=10u32 {
        ids.push(publish(&a, "t", &i.to_string()).await);
    }
    let reads_before = b.stats().history_reads;
    let mut moved = Vec::new();
    for k in 0..300 {
        let from = 1 + k % 10;
        let mut sub = b.topic("t").subscribe(Some(&id(&ids[from as usize - 1])));
        // Polled at once, as a server polls a new stream: it asks for its read now.
        assert!(sub.next().now_or_never().is_none());
        moved.push((from, sub));
    }
    for i in 11..=110u32 {
        let id_seen = publish(&a, "t", &i.to_string()).await;
        let mut sub = b.topic("t").subscribe(Some(&id(&id_seen)));
        assert!(sub.next().now_or_never().is_none(), "nothing after {i} yet");
        moved.push((i, sub));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    publish(&a, "t", "111").await;
    for (from, sub) in &mut moved {
        let want = numbers(*from + 1..=111);
        assert_eq!(
            data(&take(sub, want.len()).await),
            want,
            "resumed after {from}"
        );
    }
    let reads = b.stats().history_reads - reads_before;
    println!("history reads for 400 resumes on a node 200 ms behind: {reads}");
    assert!(reads >= 1, "the resumes needed a read");
    assert!(reads <= 20, "{reads} reads for 400 resumes");
    assert_eq!(b.stats().history_lost, 0);
}
