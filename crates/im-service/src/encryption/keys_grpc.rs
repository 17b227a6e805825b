//! `im.keys.v1.KeyService`: the admin API of the data keys (`imctl keys
//! status|rotate|rewrap|reencrypt`), on the gRPC port, for the admin
//! credential only.
//!
//! Always served: a node without encryption at rest answers every call with
//! `FAILED_PRECONDITION`, so `imctl` says why instead of "unimplemented".

use std::collections::HashMap;
use std::sync::Arc;

use im_auth::Tokens;
use im_core::ImError;
use im_core::ports::{MessageStore, ResealStore, StoredDataKey};
use im_proto::convert::status;
use im_proto::keys as pb;
use im_proto::keys::key_service_server::{KeyService, KeyServiceServer};
use tonic::{Request, Response, Status};

use super::BodyCipher;
use crate::grpc::require_admin;

/// What a node without encryption at rest answers.
pub const ENCRYPTION_OFF: &str = "encryption at rest is off (ENCRYPTION_ENABLED)";

/// `im.keys.v1.KeyService`.
pub struct KeyGrpc {
    /// None: encryption at rest is off and no master key is configured.
    cipher: Option<Arc<BodyCipher>>,
    messages: Arc<dyn MessageStore>,
    reseal: Arc<dyn ResealStore>,
    tokens: Tokens,
}

impl KeyGrpc {
    pub fn server(
        cipher: Option<Arc<BodyCipher>>,
        messages: Arc<dyn MessageStore>,
        reseal: Arc<dyn ResealStore>,
        tokens: Tokens,
    ) -> KeyServiceServer<Self> {
        KeyServiceServer::new(Self { cipher, messages, reseal, tokens })
    }

    /// The cipher, once the caller is known to be an admin.
    fn cipher<T>(&self, request: &Request<T>) -> Result<&BodyCipher, Status> {
        require_admin(&self.tokens, request)?;
        self.cipher
            .as_deref()
            .ok_or_else(|| status(ImError::new(im_core::ErrorCode::FailedPrecondition, ENCRYPTION_OFF)))
    }
}

fn data_key(key: &StoredDataKey, rows: u64) -> pb::DataKey {
    pb::DataKey {
        id: key.id,
        master_key_id: key.master_key_id.clone(),
        created_ms: key.created_ms,
        retired_ms: key.retired_ms.unwrap_or(0),
        active: key.retired_ms.is_none(),
        rows,
    }
}

#[tonic::async_trait]
impl KeyService for KeyGrpc {
    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let cipher = self.cipher(&request)?;
        let keys = cipher.data_keys().await.map_err(status)?;
        let mut rows: HashMap<Option<u64>, u64> =
            self.messages.rows_by_key().await.map_err(|e| status(e.into()))?.into_iter().collect();
        let keys: Vec<pb::DataKey> =
            keys.iter().map(|key| data_key(key, rows.remove(&Some(key.id)).unwrap_or(0))).collect();
        let clear_rows = rows.remove(&None).unwrap_or(0);
        // What is left names keys the store does not have.
        let orphan_rows = rows.values().sum();
        Ok(Response::new(pb::StatusResponse {
            keys,
            clear_rows,
            master_key_id: cipher.master_key_id().to_owned(),
            now_ms: crate::clock::unix_ms(),
            orphan_rows,
        }))
    }

    async fn rotate(&self, request: Request<pb::RotateRequest>) -> Result<Response<pb::RotateResponse>, Status> {
        let cipher = self.cipher(&request)?;
        if !cipher.seals() {
            return Err(status(ImError::new(
                im_core::ErrorCode::FailedPrecondition,
                format!("{ENCRYPTION_OFF}: this node only opens old bodies, it makes no data keys"),
            )));
        }
        let rotation = cipher.rotate().await.map_err(status)?;
        tracing::info!(key = rotation.active.id, previous = ?rotation.previous, "data key rotated on demand");
        Ok(Response::new(pb::RotateResponse {
            active: Some(data_key(&rotation.active, 0)),
            previous_id: rotation.previous,
        }))
    }

    async fn rewrap(&self, request: Request<pb::RewrapRequest>) -> Result<Response<pb::RewrapResponse>, Status> {
        let cipher = self.cipher(&request)?;
        let report = cipher.rewrap_all(request.get_ref().force).await.map_err(status)?;
        Ok(Response::new(pb::RewrapResponse {
            rewrapped: report.rewrapped,
            already_current: report.already_current,
            failed: report.failed.len() as u64,
            failures: report.failed.iter().map(|(id, why)| format!("data key {id}: {why}")).collect(),
            master_key_id: cipher.master_key_id().to_owned(),
        }))
    }

    async fn reencrypt(
        &self,
        request: Request<pb::ReencryptRequest>,
    ) -> Result<Response<pb::ReencryptResponse>, Status> {
        let cipher = self.cipher(&request)?;
        let pb::ReencryptRequest { after, limit } = *request.get_ref();
        let step = cipher.reencrypt_window(&*self.reseal, after, limit).await.map_err(status)?;
        if step.resealed > 0 || !step.failures.is_empty() {
            tracing::info!(
                key = step.key,
                after,
                next = step.next,
                resealed = step.resealed,
                failed = step.failures.len(),
                "stored bodies re-encrypted"
            );
        }
        Ok(Response::new(pb::ReencryptResponse {
            active_key_id: step.key,
            examined: step.examined,
            resealed: step.resealed,
            changed_meanwhile: step.changed_meanwhile,
            failures: step.failures,
            next: step.next,
            done: step.done,
        }))
    }
}
