//! The Postgres engine's statements, and what their answers become.

use super::{Started, CHANNEL, MIGRATION};
use crate::hub::broker::{Position, Snapshot};
use crate::Event;
use bytes::Bytes;
use sqlx::{postgres::PgListener, PgConnection, PgPool, Row};
use std::time::{Duration, SystemTime};

/// The advisory lock key the migration runs under (any fixed number; "tower-sse" in ASCII).
const MIGRATION_LOCK: i64 = 0x746f_7765_722d_7373;

/// Numbers, stores and announces one event, in one statement: the topic's row is made (with a
/// new epoch) or its head counted up (which locks it until the transaction ends), the event is
/// stored at the new head, and the topic's name is `NOTIFY`ed (delivered at commit). The head
/// counts up from the newest offset the publishing node has delivered (`$6`, in its epoch `$5`)
/// when that is ahead of the table's: a history restored from an older backup never makes a
/// node that follows the topic hand out an id it has delivered already.
const PUBLISH: &str = r#"
WITH t AS (
    INSERT INTO tower_sse_topics AS t (topic, epoch, head)
    VALUES ($1, $2, 1)
    ON CONFLICT (topic) DO UPDATE
        SET head = CASE WHEN t.epoch = $5 THEN GREATEST(t.head, $6) ELSE t.head END + 1,
            touched = now()
    RETURNING t.epoch, t.head
), e AS (
    INSERT INTO tower_sse_events (topic, epoch, "offset", payload)
    SELECT $1, t.epoch, t.head, $3 FROM t
    RETURNING epoch, "offset"
)
SELECT e.epoch, e."offset"
FROM e, LATERAL (SELECT pg_notify($4, $1)) n
"#;

/// Trims a topic's history: older epochs, offsets at or below `$3`, and (when `$4` > 0) events
/// older than `$4` milliseconds by the database's clock.
const TRIM: &str = r#"
DELETE FROM tower_sse_events
WHERE topic = $1
  AND (epoch <> $2 OR "offset" <= $3
       OR ($4 > 0 AND published < clock_timestamp() - $4 * interval '1 millisecond'))
"#;

/// Reads many topics at once. Per topic (`$1`, with the epoch `$2` and newest offset `$3` the
/// reader holds): its epoch and head (null: no such topic), the digest of the row at the
/// reader's offset (null when there is none: how the reader tells that the history it holds is
/// still the table's), and its newest events after what the reader holds (all of the current
/// epoch when the reader's is another), at most `$4`, newest first, each with its age in ms by
/// the database's clock and its digest. A topic with no such event comes back as one row with
/// null event columns.
const READ: &str = r#"
SELECT k.i, t.epoch, t.head, e."offset", e.age, e.payload, e.digest,
       (SELECT md5(a.payload) FROM tower_sse_events a
        WHERE a.topic = k.topic AND a.epoch = t.epoch AND a."offset" = k.after
          AND t.epoch = k.epoch) AS anchor
FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS k(topic, epoch, after, i)
LEFT JOIN tower_sse_topics t ON t.topic = k.topic
LEFT JOIN LATERAL (
    SELECT x."offset",
           (extract(epoch FROM clock_timestamp() - x.published) * 1000)::bigint AS age,
           x.payload,
           md5(x.payload) AS digest
    FROM tower_sse_events x
    WHERE x.topic = k.topic AND x.epoch = t.epoch AND x."offset" <= t.head
      AND x."offset" > CASE WHEN t.epoch = k.epoch THEN k.after ELSE 0 END
    ORDER BY x."offset" DESC
    LIMIT $4
) e ON true
"#;

/// Gives a topic whose history is not the one a node delivered (restored from an older backup)
/// a new epoch `$3`, if it still has the epoch `$2`; its rows go with it, so what was published
/// after the restore stays readable, under ids no client holds for other events. The topic's
/// row is locked first ([`LOCK_TOPIC`]), so no publish lands in the old epoch in between, and the
/// rows are moved by a statement of their own, which sees every publish committed before the
/// lock was had.
const LOCK_TOPIC: &str = r#"
SELECT 1 FROM tower_sse_topics WHERE topic = $1 AND epoch = $2 FOR UPDATE
"#;
const FENCE_TOPIC: &str = r#"
UPDATE tower_sse_topics SET epoch = $3, touched = now() WHERE topic = $1 AND epoch = $2
"#;
const FENCE_EVENTS: &str = r#"
UPDATE tower_sse_events SET epoch = $3 WHERE topic = $1 AND epoch = $2
"#;

/// Deletes the topics nobody published to for `$1` milliseconds (their history goes with them).
const EXPIRE: &str = r#"
DELETE FROM tower_sse_topics WHERE touched < now() - $1 * interval '1 millisecond'
"#;

/// Every 32nd publish of a topic trims it (and the first of an epoch, which drops an older
/// epoch's rows).
const TRIM_EVERY: i64 = 32;

pub(super) async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    // A plain string runs on the simple protocol, several statements at once.
    sqlx::Executor::execute(&mut *tx, MIGRATION).await?;
    tx.commit().await
}

/// The longest topic name the tables take, in bytes: a key of Postgres's B-tree indexes holds at
/// most about 2,700.
pub const MAX_TOPIC_BYTES: usize = 2048;

/// Whether Postgres can store `topic` at all: no NUL (which `text` cannot hold), and not longer
/// than [`MAX_TOPIC_BYTES`].
pub(super) fn storable(topic: &str) -> bool {
    !topic.contains('\0') && topic.len() <= MAX_TOPIC_BYTES
}

/// Publishes `event` to `topic` on `conn`, in the transaction it is in (or one of its own).
pub(super) async fn publish(
    conn: &mut PgConnection,
    topic: &str,
    event: &Event,
    new_epoch: &str,
    started: &Started,
    delivered: Option<&Position>,
) -> Result<Position, sqlx::Error> {
    if !storable(topic) {
        return Err(sqlx::Error::Protocol(format!(
            "a topic name with a NUL character, or of more than {MAX_TOPIC_BYTES} bytes, cannot \
             be stored in Postgres"
        )));
    }
    let (floor_epoch, floor) = delivered.map_or(("", 0), |p| (p.epoch.as_str(), p.offset));
    let row = sqlx::query(PUBLISH)
        .bind(topic)
        .bind(new_epoch)
        .bind(event.as_bytes().as_ref())
        .bind(CHANNEL)
        .bind(floor_epoch)
        .bind(i64::try_from(floor).unwrap_or(i64::MAX))
        .fetch_one(&mut *conn)
        .await?;
    let epoch: String = row.try_get(0)?;
    let offset: i64 = row.try_get(1)?;
    if offset == 1 || offset % TRIM_EVERY == 0 {
        let keep = i64::try_from(started.history).unwrap_or(i64::MAX);
        let age = started.history_age.map_or(0, |age| {
            i64::try_from(crate::delay::millis(age).max(1)).unwrap_or(i64::MAX)
        });
        sqlx::query(TRIM)
            .bind(topic)
            .bind(&epoch)
            .bind(offset.saturating_sub(keep))
            .bind(age)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Position {
        epoch,
        offset: u64::try_from(offset).unwrap_or(0),
    })
}

/// Publishes `event` in a transaction of its own on `conn`, whose statements Postgres cancels
/// at `deadline` (so that a publish the caller gave up on is not made later). The commit, once
/// sent, is awaited for up to `grace` more (`limits` is both), so that a publish that reports a timeout was never
/// committed unless that commit itself went unanswered. `Err(None)`: timed out.
pub(super) async fn publish_alone(
    conn: &mut PgConnection,
    topic: &str,
    event: &Event,
    new_epoch: &str,
    started: &Started,
    delivered: Option<&Position>,
    limits: (tokio::time::Instant, Duration),
) -> Result<Position, Option<sqlx::Error>> {
    let (deadline, grace) = limits;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let statements = async {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let ms = crate::delay::millis(left).max(1);
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(ms.to_string())
            .execute(&mut *tx)
            .await?;
        let position = publish(&mut tx, topic, event, new_epoch, started, delivered).await?;
        Ok::<_, sqlx::Error>((tx, position))
    };
    let (tx, position) = match tokio::time::timeout_at(deadline, statements).await {
        Ok(Ok(done)) => done,
        Ok(Err(err)) if timed_out(&err) => return Err(None),
        Ok(Err(err)) => return Err(Some(err)),
        // Dropped before any commit: the transaction is rolled back.
        Err(_) => return Err(None),
    };
    match tokio::time::timeout(grace, tx.commit()).await {
        Ok(Ok(())) => Ok(position),
        Ok(Err(err)) => Err(Some(err)),
        Err(_) => Err(None),
    }
}

/// What a reader holds of a topic: the epoch and newest offset to read after, and the digest
/// of the row it read at that offset, when it read one.
#[derive(Debug, Clone, Default)]
pub(super) struct Known {
    pub(super) epoch: String,
    pub(super) offset: u64,
    pub(super) digest: Option<String>,
}

/// One topic's answer to a [`read`].
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// The topic's epoch and head, or `None` when the table holds no such topic.
    pub(super) head: Option<(String, u64)>,
    /// `(offset, published, payload, digest)`, newest first.
    pub(super) events: Vec<(u64, SystemTime, Bytes, Option<String>)>,
    /// The digest of the row at the reader's offset, in its epoch, if there is one.
    pub(super) anchor: Option<String>,
}

impl Answer {
    /// The answer as a snapshot for the hub.
    pub(super) fn snapshot(&self) -> Snapshot {
        let Some((epoch, head)) = &self.head else {
            return Snapshot::empty();
        };
        let mut snapshot = Snapshot::new(epoch.clone(), *head);
        for (offset, at, payload, _) in &self.events {
            snapshot.push_at(*offset, *at, payload.clone());
        }
        snapshot
    }
}

/// Reads `topics` (each with what the reader holds) on `conn`: one answer per topic, in order.
pub(super) async fn read(
    conn: &mut PgListener,
    topics: &[(&str, &Known)],
    limit: usize,
) -> Result<Vec<Answer>, sqlx::Error> {
    let names: Vec<&str> = topics.iter().map(|(name, _)| *name).collect();
    let epochs: Vec<&str> = topics.iter().map(|(_, k)| k.epoch.as_str()).collect();
    let offsets: Vec<i64> = topics
        .iter()
        .map(|(_, k)| i64::try_from(k.offset).unwrap_or(i64::MAX))
        .collect();
    let rows = sqlx::query(READ)
        .bind(&names)
        .bind(&epochs)
        .bind(&offsets)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?;
    let mut answers: Vec<Answer> = topics.iter().map(|_| Answer::default()).collect();
    let now = SystemTime::now();
    for row in rows {
        let index: i64 = row.try_get(0)?;
        let Some(answer) = usize::try_from(index - 1)
            .ok()
            .and_then(|i| answers.get_mut(i))
        else {
            continue;
        };
        let epoch: Option<String> = row.try_get(1)?;
        let head: Option<i64> = row.try_get(2)?;
        if let (Some(epoch), Some(head)) = (epoch, head) {
            answer.head = Some((epoch, u64::try_from(head).unwrap_or(0)));
        }
        let offset: Option<i64> = row.try_get(3)?;
        let age: Option<i64> = row.try_get(4)?;
        let payload: Option<Vec<u8>> = row.try_get(5)?;
        let digest: Option<String> = row.try_get(6)?;
        answer.anchor = row.try_get(7)?;
        if let (Some(offset), Some(payload)) = (offset, payload) {
            // A negative offset (not ours) becomes 0, which the hub rejects and counts.
            let offset = u64::try_from(offset).unwrap_or(0);
            let age = Duration::from_millis(u64::try_from(age.unwrap_or(0)).unwrap_or(0));
            let at = now.checked_sub(age).unwrap_or(now);
            answer
                .events
                .push((offset, at, Bytes::from(payload), digest));
        }
    }
    Ok(answers)
}

/// Gives `topic` a new epoch, rows and all, if it still has `old`, in one transaction on the
/// node's own connection, waiting at most `wait` for the topic's row (held by a transaction
/// that publishes, say). True when it did; on any error the transaction is rolled back.
pub(super) async fn fence(
    conn: &mut PgListener,
    topic: &str,
    old: &str,
    new_epoch: &str,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::Executor::execute(&mut *conn, "BEGIN").await?;
    let done = fence_in(conn, topic, old, new_epoch, wait).await;
    let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
    sqlx::Executor::execute(&mut *conn, end).await?;
    done
}

async fn fence_in(
    conn: &mut PgListener,
    topic: &str,
    old: &str,
    new_epoch: &str,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let ms = crate::delay::millis(wait).max(1);
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(ms.to_string())
        .execute(&mut *conn)
        .await?;
    let locked = sqlx::query(LOCK_TOPIC)
        .bind(topic)
        .bind(old)
        .fetch_optional(&mut *conn)
        .await?;
    if locked.is_none() {
        return Ok(false);
    }
    for statement in [FENCE_TOPIC, FENCE_EVENTS] {
        sqlx::query(statement)
            .bind(topic)
            .bind(old)
            .bind(new_epoch)
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// Deletes the topics nobody published to for `ttl`. Returns how many.
pub(super) async fn expire(conn: &mut PgListener, ttl: Duration) -> Result<u64, sqlx::Error> {
    let ms = i64::try_from(crate::delay::millis(ttl)).unwrap_or(i64::MAX);
    let done = sqlx::query(EXPIRE).bind(ms).execute(conn).await?;
    Ok(done.rows_affected())
}

/// Whether Postgres cancelled the statement at its `statement_timeout` (SQLSTATE 57014).
pub(super) fn timed_out(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// An error as text for logs and [`PublishError`](crate::hub::PublishError): Postgres's own
/// message and code, never a statement's parameters.
pub(super) fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}
