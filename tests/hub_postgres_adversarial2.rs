//! A second hostile pass over the Postgres engine: the restore fences, the publish timeout, topic
//! names against the database's encoding, odd `Last-Event-ID`s, several databases of one
//! cluster, and the chat example on Postgres. Each test takes one promise of
//! `tower_sse::hub::postgres` and tries to break it against a real PostgreSQL cluster of its own.
//!
//! Each needs Debian's `postgresql`, so each is `#[ignore]`d; run them with
//! `cargo test --features postgres,axum --test hub_postgres_adversarial2 -- --ignored`.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/chat.rs"]
mod chat;
mod common;

use common::hub::*;
use common::postgres::PgServer;
use futures_util::StreamExt;
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};
use tokio::time::Instant;
use tower_sse::{
    decode::Message,
    hub::{postgres::PostgresBroker, Hub, PublishError, Subscription, HISTORY_LOST},
    Event,
};

fn broker_on(pool: sqlx::PgPool) -> PostgresBroker {
    PostgresBroker::new(pool)
        .publish_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

fn pg_node(server: &PgServer) -> (Hub, PostgresBroker) {
    let broker = broker_on(server.pool(8));
    (Hub::builder().broker(broker.clone()).build(), broker)
}

fn pool_at(url: &str, size: u32) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(url)
        .unwrap()
}

/// Runs `sql` (one or more statements, on the simple protocol).
async fn exec(admin: &mut sqlx::PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(&mut *admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(admin: &mut sqlx::PgConnection, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(&mut *admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    n
}

/// Everything that arrives within `window`, markers left out, history-lost events kept.
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

async fn first(sub: &mut Subscription) -> Message {
    take(sub, 1).await.remove(0)
}

/// The ids a client received under which it got two different events.
fn twice(history: &mut BTreeMap<String, String>, got: &[Message], who: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in got {
        if m.event == HISTORY_LOST || m.last_event_id.is_empty() {
            continue;
        }
        match history.get(&m.last_event_id) {
            Some(before) if *before != m.data => out.push(format!(
                "{who}: {} was {before:?}, then {:?}",
                m.last_event_id, m.data
            )),
            _ => {
                history.insert(m.last_event_id.clone(), m.data.clone());
            }
        }
    }
    out
}

/// A restore from an older backup of `topic`: the table as it was when its head was `back`.
fn restore_sql(topic: &str, back: u64) -> String {
    format!(
        "DELETE FROM tower_sse_events WHERE topic = '{topic}' AND \"offset\" > {back}; \
         UPDATE tower_sse_topics SET head = {back} WHERE topic = '{topic}';"
    )
}

// ---------------------------------------------------------------------------------------------
// Restores

/// Two topics restored at once, then publishes right away from three nodes (two follow, one
/// only publishes): no client receives two events under one id, a client resuming from before
/// the restore is told, each topic ends in one epoch, and the table loses no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn two_topics_restored_then_published_from_three_nodes_never_reuse_an_id_for_clients() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let c = Hub::builder().broker(broker_on(server.pool(4))).build();
    let topics = ["t1", "t2"];
    let mut subs = Vec::new();
    for topic in topics {
        subs.push((format!("a/{topic}"), live(&a, &c, topic).await));
        subs.push((format!("b/{topic}"), live(&b, &c, topic).await));
    }
    let mut seen: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut before: HashMap<&str, Vec<String>> = HashMap::new();
    for topic in topics {
        for i in 1..=10 {
            let id = publish(&c, topic, &format!("{topic} before {i}")).await;
            before.entry(topic).or_default().push(id);
        }
    }
    for (who, sub) in &mut subs {
        let got = take(sub, 10).await;
        assert!(twice(seen.entry(who.clone()).or_default(), &got, who).is_empty());
    }
    let mut admin = server.admin().await;
    let heads = [
        count(
            &mut admin,
            "SELECT head FROM tower_sse_topics WHERE topic = 't1'",
        )
        .await,
        count(
            &mut admin,
            "SELECT head FROM tower_sse_topics WHERE topic = 't2'",
        )
        .await,
    ];
    let back = [heads[0] - 4, heads[1] - 3];
    exec(
        &mut admin,
        &format!(
            "BEGIN; {} {} COMMIT",
            restore_sql("t1", back[0] as u64),
            restore_sql("t2", back[1] as u64)
        ),
    )
    .await;
    // Right away, from every node at once.
    let mut tasks = Vec::new();
    for (name, hub) in [("a", a.clone()), ("b", b.clone()), ("c", c.clone())] {
        for topic in topics {
            let hub = hub.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 1..=4 {
                    let data = format!("{topic} after {name}{i}");
                    let r = hub.topic(topic).publish(Event::message(&*data)).await;
                    ids.push((name, topic, data, r));
                }
                ids
            }));
        }
    }
    let mut reused = Vec::new();
    let mut published = 0;
    for task in tasks {
        for (name, topic, data, r) in task.await.unwrap() {
            let id = r.unwrap_or_else(|e| panic!("{data}: {e}"));
            published += 1;
            // A node that does not follow the topic may be handed an old id (the docs say so).
            if name != "c" && before[topic].contains(&id) {
                reused.push(format!("{name} was handed {id} again, for {data:?}"));
            }
        }
    }
    let mut violations = Vec::new();
    for (who, sub) in &mut subs {
        let got = quiet(sub, Duration::from_secs(3)).await;
        violations.extend(twice(seen.get_mut(who.as_str()).unwrap(), &got, who));
    }
    // A client resuming from before the restore.
    let mut resumed = a.topic("t1").subscribe(Some(&id(&before["t1"][8])));
    let m = first(&mut resumed).await;
    let mut epochs = Vec::new();
    let mut rows = Vec::new();
    for topic in topics {
        epochs.push(
            count(
                &mut admin,
                &format!(
                    "SELECT count(DISTINCT epoch) FROM tower_sse_events WHERE topic = '{topic}'"
                ),
            )
            .await,
        );
        rows.push(
            count(
                &mut admin,
                &format!(
                    "SELECT count(*) FROM tower_sse_events e JOIN tower_sse_topics t \
                     USING (topic, epoch) WHERE topic = '{topic}'"
                ),
            )
            .await,
        );
    }
    assert_eq!(published, 24);
    assert!(reused.is_empty(), "{reused:#?}");
    assert!(violations.is_empty(), "{violations:#?}");
    // Told, or (when the node that holds it numbered past the restore, so the history it
    // delivered still stands) given the very event after its id.
    assert!(
        m.event == HISTORY_LOST || m.last_event_id == before["t1"][9],
        "resumed from before the restore: {m:?}"
    );
    assert_eq!(epochs, [1, 1], "epochs per topic");
    // Every row the table holds of a topic is in its epoch: the restored ones and the 12 new.
    for (n, topic) in topics.iter().enumerate() {
        let all = count(
            &mut admin,
            &format!("SELECT count(*) FROM tower_sse_events WHERE topic = '{topic}'"),
        )
        .await;
        assert_eq!(
            rows[n], all,
            "{topic}: rows outside its epoch (heads {heads:?})"
        );
        assert_eq!(all, back[n] + 12, "{topic}: rows (heads {heads:?})");
    }
}

/// A restore found while a long transaction holds the topic, for longer than the node's read
/// timeout: the fence waits for the row lock, the node counts its connection as lost; whatever
/// comes of it, the topic's rows go with its epoch (the table keeps its history) and the
/// client is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_fence_held_past_the_read_timeout_by_a_long_transaction_keeps_the_tables_history() {
    let server = PgServer::start().await;
    let broker = PostgresBroker::new(server.pool(4))
        .read_timeout(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let a = Hub::builder().broker(broker.clone()).build();
    let mut sub = live(&a, &a, "t").await;
    let mut history = BTreeMap::new();
    for i in 1..=10 {
        publish(&a, "t", &format!("before {i}")).await;
    }
    let got = take(&mut sub, 10).await;
    twice(&mut history, &got, "a");
    let mut holder = server.admin().await;
    exec(
        &mut holder,
        "BEGIN; SELECT 1 FROM tower_sse_topics WHERE topic = 't' FOR UPDATE",
    )
    .await;
    // The restore: the newest event is another one (the payload of the one before it).
    let mut admin = server.admin().await;
    exec(
        &mut admin,
        "UPDATE tower_sse_events e SET payload = p.payload FROM tower_sse_events p \
         WHERE e.topic = 't' AND p.topic = 't' AND e.epoch = p.epoch \
           AND e.\"offset\" = (SELECT head FROM tower_sse_topics WHERE topic = 't') \
           AND p.\"offset\" = e.\"offset\" - 1",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    exec(&mut holder, "COMMIT").await;
    eventually("the broker is connected again", || async {
        broker.is_connected()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = publish(&a, "t", "after").await;
    let got = quiet(&mut sub, Duration::from_secs(2)).await;
    let violations = twice(&mut history, &got, "a");
    let in_epoch = count(
        &mut admin,
        "SELECT count(*) FROM tower_sse_events e JOIN tower_sse_topics t USING (topic, epoch) \
         WHERE topic = 't'",
    )
    .await;
    let all = count(
        &mut admin,
        "SELECT count(*) FROM tower_sse_events WHERE topic = 't'",
    )
    .await;
    let mut late = a.topic("t").subscribe_with_recent(None, 100);
    let recent = quiet(&mut late, Duration::from_secs(1)).await;
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        got.first().is_some_and(|m| m.event == HISTORY_LOST),
        "the live client after the restore: {:?}",
        data(&got)
    );
    // Ten events, the markers that made the client live, and "after": all in the epoch.
    assert_eq!(
        in_epoch, all,
        "rows in the topic's epoch, rows of the topic ({after})"
    );
    assert!(all >= 12, "{all} rows");
    assert_eq!(
        recent.len(),
        11,
        "a new client's history is the table's (markers left out): {:?}",
        data(&recent)
    );
}

/// A restore to a table that holds nothing of the topic (head 0), and one that lost the topic's
/// row: live and resuming clients are told, and ids handed out afterwards by a node that
/// follows the topic are new (one that follows nothing cannot know: the module docs say so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn restores_to_an_empty_history_or_no_topic_row_are_told_and_never_reuse_ids() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut failures = Vec::new();
    for (topic, restore) in [
        (
            "empty",
            "DELETE FROM tower_sse_events WHERE topic = 'empty'; \
             UPDATE tower_sse_topics SET head = 0 WHERE topic = 'empty';",
        ),
        ("gone", "DELETE FROM tower_sse_topics WHERE topic = 'gone';"),
    ] {
        let mut sub = live(&b, &a, topic).await;
        let mut own = live(&a, &a, topic).await;
        let mut history = BTreeMap::new();
        let mut ids = Vec::new();
        for i in 1..=8 {
            ids.push(publish(&a, topic, &format!("before {i}")).await);
        }
        take(&mut own, 8).await;
        let got = take(&mut sub, 8).await;
        twice(&mut history, &got, topic);
        let mut admin = server.admin().await;
        exec(&mut admin, &format!("BEGIN; {restore} COMMIT")).await;
        let mut news = Vec::new();
        for i in 1..=3 {
            let id = publish(&a, topic, &format!("after {i}")).await;
            if ids.contains(&id) {
                failures.push(format!("{topic}: {id} handed out again"));
            }
            news.push(id);
        }
        let got = quiet(&mut sub, Duration::from_secs(2)).await;
        failures.extend(twice(&mut history, &got, topic));
        // The live client is told, or (the following node numbered past the restore) gets the
        // new events right after the ones it had: nothing missed either way.
        let seamless = data(&got) == ["after 1", "after 2", "after 3"];
        if !seamless && !got.iter().any(|m| m.event == HISTORY_LOST) {
            failures.push(format!("{topic}: live client not told: {:?}", data(&got)));
        }
        let mut resumed = b.topic(topic).subscribe(Some(&id(&ids[5])));
        let m = first(&mut resumed).await;
        if m.event != HISTORY_LOST && m.last_event_id != ids[6] {
            failures.push(format!("{topic}: resumed from {} got {m:?}", ids[5]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Restored again and again while a node follows and publishes: every client's ids stay its
/// own, and each restore is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn repeated_restores_never_hand_a_client_two_events_under_one_id() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub_a = live(&a, &a, "t").await;
    let mut sub_b = live(&b, &a, "t").await;
    let (mut ha, mut hb) = (BTreeMap::new(), BTreeMap::new());
    let mut violations = Vec::new();
    let mut admin = server.admin().await;
    let mut lost_b = 0;
    for round in 0..5 {
        for i in 1..=6 {
            let publisher = if i % 2 == 0 { &a } else { &b };
            publish(publisher, "t", &format!("r{round} e{i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (head,): (i64,) = sqlx::query_as("SELECT head FROM tower_sse_topics WHERE topic = 't'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        let back = u64::try_from(head - 3).unwrap();
        exec(
            &mut admin,
            &format!("BEGIN; {} COMMIT", restore_sql("t", back)),
        )
        .await;
        let got = quiet(&mut sub_a, Duration::from_millis(200)).await;
        violations.extend(twice(&mut ha, &got, "a"));
        let got = quiet(&mut sub_b, Duration::from_millis(200)).await;
        lost_b += got.iter().filter(|m| m.event == HISTORY_LOST).count();
        violations.extend(twice(&mut hb, &got, "b"));
    }
    publish(&a, "t", "end").await;
    let got = quiet(&mut sub_a, Duration::from_secs(2)).await;
    violations.extend(twice(&mut ha, &got, "a"));
    let got = quiet(&mut sub_b, Duration::from_secs(2)).await;
    lost_b += got.iter().filter(|m| m.event == HISTORY_LOST).count();
    violations.extend(twice(&mut hb, &got, "b"));
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(lost_b >= 1, "b was told of no restore");
}

/// A restore while a node's listening connection is cut: once connected again it finds the
/// history is not the one it delivered, and its client is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_restore_while_the_listener_is_terminated_is_told_once_it_reconnects() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, broker_b) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let mut history = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 1..=10 {
        ids.push(publish(&a, "t", &format!("before {i}")).await);
    }
    twice(&mut history, &take(&mut sub, 10).await, "b");
    let mut admin = server.admin().await;
    // B's listening connection goes, and stays gone while the restore is made.
    exec(
        &mut admin,
        &format!(
            "ALTER DATABASE postgres CONNECTION LIMIT 0; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'tower-sse' AND pid <> pg_backend_pid(); \
             BEGIN; {} COMMIT",
            restore_sql("t", 5)
        ),
    )
    .await;
    // An app on another node publishes (it follows nothing: it cannot know).
    let other = Hub::builder().broker(broker_on(server.pool(2))).build();
    for i in 1..=7 {
        publish(&other, "t", &format!("after {i}")).await;
    }
    exec(&mut admin, "ALTER DATABASE postgres CONNECTION LIMIT -1").await;
    eventually("b reconnects", || async { broker_b.reconnects() > 0 }).await;
    let got = quiet(&mut sub, Duration::from_secs(3)).await;
    let violations = twice(&mut history, &got, "b");
    let mut resumed = b.topic("t").subscribe(Some(&id(&ids[7])));
    let m = first(&mut resumed).await;
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        got.first().is_some_and(|m| m.event == HISTORY_LOST),
        "{:?}",
        data(&got)
    );
    assert_eq!(m.event, HISTORY_LOST, "{m:?}");
}

// ---------------------------------------------------------------------------------------------
// Publish timeout

/// Plain publishes that time out behind a topic held by a long transaction, on a pool the held
/// transaction leaves one connection of: none of them is published later, when the topic is
/// free. Released at several moments around the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn publishes_that_timed_out_behind_a_held_topic_are_never_published_later() {
    let server = PgServer::start().await;
    let pool = server.pool(3);
    let broker = broker_on(pool.clone()).publish_timeout(Duration::from_millis(400));
    let a = Hub::builder().broker(broker).build();
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let mut landed_after_timeout = Vec::new();
    let mut outcomes = BTreeMap::new();
    for (round, release_ms) in [100u64, 300, 390, 400, 405, 410, 420, 600]
        .iter()
        .enumerate()
    {
        let mut tx = pool.begin().await.unwrap();
        a.topic("t")
            .publish_in(&mut tx, Event::message(format!("held {round}")))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let data = format!("r{round} p{i}");
                let r = a.topic("t").publish(Event::message(&*data)).await;
                (data, r)
            }));
        }
        tokio::time::sleep(Duration::from_millis(*release_ms)).await;
        tx.commit().await.unwrap();
        for task in tasks {
            let (data, r) = task.await.unwrap();
            let kind = match &r {
                Ok(_) => "ok",
                Err(PublishError::Timeout(_)) => "timeout",
                Err(PublishError::Overloaded) => "overloaded",
                Err(_) => "unavailable",
            };
            *outcomes.entry(kind).or_insert(0) += 1;
            if r.is_err() {
                landed_after_timeout.push(data);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = quiet(&mut sub, Duration::from_secs(1)).await;
    let delivered: Vec<&String> = landed_after_timeout
        .iter()
        .filter(|d| got.iter().any(|m| &m.data == *d))
        .collect();
    assert!(
        delivered.is_empty(),
        "failed publishes delivered later: {delivered:?} (outcomes {outcomes:?})"
    );
    assert!(
        outcomes.get("timeout").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Topic names, ids, databases

/// A database whose encoding is LATIN1 cannot hold a name with an emoji: publishing to it fails
/// typed, and a subscriber to it must not stop the node's reads of its other topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_name_the_databases_encoding_cannot_hold_does_not_stop_the_nodes_other_topics() {
    let server = PgServer::start().await;
    let mut admin = server.admin().await;
    exec(
        &mut admin,
        "CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    )
    .await;
    let url = format!("postgres://postgres@127.0.0.1:{}/latin", server.port());
    let a = Hub::builder().broker(broker_on(pool_at(&url, 4))).build();
    let b = Hub::builder().broker(broker_on(pool_at(&url, 4))).build();
    let mut before = live(&b, &a, "plain").await;
    let r = a
        .topic("smile \u{1F600}")
        .publish(Event::message("x"))
        .await;
    let typed = matches!(r, Err(PublishError::Unavailable(_)));
    // A client subscribes to the room with an emoji on node B.
    let _hostile = b.topic("smile \u{1F600}").subscribe(None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delivered = Vec::new();
    for i in 0..5 {
        let data = format!("after {i}");
        let _ =
            tokio::time::timeout(PATIENCE, a.topic("plain").publish(Event::message(&*data))).await;
    }
    delivered.extend(data(&quiet(&mut before, Duration::from_secs(4)).await));
    let mut other = b.topic("other").subscribe(None);
    other.join();
    let _ = a.topic("other").publish(Event::message("other")).await;
    let other_got = data(&quiet(&mut other, Duration::from_secs(3)).await);
    assert!(typed, "publish to an emoji name in LATIN1: {r:?}");
    assert_eq!(
        delivered,
        numbers(0..=4)
            .iter()
            .map(|n| format!("after {n}"))
            .collect::<Vec<_>>(),
        "node B's other topic after a client subscribed to an emoji name"
    );
    assert_eq!(other_got, ["other"], "a topic B follows afterwards");
}

/// Names at exactly `MAX_TOPIC_BYTES` made of multibyte characters publish and deliver; one
/// byte more (a character cut across the limit) is refused typed; a subscriber to a longer name
/// breaks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn multibyte_names_around_the_limit_count_bytes_not_characters() {
    use tower_sse::hub::postgres::MAX_TOPIC_BYTES;
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    // Incompressible: CJK characters (3 bytes) of a shuffled range, then ASCII to the byte.
    let cjk = |chars: usize| -> String {
        (0..chars as u32)
            .map(|i| {
                char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) >> 20) % 20000).unwrap()
            })
            .collect()
    };
    let mut at_limit = cjk(MAX_TOPIC_BYTES / 3);
    while at_limit.len() < MAX_TOPIC_BYTES {
        at_limit.push('x');
    }
    let emoji: String = std::iter::repeat_n('\u{1F600}', MAX_TOPIC_BYTES / 4).collect();
    assert_eq!(
        (at_limit.len(), emoji.len()),
        (MAX_TOPIC_BYTES, MAX_TOPIC_BYTES)
    );
    // One character more: fewer characters than the limit, more bytes.
    let over = format!("{}\u{e9}\u{e9}\u{e9}", &emoji[..MAX_TOPIC_BYTES - 4]);
    assert!(over.len() > MAX_TOPIC_BYTES && over.chars().count() < MAX_TOPIC_BYTES);
    let mut failures = Vec::new();
    let _long = b.topic(&over).subscribe(None);
    for name in [&at_limit, &emoji] {
        let mut sub = b.topic(name).subscribe(None);
        sub.join();
        tokio::time::sleep(Duration::from_millis(500)).await;
        match a.topic(name).publish(Event::message("hello")).await {
            Ok(id) => {
                let got = quiet(&mut sub, Duration::from_secs(2)).await;
                if got.len() != 1 || got[0].last_event_id != id {
                    failures.push(format!(
                        "{} chars: got {:?}",
                        name.chars().count(),
                        data(&got)
                    ));
                }
            }
            Err(e) => failures.push(format!("{} chars: {e}", name.chars().count())),
        }
    }
    let r = a.topic(&over).publish(Event::message("x")).await;
    if !matches!(r, Err(PublishError::Unavailable(_))) {
        failures.push(format!("over the limit: {r:?}"));
    }
    let mut sub = live(&b, &a, "plain").await;
    publish(&a, "plain", "after").await;
    assert_eq!(data(&take(&mut sub, 1).await), ["after"]);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `Last-Event-ID`s a hostile client makes up: an offset past the head, numbers past `i64` and
/// `u64`, an epoch that never was. Each is told `history-lost` (the history does not hold it),
/// and none moves the node's numbering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn made_up_last_event_ids_are_told_history_lost_and_move_no_numbering() {
    let server = PgServer::start().await;
    let (a, _) = pg_node(&server);
    let (b, _) = pg_node(&server);
    let mut sub = live(&b, &a, "t").await;
    let mut last = String::new();
    for i in 1..=5 {
        last = publish(&a, "t", &i.to_string()).await;
    }
    take(&mut sub, 5).await;
    let (epoch, head) = split_id(&last);
    let mut failures = Vec::new();
    let made_up = [
        format!("{epoch}-{}", head + 1),
        format!("{epoch}-{}", head + 1000),
        format!("{epoch}-9223372036854775807"),
        format!("{epoch}-9223372036854775808"),
        format!("{epoch}-18446744073709551615"),
        format!("{epoch}-0"),
        "Zz9neverwas-3".to_owned(),
    ];
    let mut resumed = Vec::new();
    for text in &made_up {
        for hub in [&a, &b] {
            let mut s = hub.topic("t").subscribe(Some(&id(text)));
            s.join();
            resumed.push((text.clone(), s));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (text, s) in &mut resumed {
        let got = quiet(s, Duration::from_millis(100)).await;
        let first = got.first().map(|m| {
            if m.event == HISTORY_LOST {
                "history-lost".to_owned()
            } else {
                format!("{:?} at {}", m.data, m.last_event_id)
            }
        });
        // Offset 0 of the epoch is "before everything": the history from the start.
        let want = if text.ends_with("-0") {
            None
        } else {
            Some("history-lost".to_owned())
        };
        if want.is_some() && first != want {
            failures.push(format!("{text}: first {first:?}, all {:?}", data(&got)));
        }
    }
    let next = publish(&b, "t", "next").await;
    if split_id(&next) != (epoch.clone(), head + 1) {
        failures.push(format!("after the made-up ids the next publish was {next}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Hubs on two databases of one cluster: one topic name, two worlds (the channel is per
/// database); neither sees the other's events or numbering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn hubs_on_two_databases_of_one_cluster_never_cross() {
    let server = PgServer::start().await;
    let mut admin = server.admin().await;
    exec(&mut admin, "CREATE DATABASE one").await;
    exec(&mut admin, "CREATE DATABASE two").await;
    let one = format!("postgres://postgres@127.0.0.1:{}/one", server.port());
    let two = format!("postgres://postgres@127.0.0.1:{}/two", server.port());
    let a1 = Hub::builder().broker(broker_on(pool_at(&one, 4))).build();
    let b1 = Hub::builder().broker(broker_on(pool_at(&one, 4))).build();
    let a2 = Hub::builder().broker(broker_on(pool_at(&two, 4))).build();
    let mut s1 = live(&b1, &a1, "t").await;
    let mut s2 = live(&a2, &a2, "t").await;
    let mut tasks = Vec::new();
    for (hub, tag) in [(a1.clone(), "one"), (a2.clone(), "two")] {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                ids.push(publish(&hub, "t", &format!("{tag} {i}")).await);
            }
            ids
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let g1 = data(&quiet(&mut s1, Duration::from_secs(2)).await);
    let g2 = data(&quiet(&mut s2, Duration::from_secs(2)).await);
    let want = |tag: &str| (0..20).map(|i| format!("{tag} {i}")).collect::<Vec<_>>();
    assert_eq!(g1, want("one"));
    assert_eq!(g2, want("two"));
}

// ---------------------------------------------------------------------------------------------
// The chat example on Postgres

async fn post(app: &axum::Router, room: &str, text: &str) -> (u16, String) {
    use tower::ServiceExt;
    let body = serde_json::json!({ "user": "eve", "text": text }).to_string();
    let path = format!("/rooms/{room}/messages");
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Concurrent posts to two rooms from two servers, hostile room names (too long, a NUL), and
/// Postgres killed mid-post: a message is in `chat_messages` if and only if its room got it,
/// under the id stored with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn chat_a_message_is_stored_if_and_only_if_its_room_got_it() {
    let mut server = PgServer::start().await;
    let (hub1, app1) = chat::postgres_app(&server.url()).await.unwrap();
    let (hub2, app2) = chat::postgres_app(&server.url()).await.unwrap();
    let mut rooms = Vec::new();
    for room in ["lobby", "tea"] {
        rooms.push((room, live(&hub2, &hub1, room).await));
    }
    let long = "r".repeat(3000);
    let mut tasks = Vec::new();
    for (n, app) in [app1.clone(), app2.clone()].into_iter().enumerate() {
        for room in ["lobby", "tea"] {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..15 {
                    out.push(post(&app, room, &format!("s{n} {room} {i}")).await);
                }
                out
            }));
        }
    }
    for t in tasks {
        for (status, body) in t.await.unwrap() {
            assert_eq!(status, 202, "{body}");
        }
    }
    let (long_status, _) = post(&app1, &long, "long room").await;
    let (nul_status, _) = post(&app1, "a%00b", "nul room").await;
    // Postgres dies while posts are under way.
    let killer = {
        let app = app1.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..40 {
                out.push(post(&app, "lobby", &format!("crash {i}")).await.0);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            out
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;
    let crash_statuses = killer.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // After it, the rooms work again.
    for _ in 0..50 {
        if post(&app2, "tea", "back").await.0 == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut received: HashMap<String, (String, String)> = HashMap::new();
    for (room, sub) in &mut rooms {
        for m in quiet(sub, Duration::from_secs(6)).await {
            if m.event == "message" {
                let v: serde_json::Value = serde_json::from_str(&m.data).unwrap();
                let text = v["text"].as_str().unwrap().to_owned();
                received.insert(m.last_event_id.clone(), ((*room).to_owned(), text));
            }
        }
    }
    let mut admin = server.admin().await;
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT room, body, event_id FROM chat_messages")
            .fetch_all(&mut admin)
            .await
            .unwrap();
    let mut failures = Vec::new();
    for (room, body, event_id) in &stored {
        match received.get(event_id) {
            Some((r, t)) if r == room && t == body => {}
            other => failures.push(format!(
                "stored {room}/{body:?} at {event_id}, got {other:?}"
            )),
        }
    }
    let stored_ids: std::collections::HashSet<&String> = stored.iter().map(|s| &s.2).collect();
    for (event_id, (room, text)) in &received {
        if !stored_ids.contains(event_id) {
            failures.push(format!("{room} got {text:?} at {event_id}, not stored"));
        }
    }
    assert_eq!((long_status, nul_status), (503, 503), "hostile room names");
    assert!(
        stored.iter().filter(|s| s.1.starts_with('s')).count() == 60,
        "the 60 concurrent posts are stored"
    );
    assert!(
        failures.is_empty(),
        "{failures:#?} (crash posts: {crash_statuses:?})"
    );
}
