//! Signed, time-limited download URLs (the slow-endpoint
//! article's signed links, the million-downloads article's token auth).
//!
//! A URL carries `expires=UNIX_SECONDS&sig=HEX`, where `sig` is
//! HMAC-SHA256(secret, "{decoded path}\n{expires}" then "\n{key}={value}"
//! for every other query parameter, decoded, sorted). Signing the *decoded*
//! path and parameters makes the signature independent of how a client
//! re-encodes the URL; covering every parameter means its holder cannot add
//! one (`compression=deflated&level=9` on a ZIP) or change one. A URL with
//! no other parameter signs exactly as before. The comparison is
//! constant-time (`Mac::verify_slice`).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("missing signature: the URL needs expires and sig parameters")]
    Missing,
    #[error("malformed signature parameters")]
    Malformed,
    #[error("link expired")]
    Expired,
    #[error("invalid signature")]
    Invalid,
}

#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    fn mac(&self, path: &[u8], expires: u64, params: &[(String, String)]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(path);
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort();
        for (k, v) in sorted {
            // Lengths first: no two parameter lists hash the same bytes.
            mac.update(format!("\n{}:{}:{k}={v}", k.len(), v.len()).as_bytes());
        }
        mac
    }

    /// Hex signature for `path` (decoded bytes, e.g. `/files/a b.txt`)
    /// with no other query parameter.
    pub fn sign(&self, path: &[u8], expires: u64) -> String {
        self.sign_with(path, expires, &[])
    }

    /// Hex signature for `path` and the query parameters (decoded) the URL
    /// will carry besides `expires` and `sig`.
    pub fn sign_with(&self, path: &[u8], expires: u64, params: &[(String, String)]) -> String {
        hex::encode(self.mac(path, expires, params).finalize().into_bytes())
    }

    /// Checks the query string of a request for `path`.
    pub fn verify(
        &self,
        path: &[u8],
        query: Option<&str>,
        now: SystemTime,
    ) -> Result<(), SignError> {
        let (mut expires, mut sig, mut params) = (None, None, Vec::new());
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*key {
                "expires" if expires.is_none() => expires = Some(value),
                "sig" if sig.is_none() => sig = Some(value),
                "expires" | "sig" => return Err(SignError::Malformed),
                _ => params.push((key.into_owned(), value.into_owned())),
            }
        }
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return Err(SignError::Missing);
        };
        let expires: u64 = expires.parse().map_err(|_| SignError::Malformed)?;
        let sig = hex::decode(sig.as_bytes()).map_err(|_| SignError::Malformed)?;
        // Check the MAC first so an attacker learns nothing from timing about
        // which part was wrong; then expiry.
        self.mac(path, expires, &params)
            .verify_slice(&sig)
            .map_err(|_| SignError::Invalid)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now > expires {
            return Err(SignError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trip_and_failures() {
        let s = Signer::new("k");
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let sig = s.sign(b"/files/a", 2000);
        let q = format!("expires=2000&sig={sig}");
        assert_eq!(s.verify(b"/files/a", Some(&q), now), Ok(()));
        assert_eq!(
            s.verify(b"/files/b", Some(&q), now),
            Err(SignError::Invalid)
        );
        let later = UNIX_EPOCH + Duration::from_secs(2001);
        assert_eq!(
            s.verify(b"/files/a", Some(&q), later),
            Err(SignError::Expired)
        );
        let tampered = format!("expires=2001&sig={sig}");
        assert_eq!(
            s.verify(b"/files/a", Some(&tampered), now),
            Err(SignError::Invalid)
        );
        assert_eq!(s.verify(b"/files/a", None, now), Err(SignError::Missing));
        assert_eq!(
            s.verify(b"/files/a", Some("expires=x&sig=00"), now),
            Err(SignError::Malformed)
        );
        assert_eq!(
            s.verify(b"/files/a", Some("expires=1&sig=zz"), now),
            Err(SignError::Malformed)
        );
        let dup = format!("{q}&sig={sig}");
        assert_eq!(
            s.verify(b"/files/a", Some(&dup), now),
            Err(SignError::Malformed)
        );
        assert_eq!(
            Signer::new("other").verify(b"/files/a", Some(&q), now),
            Err(SignError::Invalid)
        );
    }

    #[test]
    fn every_query_parameter_is_signed() {
        let s = Signer::new("k");
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let sig = s.sign(b"/zip/d", 2000);
        // A holder adds a parameter: refused.
        let added = format!("expires=2000&sig={sig}&compression=deflated&level=9");
        assert_eq!(
            s.verify(b"/zip/d", Some(&added), now),
            Err(SignError::Invalid)
        );
        // Signed with it, in any order on the URL: accepted.
        let params = [
            ("level".to_string(), "9".to_string()),
            ("compression".to_string(), "deflated".to_string()),
        ];
        let sig = s.sign_with(b"/zip/d", 2000, &params);
        let q = format!("compression=deflated&expires=2000&level=9&sig={sig}");
        assert_eq!(s.verify(b"/zip/d", Some(&q), now), Ok(()));
        // Changed: refused.
        let changed = format!("compression=deflated&expires=2000&level=1&sig={sig}");
        assert_eq!(
            s.verify(b"/zip/d", Some(&changed), now),
            Err(SignError::Invalid)
        );
    }
}
