//! SHA-256 digests: of payloads and request bodies (hex), and of certificates
//! (fingerprints in the `AB:CD:...` spelling operators paste into the config).

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// SHA-256 as lowercase hex: payload and request hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// `AB:CD:...`, the spelling operators paste into `certificate.sha256`.
pub fn fingerprint_hex(sha256: &[u8; 32]) -> String {
    sha256
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
