//! Deribit authentication: `client_credentials`, `client_signature` and `refresh_token`
//! grants of `public/auth` (reference §2), as an [`AuthHandler`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use websockex_nova::behaviour::{AuthGrant, AuthHandler, Call};
use websockex_nova::{ApiError, Error, ErrorKind, RawJson, Secret};

use crate::errors;

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// `client_credentials`: the secret travels (over TLS) in the request.
    ClientCredentials {
        /// API key id.
        client_id: String,
        /// API key secret.
        client_secret: Secret,
    },
    /// `client_signature`: only an HMAC-SHA256 signature travels; the secret never does.
    ClientSignature {
        /// API key id.
        client_id: String,
        /// API key secret (the HMAC key).
        client_secret: Secret,
    },
}

impl Credentials {
    /// `client_credentials` grant.
    pub fn client_credentials(id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Credentials::ClientCredentials {
            client_id: id.into(),
            client_secret: secret.into(),
        }
    }

    /// `client_signature` grant.
    pub fn client_signature(id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Credentials::ClientSignature {
            client_id: id.into(),
            client_secret: secret.into(),
        }
    }
}

/// The `client_signature` signature: lowercase hex of HMAC-SHA256 keyed with the secret
/// over `timestamp + "\n" + nonce + "\n" + data` (reference §2.1).
///
/// ```
/// use websockex_nova_deribit::auth::signature;
///
/// // The reference's own test vector.
/// assert_eq!(
///     signature("AMANDASECRECT", 1576074319000, "1iqt2wls", ""),
///     "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1"
/// );
/// ```
pub fn signature(secret: &str, timestamp_ms: u64, nonce: &str, data: &str) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{timestamp_ms}\n{nonce}\n{data}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The Deribit auth behaviour.
#[derive(Debug, Clone)]
pub struct DeribitAuth {
    pub(crate) credentials: Credentials,
    pub(crate) refresh_margin: Duration,
    pub(crate) cancel_on_disconnect: bool,
}

#[derive(Deserialize)]
struct Grant {
    expires_in: Option<f64>,
    refresh_token: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl AuthHandler for DeribitAuth {
    fn authenticate(&mut self, refresh: Option<&Secret>) -> Call {
        let params = match (refresh, &self.credentials) {
            (Some(token), _) => {
                json!({"grant_type": "refresh_token", "refresh_token": token.expose()})
            }
            (
                None,
                Credentials::ClientCredentials {
                    client_id,
                    client_secret,
                },
            ) => json!({
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret.expose(),
            }),
            (
                None,
                Credentials::ClientSignature {
                    client_id,
                    client_secret,
                },
            ) => {
                let timestamp = now_ms();
                let nonce = format!("{:016x}", rand::random::<u64>());
                json!({
                    "grant_type": "client_signature",
                    "client_id": client_id,
                    "timestamp": timestamp,
                    "nonce": nonce,
                    "data": "",
                    "signature": signature(client_secret.expose(), timestamp, &nonce, ""),
                })
            }
        };
        Call {
            method: "public/auth".into(),
            params,
        }
    }

    fn granted(&mut self, result: Result<&RawJson, &ApiError>) -> Result<AuthGrant, Error> {
        match result {
            Ok(raw) => {
                let grant: Grant = raw.decode_owned()?;
                let mut follow_up = Vec::new();
                if self.cancel_on_disconnect {
                    follow_up.push(Call {
                        method: "private/enable_cancel_on_disconnect".into(),
                        params: json!({"scope": "connection"}),
                    });
                }
                let mut grant_out = AuthGrant::default();
                grant_out.expires_in = grant
                    .expires_in
                    .filter(|s| s.is_finite() && *s > 0.0)
                    // A grant beyond what a `Duration` holds is no expiry at all.
                    .and_then(|s| Duration::try_from_secs_f64(s).ok());
                grant_out.refresh_token = grant.refresh_token.map(Secret::new);
                grant_out.follow_up = follow_up;
                Ok(grant_out)
            }
            Err(api) => {
                let kind = if errors::is_auth_refusal(api.code) {
                    ErrorKind::Auth
                } else {
                    ErrorKind::AuthUnavailable
                };
                Err(Error::new(kind).with_source(api.clone()))
            }
        }
    }

    fn refresh_margin(&self) -> Duration {
        self.refresh_margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_reference_vectors() {
        let cases = [
            (
                "AMANDASECRECT",
                1576074319000,
                "1iqt2wls",
                "",
                "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1",
            ),
            (
                "AMANDASECRECT",
                1576074319000,
                "1iqt2wls",
                "hello",
                "29d2254b36d17c4d8677069dd9fec51685bc53a277a4fb799dd6e660d0bcc719",
            ),
            (
                "sim-secret",
                1700000000000,
                "abcd1234",
                "",
                "46810e37ad438dc9c2719cceeb981b338b6a3790fec0473835cafb6baf3f9dc5",
            ),
        ];
        for (secret, ts, nonce, data, expected) in cases {
            assert_eq!(signature(secret, ts, nonce, data), expected);
        }
    }

    #[test]
    fn signature_grant_never_carries_the_secret() {
        let mut auth = DeribitAuth {
            credentials: Credentials::client_signature("key", "topsecret"),
            refresh_margin: Duration::from_secs(30),
            cancel_on_disconnect: false,
        };
        let call = auth.authenticate(None);
        let text = call.params.to_string();
        assert!(!text.contains("topsecret"), "{text}");
        let ts = call.params["timestamp"].as_u64().unwrap();
        let nonce = call.params["nonce"].as_str().unwrap();
        assert_eq!(
            call.params["signature"],
            signature("topsecret", ts, nonce, "")
        );
        assert!(!format!("{auth:?}").contains("topsecret"));
    }

    #[test]
    fn refusals_stop_other_failures_retry() {
        let mut auth = DeribitAuth {
            credentials: Credentials::client_credentials("key", "s"),
            refresh_margin: Duration::from_secs(30),
            cancel_on_disconnect: true,
        };
        let refused = ApiError {
            code: 13004,
            message: "invalid_credentials".into(),
            data: None,
        };
        assert!(!auth.granted(Err(&refused)).unwrap_err().is_transient());
        let busy = ApiError {
            code: 10028,
            message: "too_many_requests".into(),
            data: None,
        };
        assert!(auth.granted(Err(&busy)).unwrap_err().is_transient());
        let ok = RawJson::from_string(r#"{"access_token":"a","expires_in":900,"refresh_token":"r","scope":"connection","token_type":"bearer"}"#.into()).unwrap();
        let grant = auth.granted(Ok(&ok)).unwrap();
        assert_eq!(grant.expires_in, Some(Duration::from_secs(900)));
        assert_eq!(
            grant.follow_up[0].method,
            "private/enable_cancel_on_disconnect"
        );
    }
}
