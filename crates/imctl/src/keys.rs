//! `imctl keys status|rotate|rewrap|reencrypt`: the data keys of encryption at rest,
//! through `im.keys.v1.KeyService` on an im-service node
//! (`--im-service-url`), with the admin credential.

use std::io::Write;

use anyhow::{Context, bail};
use im_proto::keys::key_service_client::KeyServiceClient;
use im_proto::keys::{RewrapRequest, RotateRequest, StatusRequest};

use crate::admin::ServiceAdmin;
use crate::cli::{GlobalArgs, KeysCommand};
use crate::output::{
    DataKeyJson, KeyRowsJson, RewrapJson, RotatedJson, json_line, keys_status_text, rewrap_text, rotated_text,
};
use crate::reencrypt::{Pace, reencrypt};

/// `imctl keys ...`.
pub async fn run_keys(global: &GlobalArgs, env_admin_token: Option<&str>, command: KeysCommand) -> anyhow::Result<()> {
    let admin = ServiceAdmin::connect(global, env_admin_token).await?;
    let mut client = KeyServiceClient::new(admin.channel.clone());
    let mut out = std::io::stdout().lock();
    match command {
        KeysCommand::Status { json } => {
            let status = admin.answer(client.status(admin.request(StatusRequest {})).await)?;
            if json {
                for key in &status.keys {
                    json_line(&mut out, &DataKeyJson::of(key, status.now_ms))?;
                }
                let rows = KeyRowsJson {
                    clear_rows: status.clear_rows,
                    orphan_rows: status.orphan_rows,
                    master_key_id: &status.master_key_id,
                };
                json_line(&mut out, &rows)?;
            } else {
                out.write_all(keys_status_text(&status).as_bytes())?;
            }
        }
        KeysCommand::Rotate { json } => {
            let rotated = admin.answer(client.rotate(admin.request(RotateRequest {})).await)?;
            let active = rotated.active.context("the server's Rotate response has no active key")?;
            let rotated = RotatedJson {
                id: active.id,
                previous_id: rotated.previous_id,
                master_key_id: &active.master_key_id,
                created_ms: active.created_ms,
            };
            if json {
                json_line(&mut out, &rotated)?;
            } else {
                out.write_all(rotated_text(&rotated).as_bytes())?;
            }
        }
        KeysCommand::Rewrap { force, json } => {
            let report = admin.answer(client.rewrap(admin.request(RewrapRequest { force })).await)?;
            let counts = RewrapJson::from(&report);
            if json {
                json_line(&mut out, &counts)?;
            } else {
                out.write_all(rewrap_text(&counts).as_bytes())?;
            }
            out.flush()?;
            for failure in &report.failures {
                eprintln!("{failure}");
            }
            if report.failed > 0 {
                bail!("{} data key(s) could not be re-wrapped; run `imctl keys rewrap` again", report.failed);
            }
        }
        KeysCommand::Reencrypt { rate, batch, after, json } => {
            let totals = reencrypt(&admin, Pace { rate, batch, after }).await?;
            if json {
                json_line(&mut out, &totals)?;
            } else {
                out.write_all(totals.text().as_bytes())?;
            }
            if totals.failed > 0 {
                out.flush()?;
                bail!("{} row(s) could not be decrypted and were left as they are (named above)", totals.failed);
            }
        }
    }
    Ok(())
}
