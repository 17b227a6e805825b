//! `imctl keys reencrypt`: drives the re-encryption walk of an im-service
//! node (`KeyService.Reencrypt`), one window per call, at most `--rate` rows
//! a second, with a progress bar. The node keeps no state between calls:
//! the walk's position lives here, and a walk stopped anywhere resumes by
//! running it again (rows already under the active key are not in it).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use im_proto::keys::key_service_client::KeyServiceClient;
use im_proto::keys::{ReencryptRequest, StatusRequest};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::admin::ServiceAdmin;

/// How long an unavailable node or KMS is waited for, in all, before the
/// walk gives up (it can be resumed with `--after`).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What to walk, and how fast.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub rate: u32,
    pub batch: u32,
    pub after: u64,
}

/// What a walk did (`--json`).
#[derive(Debug, Default, Serialize)]
pub struct ReencryptTotals {
    /// The active key at the last window.
    pub key: u64,
    pub examined: u64,
    pub resealed: u64,
    pub changed_meanwhile: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    /// The storage position the walk reached.
    pub last_position: u64,
}

impl ReencryptTotals {
    pub fn text(&self) -> String {
        format!(
            "under data key {}: {} row(s) re-encrypted, {} changed meanwhile (left), {} could not be decrypted; \
             walked to position {}\n",
            self.key, self.resealed, self.changed_meanwhile, self.failed, self.last_position
        )
    }
}

/// Runs the walk to its end.
pub async fn reencrypt(admin: &ServiceAdmin, pace: Pace) -> anyhow::Result<ReencryptTotals> {
    let mut client = KeyServiceClient::new(admin.channel.clone());
    let progress = Progress::new(rows_to_do(admin, &mut client).await?);
    let mut totals = ReencryptTotals { last_position: pace.after, ..ReencryptTotals::default() };
    let started = Instant::now();
    let mut waited = Duration::ZERO;
    loop {
        // Paced by the rows examined so far: at most `rate` a second on
        // average, whatever each call took.
        let due = started + Duration::from_secs_f64(totals.examined as f64 / f64::from(pace.rate)) + waited;
        tokio::time::sleep_until(due).await;
        let request = ReencryptRequest { after: totals.last_position, limit: pace.batch };
        let step = match admin.answer(client.reencrypt(admin.request(request)).await) {
            Ok(step) => step,
            Err(e) if e.code == "UNAVAILABLE" && waited < GIVE_UP_AFTER => {
                let pause = Duration::from_secs(2);
                progress.note(&format!("{e}; retrying in {pause:?}"));
                tokio::time::sleep(pause).await;
                waited += pause;
                continue;
            }
            Err(e) => {
                progress.finish();
                bail!("{e}; resume with `imctl keys reencrypt --after {}`", totals.last_position);
            }
        };
        totals.key = step.active_key_id;
        totals.examined += step.examined;
        totals.resealed += step.resealed;
        totals.changed_meanwhile += step.changed_meanwhile;
        totals.failed += step.failures.len() as u64;
        for failure in &step.failures {
            progress.note(failure);
        }
        totals.failures.extend(step.failures);
        totals.last_position = step.next;
        progress.advance(step.examined, step.next);
        if step.done {
            progress.finish();
            return Ok(totals);
        }
    }
}

/// The rows not under the active key, as `Status` counts them: the length
/// of the bar (a guess once the walk runs beside traffic and rotations).
async fn rows_to_do(admin: &ServiceAdmin, client: &mut KeyServiceClient<Channel>) -> anyhow::Result<u64> {
    let status = admin.answer(client.status(admin.request(StatusRequest {})).await)?;
    let old: u64 = status.keys.iter().filter(|key| !key.active).map(|key| key.rows).sum();
    Ok(old + status.clear_rows + status.orphan_rows)
}

/// A bar on a terminal; a plain line at most every few seconds otherwise
/// (logs, CI), where a bar would be noise.
struct Progress {
    bar: ProgressBar,
    plain: Option<std::sync::Mutex<(Instant, u64)>>,
}

impl Progress {
    fn new(total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            Self { bar, plain: None }
        } else {
            eprintln!("re-encrypting about {total} row(s)");
            Self { bar: ProgressBar::hidden(), plain: Some(std::sync::Mutex::new((Instant::now(), total))) }
        }
    }

    fn advance(&self, rows: u64, position: u64) {
        self.bar.inc(rows);
        // Traffic and rotations add rows to do while the walk runs.
        if self.bar.length().is_some_and(|len| self.bar.position() > len) {
            self.bar.set_length(self.bar.position());
        }
        self.bar.set_message(format!("at {position}"));
        if let Some(plain) = &self.plain {
            let mut last = plain.lock().expect("not poisoned");
            if last.0.elapsed() >= Duration::from_secs(5) {
                last.0 = Instant::now();
                eprintln!("re-encrypted {} of about {} row(s), at position {position}", self.bar.position(), last.1);
            }
        }
    }

    /// A line above the bar (or on its own).
    fn note(&self, line: &str) {
        if self.plain.is_some() { eprintln!("{line}") } else { self.bar.println(line) }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
