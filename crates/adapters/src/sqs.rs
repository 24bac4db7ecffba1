//! The events port on SNS and SQS: a topic per aggregate (`<prefix>-order`, ...), and per
//! consumer group a queue (`<prefix>-<group>`) subscribed to the topics of the types it receives,
//! with raw delivery and a filter policy on the `type` attribute, and a dead-letter queue
//! (`<prefix>-<group>-dlq`) that SQS itself moves an event to after `max_attempts` receives
//! (the queue's redrive policy).
//!
//! Why SNS and SQS rather than EventBridge: the port's model is exactly theirs (fan-out to one
//! queue per group, visibility timeouts, receive counts, dead letters by redrive policy), every
//! stand-in serves them (moto, LocalStack's free edition), and a queue per group is where
//! replicas compete and back-pressure builds, which an EventBridge rule would need SQS targets
//! for anyway.
//!
//! Each event travels with the message attributes `type` (what the subscriptions filter on) and
//! `id`; the body is the envelope. A receipt is SQS's receipt handle.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use emporium_ports::events::{
    Delivery, Event, Events, EventsError, GroupDef, RETENTION, Receipt, Result, topic_of,
    validate_extension, validate_groups, validate_receive,
};

/// What a receive asks SQS for at most per call, and what a batch holds.
const BATCH: usize = 10;

fn backend(error: impl Into<anyhow::Error>) -> EventsError {
    EventsError::Backend(error.into())
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// The names of a platform's topics and queues.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn topic(&self, aggregate: &str) -> String {
        format!("{}-{aggregate}", self.prefix)
    }

    pub fn queue(&self, group: &str) -> String {
        format!("{}-{group}", self.prefix)
    }

    pub fn dead_letters(&self, group: &str) -> String {
        format!("{}-{group}-dlq", self.prefix)
    }
}

struct Queues {
    def: GroupDef,
    queue: String,
    dead_letters: String,
}

/// Events on SNS topics and SQS queues that `ensure_bus` created.
pub struct SnsSqsEvents {
    /// The names of its topics and queues.
    names: Names,
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    /// Topic ARNs by aggregate, resolved when first published to.
    topics: std::sync::Mutex<HashMap<String, String>>,
    groups: HashMap<&'static str, Queues>,
}

/// Most bytes in one SNS publish batch (SNS takes 256 KiB for the whole batch).
const BATCH_BYTES: usize = 250 * 1024;

/// `events` in batches within SNS's limits of count and bytes.
fn batches<'a>(events: &[&'a Event]) -> Vec<Vec<&'a Event>> {
    let mut batches: Vec<Vec<&Event>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.size();
        match batches.last_mut() {
            Some(batch) if batch.len() < BATCH && bytes + size <= BATCH_BYTES => {
                batch.push(event);
                bytes += size;
            }
            _ => {
                batches.push(vec![event]);
                bytes = size;
            }
        }
    }
    batches
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<String> {
    let found = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .with_context(|| format!("finding the queue {name} (run `emporium init`)"))?;
    found
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("SQS gave no URL for the queue {name}"))
}

/// Creates the queue `name` when missing (creating a queue is idempotent); its URL.
async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<String> {
    let created = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .with_context(|| format!("creating the queue {name}"))?;
    created
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no URL for {name}"))
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading the ARN of {url}"))?;
    attributes
        .attributes()
        .and_then(|all| all.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| anyhow!("SQS gave no ARN for {url}"))
}

/// The ARN of the topic `name`, creating it when missing (creating a topic is idempotent).
async fn topic_arn(sns: &aws_sdk_sns::Client, name: &str) -> anyhow::Result<String> {
    let created = sns
        .create_topic()
        .name(name)
        .send()
        .await
        .with_context(|| format!("creating the topic {name}"))?;
    created
        .topic_arn()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("SNS gave no ARN for the topic {name}"))
}

/// Creates (or brings up to date) the topics, queues, dead-letter queues, queue policies and
/// subscriptions of `groups`. Idempotent, as `emporium init` must be.
pub async fn ensure_bus(
    sns: &aws_sdk_sns::Client,
    sqs: &aws_sdk_sqs::Client,
    names: &Names,
    groups: &[GroupDef],
) -> anyhow::Result<()> {
    validate_groups(groups).map_err(|e| anyhow!("{e}"))?;
    let retention = RETENTION.as_secs().to_string();
    for group in groups {
        let dead_name = names.dead_letters(group.name);
        let dead_url = create_queue(sqs, &dead_name).await?;
        sqs.set_queue_attributes()
            .queue_url(&dead_url)
            .attributes(QueueAttributeName::MessageRetentionPeriod, &retention)
            .send()
            .await
            .with_context(|| format!("configuring {dead_name}"))?;
        let dead_arn = queue_arn(sqs, &dead_url).await?;

        let name = names.queue(group.name);
        let url = create_queue(sqs, &name).await?;
        let arn = queue_arn(sqs, &url).await?;
        let mut topics = Vec::new();
        for aggregate in group.topics() {
            topics.push((aggregate, topic_arn(sns, &names.topic(aggregate)).await?));
        }
        let sources: Vec<&str> = topics.iter().map(|(_, topic)| topic.as_str()).collect();
        // Only this platform's topics may send to the queue.
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": sources}},
            }],
        });
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dead_arn,
            "maxReceiveCount": group.max_attempts,
        });
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                group.visibility.as_secs().to_string(),
            )
            .attributes(QueueAttributeName::MessageRetentionPeriod, &retention)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .with_context(|| format!("configuring {name}"))?;

        for (aggregate, topic) in &topics {
            let types: Vec<&str> = group
                .types
                .iter()
                .copied()
                .filter(|kind| topic_of(kind).is_ok_and(|t| t == *aggregate))
                .collect();
            let filter = serde_json::json!({ "type": types }).to_string();
            subscribe(sns, topic, &arn, &filter).await?;
        }
    }
    Ok(())
}

/// Subscribes the queue `queue_arn` to `topic` with raw delivery and `filter`, or brings an
/// existing subscription's filter up to date.
async fn subscribe(
    sns: &aws_sdk_sns::Client,
    topic: &str,
    queue_arn: &str,
    filter: &str,
) -> anyhow::Result<()> {
    let mut next = None;
    loop {
        let page = sns
            .list_subscriptions_by_topic()
            .topic_arn(topic)
            .set_next_token(next)
            .send()
            .await
            .with_context(|| format!("listing the subscriptions of {topic}"))?;
        for existing in page.subscriptions() {
            if existing.endpoint() == Some(queue_arn)
                && let Some(subscription) = existing.subscription_arn()
            {
                for (name, value) in [("RawMessageDelivery", "true"), ("FilterPolicy", filter)] {
                    sns.set_subscription_attributes()
                        .subscription_arn(subscription)
                        .attribute_name(name)
                        .attribute_value(value)
                        .send()
                        .await
                        .with_context(|| format!("updating {subscription}"))?;
                }
                return Ok(());
            }
        }
        match page.next_token() {
            Some(token) => next = Some(token.to_owned()),
            None => break,
        }
    }
    sns.subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .attributes("FilterPolicy", filter)
        .return_subscription_arn(true)
        .send()
        .await
        .with_context(|| format!("subscribing {queue_arn} to {topic}"))?;
    Ok(())
}

impl SnsSqsEvents {
    /// The bus of `groups` under `names`, which `ensure_bus` has created.
    pub async fn open(
        sns: aws_sdk_sns::Client,
        sqs: aws_sdk_sqs::Client,
        names: &Names,
        groups: &[GroupDef],
    ) -> anyhow::Result<Self> {
        validate_groups(groups).map_err(|e| anyhow!("{e}"))?;
        let mut queues = HashMap::new();
        for group in groups {
            queues.insert(
                group.name,
                Queues {
                    def: *group,
                    queue: queue_url(&sqs, &names.queue(group.name)).await?,
                    dead_letters: queue_url(&sqs, &names.dead_letters(group.name)).await?,
                },
            );
        }
        Ok(Self {
            names: names.clone(),
            sns,
            sqs,
            topics: std::sync::Mutex::new(HashMap::new()),
            groups: queues,
        })
    }

    /// The ARN of the topic of `aggregate`, created when this process first publishes to it:
    /// a producer publishes every event, whether or not a group it knows of receives it (one
    /// deployed after it may).
    async fn topic(&self, aggregate: &str) -> Result<String> {
        let known = self
            .topics
            .lock()
            .ok()
            .and_then(|topics| topics.get(aggregate).cloned());
        if let Some(arn) = known {
            return Ok(arn);
        }
        let arn = topic_arn(&self.sns, &self.names.topic(aggregate))
            .await
            .map_err(backend)?;
        if let Ok(mut topics) = self.topics.lock() {
            topics.insert(aggregate.to_owned(), arn.clone());
        }
        Ok(arn)
    }

    fn group(&self, name: &str) -> Result<&Queues> {
        self.groups
            .get(name)
            .ok_or_else(|| EventsError::UnknownGroup(name.to_owned()))
    }

    fn attribute(value: &str) -> Result<MessageAttributeValue> {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(backend)
    }

    /// Messages from `queue` (up to `max`), hidden for `hidden_for` when given.
    async fn take(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
        hidden_for: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(i32::try_from(max).unwrap_or(10))
            .wait_time_seconds(seconds(wait))
            .set_visibility_timeout(hidden_for.map(seconds))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(backend)?;
        let mut deliveries = Vec::new();
        for message in received.messages() {
            let text = |name: &str| {
                message
                    .message_attributes()
                    .and_then(|all| all.get(name))
                    .and_then(|value| value.string_value())
                    .unwrap_or_default()
                    .to_owned()
            };
            let attempt = message
                .attributes()
                .and_then(|all| all.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|count| count.parse().ok())
                .unwrap_or(1);
            let Some(receipt) = message.receipt_handle() else {
                continue;
            };
            deliveries.push(Delivery {
                event: Event {
                    id: text("id"),
                    kind: text("type"),
                    body: message.body().unwrap_or_default().to_owned(),
                },
                receipt: Receipt(receipt.to_owned()),
                attempt,
            });
        }
        Ok(deliveries)
    }

    async fn delete(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(&receipt.0)
                        .build()
                        .map_err(backend)
                })
                .collect::<Result<Vec<_>>>()?;
            let deleted = self
                .sqs
                .delete_message_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(backend)?;
            // A receipt whose delivery is over is no error: the event comes again, or is gone.
            if let Some(failure) = deleted
                .failed()
                .iter()
                .find(|f| f.sender_fault() && f.code() != "ReceiptHandleIsInvalid")
            {
                return Err(EventsError::Invalid(format!(
                    "SQS refused an acknowledgement: {} {}",
                    failure.code(),
                    failure.message().unwrap_or_default()
                )));
            }
            if let Some(failure) = deleted.failed().iter().find(|f| !f.sender_fault()) {
                return Err(backend(anyhow!(
                    "SQS failed an acknowledgement: {}",
                    failure.code()
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Events for SnsSqsEvents {
    async fn publish(&self, events: &[Event]) -> Result<()> {
        for event in events {
            event.validate()?;
        }
        let mut by_topic: HashMap<&str, Vec<&Event>> = HashMap::new();
        for event in events {
            by_topic
                .entry(topic_of(&event.kind)?)
                .or_default()
                .push(event);
        }
        for (aggregate, events) in by_topic {
            let topic = self.topic(aggregate).await?;
            for chunk in batches(&events) {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(index, event)| {
                        let attribute = |value: &str| {
                            aws_sdk_sns::types::MessageAttributeValue::builder()
                                .data_type("String")
                                .string_value(value)
                                .build()
                                .map_err(backend)
                        };
                        aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                            .id(index.to_string())
                            .message(&event.body)
                            .message_attributes("type", attribute(&event.kind)?)
                            .message_attributes("id", attribute(&event.id)?)
                            .build()
                            .map_err(backend)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let published = self
                    .sns
                    .publish_batch()
                    .topic_arn(&topic)
                    .set_publish_batch_request_entries(Some(entries))
                    .send()
                    .await
                    .map_err(backend)?;
                if let Some(failure) = published.failed().first() {
                    return Err(backend(anyhow!(
                        "SNS did not take an event: {} {}",
                        failure.code(),
                        failure.message().unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    async fn receive(&self, group: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        validate_receive(max, wait)?;
        let group = self.group(group)?;
        self.take(&group.queue, max, wait, None).await
    }

    async fn ack(&self, group: &str, receipts: &[Receipt]) -> Result<()> {
        let group = self.group(group)?;
        self.delete(&group.queue, receipts).await
    }

    async fn extend(&self, group: &str, receipt: &Receipt, hidden_for: Duration) -> Result<()> {
        validate_extension(hidden_for)?;
        let group = self.group(group)?;
        match self
            .sqs
            .change_message_visibility()
            .queue_url(&group.queue)
            .receipt_handle(&receipt.0)
            .visibility_timeout(seconds(hidden_for))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError as E;
                match error.as_service_error() {
                    Some(E::MessageNotInflight(_) | E::ReceiptHandleIsInvalid(_)) => {
                        Err(EventsError::StaleReceipt)
                    }
                    // SQS's answer to a receipt whose visibility ran out.
                    Some(other)
                        if aws_sdk_sqs::error::ProvideErrorMetadata::code(other)
                            == Some("InvalidParameterValue") =>
                    {
                        Err(EventsError::StaleReceipt)
                    }
                    _ => Err(backend(error)),
                }
            }
        }
    }

    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<Event>> {
        let group = self.group(group)?;
        let max = max.clamp(1, 1000);
        // Reading a queue hides what it read: take them for a moment, then show them again.
        let mut seen: Vec<Delivery> = Vec::new();
        while seen.len() < max {
            let batch = self
                .take(
                    &group.dead_letters,
                    (max - seen.len()).min(BATCH),
                    Duration::from_secs(1),
                    Some(Duration::from_secs(30)),
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            seen.extend(batch);
        }
        for delivery in &seen {
            // Best effort: one left hidden shows again when its 30 s are over.
            let _ = self
                .sqs
                .change_message_visibility()
                .queue_url(&group.dead_letters)
                .receipt_handle(&delivery.receipt.0)
                .visibility_timeout(0)
                .send()
                .await;
        }
        Ok(seen.into_iter().map(|delivery| delivery.event).collect())
    }

    async fn redrive(&self, group: &str) -> Result<usize> {
        let queues = self.group(group)?;
        // Only as many as were dead when the redrive began: an event redriven and dead again
        // while it runs (its consumer still failing) waits for the next redrive.
        let dead = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queues.dead_letters)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(backend)?;
        let limit: usize = dead
            .attributes()
            .and_then(|all| all.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|count| count.parse().ok())
            .unwrap_or(0);
        let mut moved = 0;
        while moved < limit {
            let batch = self
                .take(
                    &queues.dead_letters,
                    BATCH,
                    Duration::from_secs(1),
                    Some(Duration::from_secs(60)),
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            // Sent back before it is deleted here: a crash between the two redrives it twice,
            // which consumers deduplicate; the other order could lose it.
            for delivery in &batch {
                self.sqs
                    .send_message()
                    .queue_url(&queues.queue)
                    .message_body(&delivery.event.body)
                    .message_attributes("type", Self::attribute(&delivery.event.kind)?)
                    .message_attributes("id", Self::attribute(&delivery.event.id)?)
                    .send()
                    .await
                    .map_err(backend)?;
            }
            let receipts: Vec<Receipt> = batch.iter().map(|d| d.receipt.clone()).collect();
            self.delete(&queues.dead_letters, &receipts).await?;
            moved += batch.len();
            tracing::info!(group = queues.def.name, moved, "dead letters redriven");
        }
        Ok(moved)
    }

    async fn ping(&self) -> Result<()> {
        self.sqs
            .list_queues()
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(backend)
    }
}
