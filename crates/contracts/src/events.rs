//! The platform's events: their types (also their Kafka topics) and the data each carries.
//!
//! Events travel as CloudEvents 1.0 in Kafka binary content mode (`ce_*` headers, the data
//! below as the JSON value; see plt-events). The JSON Schemas of the data, for clients in
//! other languages, are in this crate's `events/` folder, one file per type; a test checks
//! that they and these types agree. A type's version changes only when its data changes
//! incompatibly; fields may be added within a version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::User;

/// identity: a user registered (or was created by an administrator). Key: the user id.
pub const USER_CREATED: &str = "plt.identity.user.created.v1";
/// identity: e-mail address or display name changed. Key: the user id.
pub const USER_UPDATED: &str = "plt.identity.user.updated.v1";
/// identity: the user proved their e-mail address. Key: the user id.
pub const USER_EMAIL_VERIFIED: &str = "plt.identity.user.email_verified.v1";
/// identity: the user was disabled (their sessions end). Key: the user id.
pub const USER_DISABLED: &str = "plt.identity.user.disabled.v1";
/// identity: a disabled user was enabled again. Key: the user id.
pub const USER_ENABLED: &str = "plt.identity.user.enabled.v1";
/// identity: the user was deleted. Key: the user id.
pub const USER_DELETED: &str = "plt.identity.user.deleted.v1";

/// auth: a user signed in: a session began. Key: the user id.
pub const SESSION_STARTED: &str = "plt.auth.session.started.v1";
/// auth: a session ended (logout, disable, delete, password reset). Key: the user id.
pub const SESSION_ENDED: &str = "plt.auth.session.ended.v1";
/// auth: a refresh token was reused: its whole family (session) was revoked. Key: the user id.
pub const FAMILY_REVOKED: &str = "plt.auth.family.revoked.v1";
/// auth: the signing keys were rotated. Key: `keys`.
pub const KEYS_ROTATED: &str = "plt.auth.keys.rotated.v1";

/// authz: a role was granted to a user. Key: the user id.
pub const ROLE_GRANTED: &str = "plt.authz.role.granted.v1";
/// authz: a role was revoked from a user. Key: the user id.
pub const ROLE_REVOKED: &str = "plt.authz.role.revoked.v1";
/// authz: anything that can change a decision changed (a grant, a revoke, a role's
/// permissions, a new permission). Key: `policy` (one order for all). Authz instances drop
/// their cached decisions when they see it.
pub const POLICY_CHANGED: &str = "plt.authz.policy.changed.v1";

/// Every platform event type.
pub const ALL: &[&str] = &[
    USER_CREATED,
    USER_UPDATED,
    USER_EMAIL_VERIFIED,
    USER_DISABLED,
    USER_ENABLED,
    USER_DELETED,
    SESSION_STARTED,
    SESSION_ENDED,
    FAMILY_REVOKED,
    KEYS_ROTATED,
    ROLE_GRANTED,
    ROLE_REVOKED,
    POLICY_CHANGED,
];

/// Data of the identity user events but e-mail verification and deletion: the user as it is now (no password hash,
/// by construction) and, for updates, the names of the fields that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserChanged {
    pub user: User,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
}

/// Data of [`USER_EMAIL_VERIFIED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEmailVerified {
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// Data of [`USER_DELETED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: Uuid,
    pub deleted_at: DateTime<Utc>,
}

/// Data of [`SESSION_STARTED`], [`SESSION_ENDED`] and [`FAMILY_REVOKED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub user_id: Uuid,
    /// The session (`sid` claim of its access tokens).
    pub session_id: String,
    /// Why it ended (`logout`, `user_disabled`, `refresh_token_reuse`, …); empty when it
    /// started.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Data of [`KEYS_ROTATED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysRotated {
    /// The key id new tokens are signed with.
    pub kid: String,
    pub at: DateTime<Utc>,
}

/// Data of [`ROLE_GRANTED`] and [`ROLE_REVOKED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleEvent {
    pub user_id: Uuid,
    pub role: String,
    /// Who did it (a user id or a service name).
    pub by: String,
    pub at: DateTime<Utc>,
}

/// Data of [`POLICY_CHANGED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyChanged {
    /// What changed: `grant`, `revoke`, `role_permissions`, `permissions`.
    pub change: String,
    /// The user whose decisions changed, when it is one user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub at: DateTime<Utc>,
}

/// The JSON Schema of event type `t`'s data (from `events/<type>.json`).
pub fn schema(t: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(n, _)| *n == t).map(|(_, s)| *s)
}

macro_rules! schemas {
    ($($t:literal),* $(,)?) => {
        &[$(($t, include_str!(concat!("../events/", $t, ".json")))),*]
    };
}

static SCHEMAS: &[(&str, &str)] = schemas!(
    "plt.identity.user.created.v1",
    "plt.identity.user.updated.v1",
    "plt.identity.user.email_verified.v1",
    "plt.identity.user.disabled.v1",
    "plt.identity.user.enabled.v1",
    "plt.identity.user.deleted.v1",
    "plt.auth.session.started.v1",
    "plt.auth.session.ended.v1",
    "plt.auth.family.revoked.v1",
    "plt.auth.keys.rotated.v1",
    "plt.authz.role.granted.v1",
    "plt.authz.role.revoked.v1",
    "plt.authz.policy.changed.v1",
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Each schema names the fields its type serialises (required ⊆ serialised ⊆ properties).
    fn agrees(t: &str, sample: Value) {
        let schema: Value = serde_json::from_str(schema(t).expect(t)).expect(t);
        assert_eq!(schema["title"], t);
        let props = schema["properties"].as_object().expect("properties");
        let obj = sample.as_object().unwrap();
        for k in obj.keys() {
            assert!(props.contains_key(k), "{t}: {k} is not in the schema");
        }
        for r in schema["required"].as_array().unwrap() {
            assert!(
                obj.contains_key(r.as_str().unwrap()),
                "{t}: required {r} missing"
            );
        }
    }

    #[test]
    fn schemas_match_the_types() {
        assert_eq!(SCHEMAS.len(), ALL.len());
        let now = Utc::now();
        let user = User {
            id: Uuid::now_v7(),
            email: "a@example.com".into(),
            display_name: "A".into(),
            status: crate::identity::UserStatus::Active,
            email_verified: true,
            created_at: now,
            updated_at: now,
        };
        let changed = serde_json::to_value(UserChanged {
            user,
            changed_fields: vec!["email".into()],
        })
        .unwrap();
        for t in [USER_CREATED, USER_UPDATED, USER_DISABLED, USER_ENABLED] {
            agrees(t, changed.clone());
        }
        agrees(
            USER_EMAIL_VERIFIED,
            serde_json::to_value(UserEmailVerified {
                user_id: Uuid::now_v7(),
                at: now,
            })
            .unwrap(),
        );
        agrees(
            USER_DELETED,
            serde_json::to_value(UserDeleted {
                user_id: Uuid::now_v7(),
                deleted_at: now,
            })
            .unwrap(),
        );
        let session = serde_json::to_value(SessionEvent {
            user_id: Uuid::now_v7(),
            session_id: "s".into(),
            reason: "logout".into(),
            at: now,
        })
        .unwrap();
        for t in [SESSION_STARTED, SESSION_ENDED, FAMILY_REVOKED] {
            agrees(t, session.clone());
        }
        agrees(
            KEYS_ROTATED,
            serde_json::to_value(KeysRotated {
                kid: "k".into(),
                at: now,
            })
            .unwrap(),
        );
        let role = serde_json::to_value(RoleEvent {
            user_id: Uuid::now_v7(),
            role: "admin".into(),
            by: "x".into(),
            at: now,
        })
        .unwrap();
        agrees(ROLE_GRANTED, role.clone());
        agrees(ROLE_REVOKED, role);
        agrees(
            POLICY_CHANGED,
            serde_json::to_value(PolicyChanged {
                change: "grant".into(),
                user_id: Some(Uuid::now_v7()),
                at: now,
            })
            .unwrap(),
        );
    }
}
