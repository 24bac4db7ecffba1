//! Table provisioning for `emporium init`: a missing table is created with string `pk`/`sk`
//! keys, a GSI per index with every attribute projected, on-demand billing, and TTL on the
//! table's TTL attribute; an existing one gets the indexes it lacks. Every step checks first,
//! and "already exists" from a racing `init` counts as success.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use emporium_ports::storage::{IndexDef, PK, SK, TableDef};

use super::DynamoStorage;

impl DynamoStorage {
    /// Creates the tables that are missing (with their indexes and TTL) and adds what existing
    /// ones lack; safe to run again.
    pub async fn ensure_tables(&self) -> anyhow::Result<()> {
        for def in self.tables.values() {
            self.ensure_table(def).await?;
        }
        Ok(())
    }

    async fn ensure_table(&self, def: &TableDef) -> anyhow::Result<()> {
        let name = self.physical(def.name);
        let string = |attribute: &str| {
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |attribute: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(attribute)
                .key_type(kind)
                .build()
        };
        let gsi = |index: &IndexDef| -> anyhow::Result<GlobalSecondaryIndex> {
            Ok(GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .key_schema(key(index.pk, KeyType::Hash)?)
                .key_schema(key(index.sk, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?)
        };
        let mut attributes = vec![PK, SK];
        for index in def.indexes {
            for attribute in [index.pk, index.sk] {
                if !attributes.contains(&attribute) {
                    attributes.push(attribute);
                }
            }
        }
        let existing = self.client.describe_table().table_name(&name).send().await;
        match existing {
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                let mut create = self
                    .client
                    .create_table()
                    .table_name(&name)
                    .billing_mode(BillingMode::PayPerRequest)
                    .key_schema(key(PK, KeyType::Hash)?)
                    .key_schema(key(SK, KeyType::Range)?);
                for attribute in &attributes {
                    create = create.attribute_definitions(string(attribute)?);
                }
                for index in def.indexes {
                    create = create.global_secondary_indexes(gsi(index)?);
                }
                match create.send().await {
                    Ok(_) => tracing::info!(table = %name, "created table"),
                    // Another `init` got there first.
                    Err(error)
                        if error
                            .as_service_error()
                            .is_some_and(|e| e.is_resource_in_use_exception()) => {}
                    Err(error) => {
                        return Err(
                            anyhow::Error::from(error).context(format!("creating table {name}"))
                        );
                    }
                }
            }
            Err(error) => {
                return Err(anyhow::Error::from(error).context(format!("describing table {name}")));
            }
            Ok(described) => {
                let present: Vec<String> = described
                    .table()
                    .map(|t| {
                        t.global_secondary_indexes()
                            .iter()
                            .filter_map(|g| g.index_name().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                for index in def
                    .indexes
                    .iter()
                    .filter(|i| !present.iter().any(|p| p == i.name))
                {
                    self.wait_active(&name).await?;
                    let mut update = self.client.update_table().table_name(&name);
                    for attribute in [index.pk, index.sk] {
                        update = update.attribute_definitions(string(attribute)?);
                    }
                    update
                        .global_secondary_index_updates(
                            aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                                .create(
                                    aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
                                        .index_name(index.name)
                                        .key_schema(key(index.pk, KeyType::Hash)?)
                                        .key_schema(key(index.sk, KeyType::Range)?)
                                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                                        .build()?,
                                )
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| anyhow::Error::from(e).context(format!("adding index {} to {name}", index.name)))?;
                    tracing::info!(table = %name, index = index.name, "added index");
                }
            }
        }
        self.wait_active(&name).await?;
        if let Some(attribute) = def.ttl_attribute {
            let ttl = self
                .client
                .describe_time_to_live()
                .table_name(&name)
                .send()
                .await
                .map_err(|e| {
                    anyhow::Error::from(e).context(format!("reading the TTL of {name}"))
                })?;
            let enabled = ttl.time_to_live_description().is_some_and(|d| {
                d.attribute_name() == Some(attribute)
                    && matches!(
                        d.time_to_live_status(),
                        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                    )
            });
            if !enabled {
                self.client
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .enabled(true)
                            .attribute_name(attribute)
                            .build()?,
                    )
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::Error::from(e).context(format!("enabling TTL on {name}"))
                    })?;
                tracing::info!(table = %name, attribute, "enabled TTL");
            }
        }
        Ok(())
    }

    async fn wait_active(&self, name: &str) -> anyhow::Result<()> {
        for _ in 0..600 {
            let described = self.client.describe_table().table_name(name).send().await?;
            let table = described.table();
            let table_active = table.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
            let indexes_active = table.is_some_and(|t| {
                t.global_secondary_indexes().iter().all(|g| {
                    g.index_status()
                        .is_none_or(|s| *s == aws_sdk_dynamodb::types::IndexStatus::Active)
                })
            });
            if table_active && indexes_active {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("table {name} did not become active")
    }
}
