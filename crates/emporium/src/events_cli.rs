//! `emporium events`: operating the events bus from the command line: the dead letters of a
//! consumer group (`dlq list`, `dlq redrive`). It opens the configured bus (`--events`) as a
//! service does; on SNS and SQS that works beside running services, while the embedded bus is
//! one process's file, so there it works while the shop is stopped.

use anyhow::Context;
use clap::{Args, Subcommand};
use emporium_adapters::connect;
use emporium_api::events::Envelope;
use emporium_ports::events::{Event, GroupDef};

use crate::run::{Service, Settings};

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// A consumer group's dead letters: events its handler failed on every attempt.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List the group's dead letters, oldest first, without moving them.
    List {
        #[command(flatten)]
        group: GroupArg,
        /// List at most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        max: u16,
        /// Print each event's whole envelope, one JSON document per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        services: Settings,
    },
    /// Put every dead letter of the group back in its queue, as new: its consumers handle them
    /// again (once each: they remember what they applied).
    Redrive {
        #[command(flatten)]
        group: GroupArg,
        #[command(flatten)]
        services: Settings,
    },
}

#[derive(Args, Debug)]
pub struct GroupArg {
    /// The consumer group, as the table of services declares it (`inventory-orders`,
    /// `cart-orders`).
    #[arg(long)]
    pub group: String,
}

impl GroupArg {
    fn declared(&self) -> anyhow::Result<GroupDef> {
        let groups = Service::all_groups();
        groups
            .iter()
            .copied()
            .find(|group| group.name == self.group)
            .ok_or_else(|| {
                let names: Vec<&str> = groups.iter().map(|group| group.name).collect();
                anyhow::anyhow!(
                    "no consumer group {:?}; the groups are {}",
                    self.group,
                    names.join(", ")
                )
            })
    }
}

/// Runs an `emporium events` command, writing what it found to `out`.
pub async fn run(args: EventsArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    match args.command {
        EventsCommand::Dlq(DlqCommand::List {
            group,
            max,
            json,
            services,
        }) => {
            let group = group.declared()?;
            let events = open(&services).await?;
            let dead = events
                .dead_letters(group.name, usize::from(max))
                .await
                .with_context(|| format!("reading the dead letters of {}", group.name))?;
            for event in &dead {
                if json {
                    writeln!(out, "{}", event.body)?;
                } else {
                    writeln!(out, "{}", summary(event))?;
                }
            }
            if !json {
                writeln!(out, "{} dead letters in {}", dead.len(), group.name)?;
            }
        }
        EventsCommand::Dlq(DlqCommand::Redrive { group, services }) => {
            let group = group.declared()?;
            let events = open(&services).await?;
            let moved = events
                .redrive(group.name)
                .await
                .with_context(|| format!("redriving the dead letters of {}", group.name))?;
            writeln!(
                out,
                "{moved} dead letters of {} back in its queue",
                group.name
            )?;
        }
    }
    Ok(())
}

async fn open(
    services: &Settings,
) -> anyhow::Result<std::sync::Arc<dyn emporium_ports::events::Events>> {
    let uri = services.common.events_uri();
    connect::events(&uri, &Service::all_groups())
        .await
        .with_context(|| {
            format!("cannot open the events bus {uri} (an embedded bus is one process's: stop the shop first)")
        })
}

/// One line for an event: when, what, about what, its id.
fn summary(event: &Event) -> String {
    match Envelope::from_json(event.body.as_bytes()) {
        Ok(envelope) => {
            // The time as the producer wrote it (RFC 3339).
            let time = serde_json::from_str::<serde_json::Value>(&event.body)
                .ok()
                .and_then(|raw| raw.get("time")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!(
                "{time}  {}  {}  {}",
                envelope.kind, envelope.subject, envelope.id
            )
        }
        // Unreadable (which may be why it is dead): what the bus knows of it.
        Err(_) => format!("(not an envelope)  {}  {}", event.kind, event.id),
    }
}
