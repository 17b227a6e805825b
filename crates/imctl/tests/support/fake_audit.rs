//! The fake's `im.audit.v1.AuditService` (im/audit/v1/audit.proto): the
//! records a test seeds with [`State::add_audit_record`] (the fake's sends
//! never audit), newest (highest msg_id) first, for the admin credential
//! only, with the paging and the errors of im-service's implementation.

use std::sync::Arc;

use im_proto::audit::audit_service_server::AuditService;
use im_proto::audit::{AuditRecord, ListAuditRecordsRequest, ListAuditRecordsResponse};
use tonic::{Request, Response, Status};

use super::{ADMIN_TOKEN, State};

/// Records per page when the request names none, and the most a page holds.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

pub struct Audit(pub Arc<State>);

impl State {
    /// Stores an audit record, as the filter would with its message; a
    /// record of the same msg_id is replaced.
    #[allow(dead_code)] // by the test files that list audit records only
    pub fn add_audit_record(&self, record: AuditRecord) {
        self.inner.lock().unwrap().audit.insert(record.msg_id, record);
    }
}

/// im-service's `require_admin`: no credential is UNAUTHENTICATED, a valid
/// user's token PERMISSION_DENIED, anything else UNAUTHENTICATED.
fn require_admin<T>(state: &State, request: &Request<T>) -> Result<(), Status> {
    let Some(header) = request.metadata().get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(Status::unauthenticated("missing `authorization: Bearer <token>` metadata"));
    };
    if header == format!("Bearer {ADMIN_TOKEN}") {
        return Ok(());
    }
    let user = header.strip_prefix("Bearer tok-").and_then(|id| id.parse::<u64>().ok());
    match user {
        Some(id) if state.inner.lock().unwrap().users.contains_key(&id) => {
            Err(Status::permission_denied("this call needs the admin credential"))
        }
        _ => Err(Status::unauthenticated("invalid token")),
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        require_admin(&self.0, &request)?;
        let r = request.into_inner();
        let limit = match r.limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => return Err(Status::invalid_argument(format!("limit must be at most {MAX_PAGE}"))),
            n => n,
        };
        if !r.conversation_id.is_empty() {
            r.conversation_id.parse::<im_core::ConversationId>().map_err(|e| Status::invalid_argument(e.message))?;
        }
        let inner = self.0.inner.lock().unwrap();
        let records: Vec<AuditRecord> = inner
            .audit
            .values()
            .rev()
            .filter(|record| r.before_msg_id == 0 || record.msg_id < r.before_msg_id)
            .filter(|record| r.conversation_id.is_empty() || record.conversation_id == r.conversation_id)
            .take(limit as usize)
            .cloned()
            .collect();
        let next_before = match records.last() {
            Some(last) if records.len() == limit as usize => last.msg_id,
            _ => 0,
        };
        Ok(Response::new(ListAuditRecordsResponse { records, next_before }))
    }
}
