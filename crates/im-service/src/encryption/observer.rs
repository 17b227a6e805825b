//! The KMS calls as metrics: `im_kms_requests_total{op,result}` and
//! `im_kms_request_seconds`.

use std::sync::Arc;

use im_crypto::KmsObserver;

use crate::metrics::{KmsLabels, Metrics};

pub struct KmsMetrics(pub Arc<Metrics>);

impl KmsObserver for KmsMetrics {
    fn kms_call(&self, op: &'static str, result: &'static str, seconds: f64) {
        self.0.kms_requests.get_or_create(&KmsLabels { op, result }).inc();
        self.0.kms_request_seconds.observe(seconds);
    }
}
