//! hyper runs each HTTP/2 stream in a task of its own, spawned through the executor it is
//! given. This one registers every such task with its connection's [`Activity`], so that the
//! connection can reset one stream (dropping its task drops the body and makes h2 send
//! `RST_STREAM`) without closing the others.

use super::activity::{Activity, StreamTask};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

/// Spawns a connection's HTTP/2 stream tasks on tokio, each one resettable.
#[derive(Debug, Clone)]
pub(super) struct StreamExecutor {
    activity: Arc<Activity>,
}

impl StreamExecutor {
    pub(super) fn new(activity: Arc<Activity>) -> Self {
        StreamExecutor { activity }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Resettable {
            inner: Some(fut),
            activity: self.activity.clone(),
            stream: None,
        });
    }
}

pin_project! {
    /// A stream's task, dropped when the connection resets it.
    struct Resettable<F> {
        #[pin]
        inner: Option<F>,
        activity: Arc<Activity>,
        stream: Option<Arc<StreamTask>>,
    }

    impl<F> PinnedDrop for Resettable<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(stream) = this.stream.take() {
                this.activity.stream_ended(&stream);
            }
        }
    }
}

impl<F: Future<Output = ()>> Future for Resettable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // Registered from inside the task, before the body is first polled, so the body
        // finds its stream by the task's id.
        if this.stream.is_none() {
            *this.stream = this.activity.stream_started();
        }
        if let Some(stream) = this.stream {
            if stream.is_reset(cx.waker()) {
                this.inner.set(None);
            }
        }
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx),
            None => Poll::Ready(()),
        }
    }
}
