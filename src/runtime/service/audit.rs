//! The audit log while the service runs: reopened for logrotate, sealed by checkpoints,
//! pruned by retention.

use super::Service;
use tracing::error;

impl Service {
    /// Reopens the audit log (after logrotate moved it), sealing the old file with a
    /// checkpoint first when checkpoints are configured.
    pub fn reopen_audit(&self) {
        if let Some(audit) = &self.audit_log {
            let time = crate::clock::rfc3339_ms(self.env.now_ms());
            if let Err(e) = audit.reopen(&time, &self.env.host) {
                error!("cannot reopen the audit log: {e}");
            }
        }
    }

    /// Seals the audit records written since the last checkpoint (when a checkpoint key is
    /// configured); `true` when a checkpoint was written.
    pub fn audit_checkpoint(&self) -> bool {
        let Some(audit) = &self.audit_log else {
            return false;
        };
        let time = crate::clock::rfc3339_ms(self.env.now_ms());
        match audit.checkpoint(&time, &self.env.host) {
            Ok(written) => {
                if written {
                    self.env.metrics.audit_checkpoints.inc();
                }
                written
            }
            Err(e) => {
                error!(error = %e, "cannot write an audit checkpoint");
                false
            }
        }
    }

    /// Deletes rotated audit files past `retention_days`, each deletion recorded in the live
    /// file.
    pub fn audit_retention(&self) -> Vec<crate::audit::retention::Deleted> {
        let Some(audit) = &self.audit_log else {
            return Vec::new();
        };
        let (crate::audit::writer::Destination::File(live), Some(days)) =
            (&audit.config().destination, audit.config().retention_days)
        else {
            return Vec::new();
        };
        let now_ms = self.env.now_ms();
        let time = crate::clock::rfc3339_ms(now_ms);
        let deleted = crate::audit::retention::prune(
            audit,
            live,
            now_ms.div_euclid(1000),
            days,
            &time,
            &self.env.host,
        );
        self.env
            .metrics
            .audit_files_deleted
            .inc_by(deleted.len() as u64);
        deleted
    }

    /// Writes what the audit writer found at start (a partial record it cut off).
    pub fn audit_started(&self) {
        if let Some(audit) = &self.audit_log {
            let time = crate::clock::rfc3339_ms(self.env.now_ms());
            audit.flush_notes(&time, &self.env.host);
        }
    }
}
