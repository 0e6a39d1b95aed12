//! Stream tickets kept in Redis, shared by every node.

use super::ticket::{hex, Record, Spoilt, TicketError};
use redis::aio::ConnectionManager;
use std::{sync::OnceLock, time::Duration};

/// How long one Redis command may take before the ticket is refused.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct RedisTickets {
    client: redis::Client,
    prefix: String,
    conn: OnceLock<ConnectionManager>,
}

impl RedisTickets {
    pub(crate) fn new(client: redis::Client, prefix: String) -> RedisTickets {
        RedisTickets {
            client,
            prefix,
            conn: OnceLock::new(),
        }
    }

    fn key(&self, id: &[u8]) -> String {
        format!("{}:t:{}", self.prefix, hex(id))
    }

    /// The connection, made (lazily, inside the runtime) on first use.
    fn conn(&self) -> Result<ConnectionManager, String> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|err| err.to_string())?;
        Ok(self.conn.get_or_init(|| conn).clone())
    }

    pub(crate) async fn put(
        &self,
        id: [u8; 8],
        record: Record,
        lifetime: Duration,
    ) -> Result<(), TicketError> {
        let mut conn = self.conn().map_err(TicketError::Unavailable)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&id))
            .arg(record.encode())
            .arg("PX")
            .arg(crate::delay::millis(lifetime).max(1))
            .arg("NX");
        let call = cmd.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(Some(_))) => Ok(()),
            // A lookup half already taken: 2⁻⁶⁴ by chance; refused rather than overwritten.
            Ok(Ok(None)) => Err(TicketError::Unavailable("ticket key taken".into())),
            Ok(Err(err)) => Err(TicketError::Unavailable(err.to_string())),
            Err(_) => Err(TicketError::Unavailable("timed out".into())),
        }
    }

    /// Takes the record: `GETDEL` is atomic, so of many redemptions on many nodes one wins.
    pub(crate) async fn take(&self, id: &[u8; 8]) -> Result<Option<Record>, Spoilt> {
        let mut conn = self.conn().map_err(Spoilt::Unavailable)?;
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(id));
        let call = cmd.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            // A record that does not read back is no ticket (and is gone now).
            Ok(Ok(text)) => Ok(text.and_then(|text| Record::decode(&text))),
            Ok(Err(err)) => Err(Spoilt::Unavailable(err.to_string())),
            Err(_) => Err(Spoilt::Unavailable("timed out".into())),
        }
    }
}
