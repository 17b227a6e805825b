//! `imctl audit list`: the sensitive-word filter's audit records
//! (`FILTER_ACTION=audit`), newest first, from `im.audit.v1.AuditService` on
//! an im-service node (`--im-service-url`), with the admin credential.

use im_proto::audit::ListAuditRecordsRequest;
use im_proto::audit::audit_service_client::AuditServiceClient;

use crate::admin::resolve_admin_token;
use crate::cli::{AuditCommand, GlobalArgs};
use crate::grpc;
use crate::output::{AuditJson, json_line};

/// `imctl audit ...`.
pub async fn run_audit(
    global: &GlobalArgs,
    env_admin_token: Option<&str>,
    command: AuditCommand,
) -> anyhow::Result<()> {
    let AuditCommand::List { limit, before, conversation } = command;
    let token = resolve_admin_token(global.admin_token.as_deref(), env_admin_token, &global.data_dir)?;
    let authorization = token.authorization()?;
    let channel = grpc::channel(&global.im_service_url, global.timeout, "IM service").await?;
    let mut client = AuditServiceClient::new(channel);
    // The next page's command keeps the filter.
    let filter = conversation.as_deref().map(|c| format!(" --conversation {c}")).unwrap_or_default();
    let request = ListAuditRecordsRequest {
        limit,
        before_msg_id: before.unwrap_or(0),
        conversation_id: conversation.unwrap_or_default(),
    };
    let page =
        grpc::answer(client.list_audit_records(grpc::authorized(request, &authorization)).await).inspect_err(|e| {
            if matches!(e.code, "UNAUTHENTICATED" | "PERMISSION_DENIED") {
                eprintln!("hint: the admin token came from {}", token.source);
            }
        })?;
    let mut out = std::io::stdout().lock();
    for record in &page.records {
        json_line(&mut out, &AuditJson::from(record))?;
    }
    if page.next_before != 0 {
        eprintln!("more records: imctl audit list --before {}{filter}", page.next_before);
    }
    Ok(())
}
