//! An alarm for a deadline that a body checks on every poll but waits on only when idle: the
//! timer is created on the first wait, boxed so that the body stays `Unpin`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Default)]
pub(crate) struct Alarm {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Alarm {
    /// Ready once `deadline` has passed; until then wakes the task when it does. The deadline
    /// of the first call is the alarm's for good: callers never move theirs.
    pub(crate) fn poll(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        self.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
            .as_mut()
            .poll(cx)
    }
}
