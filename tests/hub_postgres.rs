//! Hubs in separate "processes" (each with its own pool and listening connection) sharing
//! topics through a real PostgreSQL cluster that each test starts, kills and restarts itself.
//!
//! Each needs Debian's `postgresql`, so each is `#[ignore]`d: a plain `cargo test` lists them as
//! ignored; `cargo test --all-features -- --ignored` (which `.ci/run` runs) runs them, and fails
//! them when Postgres is missing.

mod common;

use common::hub::*;
use common::postgres::PgServer;
use futures_util::StreamExt;
use std::time::Duration;
use tower_sse::{
    decode::Message,
    hub::{postgres::PostgresBroker, Hub, HubBuilder, PublishError, HISTORY_LOST},
    Event,
};

fn pg_node(server: &PgServer) -> (Hub, PostgresBroker) {
    pg_node_with(server, Hub::builder())
}

fn pg_node_with(server: &PgServer, builder: HubBuilder) -> (Hub, PostgresBroker) {
    let broker = PostgresBroker::new(server.pool(8))
        .publish_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    (builder.broker(broker.clone()).build(), broker)
}

fn offsets(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| split_id(&m.last_event_id).1)
        .collect()
}

/// Whether the offsets count up by one.
fn consecutive(offsets: &[u64]) -> bool {
    offsets.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn three_hubs_deliver_every_event_in_one_order() {
    let server = PgServer::start().await;
    let nodes: Vec<_> = (0..3).map(|_| pg_node(&server).0).collect();
    let mut subs = Vec::new();
    for hub in &nodes {
        subs.push(live(hub, &nodes[0], "room").await);
    }
    let mut publishers = Vec::new();
    for (n, hub) in nodes.iter().enumerate() {
        let hub = hub.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..60 {
                publish(&hub, "room", &format!("{n}:{i}")).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut seen = Vec::new();
    for sub in &mut subs {
        seen.push(take(sub, 180).await);
    }
    for other in &seen[1..] {
        assert_eq!(data(other), data(&seen[0]), "one order on every node");
    }
    assert!(consecutive(&offsets(&seen[0])), "{:?}", offsets(&seen[0]));
    for n in 0..3 {
        let mine: Vec<String> = data(&seen[0])
            .into_iter()
            .filter(|d| d.starts_with(&format!("{n}:")))
            .collect();
        let expected: Vec<String> = (0..60).map(|i| format!("{n}:{i}")).collect();
        assert_eq!(mine, expected, "each publisher's events in its own order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn an_event_exists_if_and_only_if_its_transaction_commits() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "orders").await;
    sqlx::query("CREATE TABLE orders (item text)")
        .execute(&pool)
        .await
        .unwrap();

    // Rolled back: neither the row nor the event.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES ('lost')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let rolled = a
        .topic("orders")
        .publish_in(&mut tx, Event::message("lost"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // Committed, after a wait inside the transaction: delivered at commit, not before.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES ('tea')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = a
        .topic("orders")
        .publish_in(&mut tx, Event::message("tea"))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "nothing is delivered before the commit"
    );
    tx.commit().await.unwrap();
    let got = take(&mut sub, 1).await;
    assert_eq!(data(&got), ["tea"]);
    assert_eq!(got[0].last_event_id, id, "the id publish_in returned");
    assert_eq!(id, rolled, "a rollback takes up no id");
    let rows: Vec<(String,)> = sqlx::query_as("SELECT item FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows, [("tea".to_owned(),)]);
    // The next plain publish follows without a gap.
    let next = publish(&a, "orders", "after").await;
    assert_eq!(split_id(&next).1, split_id(&id).1 + 1);
    assert_eq!(data(&take(&mut sub, 1).await), ["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn ids_follow_commit_order_under_concurrent_transactions() {
    let server = PgServer::start().await;
    let pool = server.pool(24);
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let marker = split_id(&publish(&a, "t", "start").await).1;
    take(&mut sub, 1).await;
    let mut tasks = Vec::new();
    for n in 0..80u64 {
        let pool = pool.clone();
        let hub = a.clone();
        tasks.push(tokio::spawn(async move {
            // A cheap deterministic shuffle: random-looking delays and outcomes per task.
            let mix = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            let mut tx = pool.begin().await.unwrap();
            tokio::time::sleep(Duration::from_millis(mix % 7)).await;
            let id = hub
                .topic("t")
                .publish_in(&mut tx, Event::message(format!("{n}")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(mix % 11)).await;
            let commit = mix % 3 != 0;
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            (n, id, commit)
        }));
    }
    let mut committed = Vec::new();
    for task in tasks {
        let (n, id, commit) = task.await.unwrap();
        if commit {
            committed.push((split_id(&id).1, n.to_string()));
        }
    }
    committed.sort();
    let got = take(&mut sub, committed.len()).await;
    let got: Vec<(u64, String)> = offsets(&got).into_iter().zip(data(&got)).collect();
    assert_eq!(got, committed, "every commit once, at the id it was given");
    let expected: Vec<u64> = (marker + 1..=marker + committed.len() as u64).collect();
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        expected,
        "no gap left by the rollbacks, none out of order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_client_resumes_on_another_node_with_no_gap_and_no_duplicate() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    for trial in 0..8 {
        let topic = format!("resume-{trial}");
        let mut first = live(&a, &a, &topic).await;
        let publisher = {
            let a = a.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    publish(&a, &topic, &i.to_string()).await;
                }
            })
        };
        let seen = take(&mut first, 5 + trial).await;
        let last = seen.last().unwrap().last_event_id.clone();
        drop(first);
        // Resumed on the other node while events keep coming.
        let mut moved = b.topic(&topic).subscribe(Some(&id(&last)));
        let rest = take(&mut moved, 40 - 5 - trial).await;
        publisher.await.unwrap();
        let all: Vec<String> = data(&seen).into_iter().chain(data(&rest)).collect();
        assert_eq!(all, numbers(0..=39), "trial {trial}");
        let offs: Vec<u64> = offsets(&seen).into_iter().chain(offsets(&rest)).collect();
        assert!(consecutive(&offs), "trial {trial}: {offs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_restarted_postgres_loses_no_event_and_closes_no_stream() {
    let mut server = PgServer::start().await;
    let (a, broker_a) = pg_node(&server);
    let (b, broker_b) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    publish(&a, "t", "before").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["before"]);
    server.kill();
    let started = tokio::time::Instant::now();
    let failed = a.topic("t").publish(Event::message("down")).await;
    assert!(
        matches!(
            failed,
            Err(PublishError::Unavailable(_) | PublishError::Timeout(_))
        ),
        "{failed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a publish fails in bounded time (its timeout is 2 s)"
    );
    eventually("the nodes notice", || async {
        !broker_a.is_connected() && !broker_b.is_connected()
    })
    .await;
    server.restart().await;
    eventually("the nodes reconnect", || async {
        broker_a.is_connected() && broker_b.is_connected()
    })
    .await;
    let mut delivered = false;
    for _ in 0..50 {
        // The pool's connections died with the server; the first publishes may fail.
        match a.topic("t").publish(Event::message("after")).await {
            Ok(_) => {
                delivered = true;
                break;
            }
            Err(err) => eprintln!("after the restart: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "publishing works again");
    assert_eq!(
        data(&take(&mut sub, 1).await),
        ["after"],
        "the stream stayed open"
    );
    assert!(broker_b.reconnects() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_terminated_listener_catches_up_from_the_table() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, broker_b) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let mut admin = server.admin().await;
    for round in 0..3 {
        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'tower-sse' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "the listening connections are named");
        // Published while the listeners are gone: read back from the table.
        for i in 0..10 {
            publish(&a, "t", &format!("{round}:{i}")).await;
        }
        let got = take(&mut sub, 10).await;
        let expected: Vec<String> = (0..10).map(|i| format!("{round}:{i}")).collect();
        assert_eq!(data(&got), expected);
        assert!(consecutive(&offsets(&got)));
    }
    eventually("reconnected", || async { broker_b.reconnects() >= 3 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn retention_and_a_deleted_topic_are_told_as_history_lost() {
    let server = PgServer::start().await;
    let (a, _) = pg_node_with(&server, Hub::builder().history(5));
    let (b, _) = pg_node_with(&server, Hub::builder().history(5));
    let first = publish(&a, "t", "0").await;
    for i in 1..70 {
        publish(&a, "t", &i.to_string()).await;
    }
    let mut admin = server.admin().await;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM tower_sse_events")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(rows <= 5 + 31, "trimmed by the publishes: {rows} rows");
    // Resuming from an id the history no longer holds.
    let mut sub = b.topic("t").subscribe(Some(&id(&first)));
    let lost = item(&mut sub).await;
    assert_eq!(decode(&lost)[0].event, HISTORY_LOST);
    drop(sub);
    // The topic deleted: the next publish starts a new epoch, and the old ids are lost.
    let old = publish(&a, "t", "old").await;
    sqlx::query("DELETE FROM tower_sse_topics")
        .execute(&mut admin)
        .await
        .unwrap();
    let new = publish(&a, "t", "new").await;
    assert_ne!(split_id(&new).0, split_id(&old).0, "a new epoch");
    assert_eq!(split_id(&new).1, 1);
    let mut sub = b.topic("t").subscribe(Some(&id(&old)));
    let lost = item(&mut sub).await;
    assert_eq!(decode(&lost)[0].event, HISTORY_LOST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn rows_that_are_not_events_never_become_one() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let before = b.stats().rejected;
    let mut admin = server.admin().await;
    let junk: [&[u8]; 5] = [
        b"data: forged\n\nevent: x\ndata: y\n\n",
        b"id: 999\ndata: forged\n\n",
        b"\xff\xfe not utf-8",
        b"",
        b"@3:bob\n",
    ];
    for payload in junk {
        // As a writer with access to the table would: the head moved, a row at it.
        sqlx::query(
            "WITH t AS (UPDATE tower_sse_topics SET head = head + 1 WHERE topic = 't' \
             RETURNING epoch, head) \
             INSERT INTO tower_sse_events (topic, epoch, \"offset\", payload) \
             SELECT 't', epoch, head, $1 FROM t",
        )
        .bind(payload)
        .execute(&mut admin)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_notify('tower_sse', 't')")
        .execute(&mut admin)
        .await
        .unwrap();
    publish(&a, "t", "real").await;
    let got = take(&mut sub, 1).await;
    assert_eq!(data(&got), ["real"], "no forged event came first");
    assert!(b.stats().rejected >= before + 4, "{:?}", b.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn an_exhausted_pool_fails_publishes_in_time_and_delivery_goes_on() {
    let server = PgServer::start().await;
    let pool = server.pool(1);
    let broker = PostgresBroker::new(pool.clone())
        .publish_timeout(Duration::from_millis(500))
        .max_pending(1);
    let a = Hub::builder().broker(broker).build();
    let (b, _) = pg_node(&server);
    let mut sub = live(&a, &b, "t").await;
    // The app holds its pool's only connection.
    let held = pool.acquire().await.unwrap();
    let started = tokio::time::Instant::now();
    // Two at once, and one may wait: one is refused at once, the other times out.
    let (x, y) = tokio::join!(
        a.topic("t").publish(Event::message("x")),
        a.topic("t").publish(Event::message("y"))
    );
    let outcomes = [&x, &y].map(|r| match r {
        Err(PublishError::Overloaded) => "overloaded",
        Err(PublishError::Timeout(_)) => "timeout",
        _ => "other",
    });
    assert!(
        outcomes == ["overloaded", "timeout"] || outcomes == ["timeout", "overloaded"],
        "{x:?} {y:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The node's own connection still delivers what others publish.
    publish(&b, "t", "from b").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["from b"]);
    drop(held);
    publish(&a, "t", "from a").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["from a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_topic_nobody_publishes_to_expires_and_starts_a_new_epoch() {
    let server = PgServer::start().await;
    let broker = PostgresBroker::new(server.pool(4))
        .topic_ttl(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let a = Hub::builder().broker(broker).build();
    let (b, _) = pg_node(&server);
    let old = publish(&a, "t", "old").await;
    let pool = server.pool(1);
    eventually("the topic expires", || {
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM tower_sse_topics")
                .fetch_one(&pool)
                .await
                .unwrap();
            n == 0
        }
    })
    .await;
    let mut admin = server.admin().await;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM tower_sse_events")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(events, 0, "its history went with it");
    let new = publish(&a, "t", "new").await;
    assert_ne!(split_id(&new).0, split_id(&old).0);
    assert_eq!(split_id(&new).1, 1);
    let mut sub = b.topic("t").subscribe(Some(&id(&old)));
    assert_eq!(decode(&item(&mut sub).await)[0].event, HISTORY_LOST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_history_that_went_back_gets_a_new_epoch_and_no_id_twice() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    for i in 0..10 {
        publish(&a, "t", &i.to_string()).await;
    }
    let seen = take(&mut sub, 10).await;
    let epoch = split_id(&seen[0].last_event_id).0;
    // As a restore from an older backup would leave it: the head and rows of three events ago.
    let mut admin = server.admin().await;
    let head = split_id(&seen[6].last_event_id).1;
    sqlx::query("UPDATE tower_sse_topics SET head = $1")
        .bind(head as i64)
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("DELETE FROM tower_sse_events WHERE \"offset\" > $1")
        .bind(head as i64)
        .execute(&mut admin)
        .await
        .unwrap();
    // The next publish takes an id the subscriber already holds for another event; the node
    // that reads it sees the history went back.
    publish(&a, "t", "reused").await;
    let lost = item(&mut sub).await;
    assert_eq!(decode(&lost)[0].event, HISTORY_LOST, "{lost:?}");
    let next = publish(&a, "t", "next").await;
    assert_ne!(split_id(&next).0, epoch, "a new epoch");
    // Then the history as the table holds it, under the new epoch: the restored events, the
    // one published after the restore, and the next.
    let mut after = Vec::new();
    while after
        .last()
        .is_none_or(|m: &tower_sse::decode::Message| m.data != "next")
    {
        after.extend(take(&mut sub, 1).await);
    }
    assert!(
        data(&after).contains(&"reused".to_owned()),
        "{:?}",
        data(&after)
    );
    for m in &after {
        assert_eq!(split_id(&m.last_event_id).0, split_id(&next).0, "{m:?}");
    }
    assert_eq!(after.last().unwrap().last_event_id, next);
    // A client resuming from an id of before the restore is told.
    let mut resumed = b.topic("t").subscribe(Some(&id(&seen[8].last_event_id)));
    assert_eq!(decode(&item(&mut resumed).await)[0].event, HISTORY_LOST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_batch_window_answers_a_burst_of_wake_ups_with_fewer_reads() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let broker = PostgresBroker::new(server.pool(4)).batch_window(Duration::from_millis(500));
    let b = Hub::builder().broker(broker.clone()).build();
    let mut sub = live(&b, &a, "t").await;
    let (reads, wakeups) = (broker.reads(), broker.wakeups());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            publish(&a, "t", &i.to_string()).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let got = take(&mut sub, 200).await;
    assert!(consecutive(&offsets(&got)));
    let (reads, wakeups) = (broker.reads() - reads, broker.wakeups() - wakeups);
    println!("200 publishes: {wakeups} wake-ups, {reads} reads");
    assert!(wakeups >= 150, "{wakeups} wake-ups");
    assert!(reads * 2 <= wakeups, "{reads} reads for {wakeups} wake-ups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn without_its_tables_a_broker_fails_publishes_until_the_app_migrates() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    let broker = PostgresBroker::new(pool.clone())
        .create_tables(false)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let a = Hub::builder().broker(broker.clone()).build();
    let failed = a.topic("t").publish(Event::message("x")).await;
    match failed {
        Err(PublishError::Unavailable(why)) => {
            assert!(why.contains("tower_sse_topics"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    sqlx::raw_sql(tower_sse::hub::postgres::MIGRATION)
        .execute(&pool)
        .await
        .unwrap();
    let (b, _) = pg_node(&server);
    let mut sub = live(&a, &b, "t").await;
    publish(&a, "t", "works").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["works"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn odd_topic_names_are_carried_or_refused_with_a_typed_error() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    // A NUL cannot be stored: a typed error, and the node goes on.
    let nul = a.topic("a\0b").publish(Event::message("x")).await;
    assert!(matches!(nul, Err(PublishError::Unavailable(_))), "{nul:?}");
    let _watching = b.topic("a\0b").subscribe(None);
    let long = "L".repeat(tower_sse::hub::postgres::MAX_TOPIC_BYTES);
    for topic in [
        long.as_str(),
        "quote'\"; DROP TABLE x; --",
        "100%_",
        "ünïcødé ☃",
        "",
    ] {
        let mut sub = live(&b, &a, topic).await;
        publish(&a, topic, "hi").await;
        assert_eq!(data(&take(&mut sub, 1).await), ["hi"], "{:.20}", topic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn publish_in_needs_the_postgres_engine_and_a_hub_made_id() {
    let server = PgServer::start().await;
    let pool = server.pool(2);
    let memory = Hub::new();
    let mut tx = pool.begin().await.unwrap();
    let refused = memory
        .topic("t")
        .publish_in(&mut tx, Event::message("x"))
        .await;
    assert!(
        matches!(refused, Err(PublishError::Unavailable(_))),
        "{refused:?}"
    );
    let (a, _) = pg_node(&server);
    let own = Event::builder().id("mine").data("x").build().unwrap();
    let refused = a.topic("t").publish_in(&mut tx, own).await;
    assert!(matches!(refused, Err(PublishError::OwnId)), "{refused:?}");
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_publish_that_times_out_behind_a_long_transaction_is_not_published_later() {
    let server = PgServer::start().await;
    let pool = server.pool(4);
    let broker = PostgresBroker::new(server.pool(4)).publish_timeout(Duration::from_millis(300));
    let a = Hub::builder().broker(broker).build();
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    // A transaction that publishes and then takes its time holds the topic.
    let mut slow = pool.begin().await.unwrap();
    let held = a
        .topic("t")
        .publish_in(&mut slow, Event::message("slow"))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let failed = a.topic("t").publish(Event::message("gave up")).await;
    assert!(
        matches!(failed, Err(PublishError::Timeout(_))),
        "{failed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow.commit().await.unwrap();
    // From the node with the default timeout: this one must not time out.
    let next = publish(&b, "t", "next").await;
    assert_eq!(split_id(&next).1, split_id(&held).1 + 1, "no id was taken");
    let got = take(&mut sub, 2).await;
    assert_eq!(
        data(&got),
        ["slow", "next"],
        "the publish given up on never lands"
    );
}
