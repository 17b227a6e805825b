//! Where the filter's audit records go besides the `content_audit` table:
//! the `content_audit` topic on Kafka (a compliance tool consumes it), and
//! the admin API that lists the table (`im.audit.v1.AuditService`, behind
//! `imctl audit list`).

use std::sync::Arc;

use bytes::Bytes;
use im_auth::Tokens;
use im_core::ports::{AuditQuery, MessageStore};
use im_core::{AuditRecord, ImError, MessageId};
use im_proto::audit as pb;
use im_proto::audit::audit_service_server::{AuditService, AuditServiceServer};
use im_proto::convert::{encode_audit_record, status};
use tonic::{Request, Response, Status};

use crate::grpc::require_admin;
use crate::metrics::Metrics;
use crate::publisher::{PublishCounters, PublishQueue, Publishable, Publisher};

/// Records waiting for the publisher; past this, new ones are dropped
/// (counted): the table has them all.
pub const AUDIT_PUBLISH_QUEUE: usize = 16 * 1024;

/// The pipeline's handle on the `content_audit` publisher.
pub type AuditQueue = PublishQueue<AuditRecord>;

/// Publishes audit records on `content_audit`, keyed by conversation (one
/// conversation's records keep their order); see [`Publisher`].
pub type AuditPublisher = Publisher<AuditRecord>;

impl Publishable for AuditRecord {
    const WHAT: &'static str = "audit records";

    fn key(&self) -> Bytes {
        Bytes::from(self.conversation.to_string())
    }

    fn payload(&self) -> Bytes {
        encode_audit_record(self)
    }

    fn counters(metrics: &Metrics) -> PublishCounters {
        PublishCounters {
            published: metrics.audit_published.clone(),
            failures: metrics.audit_publish_failures.clone(),
            dropped: metrics.audit_dropped.clone(),
        }
    }
}

/// Records per page when the request names no limit, and the most a page
/// holds.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// `im.audit.v1.AuditService`: the stored records, for admins only.
pub struct AuditGrpc {
    store: Arc<dyn MessageStore>,
    tokens: Tokens,
}

impl AuditGrpc {
    pub fn server(store: Arc<dyn MessageStore>, tokens: Tokens) -> AuditServiceServer<Self> {
        AuditServiceServer::new(Self { store, tokens })
    }
}

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        require_admin(&self.tokens, &request)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(status(ImError::invalid(format!("limit must be at most {MAX_PAGE}"))));
            }
            n => n,
        };
        let conversation =
            if req.conversation_id.is_empty() { None } else { Some(req.conversation_id.parse().map_err(status)?) };
        let query = AuditQuery {
            before: (req.before_msg_id != 0).then_some(MessageId(req.before_msg_id)),
            conversation,
            limit,
        };
        let records = self.store.audit_records(&query).await.map_err(|e| status(e.into()))?;
        let next_before = match records.last() {
            Some(last) if records.len() == limit as usize => last.msg_id.0,
            _ => 0,
        };
        Ok(Response::new(pb::ListAuditRecordsResponse {
            records: records.iter().map(Into::into).collect(),
            next_before,
        }))
    }
}
