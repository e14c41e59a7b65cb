//! Wake-ups from a JetStream stream: a headers-only ordered push consumer
//! from the newest message on, whose every delivery advances the head
//! watch by the message's stream sequence. Deliveries come after the
//! message is stored, so a woken runner's head query already sees it.

use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::log::Log;
use crate::source::wake::{AbortOnDrop, Follower, advance};

/// Starts following `log`; `None` outside a tokio runtime (runners then poll).
pub(crate) fn follow(log: Log, head: watch::Sender<u64>) -> Option<Follower> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let task = runtime.spawn(async move {
        loop {
            if let Err(e) = deliveries(&log, &head).await {
                tracing::debug!(stream = %log.name, error = %e, "JetStream wake-ups interrupted; runners poll meanwhile");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Some(Box::new(AbortOnDrop(task)))
}

/// Advances `head` with every message stored from now on, until an error.
async fn deliveries(log: &Log, head: &watch::Sender<u64>) -> Result<(), String> {
    let consumer = log
        .js
        .create_consumer_on_stream(
            consumer::push::OrderedConfig {
                deliver_subject: log.client.new_inbox(),
                filter_subject: log.filter.clone(),
                deliver_policy: consumer::DeliverPolicy::New,
                headers_only: true,
                ..Default::default()
            },
            &log.name,
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        if let Ok(info) = message.info() {
            advance(head, info.stream_sequence);
        }
    }
    Err("the consumer ended".into())
}
