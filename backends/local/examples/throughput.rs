//! Measures upload and download throughput of the local backend against plain
//! `std::fs` I/O in the same directory.
//!
//! `cargo run --release -p ftpgate-backend-local --example throughput -- [DIR] [MIB]`

use std::io::{Read, Write};
use std::time::Instant;

use bytes::Bytes;
use ftpgate_backend_local::LocalBackend;
use ftpgate_storage::{StorageBackend, VPath, WriteMode};
use futures::StreamExt;

const CHUNK: usize = 64 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "target/throughput".to_owned());
    let mib: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let total = mib * 1024 * 1024;
    let store = LocalBackend::new(&dir)?;
    let chunk = Bytes::from(vec![0x5a_u8; CHUNK]);
    let rate = |secs: f64| total as f64 / secs / 1e6;

    // Baseline: a plain write loop with the same chunk size, then fsync.
    let plain = store.root().join("plain.bin");
    let start = Instant::now();
    let mut f = std::fs::File::create(&plain)?;
    for _ in 0..total / CHUNK {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "std::fs write+fsync  {mib} MiB: {secs:.2}s {:.0} MB/s",
        rate(secs)
    );

    let path = VPath::parse("/backend.bin")?;
    let start = Instant::now();
    let mut up = store.create(&path, WriteMode::Truncate).await?;
    for _ in 0..total / CHUNK {
        up.write(chunk.clone()).await?;
    }
    up.complete().await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "backend upload       {mib} MiB: {secs:.2}s {:.0} MB/s",
        rate(secs)
    );

    let start = Instant::now();
    let mut f = std::fs::File::open(&plain)?;
    let mut buf = vec![0; CHUNK];
    let mut n = 0;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "std::fs read         {mib} MiB: {secs:.2}s {:.0} MB/s ({n})",
        rate(secs)
    );

    let start = Instant::now();
    let mut stream = store.read(&path, 0).await?;
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        n += chunk?.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "backend read         {mib} MiB: {secs:.2}s {:.0} MB/s ({n})",
        rate(secs)
    );

    std::fs::remove_file(plain)?;
    store.delete(&path).await?;
    Ok(())
}
