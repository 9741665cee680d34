//! `HASH` (draft-bryan-ftpext-hash-02 §3) and the legacy `XSHA256`, `XSHA1`, `XMD5`,
//! `XCRC` commands.
//!
//! draft §3.3: "213 <SP> <hashname> <SP> <start-point>-<end-point> <SP> <filehash>
//! <SP> <filename>". Ranges (`RANG`) are not offered, so the range is always the whole
//! file, `0-<size>`. A SHA-256 stored at upload (S3 object metadata) answers without
//! reading the file; everything else streams the file through the digest. The control
//! connection waits meanwhile, as for any command.

use ftpgate_storage::{ErrorKind, StorageError};
use futures::StreamExt;

use super::{target, tri, Ctx, Outcome};
use crate::auth::Permission;
use crate::checksum::{hex, Algorithm, Hasher};
use crate::errors::storage_reply;
use crate::protocol::Reply;

/// The digest and size of a file, or the reply explaining why not.
async fn digest(ctx: &Ctx<'_>, arg: &str, algorithm: Algorithm) -> Result<(String, u64), Reply> {
    let t = target(ctx, arg, Some(Permission::Read))?;
    let storage = ctx.storage();
    if algorithm == Algorithm::Sha256 {
        match storage.stored_sha256(&t.storage).await {
            Ok(Some((d, size))) => return Ok((hex(&d), size)),
            Ok(None) => {}
            Err(e) => return Err(storage_reply(&e)),
        }
    }
    let (meta, mut stream) = storage
        .open(&t.storage, 0)
        .await
        .map_err(|e| storage_reply(&e))?;
    let mut hasher = Hasher::new(algorithm);
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| storage_reply(&e))?;
        read += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if read != meta.size {
        // Replaced while it was read: the digest would belong to neither version.
        let e = StorageError::new(
            ErrorKind::Transient,
            format!(
                "digest of {}: the file changed while it was read",
                t.storage
            ),
        );
        return Err(storage_reply(&e));
    }
    Ok((hasher.finish_hex(), read))
}

/// HASH: the digest of the algorithm chosen with `OPTS HASH` (default SHA-256).
/// The reply names the octet range hashed with an inclusive end point, as RANG does
/// (draft-bryan-ftpext-hash-02 §3, §3.4: `0-49` is the first 50 octets): the whole
/// file is `0-<size - 1>`, an empty one `0-0`.
pub(super) async fn hash(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let algorithm = ctx.session.hash_algorithm;
    let (hex, size) = tri!(digest(ctx, arg, algorithm).await);
    let end = size.saturating_sub(1);
    Reply::new(213, format!("{} 0-{end} {hex} {arg}", algorithm.name())).into()
}

/// XSHA256 / XSHA1 / XMD5 / XCRC: `250 <hex>` as ProFTPD's mod_digest answers.
pub(super) async fn xhash(ctx: &mut Ctx<'_>, algorithm: Algorithm, arg: &str) -> Outcome {
    let (hex, _) = tri!(digest(ctx, arg, algorithm).await);
    Reply::new(250, hex).into()
}
