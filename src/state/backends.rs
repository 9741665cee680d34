//! The storage backends of a server: `[storage]` and every `[backends.NAME]`,
//! built once at start, and the one place where a user's `users.backend` name
//! turns into a backend ([`Backends::resolve`]).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use ftpgate_storage::{ErrorKind, StorageBackend, VPath};

use crate::auth::User;
use crate::config::{BackendConfig, Config, StorageConfig};
use crate::metrics::{InstrumentedBackend, Metrics};

/// The metrics and log label of the default backend (`[storage]`).
pub const DEFAULT_LABEL: &str = "storage";

/// The default backend and the named ones, each wrapped for metrics and quotas.
#[derive(Clone)]
pub struct Backends {
    default: Arc<dyn StorageBackend>,
    named: HashMap<String, Arc<dyn StorageBackend>>,
}

/// A user's backend, resolved once at login (see [`Backends::resolve`]).
#[derive(Clone)]
pub struct UserBackend {
    /// `users.backend` (a `[backends.NAME]`), `None` for `[storage]`.
    pub name: Option<String>,
    /// The backend itself.
    pub storage: Arc<dyn StorageBackend>,
}

impl std::fmt::Debug for UserBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserBackend")
            .field("label", &self.label())
            .field("kind", &self.storage.kind())
            .finish()
    }
}

impl UserBackend {
    /// The metrics label: `storage` or the `[backends.NAME]`.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_LABEL)
    }
}

impl Backends {
    /// Backends built elsewhere (already wrapped as the caller wants them).
    pub fn new(
        default: Arc<dyn StorageBackend>,
        named: HashMap<String, Arc<dyn StorageBackend>>,
    ) -> Self {
        Self { default, named }
    }

    /// Builds `[storage]` and every `[backends.NAME]`, each wrapped in the
    /// metrics and quota-accounting layers.
    pub async fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        quotas: &Arc<crate::quota::Quotas>,
    ) -> anyhow::Result<Self> {
        let instrument = |b: Arc<dyn StorageBackend>, name: &str| -> Arc<dyn StorageBackend> {
            let b: Arc<dyn StorageBackend> =
                Arc::new(InstrumentedBackend::new(b, name, metrics.clone()));
            Arc::new(crate::quota::AccountedBackend::new(b, name, quotas.clone()))
        };
        let default = instrument(
            build_storage(&config.storage, DEFAULT_LABEL).await?,
            DEFAULT_LABEL,
        );
        let mut named = HashMap::new();
        for (name, section) in &config.backends {
            let b = build_storage(section, &format!("backends.{name}")).await?;
            named.insert(name.clone(), instrument(b, name));
        }
        Ok(Self { default, named })
    }

    /// `[storage]`.
    pub fn default_backend(&self) -> &Arc<dyn StorageBackend> {
        &self.default
    }

    /// The backend called `name` (`None`: `[storage]`); `None` when no
    /// `[backends.NAME]` has that name.
    pub fn lookup(&self, name: Option<&str>) -> Option<&Arc<dyn StorageBackend>> {
        match name {
            None => Some(&self.default),
            Some(n) => self.named.get(n),
        }
    }

    /// The backend for a `users.backend` value: the named one, else (no name,
    /// or a name without a `[backends.NAME]`) `[storage]`. The one name → backend
    /// mapping behind every lookup.
    pub fn for_name(&self, name: Option<&str>) -> &Arc<dyn StorageBackend> {
        self.lookup(name).unwrap_or(&self.default)
    }

    /// The backend a user works on (see [`Backends::for_name`]), with its name;
    /// sessions call it once, at login.
    pub fn resolve(&self, user: &User) -> UserBackend {
        let name = user.backend.clone();
        let storage = self.for_name(name.as_deref()).clone();
        UserBackend { name, storage }
    }

    /// Every named backend with its name.
    pub fn named(&self) -> impl Iterator<Item = (&String, &Arc<dyn StorageBackend>)> {
        self.named.iter()
    }
}

/// Builds one backend from its `[storage]` or `[backends.NAME]` section; `key`
/// names the section in error messages.
async fn build_storage(
    storage: &StorageConfig,
    key: &str,
) -> anyhow::Result<Arc<dyn StorageBackend>> {
    Ok(match &storage.backend {
        BackendConfig::Local(l) => Arc::new(
            ftpgate_backend_local::LocalBackend::new(l.root.clone())
                .with_context(|| format!("{key}.root {}", l.root.display()))?,
        ),
        BackendConfig::Memory => Arc::new(ftpgate_backend_memory::MemoryBackend::new()),
        BackendConfig::S3(cfg) => {
            let backend = ftpgate_backend_s3::S3Backend::new((**cfg).clone())
                .await
                .with_context(|| format!("{key}: S3 backend"))?;
            // Say clearly at start when the bucket cannot be reached.
            backend.check().await.with_context(|| key.to_owned())?;
            Arc::new(backend)
        }
        BackendConfig::Gcs(cfg) => {
            let backend = ftpgate_backend_cloud::CloudBackend::gcs((**cfg).clone())
                .with_context(|| format!("{key}: GCS backend"))?;
            backend.check().await.with_context(|| key.to_owned())?;
            Arc::new(backend)
        }
        BackendConfig::Azure(cfg) => {
            let backend = ftpgate_backend_cloud::CloudBackend::azure((**cfg).clone())
                .with_context(|| format!("{key}: Azure backend"))?;
            backend.check().await.with_context(|| key.to_owned())?;
            Arc::new(backend)
        }
    })
}

/// Creates every level of `dir` that does not exist yet.
pub(crate) async fn ensure_dir(storage: &dyn StorageBackend, dir: &VPath) -> anyhow::Result<()> {
    let mut p = VPath::root();
    for seg in dir.segments() {
        p = p.child(seg)?;
        match storage.mkdir(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating home {dir}")),
        }
    }
    Ok(())
}
