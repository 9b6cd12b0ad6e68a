//! Message signing (issue #17): producers and workers that share a key sign every job message
//! with HMAC-SHA256, so a worker can tell the fleet's own messages from anything else published
//! under a run's subject and dead-letter the rest before paying a provider.
//!
//! The signature travels inside the message, as its last JSON member: a signed message is the
//! envelope's bytes `{…}` with `,"sig":"<64 hex digits>"}` in place of the closing brace, and the
//! MAC is over the exact bytes of the unsigned envelope (`{…}`). Carrying it in the body works
//! identically on every broker (NATS headers and AMQP headers differ, and a RabbitMQ delay queue
//! or a JetStream re-publish carries the body unchanged); workers without a key ignore the
//! member like any unknown field. A worker that changes a message (a deferral updates its
//! envelope) signs the new bytes again with the same key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What precedes the signature's hex digits at the end of a signed message.
const SIG_OPEN: &[u8] = b",\"sig\":\"";
/// What follows them: the end of the string and of the object.
const SIG_CLOSE: &[u8] = b"\"}";
/// Hex digits of an HMAC-SHA256.
const SIG_HEX: usize = 64;
/// Bytes the signature adds at the end of a message (the brace it replaces is put back when
/// verifying).
const SUFFIX: usize = SIG_OPEN.len() + SIG_HEX + SIG_CLOSE.len();

/// Shortest key accepted, in bytes: an HMAC key shorter than this is guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// The fleet's shared signing key. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// Why a message's signature was refused; the text is the dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The message carries no signature (it was not published by a producer with the key).
    #[error("unsigned message")]
    Missing,
    /// The message carries a signature that does not match its bytes under this key: it was
    /// altered, or signed with another key.
    #[error("bad signature")]
    Mismatch,
}

impl SigningKey {
    /// A key from its secret text (surrounding whitespace trimmed, as a key file usually ends
    /// with a newline); refused when shorter than [`MIN_KEY_BYTES`].
    pub fn new(secret: &str) -> Result<SigningKey, String> {
        let secret = secret.trim();
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the signing key must be at least {MIN_KEY_BYTES} bytes long (it has {})",
                secret.len()
            ));
        }
        Ok(SigningKey(secret.as_bytes().to_vec()))
    }

    /// `body` signed with `key` when there is one, unchanged otherwise: what producers and
    /// workers put on the broker.
    pub fn sign_with(key: Option<&SigningKey>, body: Vec<u8>) -> Vec<u8> {
        match key {
            Some(k) => k.sign(body),
            None => body,
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// `body` (a JSON object, as [`crate::Envelope::to_bytes`] writes it) with its signature
    /// appended as the last member. A body that is not an object ending in `}` is returned
    /// unchanged (it could not carry a member; the worker refuses it as unsigned).
    pub fn sign(&self, mut body: Vec<u8>) -> Vec<u8> {
        if body.len() < 2 || body.last() != Some(&b'}') {
            return body;
        }
        let mut mac = self.mac();
        mac.update(&body);
        let tag = hex::encode(mac.finalize().into_bytes());
        body.pop();
        body.reserve(SUFFIX);
        body.extend_from_slice(SIG_OPEN);
        body.extend_from_slice(tag.as_bytes());
        body.extend_from_slice(SIG_CLOSE);
        body
    }

    /// Checks that `message` ends with a signature of the bytes before it under this key (in
    /// constant time). The message is then safe to parse: every byte the worker reads is covered.
    pub fn verify(&self, message: &[u8]) -> Result<(), SignatureError> {
        let (unsigned, tag) = split_signature(message).ok_or(SignatureError::Missing)?;
        let tag = hex::decode(tag).map_err(|_| SignatureError::Mismatch)?;
        let mut mac = self.mac();
        mac.update(unsigned);
        mac.update(b"}");
        mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
    }
}

/// The message without its signature member (and without the closing brace) and the
/// signature's hex digits, when the message ends with one.
fn split_signature(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = message.len().checked_sub(SUFFIX)?;
    let (unsigned, suffix) = message.split_at(start);
    let tag = suffix.strip_prefix(SIG_OPEN)?.strip_suffix(SIG_CLOSE)?;
    (!unsigned.is_empty() && tag.len() == SIG_HEX).then_some((unsigned, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SigningKey {
        SigningKey::new(s).unwrap()
    }

    const BODY: &[u8] = br#"{"schema_version":1,"run_id":"r","id":"j1","messages":[]}"#;

    #[test]
    fn a_signed_message_verifies_and_stays_json_with_the_same_fields() {
        let k = key("0123456789abcdef-fleet");
        let signed = k.sign(BODY.to_vec());
        assert_eq!(k.verify(&signed), Ok(()));
        let v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        let mut original: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        original["sig"] = v["sig"].clone();
        assert_eq!(v, original);
        assert_eq!(v["sig"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn a_message_signed_with_another_key_is_a_bad_signature() {
        let signed = key("0123456789abcdef-fleet").sign(BODY.to_vec());
        assert_eq!(
            key("0123456789abcdef-other").verify(&signed),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_altered_body_is_a_bad_signature() {
        let k = key("0123456789abcdef-fleet");
        let signed = k.sign(BODY.to_vec());
        let altered = String::from_utf8(signed.clone())
            .unwrap()
            .replace("\"j1\"", "\"j2\"");
        assert_eq!(k.verify(altered.as_bytes()), Err(SignatureError::Mismatch));
        // One flipped bit anywhere, the signature's own digits included.
        for i in 0..signed.len() {
            let mut m = signed.clone();
            m[i] ^= 0x01;
            assert!(k.verify(&m).is_err(), "byte {i} flipped still verified");
        }
    }

    #[test]
    fn a_message_without_a_signature_is_unsigned() {
        let k = key("0123456789abcdef-fleet");
        assert_eq!(k.verify(BODY), Err(SignatureError::Missing));
        assert_eq!(k.verify(b""), Err(SignatureError::Missing));
        assert_eq!(k.verify(b"\x00\xffnot json"), Err(SignatureError::Missing));
        // A signature that is not the last member is not where the worker looks.
        let signed = k.sign(BODY.to_vec());
        let v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        let moved = format!(
            r#"{{"sig":"{}",{}"#,
            v["sig"].as_str().unwrap(),
            std::str::from_utf8(&BODY[1..]).unwrap()
        );
        assert_eq!(k.verify(moved.as_bytes()), Err(SignatureError::Missing));
        assert_eq!(SignatureError::Missing.to_string(), "unsigned message");
        assert_eq!(SignatureError::Mismatch.to_string(), "bad signature");
    }

    #[test]
    fn a_deferred_envelope_signed_again_verifies() {
        let k = key("0123456789abcdef-fleet");
        let now = chrono::Utc::now();
        let job = crate::JobParser::new(crate::JobDefaults::new(now), None)
            .parse_line(1, r#"{"id":"a","model":"m","prompt":"hi"}"#)
            .unwrap();
        let mut env = crate::Envelope::new(crate::RunId::new("r").unwrap(), now, job);
        let signed = k.sign(env.to_bytes());
        assert_eq!(k.verify(&signed), Ok(()));
        let mut read = crate::Envelope::from_bytes(&signed).unwrap();
        assert_eq!(read, env);
        read.deferrals += 1;
        env.deferrals += 1;
        assert_eq!(k.verify(&k.sign(read.to_bytes())), Ok(()));
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert!(SigningKey::new("  short \n").is_err());
        let k = key("a-long-enough-secret\n");
        assert!(!format!("{k:?}").contains("secret"));
    }
}
