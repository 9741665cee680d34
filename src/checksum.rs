//! File digests for `HASH` (draft-bryan-ftpext-hash-02) and the legacy `XSHA256`,
//! `XSHA1`, `XMD5` and `XCRC` commands, and the SHA-256 computed while an upload
//! streams (RustCrypto's `sha2`, `sha1`, `md-5`; `crc32fast` for the zlib CRC-32).

use bytes::Bytes;
use ftpgate_backend_local::lanes::{LaneSender, Pool, Worker};
use sha2::Digest;

/// A digest algorithm, named as draft-bryan-ftpext-hash-02 §3.2 registers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// `SHA-256` (FIPS 180-4), the default: uploads store it.
    #[default]
    Sha256,
    /// `SHA-1`.
    Sha1,
    /// `MD5` (RFC 1321).
    Md5,
    /// `CRC32`: the zlib/IEEE 802.3 CRC-32 (what `XCRC` clients compare).
    Crc32,
}

impl Algorithm {
    /// Every supported algorithm, in FEAT order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Sha256,
        Algorithm::Sha1,
        Algorithm::Md5,
        Algorithm::Crc32,
    ];

    /// The draft's name (`SHA-256`, `SHA-1`, `MD5`, `CRC32`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha1 => "SHA-1",
            Algorithm::Md5 => "MD5",
            Algorithm::Crc32 => "CRC32",
        }
    }

    /// Parses a name as `OPTS HASH` sends it, case-insensitively; `None` for an
    /// algorithm we don't offer (answered 504).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The legacy verb for this algorithm.
    pub fn legacy_verb(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "XSHA256",
            Algorithm::Sha1 => "XSHA1",
            Algorithm::Md5 => "XMD5",
            Algorithm::Crc32 => "XCRC",
        }
    }

    /// The algorithm of a legacy verb (upper-case).
    pub fn from_legacy_verb(verb: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.legacy_verb() == verb)
    }

    /// The FEAT line (draft §3.1): every name, the selected one marked with `*`.
    pub fn feat_line(selected: Algorithm) -> String {
        let names: Vec<String> = Self::ALL
            .iter()
            .map(|&a| {
                if a == selected {
                    format!("{}*", a.name())
                } else {
                    a.name().to_owned()
                }
            })
            .collect();
        format!(" HASH {}", names.join(";"))
    }
}

/// An incremental digest of one algorithm.
pub enum Hasher {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// MD5.
    Md5(md5::Md5),
    /// CRC-32.
    Crc32(crc32fast::Hasher),
}

impl Hasher {
    /// A fresh digest.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Crc32(h) => h.update(data),
        }
    }

    /// The digest as lower-case hex (CRC-32: 8 digits, big-endian).
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::Sha1(h) => hex(&h.finalize()),
            Hasher::Md5(h) => hex(&h.finalize()),
            Hasher::Crc32(h) => format!("{:08x}", h.finalize()),
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes of an upload hashed inline before the rest goes to the hashing pool: a
/// small file (one 1 MiB chunk) costs no hand-off.
const INLINE_MAX: u64 = 1024 * 1024;
/// Most chunks queued for hashing per upload: with 1 MiB chunks at most 4 MiB (shared
/// with the storage write, not copied) wait to be hashed; fewer when many uploads run.
const HASH_QUEUE: usize = 4;

/// The threads that hash every upload (issue 13 §5): one per core, each upload a lane
/// whose chunks are hashed in order ([`ftpgate_backend_local::lanes`]), instead of a
/// thread per upload (300 uploads: 300 hashing threads taking turns on 2 cores).
static HASHERS: Pool = Pool::new("ftpgate-sha256", 1);

/// The SHA-256 of an upload, fed chunk by chunk as the data arrives (issue 13 §2:
/// off the critical path). The first [`INLINE_MAX`] bytes are hashed inline; the
/// rest go through a bounded queue to the shared hashing pool, so hashing runs
/// beside the socket reads and the storage writes instead of between them. The
/// chunks are shared `Bytes` (no copy), and the queue applies back-pressure: a hasher
/// slower than the network slows the upload down, it never buffers it. The digest is
/// that of every byte fed, in order.
pub struct UploadDigest(DigestState);

enum DigestState {
    /// Hashing on the caller's task; `fed` bytes so far.
    Inline { hasher: Sha256, fed: u64 },
    /// Hashing on the pool, which sends the digest once the lane is closed.
    Piped {
        queue: LaneSender<Bytes>,
        digest: tokio::sync::oneshot::Receiver<[u8; 32]>,
    },
    /// The hashing lane is gone: no digest.
    Lost,
}

impl Default for UploadDigest {
    fn default() -> Self {
        Self(DigestState::Inline {
            hasher: sha256(),
            fed: 0,
        })
    }
}

impl UploadDigest {
    /// Adds the next stored bytes; waits only when the hashing pool is the queue's
    /// depth behind on this upload.
    pub async fn update(&mut self, data: Bytes) {
        if let DigestState::Inline { hasher, fed } = &mut self.0 {
            if *fed + data.len() as u64 <= INLINE_MAX {
                *fed += data.len() as u64;
                hasher.update(&data);
                return;
            }
            let hasher = std::mem::replace(hasher, sha256());
            self.0 = start_hashing(hasher);
        }
        match &mut self.0 {
            DigestState::Inline { hasher, .. } => hasher.update(&data),
            DigestState::Piped { queue, .. } => {
                if queue.send(data).await.is_err() {
                    self.0 = DigestState::Lost;
                }
            }
            DigestState::Lost => {}
        }
    }

    /// The digest of everything fed, once the pool has caught up; `None` only if the
    /// hashing lane was lost.
    pub async fn finish(self) -> Option<[u8; 32]> {
        match self.0 {
            DigestState::Inline { hasher, .. } => Some(finalize(hasher)),
            DigestState::Piped { queue, digest } => {
                drop(queue);
                let d = digest.await.ok();
                if d.is_none() {
                    tracing::warn!("the upload's hashing lane stopped: no digest");
                }
                d
            }
            DigestState::Lost => {
                tracing::warn!("the upload's hashing lane stopped: no digest");
                None
            }
        }
    }
}

/// The upload digest's SHA-256: AWS-LC's (already linked for TLS), whose assembly
/// (SHA-NI, AVX2) took about a fifth less CPU per GiB than `sha2`'s here.
type Sha256 = aws_lc_rs::digest::Context;

fn sha256() -> Sha256 {
    aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256)
}

fn finalize(h: Sha256) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// An upload's lane on [`HASHERS`]: continues `hasher` over each chunk in order and
/// sends the digest when the lane ends.
struct HashLane {
    hasher: Option<Sha256>,
    digest: Option<tokio::sync::oneshot::Sender<[u8; 32]>>,
}

impl Worker for HashLane {
    type Item = Bytes;

    fn handle(&mut self, chunk: Bytes) -> bool {
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        true
    }

    fn finish(mut self) {
        if let (Some(h), Some(tx)) = (self.hasher.take(), self.digest.take()) {
            let _ = tx.send(finalize(h));
        }
    }
}

/// Continues `hasher` on the hashing pool.
fn start_hashing(hasher: Sha256) -> DigestState {
    let (digest_tx, digest) = tokio::sync::oneshot::channel();
    let lane = HashLane {
        hasher: Some(hasher),
        digest: Some(digest_tx),
    };
    let queue = HASHERS.lane(lane, HASHERS.queue_depth(HASH_QUEUE));
    DigestState::Piped { queue, digest }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(a: Algorithm, data: &[u8]) -> String {
        let mut h = Hasher::new(a);
        let (x, y) = data.split_at(data.len() / 2);
        h.update(x);
        h.update(y);
        h.finish_hex()
    }

    #[test]
    fn known_vectors() {
        // FIPS 180 / RFC 1321 / zlib test vectors for "abc" and "123456789".
        assert_eq!(
            digest(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest(Algorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            digest(Algorithm::Md5, b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(digest(Algorithm::Crc32, b"123456789"), "cbf43926");
    }

    /// Inline, then piped to the hashing pool: the digest of every byte in order.
    #[tokio::test]
    async fn upload_digest_across_the_hashing_thread() {
        let mut u = UploadDigest::default();
        u.update(Bytes::from_static(b"ab")).await;
        u.update(Bytes::from_static(b"c")).await;
        assert_eq!(
            hex(&u.finish().await.unwrap()),
            digest(Algorithm::Sha256, b"abc")
        );
        let data: Vec<u8> = (0..9 * INLINE_MAX + 12_345)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let mut u = UploadDigest::default();
        // Uneven chunks: a small one, then more than the queue holds.
        for chunk in data[..1000]
            .chunks(1000)
            .chain(data[1000..].chunks(INLINE_MAX as usize - 3))
        {
            u.update(Bytes::copy_from_slice(chunk)).await;
        }
        assert!(matches!(u.0, DigestState::Piped { .. }));
        assert_eq!(
            hex(&u.finish().await.unwrap()),
            digest(Algorithm::Sha256, &data)
        );
    }

    #[test]
    fn names() {
        assert_eq!(Algorithm::parse("sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("SHA-512"), None);
        assert_eq!(
            Algorithm::feat_line(Algorithm::Sha1),
            " HASH SHA-256;SHA-1*;MD5;CRC32"
        );
        assert_eq!(Algorithm::from_legacy_verb("XMD5"), Some(Algorithm::Md5));
    }
}
