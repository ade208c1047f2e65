//! Machine leases: who holds one, until when, and the 409 a mutation without its nonce gets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::machines::FakeMachine;
use super::{random_hex, ApiErr, ApiResult, Inner};
use crate::types::FlyState;

#[derive(Clone, Debug)]
pub(super) struct FakeLease {
    pub(super) nonce: String,
    pub(super) owner: String,
    pub(super) description: String,
    pub(super) expires: SystemTime,
}

impl Inner {
    pub(super) fn check_lease(m: &FakeMachine, nonce: Option<&str>) -> Result<(), ApiErr> {
        match &m.lease {
            Some(l) if l.expires > SystemTime::now() && nonce != Some(l.nonce.as_str()) => {
                Err(ApiErr::new(
                    409,
                    format!(
                        "aborted: machine ID {} lease currently held by {}, expires at {}",
                        m.m.id,
                        l.owner,
                        crate::time::format_rfc3339(l.expires)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn api_lease_acquire(
        &mut self,
        app: &str,
        id: &str,
        ttl: u64,
        description: &str,
        nonce: Option<&str>,
    ) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        if m.m.state == FlyState::Destroyed {
            return Err(ApiErr::new(404, "machine not found"));
        }
        Self::check_lease(m, nonce)?;
        let lease = match (&m.lease, nonce) {
            // Refresh of our live lease.
            (Some(l), Some(n)) if l.nonce == n && l.expires > SystemTime::now() => FakeLease {
                expires: SystemTime::now() + Duration::from_secs(ttl),
                ..l.clone()
            },
            _ => new_lease(ttl, description),
        };
        let answer = lease_json(&lease, m.m.version.as_deref());
        m.lease = Some(lease);
        Ok((200, answer))
    }

    pub(crate) fn api_lease_get(&mut self, app: &str, id: &str) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        match &m.lease {
            Some(l) if l.expires > SystemTime::now() => {
                let mut v = lease_json(l, m.m.version.as_deref());
                // Only the holder learns the nonce.
                if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
                    d.remove("nonce");
                }
                Ok((200, v))
            }
            _ => Err(ApiErr::new(404, "lease not found")),
        }
    }

    pub(crate) fn api_lease_release(
        &mut self,
        app: &str,
        id: &str,
        nonce: Option<&str>,
    ) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        Self::check_lease(m, nonce)?;
        m.lease = None;
        Ok((200, json!({ "status": "success" })))
    }
}

pub(super) fn new_lease(ttl: u64, description: &str) -> FakeLease {
    FakeLease {
        nonce: random_hex(12),
        owner: "fleetscale-fake@tokens.fly.io".into(),
        description: description.to_owned(),
        expires: SystemTime::now() + Duration::from_secs(ttl.max(1)),
    }
}

pub(super) fn lease_json(l: &FakeLease, version: Option<&str>) -> Value {
    json!({
        "status": "success",
        "data": {
            "nonce": l.nonce,
            "expires_at": l.expires.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "owner": l.owner,
            "description": l.description,
            "version": version,
        }
    })
}
