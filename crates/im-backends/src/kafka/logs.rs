//! librdkafka's logs and global errors, forwarded to `tracing` (rdkafka sends
//! them to the `log` crate, which this workspace does not collect).

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use tracing::{debug, error, info, warn};

/// The context of the producer and the admin client: logs only.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Logs;

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

pub(super) fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            error!(target: "librdkafka", facility, message)
        }
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, message),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(target: "librdkafka", facility, message),
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility, message),
    }
}

/// librdkafka recovers from these by itself (reconnects, retries); they are
/// worth a warning, and the calls they affect fail with their own errors.
pub(super) fn client_error(error: KafkaError, reason: &str) {
    warn!(target: "librdkafka", %error, reason, "kafka client error");
}
