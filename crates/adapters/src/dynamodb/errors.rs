//! What the SDK's failures mean for the port: a failed condition, a cancelled transaction
//! (which positions failed, or a conflict worth another try), the caller's fault, or the
//! backend's.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use emporium_ports::storage::StorageError;

pub(super) fn backend(error: impl Into<anyhow::Error>) -> StorageError {
    StorageError::Backend(error.into())
}

/// What a cancelled transaction says.
pub(super) enum Cancelled {
    /// These positions' conditions failed.
    Conditions(Vec<usize>),
    /// Another transaction held some of the items; worth trying again.
    Conflict,
}

pub(super) fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    error: &SdkError<E, R>,
) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Maps a failed call to a port error: validation problems are the caller's fault, the rest is
/// the backend's.
pub(super) fn service_error<E, R>(error: SdkError<E, R>) -> StorageError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(service) = error.as_service_error() {
        if service.code() == Some("ValidationException") {
            return StorageError::Invalid(
                service
                    .message()
                    .unwrap_or("rejected by DynamoDB")
                    .to_owned(),
            );
        }
        if service.code() == Some("ResourceNotFoundException") {
            return backend(anyhow::anyhow!(
                "{}; run `emporium init` to create the tables",
                service.message().unwrap_or("table not found")
            ));
        }
    }
    backend(error)
}

pub(super) fn classify(
    error: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> std::result::Result<Cancelled, StorageError> {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    {
        let reasons = cancelled.cancellation_reasons();
        let failed: Vec<usize> = reasons
            .iter()
            .enumerate()
            .filter(|(_, reason)| reason.code() == Some("ConditionalCheckFailed"))
            .map(|(position, _)| position)
            .collect();
        if !failed.is_empty() {
            return Ok(Cancelled::Conditions(failed));
        }
        if reasons
            .iter()
            .any(|r| r.code() == Some("TransactionConflict"))
        {
            return Ok(Cancelled::Conflict);
        }
        if let Some(reason) = reasons.iter().find(|r| r.code() == Some("ValidationError")) {
            return Err(StorageError::Invalid(
                reason
                    .message()
                    .unwrap_or("rejected by DynamoDB")
                    .to_owned(),
            ));
        }
    }
    Err(service_error(error))
}
