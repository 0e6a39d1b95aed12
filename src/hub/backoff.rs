//! What an engine's connection task does between two attempts to connect: wait, and keep
//! track of what the hub follows meanwhile.

use std::time::Duration;
use tokio::sync::mpsc;

/// Waits `delay`, handing every command that arrives meanwhile to `apply`. False when the hub
/// is gone (its end of `commands` closed).
pub(super) async fn wait_tracking<C>(
    delay: Duration,
    commands: &mut mpsc::UnboundedReceiver<C>,
    mut apply: impl FnMut(C),
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            command = commands.recv() => match command {
                None => return false,
                Some(command) => apply(command),
            },
        }
    }
}
