//! The memory backend keeps a file as the chunks it was uploaded in: reads, `Append`
//! and `Offset(n)` must be right at and around every chunk boundary, and must not
//! copy the stored bytes.

use bytes::Bytes;
use ftpgate_backend_memory::MemoryBackend;
use ftpgate_storage::testkit::{expect_err, get, p, payload, read_all};
use ftpgate_storage::{ErrorKind, Metadata, StorageBackend, WriteMode};
use futures::StreamExt;

/// The size of the slices a read yields (the backend's `READ_CHUNK`).
const SLICE: usize = 256 * 1024;

/// Uneven chunk sizes: single bytes, one chunk above the read slice size (so it is
/// re-split), small ones between large ones.
const SIZES: &[usize] = &[1, 1000, SLICE + 3, 7, 300_000, 1, 2 * SLICE];

/// Cuts `data` into consecutive chunks of `sizes` (zero-copy slices of one buffer).
fn cut(data: &Bytes, sizes: &[usize]) -> Vec<Bytes> {
    let mut pos = 0;
    sizes
        .iter()
        .map(|&n| {
            let chunk = data.slice(pos..pos + n);
            pos += n;
            chunk
        })
        .collect()
}

/// Every chunk boundary, one byte either side of it, and the middle of each chunk.
fn interesting_offsets(sizes: &[usize]) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let mut out = vec![0, 1];
    let mut start = 0;
    for &n in sizes {
        out.extend([start + n / 2, start + n - 1, start + n, start + n + 1]);
        start += n;
    }
    out.retain(|&o| o <= total);
    out.sort_unstable();
    out.dedup();
    out
}

/// Uploads `chunks` in `mode` and completes.
async fn upload(store: &MemoryBackend, path: &str, mode: WriteMode, chunks: &[Bytes]) -> Metadata {
    let mut up = store
        .create(&p(path), mode)
        .await
        .unwrap_or_else(|e| panic!("create {path} ({mode:?}): {e}"));
    for chunk in chunks {
        up.write(chunk.clone()).await.expect("write");
    }
    up.complete()
        .await
        .unwrap_or_else(|e| panic!("complete {path} ({mode:?}): {e}"))
}

/// The slices a read from `offset` yields.
async fn pieces(store: &MemoryBackend, path: &str, offset: u64) -> Vec<Bytes> {
    store
        .read(&p(path), offset)
        .await
        .unwrap_or_else(|e| panic!("read {path} at {offset}: {e}"))
        .map(|piece| piece.expect("read piece"))
        .collect()
        .await
}

/// Reads `path` from every interesting offset of `sizes` (its chunk layout) and
/// compares byte for byte with `expected`; the size is checked too.
async fn check_reads(store: &MemoryBackend, path: &str, expected: &[u8], sizes: &[usize]) {
    assert_eq!(sizes.iter().sum::<usize>(), expected.len());
    let meta = store.stat(&p(path)).await.expect("stat");
    assert_eq!(meta.size, expected.len() as u64, "size of {path}");
    for off in interesting_offsets(sizes) {
        let got = read_all(store, &p(path), off as u64)
            .await
            .unwrap_or_else(|e| panic!("read {path} at {off}: {e}"));
        assert!(
            got == expected[off..],
            "{path}: content from offset {off} differs (got {} bytes, expected {})",
            got.len(),
            expected.len() - off
        );
    }
}

/// The slice lengths a read from `offset` should yield: the rest of each stored chunk,
/// split into slices of at most `SLICE`, never joined with the next chunk.
fn expected_pieces(sizes: &[usize], offset: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = 0;
    for &n in sizes {
        let end = start + n;
        let mut from = offset.max(start);
        while from < end {
            let len = (end - from).min(SLICE);
            out.push(len);
            from += len;
        }
        start = end;
    }
    out
}

#[tokio::test]
async fn read_from_inside_and_at_the_edges_of_chunks() {
    let store = MemoryBackend::new();
    let data = Bytes::from(payload(SIZES.iter().sum(), 21));
    let meta = upload(&store, "/f", WriteMode::Truncate, &cut(&data, SIZES)).await;
    assert_eq!(meta.size, data.len() as u64);
    check_reads(&store, "/f", &data, SIZES).await;

    // The slices follow the stored chunks: none empty, none spanning two chunks.
    for off in interesting_offsets(SIZES) {
        let lens: Vec<usize> = pieces(&store, "/f", off as u64)
            .await
            .iter()
            .map(Bytes::len)
            .collect();
        assert_eq!(lens, expected_pieces(SIZES, off), "slices read from {off}");
    }
}

#[tokio::test]
async fn read_at_the_end_is_empty_and_beyond_is_invalid() {
    let store = MemoryBackend::new();
    let data = Bytes::from(payload(SIZES.iter().sum(), 22));
    upload(&store, "/f", WriteMode::Truncate, &cut(&data, SIZES)).await;
    let len = data.len() as u64;
    assert!(
        pieces(&store, "/f", len).await.is_empty(),
        "a read at the size yields nothing"
    );
    for off in [len + 1, len + SLICE as u64, u64::MAX] {
        expect_err(
            store.read(&p("/f"), off).await,
            &[ErrorKind::InvalidInput],
            &format!("read at {off}, beyond the size {len}"),
        );
    }
}

#[tokio::test]
async fn offset_upload_around_chunk_boundaries() {
    let store = MemoryBackend::new();
    let data = Bytes::from(payload(SIZES.iter().sum(), 23));
    let tail = Bytes::from(payload(SLICE + 17, 24));
    let tail_sizes = [5, SLICE + 12];
    for n in interesting_offsets(SIZES) {
        let path = format!("/f{n}");
        upload(&store, &path, WriteMode::Truncate, &cut(&data, SIZES)).await;
        let meta = upload(
            &store,
            &path,
            WriteMode::Offset(n as u64),
            &cut(&tail, &tail_sizes),
        )
        .await;
        let mut expected = data[..n].to_vec();
        expected.extend_from_slice(&tail);
        assert_eq!(meta.size, expected.len() as u64, "size after Offset({n})");
        assert!(
            get(&store, &path).await == expected,
            "content after Offset({n})"
        );

        // The layout now: the whole chunks before `n`, the straddling one cut at `n`,
        // then the tail's chunks.
        let mut sizes = Vec::new();
        let mut left = n;
        for &s in SIZES {
            if left == 0 {
                break;
            }
            sizes.push(s.min(left));
            left -= s.min(left);
        }
        sizes.extend(tail_sizes);
        check_reads(&store, &path, &expected, &sizes).await;
        for off in interesting_offsets(&sizes) {
            let lens: Vec<usize> = pieces(&store, &path, off as u64)
                .await
                .iter()
                .map(Bytes::len)
                .collect();
            assert_eq!(
                lens,
                expected_pieces(&sizes, off),
                "slices read from {off} after Offset({n})"
            );
        }

        // The original is untouched by an aborted Offset upload.
        let mut up = store
            .create(&p(&path), WriteMode::Offset(n as u64))
            .await
            .expect("create Offset");
        up.write(Bytes::from_static(b"discarded"))
            .await
            .expect("write");
        up.abort().await.expect("abort");
        assert!(
            get(&store, &path).await == expected,
            "after an aborted Offset"
        );
    }

    let path = "/f";
    let len = data.len() as u64;
    expect_err(
        store.create(&p(path), WriteMode::Offset(len + 1)).await,
        &[ErrorKind::InvalidInput],
        "Offset beyond the size",
    );
}

#[tokio::test]
async fn offset_upload_keeps_a_reader_on_the_old_content() {
    let store = MemoryBackend::new();
    let data = Bytes::from(payload(SIZES.iter().sum(), 25));
    upload(&store, "/f", WriteMode::Truncate, &cut(&data, SIZES)).await;
    let start = 1 + 1000 + 5; // inside the third chunk
    let mut stream = store.read(&p("/f"), start as u64).await.expect("read");
    let mut got = stream.next().await.expect("a piece").expect("ok").to_vec();
    // Cut the file inside the chunk being read, then replace its tail.
    upload(
        &store,
        "/f",
        WriteMode::Offset(start as u64 + 10),
        &[Bytes::from_static(b"new tail")],
    )
    .await;
    while let Some(piece) = stream.next().await {
        got.extend_from_slice(&piece.expect("ok"));
    }
    assert!(
        got == data[start..],
        "a read started before the Offset upload"
    );
    let mut expected = data[..start + 10].to_vec();
    expected.extend_from_slice(b"new tail");
    assert_eq!(get(&store, "/f").await, expected);
}

#[tokio::test]
async fn append_after_a_multi_chunk_upload() {
    let store = MemoryBackend::new();
    let data = Bytes::from(payload(SIZES.iter().sum(), 26));
    upload(&store, "/f", WriteMode::Truncate, &cut(&data, SIZES)).await;

    let more = Bytes::from(payload(SLICE + 2 + 3 + 1, 27));
    let more_sizes = [SLICE + 2, 3, 1];
    let meta = upload(&store, "/f", WriteMode::Append, &cut(&more, &more_sizes)).await;
    let mut expected = data.to_vec();
    expected.extend_from_slice(&more);
    assert_eq!(meta.size, expected.len() as u64);
    let mut sizes = SIZES.to_vec();
    sizes.extend(more_sizes);
    check_reads(&store, "/f", &expected, &sizes).await;

    // Another append of one chunk, then one with nothing (and an empty write).
    upload(&store, "/f", WriteMode::Append, &[Bytes::from_static(b"!")]).await;
    expected.push(b'!');
    sizes.push(1);
    let meta = upload(&store, "/f", WriteMode::Append, &[Bytes::new()]).await;
    assert_eq!(meta.size, expected.len() as u64);
    check_reads(&store, "/f", &expected, &sizes).await;
    for off in interesting_offsets(&sizes) {
        let lens: Vec<usize> = pieces(&store, "/f", off as u64)
            .await
            .iter()
            .map(Bytes::len)
            .collect();
        assert_eq!(lens, expected_pieces(&sizes, off), "slices read from {off}");
    }

    // Offset(size) after the appends is one more append.
    upload(
        &store,
        "/f",
        WriteMode::Offset(expected.len() as u64),
        &[Bytes::from_static(b"end")],
    )
    .await;
    expected.extend_from_slice(b"end");
    sizes.push(3);
    check_reads(&store, "/f", &expected, &sizes).await;
}

#[tokio::test]
async fn stored_chunks_are_not_copied() {
    let store = MemoryBackend::new();
    let a = Bytes::from(payload(1000, 28));
    let b = Bytes::from(payload(SLICE + 100, 29));
    upload(&store, "/f", WriteMode::Truncate, &[a.clone(), b.clone()]).await;

    let got = pieces(&store, "/f", 0).await;
    let ptrs: Vec<*const u8> = got.iter().map(|c| c.as_ptr()).collect();
    assert_eq!(
        ptrs,
        vec![a.as_ptr(), b.as_ptr(), b[SLICE..].as_ptr()],
        "a read yields slices of the uploaded chunks"
    );

    let got = pieces(&store, "/f", 10).await;
    assert_eq!(
        got[0].as_ptr(),
        a[10..].as_ptr(),
        "a read from inside a chunk"
    );
    let got = pieces(&store, "/f", 1000 + 7).await;
    assert_eq!(
        got[0].as_ptr(),
        b[7..].as_ptr(),
        "a read from inside the next chunk"
    );

    // Offset(n) inside `b` keeps a slice of it, then the new chunk as written.
    let c = Bytes::from(payload(50, 30));
    upload(
        &store,
        "/f",
        WriteMode::Offset(1000 + 20),
        std::slice::from_ref(&c),
    )
    .await;
    let got = pieces(&store, "/f", 0).await;
    let ptrs: Vec<*const u8> = got.iter().map(|c| c.as_ptr()).collect();
    assert_eq!(ptrs, vec![a.as_ptr(), b.as_ptr(), c.as_ptr()]);
    assert_eq!(got[1].len(), 20);

    // Append keeps every existing chunk.
    let d = Bytes::from(payload(9, 31));
    upload(&store, "/f", WriteMode::Append, std::slice::from_ref(&d)).await;
    let got = pieces(&store, "/f", 0).await;
    let ptrs: Vec<*const u8> = got.iter().map(|c| c.as_ptr()).collect();
    assert_eq!(ptrs, vec![a.as_ptr(), b.as_ptr(), c.as_ptr(), d.as_ptr()]);
}
