//! How provisioner daemons authenticate: a provisioner key (organization and tags come from the
//! key), the deployment's pre-shared key, or an owner's session token.

use poem::{Request, RequestBody};
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use uuid::{Uuid, uuid};

use super::auth::{
    Caller, SESSION_SCHEMES, api_key_scheme, presented_token, register_session_schemes,
};
use super::error::ApiError;
use super::state::AppState;
use crate::domain::daemon::ProvisionerKey;
use crate::domain::secrets::constant_time_eq;

pub const KEY_HEADER: &str = "Coder-Provisioner-Daemon-Key";
pub const PSK_HEADER: &str = "Coder-Provisioner-Daemon-PSK";

/// The OpenAPI security schemes of the two daemon credentials.
pub const KEY_SCHEME: &str = "ProvisionerDaemonKey";
pub const PSK_SCHEME: &str = "ProvisionerDaemonPSK";

/// Key ids daemons show when they did not use a provisioner key (as in Coder).
pub const USER_AUTH_KEY_ID: Uuid = uuid!("00000000-0000-0000-0000-000000000002");
pub const PSK_KEY_ID: Uuid = uuid!("00000000-0000-0000-0000-000000000003");

/// An authenticated daemon credential.
#[derive(Debug, Clone)]
pub enum DaemonAuth {
    Key(ProvisionerKey),
    Psk,
    Owner(Caller),
}

impl DaemonAuth {
    /// The key id recorded on the daemon row.
    pub fn key_id(&self) -> Uuid {
        match self {
            Self::Key(k) => k.id,
            Self::Psk => PSK_KEY_ID,
            Self::Owner(_) => USER_AUTH_KEY_ID,
        }
    }

    /// The organization a key is bound to (PSK and owners choose).
    pub fn key_organization(&self) -> Option<Uuid> {
        match self {
            Self::Key(k) => Some(k.organization_id),
            _ => None,
        }
    }

    /// The user a daemon acts for (user-scoped tags need one).
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Self::Owner(c) => Some(c.user.id),
            _ => None,
        }
    }
}

/// Human-readable key name for the daemon list.
pub fn builtin_key_name(key_id: Option<Uuid>) -> Option<&'static str> {
    match key_id {
        Some(id) if id == PSK_KEY_ID => Some("psk"),
        Some(id) if id == USER_AUTH_KEY_ID => Some("user-auth"),
        _ => None,
    }
}

impl<'a> ApiExtractor<'a> for DaemonAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            KEY_SCHEME,
            api_key_scheme(
                KEY_HEADER,
                "header",
                "A provisioner key (organization and tags come from the key).",
            ),
        );
        registry.create_security_scheme(
            PSK_SCHEME,
            api_key_scheme(
                PSK_HEADER,
                "header",
                "The deployment's pre-shared key (provisioner.daemon_psk).",
            ),
        );
        register_session_schemes(registry);
    }

    /// A provisioner key, the PSK, or an owner's session token.
    fn security_schemes() -> Vec<&'static str> {
        let mut schemes = vec![KEY_SCHEME, PSK_SCHEME];
        schemes.extend(SESSION_SCHEMES);
        schemes
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = req
            .data::<AppState>()
            .expect("AppState is attached to every route");
        if let Some(key) = header(req, KEY_HEADER) {
            return match state
                .store
                .authenticate_provisioner_key(&key)
                .await
                .map_err(ApiError::from)?
            {
                Some(k) => Ok(Self::Key(k)),
                None => Err(ApiError::unauthorized("Invalid provisioner key.").into()),
            };
        }
        if let Some(psk) = header(req, PSK_HEADER) {
            let configured = &state.settings.provisioner.daemon_psk;
            if configured.is_empty() || !constant_time_eq(&psk, configured) {
                return Err(ApiError::unauthorized("Invalid pre-shared key.").into());
            }
            return Ok(Self::Psk);
        }
        if presented_token(req).is_none() {
            return Err(ApiError::unauthorized(format!(
                "Provide a provisioner key ({KEY_HEADER}), the pre-shared key ({PSK_HEADER}) or an owner's session token."
            ))
            .into());
        }
        let caller = Caller::from_request_without_body(req).await?;
        if !caller.is_owner() {
            return Err(ApiError::forbidden()
                .with_detail("Only owners may run provisioner daemons with a session token.")
                .into());
        }
        Ok(Self::Owner(caller))
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
