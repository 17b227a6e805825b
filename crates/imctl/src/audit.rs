//! `imctl audit list`: the sensitive-word filter's audit records
//! (`FILTER_ACTION=audit`), newest first, from `im.audit.v1.AuditService` on
//! an im-service node (`--im-service-url`), with the admin credential.

use im_proto::audit::ListAuditRecordsRequest;
use im_proto::audit::audit_service_client::AuditServiceClient;

use crate::admin::ServiceAdmin;
use crate::cli::{AuditCommand, GlobalArgs};
use crate::output::{AuditJson, json_line};

/// `imctl audit ...`.
pub async fn run_audit(
    global: &GlobalArgs,
    env_admin_token: Option<&str>,
    command: AuditCommand,
) -> anyhow::Result<()> {
    let AuditCommand::List { limit, before, conversation } = command;
    let admin = ServiceAdmin::connect(global, env_admin_token).await?;
    let mut client = AuditServiceClient::new(admin.channel.clone());
    // The next page's command keeps the filter.
    let filter = conversation.as_deref().map(|c| format!(" --conversation {c}")).unwrap_or_default();
    let request = ListAuditRecordsRequest {
        limit,
        before_msg_id: before.unwrap_or(0),
        conversation_id: conversation.unwrap_or_default(),
    };
    let page = admin.answer(client.list_audit_records(admin.request(request)).await)?;
    let mut out = std::io::stdout().lock();
    for record in &page.records {
        json_line(&mut out, &AuditJson::from(record))?;
    }
    if page.next_before != 0 {
        eprintln!("more records: imctl audit list --before {}{filter}", page.next_before);
    }
    Ok(())
}
