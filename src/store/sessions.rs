//! Session tokens (API keys): issued at login, looked up by id, checked by secret hash, with a
//! sliding expiry that is refreshed at most once a minute to keep reads cheap.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::domain::now;
use crate::domain::secrets::{SessionToken, hash_secret, secret_matches};
use crate::domain::user::User;
use crate::entity::{api_key, user};

/// How long a session lives without use.
pub const SESSION_LIFETIME: Duration = Duration::hours(24);

/// How stale `last_used` may get before a request refreshes it (and the expiry).
const REFRESH_AFTER: Duration = Duration::minutes(1);

/// What checking a presented token found.
#[derive(Debug)]
pub enum SessionCheck {
    Valid(User),
    /// No key with that id, or the secret does not match.
    Invalid,
    Expired(DateTime<Utc>),
}

impl Store {
    /// Issues a new session token for a user.
    pub async fn create_session(&self, user_id: Uuid) -> StoreResult<SessionToken> {
        let token = SessionToken::generate();
        let at = now();
        api_key::ActiveModel {
            id: Set(token.id.clone()),
            hashed_secret: Set(hash_secret(&token.secret)),
            user_id: Set(user_id),
            created_at: Set(at),
            last_used: Set(at),
            expires_at: Set(at + SESSION_LIFETIME),
            lifetime_seconds: Set(SESSION_LIFETIME.num_seconds()),
        }
        .insert(self.connection())
        .await?;
        Ok(token)
    }

    /// Checks a token and slides its expiry forward.
    pub async fn check_session(&self, token: &SessionToken) -> StoreResult<SessionCheck> {
        // The key and its user in one statement: every authenticated request runs it.
        let Some((key, owner)) = api_key::Entity::find_by_id(token.id.clone())
            .find_also_related(user::Entity)
            .one(self.connection())
            .await?
        else {
            return Ok(SessionCheck::Invalid);
        };
        if !secret_matches(&token.secret, &key.hashed_secret) {
            return Ok(SessionCheck::Invalid);
        }
        let at = now();
        if key.expires_at <= at {
            return Ok(SessionCheck::Expired(key.expires_at));
        }
        let Some(owner) = owner else {
            return Ok(SessionCheck::Invalid);
        };
        if at - key.last_used >= REFRESH_AFTER {
            api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsed, at.into())
                .col_expr(
                    api_key::Column::ExpiresAt,
                    (at + Duration::seconds(key.lifetime_seconds)).into(),
                )
                .filter(api_key::Column::Id.eq(key.id.clone()))
                .exec(self.connection())
                .await?;
        }
        Ok(SessionCheck::Valid(owner.into()))
    }

    /// Ends a session (logout).
    pub async fn delete_session(&self, token_id: &str) -> StoreResult<()> {
        api_key::Entity::delete_by_id(token_id.to_string())
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// Moves a session's expiry (tests use it to simulate the passing of a day).
    pub async fn set_session_expiry(
        &self,
        token_id: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::ExpiresAt, expires_at.into())
            .filter(api_key::Column::Id.eq(token_id))
            .exec(self.connection())
            .await?;
        Ok(())
    }
}
