//! The `ftpgate` binary: parse the command line, load the configuration, set up
//! logging, run the server until SIGTERM/SIGINT. `ftpgate hash-password` reads a
//! password from stdin and prints its PHC hash as the last line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ftpgate::config::{CliOverrides, Config, LogFormat};
use ftpgate::server::Server;
use tracing_subscriber::EnvFilter;

/// FTP gateway onto local disk, memory and object storage.
#[derive(Parser, Debug)]
#[command(name = "ftpgate", version, about)]
struct Cli {
    /// TOML configuration file (see README for every key).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Overrides server.listen, e.g. 127.0.0.1:2121.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Overrides storage.root (local backend).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Overrides log.format.
    #[arg(long, value_enum)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CliLogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Read one password line from stdin and print its argon2 PHC hash.
    HashPassword,
    /// Print the Kubernetes Service `ports:` items (YAML) for the config: the
    /// control port and every passive port (Services have no port ranges).
    ServicePorts {
        /// The port clients dial for control connections on the load balancer.
        #[arg(long, default_value_t = 21)]
        control_port: u16,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Some(Cmd::HashPassword) = cli.command {
        return hash_password();
    }
    let overrides = CliOverrides {
        listen: cli.listen.clone(),
        root: cli.root.clone(),
        log_format: cli.log_format.map(|f| match f {
            CliLogFormat::Text => LogFormat::Text,
            CliLogFormat::Json => LogFormat::Json,
        }),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ftpgate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Cmd::ServicePorts { control_port }) = cli.command {
        return match ftpgate::config::service_ports_yaml(&config, control_port) {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ftpgate: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(&config);
    for name in ftpgate::config::service_link_vars() {
        tracing::debug!(%name, "ignoring a Kubernetes service-link variable (not configuration)");
    }
    ftpgate::resources::raise_nofile_limit_logged();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ftpgate: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ftpgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    tokio::spawn(ftpgate::resources::trim_when_idle(
        std::time::Duration::from_secs(10),
        server.session_counter(),
    ));
    server.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Keeps glibc's allocator from hoarding large buffers. By default glibc raises its
/// mmap threshold after the first large free, so later 19 MiB argon2 blocks (one per
/// login), 8 MiB S3 parts and the like come from the heap and stay there: RSS grew by
/// ~12 MiB per login, measured. A fixed 4 MiB threshold sends those to mmap (returned
/// at free) while 1 MiB transfer chunks stay on the heap and are reused; two arenas
/// stop per-thread arenas multiplying the rest. A 32 MiB trim threshold keeps free()
/// from handing the top of a heap back to the kernel whenever a few chunks at its end
/// are freed (the default is 128 KiB): under many uploads that cycle gave every new
/// chunk buffer fresh pages and page faults (issue 13 §5); memory still goes back
/// once load ends, through `resources::trim_when_idle`'s `malloc_trim(0)`.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists; mallopt
    // only changes allocator tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    }
}

fn init_logging(config: &Config) {
    // RUST_LOG wins over log.level; either gets object_store's retry chatter
    // demoted unless it asks for it (config::log_filter).
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| config.log.level.clone());
    let filter = EnvFilter::try_new(ftpgate::config::log_filter(&level))
        .unwrap_or_else(|_| EnvFilter::new(ftpgate::config::log_filter(&config.log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() {
        eprintln!("ftpgate: cannot read a password from stdin");
        return ExitCode::FAILURE;
    }
    let pw = line.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        eprintln!("ftpgate: empty password");
        return ExitCode::FAILURE;
    }
    match ftpgate::auth::hash_password(pw) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ftpgate: {e}");
            ExitCode::FAILURE
        }
    }
}
