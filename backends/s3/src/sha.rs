//! A SHA-256 (FIPS 180-4) whose state can be kept and taken up again: the eight
//! state words after a whole number of 64-byte blocks. Parts of an incomplete
//! multipart upload cannot be read back, so a pending upload keeps the state after
//! its last complete part (part sizes are multiples of 1 MiB, so the block buffer is
//! empty there) and a resumed upload's digest continues from it without reading
//! anything. Blocks go through `sha2::compress256`, the same (CPU-dispatched) block
//! function `sha2::Sha256` uses, so hashing costs what it did.

use sha2::block_api::compress256;

/// The initial state words (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// An incremental SHA-256 with a keepable state.
#[derive(Clone)]
pub(crate) struct Sha256Stream {
    state: [u32; 8],
    /// Bytes hashed (buffered ones included).
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
}

impl Sha256Stream {
    /// A fresh digest.
    pub(crate) fn new() -> Self {
        Self::from_state(H0, 0)
    }

    /// Continues from `state`, the words after the first `len` bytes (`len` a
    /// multiple of 64).
    pub(crate) fn from_state(state: [u32; 8], len: u64) -> Self {
        Self {
            state,
            len,
            buf: [0; 64],
            buf_len: 0,
        }
    }

    /// Bytes hashed so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The state words, when the bytes so far are whole blocks.
    pub(crate) fn snapshot(&self) -> Option<[u32; 8]> {
        (self.buf_len == 0).then_some(self.state)
    }

    /// Adds bytes.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 64 {
                return;
            }
            compress256(&mut self.state, std::slice::from_ref(&self.buf));
            self.buf_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        if !blocks.is_empty() {
            compress256(&mut self.state, blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The digest of everything added (the stream itself is left as it is).
    pub(crate) fn finish(&self) -> [u8; 32] {
        let mut state = self.state;
        let mut block = [0u8; 64];
        block[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        block[self.buf_len] = 0x80;
        if self.buf_len >= 56 {
            compress256(&mut state, std::slice::from_ref(&block));
            block = [0; 64];
        }
        block[56..].copy_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        compress256(&mut state, std::slice::from_ref(&block));
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn equals_sha2_for_every_length_and_split() {
        for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096 + 17] {
            let d = data(n);
            let want: [u8; 32] = sha2::Sha256::digest(&d).into();
            for split in [0, 1.min(n), n / 3, n / 2, n.saturating_sub(1), n] {
                let mut s = Sha256Stream::new();
                s.update(&d[..split]);
                s.update(&d[split..]);
                assert_eq!(s.finish(), want, "n={n} split={split}");
                assert_eq!(s.len(), n as u64);
            }
        }
    }

    #[test]
    fn a_kept_state_continues() {
        let d = data(3 * 1024 * 1024 + 5);
        let want: [u8; 32] = sha2::Sha256::digest(&d).into();
        let mut first = Sha256Stream::new();
        first.update(&d[..1000]);
        assert_eq!(first.snapshot(), None, "not on a block boundary");
        first.update(&d[1000..1024 * 1024]);
        let kept = first.snapshot().expect("1 MiB is whole blocks");
        let mut resumed = Sha256Stream::from_state(kept, 1024 * 1024);
        for chunk in d[1024 * 1024..].chunks(65_537) {
            resumed.update(chunk);
        }
        assert_eq!(resumed.finish(), want);
    }
}
