//! librdkafka errors as [`BackendError`]: what may pass (no broker reachable,
//! a timeout, a leader or coordinator moving, a rebalance under way) is
//! `Unavailable`; the rest (a missing topic, a bad config, a record too large)
//! is `Other`.

use im_core::error::BackendError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

pub(super) fn map_kafka(e: KafkaError) -> BackendError {
    let transient = match &e {
        KafkaError::Canceled => true,
        _ => e.rdkafka_error_code().is_some_and(is_transient),
    };
    if transient { BackendError::unavailable(e) } else { BackendError::other(e) }
}

fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | Resolve
            | MessageTimedOut
            | AllBrokersDown
            | OperationTimedOut
            | QueueFull
            | TimedOutQueue
            | ISRInsufficient
            | WaitingForCoordinator
            | AssignmentLost
            | Retry
            | LeaderNotAvailable
            | NotLeaderForPartition
            | RequestTimedOut
            | NetworkException
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | IllegalGeneration
            | UnknownMemberId
            | RebalanceInProgress
    )
}

/// A request that did not finish within the configured timeout.
pub(super) fn timed_out(what: &str) -> BackendError {
    BackendError::unavailable(format!("kafka {what} timed out"))
}

/// A blocking librdkafka call run off the reactor panicked or was cancelled.
pub(super) fn join_failed(e: tokio::task::JoinError) -> BackendError {
    BackendError::other(format!("kafka worker thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_broker_is_unavailable_and_a_missing_topic_is_not() {
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(map_kafka(timed_out), BackendError::Unavailable(_)));
        let missing = KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(matches!(map_kafka(missing), BackendError::Other(_)));
    }
}
