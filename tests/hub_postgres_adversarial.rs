//! A hostile pass over the Postgres engine: each test takes one promise of
//! `tower_sse::hub::postgres` (and of the broker seam it keeps) and tries to break it against a
//! real PostgreSQL cluster of its own.
//!
//! Each needs Debian's `postgresql`, so each is `#[ignore]`d; run them with
//! `cargo test --features postgres --test hub_postgres_adversarial -- --ignored`.

mod common;

use common::hub::*;
use common::postgres::PgServer;
use futures_util::StreamExt;
use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tower_sse::{
    decode::Message,
    hub::{
        postgres::{PostgresBroker, MIGRATION},
        Hub, HubBuilder, PublishError, Subscription, HISTORY_LOST,
    },
    Event, Grants,
};

fn broker_on(pool: sqlx::PgPool) -> PostgresBroker {
    PostgresBroker::new(pool)
        .publish_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

fn pg_node(server: &PgServer) -> (Hub, PostgresBroker) {
    pg_node_with(server, Hub::builder())
}

fn pg_node_with(server: &PgServer, builder: HubBuilder) -> (Hub, PostgresBroker) {
    let broker = broker_on(server.pool(8));
    (builder.broker(broker.clone()).build(), broker)
}

fn offsets(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| split_id(&m.last_event_id).1)
        .collect()
}

fn consecutive(offsets: &[u64]) -> bool {
    offsets.windows(2).all(|w| w[1] == w[0] + 1)
}

/// A cheap deterministic shuffle: a random-looking number per `(seed, n)`.
fn mix(seed: u64, n: u64) -> u64 {
    let mut x = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(n.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 29)
}

/// What arrives within `window` (markers left out): the check that nothing more comes.
async fn quiet(sub: &mut Subscription, window: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    let deadline = Instant::now() + window;
    let mut decoder = tower_sse::decode::Decoder::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, sub.next()).await {
        out.extend(
            decoder
                .feed(event.as_bytes())
                .into_iter()
                .filter(|m| m.data != MARKER),
        );
    }
    out
}

/// Publishes with retries while the pool's connections are being made again.
async fn publish_retrying(hub: &Hub, topic: &str, data: &str) -> String {
    for _ in 0..100 {
        match hub.topic(topic).publish(Event::message(data)).await {
            Ok(id) => return id,
            Err(err) => eprintln!("publish {data}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("publishing {data} never worked again");
}

/// Runs `sql` (one or more statements, on the simple protocol).
async fn exec(admin: &mut sqlx::PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(&mut *admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The first dispatched message, markers left out.
async fn first(sub: &mut Subscription) -> Message {
    take(sub, 1).await.remove(0)
}

// ---------------------------------------------------------------------------------------------
// Transactional publish

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn transactions_on_three_nodes_over_several_topics_deliver_exactly_the_commits_in_id_order() {
    let server = PgServer::start().await;
    let topics = ["alpha", "beta", "gamma"];
    let mut nodes = Vec::new();
    let mut pools = Vec::new();
    for _ in 0..3 {
        let pool = server.pool(12);
        nodes.push(Hub::builder().broker(broker_on(pool.clone())).build());
        pools.push(pool);
    }
    // Every node subscribes to every topic.
    let mut subs: BTreeMap<(usize, &str), Subscription> = BTreeMap::new();
    for (n, hub) in nodes.iter().enumerate() {
        for topic in topics {
            subs.insert((n, topic), live(hub, &nodes[0], topic).await);
        }
    }
    let mut tasks = Vec::new();
    for t in 0..90u64 {
        let node = (t % 3) as usize;
        let hub = nodes[node].clone();
        let pool = pools[node].clone();
        tasks.push(tokio::spawn(async move {
            let r = mix(7, t);
            // One to three topics, always in sorted order.
            let mut chosen: Vec<&str> = topics
                .iter()
                .copied()
                .enumerate()
                .filter(|(i, _)| (r >> i) & 1 == 1 || (r % 3) as usize == *i)
                .map(|(_, t)| t)
                .collect();
            chosen.sort_unstable();
            let mut tx = pool.begin().await.unwrap();
            tokio::time::sleep(Duration::from_millis(r % 9)).await;
            let mut ids = Vec::new();
            for topic in &chosen {
                let id = hub
                    .topic(topic)
                    .publish_in(&mut tx, Event::message(format!("{t}:{topic}")))
                    .await
                    .unwrap();
                ids.push((topic.to_string(), id));
                tokio::time::sleep(Duration::from_millis((r >> 8) % 5)).await;
            }
            let commit = (r >> 16) % 4 != 0;
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            (t, ids, commit)
        }));
    }
    let mut committed: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for task in tasks {
        let (t, ids, commit) = task.await.unwrap();
        if commit {
            for (topic, id) in ids {
                committed
                    .entry(topic.clone())
                    .or_default()
                    .push((split_id(&id).1, format!("{t}:{topic}")));
            }
        }
    }
    for topic in topics {
        let mut expected = committed.remove(topic).unwrap_or_default();
        expected.sort();
        for n in 0..3 {
            let sub = subs.get_mut(&(n, topic)).unwrap();
            let got = take(sub, expected.len()).await;
            let got: Vec<(u64, String)> = offsets(&got).into_iter().zip(data(&got)).collect();
            assert_eq!(
                got, expected,
                "node {n}, topic {topic}: exactly the commits"
            );
            let offs: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
            assert!(consecutive(&offs), "node {n}, {topic}: {offs:?}");
            let extra = quiet(sub, Duration::from_millis(300)).await;
            assert!(
                extra.is_empty(),
                "node {n}, {topic}: nothing more: {extra:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_transaction_aborted_by_an_error_or_dropped_delivers_nothing_and_frees_its_id() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    let a = Hub::builder().broker(broker_on(pool.clone())).build();
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let start = split_id(&publish(&a, "t", "start").await).1;
    assert_eq!(data(&take(&mut sub, 1).await), ["start"]);

    // Published, then a statement fails: the transaction is aborted, then rolled back.
    let mut tx = pool.begin().await.unwrap();
    let aborted = a
        .topic("t")
        .publish_in(&mut tx, Event::message("aborted"))
        .await
        .unwrap();
    let failed = sqlx::query("SELECT 1/0").execute(&mut *tx).await;
    assert!(failed.is_err());
    // A publish in the aborted transaction is refused, typed.
    let refused = a
        .topic("t")
        .publish_in(&mut tx, Event::message("in an aborted transaction"))
        .await;
    assert!(
        matches!(refused, Err(PublishError::Unavailable(_))),
        "{refused:?}"
    );
    tx.rollback().await.unwrap();

    // Published, then dropped without commit or rollback.
    {
        let mut tx = pool.begin().await.unwrap();
        a.topic("t")
            .publish_in(&mut tx, Event::message("dropped"))
            .await
            .unwrap();
    }
    // Published on a savepoint that is rolled back; the transaction then commits.
    let mut tx = pool.begin().await.unwrap();
    let kept = a
        .topic("t")
        .publish_in(&mut tx, Event::message("kept"))
        .await
        .unwrap();
    exec(&mut tx, "SAVEPOINT s").await;
    let undone = a
        .topic("t")
        .publish_in(&mut tx, Event::message("undone"))
        .await
        .unwrap();
    exec(&mut tx, "ROLLBACK TO SAVEPOINT s").await;
    let after = a
        .topic("t")
        .publish_in(&mut tx, Event::message("after savepoint"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // On a plain connection of the pool: the statement commits on its own.
    let mut conn = pool.acquire().await.unwrap();
    let plain = a
        .topic("t")
        .publish_in(&mut conn, Event::message("autocommit"))
        .await
        .unwrap();
    drop(conn);

    assert_eq!(split_id(&aborted).1, start + 1);
    assert_eq!(split_id(&kept).1, start + 1, "the aborted one freed its id");
    assert_eq!(split_id(&undone).1, start + 2);
    assert_eq!(split_id(&after).1, start + 2, "the savepoint freed its id");
    assert_eq!(split_id(&plain).1, start + 3);
    let got = take(&mut sub, 3).await;
    assert_eq!(data(&got), ["kept", "after savepoint", "autocommit"]);
    assert_eq!(offsets(&got), [start + 1, start + 2, start + 3]);
    let ids: Vec<String> = got.iter().map(|m| m.last_event_id.clone()).collect();
    assert_eq!(ids, [kept, after, plain], "the ids publish_in returned");
    let extra = quiet(&mut sub, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "nothing of the undone ones: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_long_transaction_makes_publishes_wait_and_lock_timeout_or_publish_timeout_bound_them() {
    let server = PgServer::start().await;
    let pool = server.pool(8);
    let broker = broker_on(pool.clone()).publish_timeout(Duration::from_secs(10));
    let a = Hub::builder().broker(broker).build();
    let quick = broker_on(server.pool(4)).publish_timeout(Duration::from_millis(400));
    let q = Hub::builder().broker(quick).build();
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;

    // A transaction holds the topic; a plain publish waits for it, and does not fail.
    let mut holder = pool.begin().await.unwrap();
    let held = a
        .topic("t")
        .publish_in(&mut holder, Event::message("held"))
        .await
        .unwrap();
    let waiting = a.topic("t").publish(Event::message("waited"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Another topic does not wait.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        a.topic("other").publish(Event::message("x")),
    )
    .await;
    assert!(matches!(other, Ok(Ok(_))), "{other:?}");
    holder.commit().await.unwrap();
    let waited = waiting.await.unwrap();
    assert_eq!(split_id(&waited).1, split_id(&held).1 + 1);

    // Held again: a transaction with a lock_timeout fails in bounded time, typed; a plain
    // publish fails within its publish timeout.
    let mut holder = pool.begin().await.unwrap();
    let held2 = a
        .topic("t")
        .publish_in(&mut holder, Event::message("held again"))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    exec(&mut tx, "SET LOCAL lock_timeout = '300ms'").await;
    let started = Instant::now();
    let bounded = a.topic("t").publish_in(&mut tx, Event::message("no")).await;
    assert!(
        matches!(&bounded, Err(PublishError::Unavailable(why)) if why.contains("55P03")),
        "{bounded:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    tx.rollback().await.unwrap();
    let started = Instant::now();
    let timed_out = q.topic("t").publish(Event::message("timed out")).await;
    assert!(
        matches!(timed_out, Err(PublishError::Timeout(_))),
        "{timed_out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    holder.commit().await.unwrap();

    // What was delivered: every commit, in id order, no gap; the timed-out publish may have
    // committed after all (then it is delivered), nothing else.
    let got = take(&mut sub, 3).await;
    assert_eq!(data(&got), ["held", "waited", "held again"]);
    assert!(split_id(&held2).1 == split_id(&waited).1 + 1);
    let after = publish(&a, "t", "after").await;
    let mut rest = take(&mut sub, 1).await;
    if rest[0].data == "timed out" {
        rest.extend(take(&mut sub, 1).await);
    }
    assert_eq!(rest.last().unwrap().data, "after");
    let mut all = got;
    all.extend(rest);
    assert!(consecutive(&offsets(&all)), "{:?}", offsets(&all));
    assert_eq!(all.last().unwrap().last_event_id, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn max_pending_refuses_the_excess_at_once_while_a_topic_is_held() {
    let server = PgServer::start().await;
    let pool = server.pool(8);
    let broker = broker_on(pool.clone())
        .publish_timeout(Duration::from_secs(3))
        .max_pending(2);
    let a = Hub::builder().broker(broker).build();
    publish(&a, "t", "warm").await;
    let mut holder = pool.begin().await.unwrap();
    a.topic("t")
        .publish_in(&mut holder, Event::message("held"))
        .await
        .unwrap();
    let pending: Vec<_> = (0..6)
        .map(|i| a.topic("t").publish(Event::message(i.to_string())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Transactional publishes are not counted: one more on another topic goes through.
    let mut tx = pool.begin().await.unwrap();
    let free = tokio::time::timeout(
        Duration::from_secs(5),
        a.topic("other").publish_in(&mut tx, Event::message("free")),
    )
    .await;
    assert!(matches!(free, Ok(Ok(_))), "{free:?}");
    tx.commit().await.unwrap();
    holder.commit().await.unwrap();
    let mut overloaded = 0;
    let mut ok = 0;
    for p in pending {
        match p.await {
            Ok(_) => ok += 1,
            Err(PublishError::Overloaded) => overloaded += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, overloaded), (2, 4));
}

// ---------------------------------------------------------------------------------------------
// Resume anywhere, nodes that come and go

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_client_resumes_on_a_node_built_again_or_joining_late_under_transactional_publishing() {
    let server = PgServer::start().await;
    let pool = server.pool(8);
    let publisher = Hub::builder().broker(broker_on(pool.clone())).build();
    let (a, _) = pg_node(&server);
    for trial in 0..10u64 {
        let topic = format!("resume-{trial}");
        let mut first_sub = live(&a, &publisher, &topic).await;
        let total = 40u64;
        let sender = {
            let hub = publisher.clone();
            let pool = pool.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut committed = Vec::new();
                let mut n = 0u64;
                while committed.len() < total as usize {
                    let r = mix(trial, n);
                    let mut tx = pool.begin().await.unwrap();
                    hub.topic(&topic)
                        .publish_in(&mut tx, Event::message(n.to_string()))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(r % 4)).await;
                    if r % 5 == 0 {
                        tx.rollback().await.unwrap();
                    } else {
                        tx.commit().await.unwrap();
                        committed.push(n.to_string());
                    }
                    n += 1;
                }
                committed
            })
        };
        let k = 3 + trial as usize;
        let seen = take(&mut first_sub, k).await;
        let last = seen.last().unwrap().last_event_id.clone();
        drop(first_sub);
        // The other node: built anew (a server restarted) in even trials, one that was running
        // and never followed the topic in odd ones.
        let other = if trial % 2 == 0 {
            pg_node(&server).0
        } else {
            a.clone()
        };
        let mut moved = other.topic(&topic).subscribe(Some(&id(&last)));
        let rest = take(&mut moved, total as usize - k).await;
        let committed = sender.await.unwrap();
        let all: Vec<String> = data(&seen).into_iter().chain(data(&rest)).collect();
        assert_eq!(all, committed, "trial {trial}");
        let offs: Vec<u64> = offsets(&seen).into_iter().chain(offsets(&rest)).collect();
        assert!(consecutive(&offs), "trial {trial}: {offs:?}");
        let extra = quiet(&mut moved, Duration::from_millis(200)).await;
        assert!(extra.is_empty(), "trial {trial}: {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_hub_dropped_and_built_again_mid_stream_loses_nothing_for_its_clients() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let mut b = pg_node(&server).0;
    let mut sub = live(&b, &a, "t").await;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                publish(&a, "t", &i.to_string()).await;
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let mut all: Vec<Message> = Vec::new();
    for round in 0..5 {
        all.extend(take(&mut sub, 20).await);
        let last = all.last().unwrap().last_event_id.clone();
        drop(sub);
        drop(b);
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        b = pg_node(&server).0;
        sub = b.topic("t").subscribe(Some(&id(&last)));
    }
    all.extend(take(&mut sub, 150 - all.len()).await);
    sender.await.unwrap();
    assert_eq!(data(&all), numbers(0..=149));
    assert!(consecutive(&offsets(&all)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn dropped_hubs_close_their_listening_connections_within_a_poll_period() {
    let server = PgServer::start().await;
    let (keeper, _) = pg_node(&server);
    let count = || {
        let pool = server.pool(1);
        async move {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tower-sse'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            n
        }
    };
    eventually("the keeper connected", || async { count().await == 1 }).await;
    for round in 0..3 {
        let mut hubs = Vec::new();
        for _ in 0..4 {
            let (hub, _) = pg_node(&server);
            let sub = live(&hub, &keeper, &format!("t{round}")).await;
            hubs.push((hub, sub));
        }
        assert_eq!(count().await, 5, "round {round}: one connection per hub");
        drop(hubs);
        // poll_interval is 500 ms here: allow ten times that.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = count().await;
            if n == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {n} tower-sse connections 5 s after the hubs were dropped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(keeper);
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn the_listener_terminated_again_and_again_during_a_burst_costs_no_event() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, broker_b) = pg_node(&server);
    let (c, _) = pg_node(&server);
    let mut subs = [live(&b, &a, "t").await, live(&c, &a, "t").await];
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let mut admin = server.admin().await;
        tokio::spawn(async move {
            let mut kills = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let killed: Vec<(bool,)> = sqlx::query_as(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = 'tower-sse' AND pid <> pg_backend_pid()",
                )
                .fetch_all(&mut admin)
                .await
                .unwrap();
                kills += killed.len() as u64;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            kills
        })
    };
    for i in 0..300 {
        publish(&a, "t", &i.to_string()).await;
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    assert!(kills >= 5, "the listeners were cut ({kills})");
    for (n, sub) in subs.iter_mut().enumerate() {
        let got = take(sub, 300).await;
        assert_eq!(data(&got), numbers(0..=299), "node {n}");
        assert!(consecutive(&offsets(&got)), "node {n}");
        let extra = quiet(sub, Duration::from_millis(300)).await;
        assert!(extra.is_empty(), "node {n}: {extra:?}");
    }
    assert!(broker_b.reconnects() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn postgres_restarted_during_a_burst_delivers_each_success_once_in_order() {
    let mut server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, broker_b) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let a = a.clone();
        let results = results.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            for i in 0..5000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let r = a.topic("t").publish(Event::message(i.to_string())).await;
                // publish_timeout is 2 s; allow five times that.
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "publish {i} hung"
                );
                results.lock().unwrap().push((i, r));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let count = |ok: bool| {
        let results = results.clone();
        move || {
            let n = results
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, r)| r.is_ok() == ok)
                .count();
            async move { n }
        }
    };
    let (oks, fails) = (count(true), count(false));
    eventually("publishes before the kill", || {
        let n = oks();
        async move { n.await >= 20 }
    })
    .await;
    server.kill();
    eventually("a publish fails while it is down", || {
        let n = fails();
        async move { n.await >= 1 }
    })
    .await;
    server.restart().await;
    let before = oks().await;
    eventually("publishes after the restart", || {
        let n = oks();
        async move { n.await >= before + 20 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();
    let tail = publish_retrying(&a, "t", "tail").await;
    let results = std::mem::take(&mut *results.lock().unwrap());
    let ok: Vec<(u32, String)> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().ok().map(|id| (*i, id.clone())))
        .collect();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    assert!(failed > 0, "the restart was felt");
    assert!(ok.len() >= 40, "{} succeeded", ok.len());
    // Read until the tail: every success once, at its id; failures at most once.
    let mut got = Vec::new();
    loop {
        let m = first(&mut sub).await;
        let end = m.data == "tail";
        got.push(m);
        if end {
            break;
        }
    }
    assert_eq!(got.last().unwrap().last_event_id, tail);
    assert!(
        got.iter().all(|m| m.event != HISTORY_LOST),
        "no history lost: the history holds all"
    );
    assert!(consecutive(&offsets(&got)), "{:?}", offsets(&got));
    let delivered: BTreeMap<String, String> = got
        .iter()
        .map(|m| (m.data.clone(), m.last_event_id.clone()))
        .collect();
    assert_eq!(delivered.len(), got.len(), "no duplicate");
    for (i, id) in &ok {
        assert_eq!(
            delivered.get(&i.to_string()),
            Some(id),
            "success {i} delivered at its id"
        );
    }
    let order: Vec<u32> = got.iter().filter_map(|m| m.data.parse().ok()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(broker_b.reconnects() >= 1);
}

/// A TCP proxy to Postgres that can be frozen: while frozen it forwards nothing either way (a
/// network that drops packets, a server that stopped answering).
struct FreezingProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    async fn start(upstream: u16) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pipe(cr, sw, flag.clone()));
                    tokio::spawn(pipe(sr, cw, flag));
                });
            }
        });
        FreezingProxy { port, frozen }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_postgres_that_stops_answering_fails_publishes_in_time_and_streams_stay_open() {
    let server = PgServer::start().await;
    let proxy = FreezingProxy::start(server.port()).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&proxy.url())
        .unwrap();
    let broker = PostgresBroker::new(pool)
        .publish_timeout(Duration::from_millis(700))
        .read_timeout(Duration::from_millis(700))
        .poll_interval(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let frozen_hub = Hub::builder().broker(broker.clone()).build();
    let (direct, _) = pg_node(&server);
    let mut sub = live(&frozen_hub, &direct, "t").await;
    publish(&direct, "t", "before").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["before"]);

    proxy.frozen.store(true, Ordering::Relaxed);
    for i in 0..3 {
        let started = Instant::now();
        let r = frozen_hub.topic("t").publish(Event::message("lost?")).await;
        assert!(
            matches!(
                r,
                Err(PublishError::Timeout(_) | PublishError::Unavailable(_))
            ),
            "{i}: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{i}: failed in bounded time (its timeout is 700 ms): {:?}",
            started.elapsed()
        );
    }
    eventually("the unanswered read is noticed", || async {
        !broker.is_connected()
    })
    .await;
    // Meanwhile others publish; the frozen node's stream stays open.
    for i in 0..5 {
        publish(&direct, "t", &i.to_string()).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.frozen.store(false, Ordering::Relaxed);
    eventually("connected again", || async { broker.is_connected() }).await;
    let mut got = Vec::new();
    loop {
        let m = first(&mut sub).await;
        if m.data == "4" {
            got.push(m);
            break;
        }
        got.push(m);
    }
    // A publish that timed out may have committed: then it is delivered (as "lost?").
    let real: Vec<String> = data(&got).into_iter().filter(|d| d != "lost?").collect();
    assert_eq!(real, numbers(0..=4));
    assert!(consecutive(&offsets(&got)), "{:?}", offsets(&got));
    assert!(got.iter().all(|m| m.event != HISTORY_LOST));
    publish_retrying(&frozen_hub, "t", "after").await;
    let rest = take(&mut sub, 1).await;
    assert_eq!(data(&rest), ["after"]);
}

// ---------------------------------------------------------------------------------------------
// Retention and epochs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn resuming_from_before_the_retained_history_is_told_history_lost_never_a_silent_gap() {
    let server = PgServer::start().await;
    let (a, _) = pg_node_with(&server, Hub::builder().history(10));
    let mut ids = Vec::new();
    for i in 1..=40 {
        ids.push(publish(&a, "t", &i.to_string()).await);
    }
    // Offsets 23..=40 are still in the table (trimmed at 32, up to 31 more kept); a hub reads
    // back at most 10. Resume from each position on a fresh node.
    for from in [1usize, 20, 25, 29, 30, 31, 35, 39] {
        let (fresh, _) = pg_node_with(&server, Hub::builder().history(10));
        let mut sub = fresh.topic("t").subscribe(Some(&id(&ids[from - 1])));
        let m = first(&mut sub).await;
        if m.event == HISTORY_LOST {
            continue;
        }
        let mut got = vec![m];
        got.extend(take(&mut sub, 40 - from - 1).await);
        let expected: Vec<String> = ((from + 1)..=40).map(|i| i.to_string()).collect();
        assert_eq!(data(&got), expected, "resumed from {from}: no silent gap");
    }
    // By age: events older than history_age are lost, by the database's clock.
    let (aged, _) = pg_node_with(&server, Hub::builder().history_age(Duration::from_secs(1)));
    let old = publish(&aged, "age", "old").await;
    publish(&aged, "age", "old2").await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (fresh, _) = pg_node_with(&server, Hub::builder().history_age(Duration::from_secs(1)));
    let mut sub = fresh.topic("age").subscribe(Some(&id(&old)));
    let m = first(&mut sub).await;
    assert_eq!(m.event, HISTORY_LOST, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn rows_deleted_from_the_middle_of_the_history_are_told_as_history_lost() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let mut ids = Vec::new();
    for i in 1..=10 {
        ids.push(publish(&a, "t", &i.to_string()).await);
    }
    let mut admin = server.admin().await;
    exec(
        &mut admin,
        "DELETE FROM tower_sse_events WHERE topic = 't' AND \"offset\" BETWEEN 5 AND 8",
    )
    .await;
    let (b, _) = pg_node(&server);
    let mut sub = b.topic("t").subscribe(Some(&id(&ids[3])));
    let m = first(&mut sub).await;
    assert_eq!(
        m.event, HISTORY_LOST,
        "resumed from 4 with 5..=8 deleted: got {:?} first",
        m.data
    );
    // And all of it deleted.
    exec(&mut admin, "DELETE FROM tower_sse_events").await;
    let (c, _) = pg_node(&server);
    let mut sub = c.topic("t").subscribe(Some(&id(&ids[1])));
    let m = first(&mut sub).await;
    assert_eq!(m.event, HISTORY_LOST, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn truncated_tables_start_a_new_epoch_and_live_and_resuming_clients_are_told() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let mut old = String::new();
    for i in 0..5 {
        old = publish(&a, "t", &i.to_string()).await;
    }
    assert_eq!(take(&mut sub, 5).await.len(), 5);
    let mut admin = server.admin().await;
    exec(&mut admin, "TRUNCATE tower_sse_topics CASCADE").await;
    let new = publish(&a, "t", "new").await;
    assert_ne!(split_id(&new).0, split_id(&old).0, "a new epoch");
    assert_eq!(split_id(&new).1, 1);
    // The live subscriber: told, then continues in the new epoch.
    let mut got = take(&mut sub, 1).await;
    if got[0].event == HISTORY_LOST {
        got = take(&mut sub, 1).await;
    } else {
        panic!("the live subscriber was not told history-lost: {got:?}");
    }
    assert_eq!(data(&got), ["new"]);
    assert_eq!(got[0].last_event_id, new);
    // A client resuming from the old epoch on another node.
    let (c, _) = pg_node(&server);
    let mut resumed = c.topic("t").subscribe(Some(&id(&old)));
    assert_eq!(first(&mut resumed).await.event, HISTORY_LOST);
}

/// A publish right after the restore, on a node that follows the topic, numbers past what that
/// node delivered: never an id already given to another event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_history_restored_from_an_older_backup_never_hands_an_id_out_twice() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub_a = live(&a, &a, "t").await;
    let mut sub_b = live(&b, &a, "t").await;
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for i in 1..=10 {
        let data = format!("before {i}");
        given.insert(publish(&a, "t", &data).await, data);
    }
    take(&mut sub_a, 10).await;
    take(&mut sub_b, 10).await;
    // The restore: the table as it was five events ago.
    let mut admin = server.admin().await;
    let (head,): (i64,) = sqlx::query_as("SELECT head FROM tower_sse_topics WHERE topic = 't'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    exec(
        &mut admin,
        &format!(
            "BEGIN; DELETE FROM tower_sse_events WHERE topic = 't' AND \"offset\" > {}; \
             UPDATE tower_sse_topics SET head = {} WHERE topic = 't'; COMMIT",
            head - 5,
            head - 5
        ),
    )
    .await;
    // The app publishes right away, on a node that holds the newer ids.
    let mut twice = Vec::new();
    for i in 1..=3 {
        let data = format!("after {i}");
        let id = publish_retrying(&a, "t", &data).await;
        if let Some(earlier) = given.get(&id) {
            twice.push(format!("{id}: {earlier:?} then {data:?}"));
        }
        given.insert(id, data);
    }
    assert!(twice.is_empty(), "ids handed out twice: {twice:?}");
}

/// A commit that takes a restored head past what node B holds, from a node that follows
/// nothing (so it cannot know): B finds another event at its last offset, gives the topic a new
/// epoch, and its client is told history-lost; no client receives two events under one id. (The
/// publisher was handed ids of the old epoch: the module docs say so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_restored_history_overtaken_by_one_transaction_is_never_a_silent_gap() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    // A node that only publishes (it follows nothing), and one whose client is live.
    let publisher = Hub::builder().broker(broker_on(pool.clone())).build();
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &publisher, "t").await;
    for i in 1..=10 {
        publish(&publisher, "t", &format!("before {i}")).await;
    }
    let seen = take(&mut sub, 10).await;
    let held = split_id(&seen.last().unwrap().last_event_id).1;
    let mut admin = server.admin().await;
    exec(
        &mut admin,
        &format!(
            "BEGIN; DELETE FROM tower_sse_events WHERE topic = 't' AND \"offset\" > {back}; \
             UPDATE tower_sse_topics SET head = {back} WHERE topic = 't'; COMMIT",
            back = held - 5
        ),
    )
    .await;
    // One transaction of six events: its commit takes the head past what node B holds.
    let mut tx = pool.begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 1..=6 {
        ids.push(
            publisher
                .topic("t")
                .publish_in(&mut tx, Event::message(format!("after {i}")))
                .await
                .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    let given: HashSet<&str> = seen.iter().map(|m| m.last_event_id.as_str()).collect();
    let reused: Vec<&String> = ids
        .iter()
        .filter(|id| given.contains(id.as_str()))
        .collect();
    let m = first(&mut sub).await;
    let got = if m.event == HISTORY_LOST {
        "history-lost".to_owned()
    } else {
        format!("{:?} at {}", m.data, m.last_event_id)
    };
    let rest = quiet(&mut sub, Duration::from_millis(1500)).await;
    assert_eq!(
        got,
        "history-lost",
        "node B held offset {held}; after the restore it delivered {got} then {:?}; \
         ids handed out twice: {reused:?}",
        data(&rest)
    );
    // Whatever B delivers after that, under no id it delivered before.
    for m in &rest {
        assert!(
            !given.contains(m.last_event_id.as_str()),
            "{m:?} reuses an id"
        );
    }
    // And a client of the restored history resuming from an id of it is told, not misled.
    let mut resumed = b.topic("t").subscribe(Some(&id(&seen[6].last_event_id)));
    assert_eq!(first(&mut resumed).await.event, HISTORY_LOST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_history_restored_while_nodes_follow_is_fenced_and_clients_are_told() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, broker_b) = pg_node(&server);
    let mut sub_b = live(&b, &a, "t").await;
    let mut given = HashSet::new();
    for i in 1..=10 {
        given.insert(publish(&a, "t", &i.to_string()).await);
    }
    take(&mut sub_b, 10).await;
    let mut admin = server.admin().await;
    exec(
        &mut admin,
        "BEGIN; DELETE FROM tower_sse_events WHERE topic = 't' AND \"offset\" > 6; \
         UPDATE tower_sse_topics SET head = 6 WHERE topic = 't'; COMMIT",
    )
    .await;
    // A poll (every 500 ms here) finds it before anyone publishes: two reads begun after the
    // restore, the first of which fences.
    let reads = broker_b.reads();
    eventually("two polls after the restore", || async {
        broker_b.reads() >= reads + 2
    })
    .await;
    let new = publish(&a, "t", "after").await;
    assert!(!given.contains(&new), "{new} was handed out before");
    let m = first(&mut sub_b).await;
    assert_eq!(m.event, HISTORY_LOST, "{m:?}");
    // Then the history as the table holds it, under the new epoch, ending with "after": never
    // an id handed out before.
    loop {
        let m = first(&mut sub_b).await;
        assert!(!given.contains(&m.last_event_id), "{m:?} reuses an id");
        if m.data == "after" {
            assert_eq!(m.last_event_id, new);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn dropped_tables_are_made_again_and_delivery_resumes() {
    let server = PgServer::start().await;
    let (a, broker_a) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    publish(&a, "t", "before").await;
    take(&mut sub, 1).await;
    let mut admin = server.admin().await;
    exec(&mut admin, "DROP TABLE tower_sse_events, tower_sse_topics").await;
    let id = publish_retrying(&a, "t", "after").await;
    assert_eq!(split_id(&id).1, 1, "a new epoch");
    let mut m = first(&mut sub).await;
    if m.event == HISTORY_LOST {
        m = first(&mut sub).await;
    }
    assert_eq!(m.data, "after");
    assert!(broker_a.is_connected() || broker_a.reconnects() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_topic_past_its_time_to_live_starts_a_new_epoch_and_old_ids_are_lost() {
    let server = PgServer::start().await;
    let short = |server: &PgServer| {
        let broker = broker_on(server.pool(4)).topic_ttl(Duration::from_secs(3));
        (Hub::builder().broker(broker.clone()).build(), broker)
    };
    let (a, _) = short(&server);
    let (b, _) = short(&server);
    let mut sub = live(&b, &a, "t").await;
    let old = publish(&a, "t", "old").await;
    take(&mut sub, 1).await;
    // Kept alive by publishes, across reconnections (each of which may look for expired
    // topics): the epoch holds.
    let mut admin = server.admin().await;
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = publish(&a, "t", &format!("alive {i}")).await;
        assert_eq!(split_id(&id).0, split_id(&old).0, "published to: kept");
        exec(
            &mut admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'tower-sse'",
        )
        .await;
    }
    let last = take(&mut sub, 8).await.pop().unwrap().last_event_id;
    // Then nobody publishes for longer than the time to live; nodes look (a new one looks when
    // it connects; a running one within about a minute).
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let (c, _) = short(&server);
    eventually("the topic is deleted", || {
        let pool = server.pool(1);
        async move {
            let (n,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM tower_sse_topics WHERE topic = 't'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            n == 0
        }
    })
    .await;
    let new = publish(&c, "t", "new").await;
    assert_ne!(split_id(&new).0, split_id(&old).0, "a new epoch");
    assert_eq!(split_id(&new).1, 1);
    let m = first(&mut sub).await;
    assert_eq!(m.event, HISTORY_LOST, "the live subscriber is told: {m:?}");
    assert_eq!(first(&mut sub).await.data, "new");
    let mut resumed = c.topic("t").subscribe(Some(&id(&last)));
    assert_eq!(first(&mut resumed).await.event, HISTORY_LOST);
}

// ---------------------------------------------------------------------------------------------
// What the tables hold that is not ours

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn junk_rows_and_notifications_forge_nothing_and_later_events_flow() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let real = publish(&a, "t", "real 0").await;
    take(&mut sub, 1).await;
    let (epoch, _) = split_id(&real);
    let mut admin = server.admin().await;
    // Rows at offsets a reader must never take: negative, zero, far past the head, and the
    // next offsets in another epoch (with a real event's bytes).
    let payload: (Vec<u8>,) =
        sqlx::query_as("SELECT payload FROM tower_sse_events WHERE topic = 't' LIMIT 1")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    for (ep, off) in [
        (epoch.as_str(), -5i64),
        (epoch.as_str(), 0),
        (epoch.as_str(), 1_000_000),
        (epoch.as_str(), i64::MAX),
        ("otherepoch", 3),
        ("otherepoch", 4),
    ] {
        sqlx::query(
            "INSERT INTO tower_sse_events (topic, epoch, \"offset\", payload) \
             VALUES ('t', $1, $2, $3)",
        )
        .bind(ep)
        .bind(off)
        .bind(b"data: forged\n\n".as_slice())
        .execute(&mut admin)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO tower_sse_events (topic, epoch, \"offset\", payload) VALUES ('t', 'x9', 5, $1)",
    )
    .bind(&payload.0)
    .execute(&mut admin)
    .await
    .unwrap();
    // Junk wake-ups.
    for note in ["", "nosuchtopic", "t' OR 1=1", "%s%n", "\u{1F600}", "t"] {
        sqlx::query("SELECT pg_notify('tower_sse', $1)")
            .bind(note)
            .execute(&mut admin)
            .await
            .unwrap();
    }
    // A junk row at the head, then real events after it.
    let before = b.stats().rejected;
    exec(
        &mut admin,
        "WITH t AS (UPDATE tower_sse_topics SET head = head + 1 WHERE topic = 't' \
         RETURNING epoch, head) \
         INSERT INTO tower_sse_events (topic, epoch, \"offset\", payload) \
         SELECT 't', epoch, head, '\\x00ff'::bytea FROM t",
    )
    .await;
    for i in 1..=5 {
        publish(&a, "t", &format!("real {i}")).await;
    }
    let got = take(&mut sub, 5).await;
    assert_eq!(
        data(&got),
        ["real 1", "real 2", "real 3", "real 4", "real 5"],
        "nothing forged, nothing lost"
    );
    assert!(b.stats().rejected > before, "{:?}", b.stats());
    // A fresh node reading the history sees only real events too.
    let (c, _) = pg_node(&server);
    let mut resumed = c.topic("t").subscribe(Some(&id(&real)));
    let got = take(&mut resumed, 5).await;
    assert_eq!(
        data(&got),
        ["real 1", "real 2", "real 3", "real 4", "real 5"]
    );
    assert!(quiet(&mut sub, Duration::from_millis(300)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_head_at_the_bigint_limit_fails_publishes_typed_and_breaks_no_node() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let mut other = live(&b, &a, "other").await;
    let mut admin = server.admin().await;
    exec(
        &mut admin,
        "UPDATE tower_sse_topics SET head = 9223372036854775807 WHERE topic = 't'",
    )
    .await;
    let r = a.topic("t").publish(Event::message("overflow")).await;
    assert!(matches!(r, Err(PublishError::Unavailable(_))), "{r:?}");
    publish(&a, "other", "still works").await;
    assert_eq!(data(&take(&mut other, 1).await), ["still works"]);
    let extra = quiet(&mut sub, Duration::from_millis(1200)).await;
    assert!(extra.iter().all(|m| m.data != "overflow"), "{extra:?}");
}

// ---------------------------------------------------------------------------------------------
// Topic names

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn odd_topic_names_publish_and_deliver_or_fail_typed() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    let a = Hub::builder().broker(broker_on(pool.clone())).build();
    let (b, _) = pg_node(&server);
    let names = vec![
        "".to_owned(),
        "caf\u{e9} \u{1F600} \u{65e5}\u{672c}".to_owned(),
        "it's \"quoted\"".to_owned(),
        "100% \\ _ %s".to_owned(),
        "with\nnewline".to_owned(),
        noise(300),
        noise(2000),
    ];
    let failures = round_trip(&a, &b, &names).await;
    // A NUL: a typed error, by both paths, and the node goes on.
    let r = a.topic("nul\0name").publish(Event::message("x")).await;
    assert!(matches!(r, Err(PublishError::Unavailable(_))), "{r:?}");
    let mut tx = pool.begin().await.unwrap();
    let r = a
        .topic("nul\0name")
        .publish_in(&mut tx, Event::message("x"))
        .await;
    assert!(matches!(r, Err(PublishError::Unavailable(_))), "{r:?}");
    tx.commit()
        .await
        .expect("the transaction is not broken by a refused name");
    let mut nul_sub = b.topic("nul\0name").subscribe(None);
    let mut sub = live(&b, &a, "plain").await;
    publish(&a, "plain", "after").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["after"]);
    assert!(quiet(&mut nul_sub, Duration::from_millis(200))
        .await
        .is_empty());
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Incompressible names (a repeated letter would compress under any index limit).
fn noise(len: usize) -> String {
    (0..len as u64)
        .map(|i| char::from(b'!' + (mix(3, i) % 90) as u8))
        .collect()
}

/// Subscribes on `b` to each of `names`, publishes on `a`, and says what went wrong.
async fn round_trip(a: &Hub, b: &Hub, names: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    for name in names {
        let mut sub = b.topic(name).subscribe(None);
        sub.join();
        // Until live: publish and wait, a bounded number of times.
        let mut live_now = false;
        for _ in 0..20 {
            match a.topic(name).publish(Event::message(MARKER)).await {
                Ok(_) => {}
                Err(err) => {
                    failures.push(format!("{} bytes: publish: {err}", name.len()));
                    break;
                }
            }
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await
            {
                live_now = true;
                break;
            }
        }
        if !live_now {
            if failures
                .last()
                .is_none_or(|f| !f.starts_with(&format!("{} bytes", name.len())))
            {
                failures.push(format!("{} bytes: never delivered", name.len()));
            }
            continue;
        }
        let id = publish(a, name, "hello").await;
        let got = take(&mut sub, 1).await;
        if data(&got) != ["hello"] || got[0].last_event_id != id {
            failures.push(format!("{} bytes: got {got:?}", name.len()));
        }
    }
    failures
}

/// Names up to `MAX_TOPIC_BYTES` (incompressible ones) publish like any other; a longer one is
/// refused with a typed error naming the limit, and the nodes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn topic_names_up_to_the_limit_publish_and_longer_ones_are_refused_typed() {
    use tower_sse::hub::postgres::MAX_TOPIC_BYTES;
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    for len in [MAX_TOPIC_BYTES + 1, 3000, 7899, 9000] {
        let refused = a.topic(&noise(len)).publish(Event::message("x")).await;
        match refused {
            Err(PublishError::Unavailable(why)) => assert!(why.contains("2048"), "{why}"),
            other => panic!("{len} bytes: {other:?}"),
        }
        let mut tx = server.pool(1).begin().await.unwrap();
        let refused = a
            .topic(&noise(len))
            .publish_in(&mut tx, Event::message("x"))
            .await;
        assert!(
            matches!(refused, Err(PublishError::Unavailable(_))),
            "{refused:?}"
        );
    }
    let names = vec![noise(MAX_TOPIC_BYTES), noise(2000)];
    let failures = round_trip(&a, &b, &names).await;
    // Whatever came of them, the nodes go on.
    let mut sub = live(&b, &a, "plain").await;
    publish(&a, "plain", "after").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["after"]);
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// Tables and migrations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn create_tables_false_before_the_migration_fails_typed_then_works() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    let broker = broker_on(pool.clone()).create_tables(false);
    let a = Hub::builder().broker(broker.clone()).build();
    let mut sub = a.topic("t").subscribe(None);
    sub.join();
    let started = Instant::now();
    let r = a.topic("t").publish(Event::message("too early")).await;
    assert!(matches!(r, Err(PublishError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut tx = pool.begin().await.unwrap();
    let r = a
        .topic("t")
        .publish_in(&mut tx, Event::message("too early"))
        .await;
    assert!(matches!(r, Err(PublishError::Unavailable(_))), "{r:?}");
    tx.rollback().await.unwrap();
    // The app's migration runs now (the SQL as given, on a plain connection).
    let mut admin = server.admin().await;
    sqlx::raw_sql(MIGRATION).execute(&mut admin).await.unwrap();
    let (b, _) = pg_node_with(&server, Hub::builder());
    let mut later = live(&b, &a, "t").await;
    let id = publish_retrying(&a, "t", "now").await;
    let got = take(&mut later, 1).await;
    assert_eq!(got[0].last_event_id, id);
    let got = take(&mut sub, 1).await;
    assert_eq!(
        data(&got),
        ["now"],
        "the subscriber from before the migration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn nodes_starting_together_on_an_empty_database_all_publish_at_once() {
    let server = PgServer::start().await;
    for round in 0..3 {
        let mut admin = server.admin().await;
        exec(
            &mut admin,
            "DROP TABLE IF EXISTS tower_sse_events, tower_sse_topics",
        )
        .await;
        let nodes: Vec<Hub> = (0..6).map(|_| pg_node(&server).0).collect();
        let migrations: Vec<_> = (0..4)
            .map(|_| {
                let pool = server.pool(1);
                tokio::spawn(async move { PostgresBroker::migrate(&pool).await })
            })
            .collect();
        let publishes: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(n, hub)| hub.topic("t").publish(Event::message(n.to_string())))
            .collect();
        for m in migrations {
            m.await.unwrap().unwrap();
        }
        let mut offs = Vec::new();
        for (n, p) in publishes.into_iter().enumerate() {
            let id = p
                .await
                .unwrap_or_else(|e| panic!("round {round}, node {n}: {e}"));
            offs.push(split_id(&id).1);
        }
        offs.sort_unstable();
        assert_eq!(offs, (1..=6).collect::<Vec<u64>>(), "round {round}");
    }
}

// ---------------------------------------------------------------------------------------------
// Audiences

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn audiences_cross_postgres_live_from_history_and_inside_transactions() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    let a = Hub::builder().broker(broker_on(pool.clone())).build();
    let (b, _) = pg_node(&server);
    let grants = |who: &str| Grants::new().subject(who).exact("team");
    let mut bob = live(&b, &a, "team").await.granted(&grants("bob")).unwrap();
    let mut alice = live(&b, &a, "team")
        .await
        .granted(&grants("alice"))
        .unwrap();
    let start = publish(&a, "team", "start").await;
    take(&mut bob, 1).await;
    take(&mut alice, 1).await;
    a.topic("team")
        .publish(Event::message("alice only").with_audience(["alice"]))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    a.topic("team")
        .publish_in(
            &mut tx,
            Event::message("alice in tx").with_audience(["alice"]),
        )
        .await
        .unwrap();
    a.topic("team")
        .publish_in(
            &mut tx,
            Event::message("nobody").with_audience(Vec::<String>::new()),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    publish(&a, "team", "all").await;
    assert_eq!(data(&take(&mut bob, 1).await), ["all"]);
    assert_eq!(
        data(&take(&mut alice, 3).await),
        ["alice only", "alice in tx", "all"]
    );
    // From the history, on a third node.
    let (c, _) = pg_node(&server);
    let mut bob = c
        .topic("team")
        .subscribe(Some(&id(&start)))
        .granted(&grants("bob"))
        .unwrap();
    assert_eq!(data(&take(&mut bob, 1).await), ["all"]);
    let mut anon = c.topic("team").subscribe(Some(&id(&start)));
    assert_eq!(data(&take(&mut anon, 1).await), ["all"]);
}

// ---------------------------------------------------------------------------------------------
// Load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn three_thousand_events_on_fifty_topics_and_three_nodes_end_in_one_order() {
    let server = PgServer::start().await;
    let nodes: Vec<Hub> = (0..3).map(|_| pg_node(&server).0).collect();
    let topics: Vec<String> = (0..50).map(|i| format!("load-{i}")).collect();
    let mut subs = Vec::new();
    for hub in &nodes {
        let mut mine = Vec::new();
        for topic in &topics {
            mine.push(live(hub, &nodes[0], topic).await);
        }
        subs.push(mine);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (n, hub) in nodes.iter().enumerate() {
        for lane in 0..4u64 {
            let hub = hub.clone();
            let topics = topics.clone();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..250u64 {
                    let topic = &topics[(mix(n as u64 * 10 + lane, i) % 50) as usize];
                    publish(&hub, topic, &format!("{n}.{lane}.{i}")).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sent.load(Ordering::Relaxed), 3000);
    let mut per_topic = vec![0usize; 50];
    for n in 0..3u64 {
        for lane in 0..4 {
            for i in 0..250 {
                per_topic[(mix(n * 10 + lane, i) % 50) as usize] += 1;
            }
        }
    }
    for (t, count) in per_topic.iter().enumerate() {
        let mut seen = Vec::new();
        for node in subs.iter_mut() {
            let got = take(&mut node[t], *count).await;
            assert!(consecutive(&offsets(&got)), "topic {t}");
            seen.push(data(&got));
        }
        assert_eq!(seen[0], seen[1], "topic {t}: nodes 0 and 1");
        assert_eq!(seen[0], seen[2], "topic {t}: nodes 0 and 2");
    }
    for node in subs.iter_mut() {
        for sub in node.iter_mut().take(5) {
            assert!(quiet(sub, Duration::from_millis(100)).await.is_empty());
        }
    }
}
