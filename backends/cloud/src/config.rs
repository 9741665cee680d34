//! The operator's settings of the two backends: [`GcsConfig`], [`AzureConfig`], and the
//! request and upload bounds they share ([`Tuning`]), with defaults and validation.

use std::path::PathBuf;

use ftpgate_backend_s3::{
    Secret, MAX_PART_SIZE_MIB, MAX_REQUEST_TIMEOUT_SECS, MAX_RETRIES_LIMIT, MAX_RETRY_TIMEOUT_SECS,
    MIN_PART_SIZE_MIB,
};
use ftpgate_storage::{ErrorKind, StorageError};
use serde::Deserialize;

/// Request and upload bounds, the same keys and defaults as the S3 backend's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Part (GCS) or block (Azure) size in MiB. Default 8; memory per upload is
    /// (`max_parts_in_flight` + 1) × this.
    pub part_size_mib: u64,
    /// Parts uploading at once per upload. Default 2.
    pub max_parts_in_flight: usize,
    /// Retries of a request that failed transiently. Default 3.
    pub max_retries: usize,
    /// No retry after this many seconds. Default 20.
    pub retry_timeout_secs: u64,
    /// Seconds the service may take to send response headers. Default 30.
    pub response_timeout_secs: u64,
    /// Seconds a request or response body may make no progress while waited for.
    /// Default 30.
    pub stall_timeout_secs: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            part_size_mib: 8,
            max_parts_in_flight: 2,
            max_retries: 3,
            retry_timeout_secs: 20,
            response_timeout_secs: 30,
            stall_timeout_secs: 30,
        }
    }
}

impl Tuning {
    /// Checks the bounds; `key` (`gcs`, `azure`) prefixes the key names in errors.
    pub fn validate(&self, key: &str) -> Result<(), StorageError> {
        let bad = |msg: String| Err(StorageError::new(ErrorKind::InvalidInput, msg));
        if !(MIN_PART_SIZE_MIB..=MAX_PART_SIZE_MIB).contains(&self.part_size_mib) {
            return bad(format!(
                "{key}.part_size_mib must be between {MIN_PART_SIZE_MIB} and {MAX_PART_SIZE_MIB}"
            ));
        }
        if !(1..=64).contains(&self.max_parts_in_flight) {
            return bad(format!(
                "{key}.max_parts_in_flight must be between 1 and 64"
            ));
        }
        if self.max_retries > MAX_RETRIES_LIMIT {
            return bad(format!(
                "{key}.max_retries must be at most {MAX_RETRIES_LIMIT}"
            ));
        }
        if !(1..=MAX_RETRY_TIMEOUT_SECS).contains(&self.retry_timeout_secs) {
            return bad(format!(
                "{key}.retry_timeout_secs must be between 1 and {MAX_RETRY_TIMEOUT_SECS}"
            ));
        }
        for (name, v) in [
            ("response_timeout_secs", self.response_timeout_secs),
            ("stall_timeout_secs", self.stall_timeout_secs),
        ] {
            if !(1..=MAX_REQUEST_TIMEOUT_SECS).contains(&v) {
                return bad(format!(
                    "{key}.{name} must be between 1 and {MAX_REQUEST_TIMEOUT_SECS}"
                ));
            }
        }
        Ok(())
    }
}

/// Checks a key prefix the way the key mapping will use it.
fn validate_prefix(key: &str, prefix: Option<&str>) -> Result<(), StorageError> {
    let trimmed = prefix.unwrap_or("").trim_matches('/');
    if trimmed.is_empty() {
        return Ok(());
    }
    object_store::path::Path::parse(trimmed)
        .map(|_| ())
        .map_err(|e| {
            StorageError::new(
                ErrorKind::InvalidInput,
                format!("{key}.prefix: {trimmed:?} is not a valid key prefix: {e}"),
            )
        })
}

/// Checks an endpoint URL's scheme.
fn validate_endpoint(
    key: &str,
    endpoint: Option<&str>,
    allow_http: bool,
) -> Result<(), StorageError> {
    let Some(e) = endpoint else { return Ok(()) };
    let bad = |msg: String| Err(StorageError::new(ErrorKind::InvalidInput, msg));
    if e.starts_with("https://") || (allow_http && e.starts_with("http://")) {
        Ok(())
    } else if e.starts_with("http://") {
        bad(format!(
            "{key}.endpoint {e:?} is http://: set allow_http = true (emulators only)"
        ))
    } else {
        bad(format!("{key}.endpoint {e:?} must be an http(s):// URL"))
    }
}

/// A Google Cloud Storage bucket (`kind = "gcs"`).
///
/// Credentials, first match wins: `service_account_file`; else `anonymous` (no
/// signature, for emulators); else Google's standard chain as object_store reads it
/// (`GOOGLE_SERVICE_ACCOUNT*` variables, `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
/// application-default credentials file, then the metadata server: GKE Workload
/// Identity, Compute Engine).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "GcsKeys")]
pub struct GcsConfig {
    /// The bucket (required).
    pub bucket: String,
    /// Key prefix under which the FTP tree lives.
    pub prefix: Option<String>,
    /// Base URL of the storage API instead of `https://storage.googleapis.com`
    /// (an emulator such as fake-gcs-server: `http://127.0.0.1:4443`).
    pub endpoint: Option<String>,
    /// Allow an `http://` endpoint (emulators). Default false.
    pub allow_http: bool,
    /// A service account key file (JSON): an explicit override of the chain.
    pub service_account_file: Option<PathBuf>,
    /// Send unsigned requests (emulators, public buckets). Default false.
    pub anonymous: bool,
    /// Request and upload bounds.
    pub tuning: Tuning,
}

impl GcsConfig {
    /// Defaults for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: None,
            endpoint: None,
            allow_http: false,
            service_account_file: None,
            anonymous: false,
            tuning: Tuning::default(),
        }
    }

    /// Checks every key; errors name it (`gcs.bucket`, …).
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.bucket.trim().is_empty() {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                "gcs.bucket must not be empty",
            ));
        }
        if self.anonymous && self.service_account_file.is_some() {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                "gcs.anonymous and gcs.service_account_file are exclusive",
            ));
        }
        validate_prefix("gcs", self.prefix.as_deref())?;
        validate_endpoint("gcs", self.endpoint.as_deref(), self.allow_http)?;
        self.tuning.validate("gcs")
    }
}

/// A config's keys as an operator writes them, the keys of [`Tuning`] flat beside the
/// service's own (serde's `flatten` would lose `deny_unknown_fields` and error
/// paths), and the conversion into the config.
macro_rules! keys_struct {
    ($(#[$m:meta])* $name:ident => $target:ident { $($(#[$fm:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$fm])* $field: $ty,)*
            #[serde(default)]
            part_size_mib: Option<u64>,
            #[serde(default)]
            max_parts_in_flight: Option<usize>,
            #[serde(default)]
            max_retries: Option<usize>,
            #[serde(default)]
            retry_timeout_secs: Option<u64>,
            #[serde(default)]
            response_timeout_secs: Option<u64>,
            #[serde(default)]
            stall_timeout_secs: Option<u64>,
        }

        impl $name {
            /// The tuning keys given, the others at [`Tuning::default`].
            fn tuning(&self) -> Tuning {
                let d = Tuning::default();
                Tuning {
                    part_size_mib: self.part_size_mib.unwrap_or(d.part_size_mib),
                    max_parts_in_flight: self.max_parts_in_flight.unwrap_or(d.max_parts_in_flight),
                    max_retries: self.max_retries.unwrap_or(d.max_retries),
                    retry_timeout_secs: self.retry_timeout_secs.unwrap_or(d.retry_timeout_secs),
                    response_timeout_secs: self
                        .response_timeout_secs
                        .unwrap_or(d.response_timeout_secs),
                    stall_timeout_secs: self.stall_timeout_secs.unwrap_or(d.stall_timeout_secs),
                }
            }
        }

        impl From<$name> for $target {
            fn from(k: $name) -> Self {
                let tuning = k.tuning();
                Self {
                    $($field: k.$field,)*
                    tuning,
                }
            }
        }
    };
}

keys_struct! {
    /// What deserialises into a [`GcsConfig`]: its keys with the tuning keys beside them.
    GcsKeys => GcsConfig {
        bucket: String,
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        allow_http: bool,
        #[serde(default)]
        service_account_file: Option<PathBuf>,
        #[serde(default)]
        anonymous: bool,
    }
}

keys_struct! {
    /// What deserialises into an [`AzureConfig`]: its keys with the tuning keys beside
    /// them.
    AzureKeys => AzureConfig {
        #[serde(default)]
        account: Option<String>,
        container: String,
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        use_emulator: bool,
        #[serde(default)]
        allow_http: bool,
        #[serde(default)]
        access_key: Option<Secret>,
    }
}

/// Azurite's well-known development account.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, documented by Microsoft).
pub const EMULATOR_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default blob endpoint.
pub const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000";

/// An Azure Blob Storage container (`kind = "azure"`).
///
/// Credentials, first match wins: `access_key` (shared key, explicit override);
/// `use_emulator` (Azurite's well-known key); else Azure's standard chain as
/// object_store reads it (`AZURE_*` variables: client secret, SAS, workload identity
/// on AKS through `AZURE_FEDERATED_TOKEN_FILE`, then managed identity).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "AzureKeys")]
pub struct AzureConfig {
    /// The storage account (required unless `use_emulator`).
    pub account: Option<String>,
    /// The container (required).
    pub container: String,
    /// Key prefix under which the FTP tree lives.
    pub prefix: Option<String>,
    /// Blob service URL instead of `https://{account}.blob.core.windows.net`; with
    /// `use_emulator` Azurite's URL (default `http://127.0.0.1:10000`).
    pub endpoint: Option<String>,
    /// Talk to Azurite: account `devstoreaccount1` and its well-known key unless
    /// set, path-style URLs, `http://` allowed. Default false.
    pub use_emulator: bool,
    /// Allow an `http://` endpoint. Default false (true with `use_emulator`).
    pub allow_http: bool,
    /// The account's shared key: an explicit override of the chain.
    pub access_key: Option<Secret>,
    /// Request and upload bounds.
    pub tuning: Tuning,
}

impl AzureConfig {
    /// Defaults for `container`.
    pub fn new(container: impl Into<String>) -> Self {
        Self {
            account: None,
            container: container.into(),
            prefix: None,
            endpoint: None,
            use_emulator: false,
            allow_http: false,
            access_key: None,
            tuning: Tuning::default(),
        }
    }

    /// The account, with the emulator's default.
    pub fn account_name(&self) -> Option<&str> {
        match (&self.account, self.use_emulator) {
            (Some(a), _) => Some(a),
            (None, true) => Some(EMULATOR_ACCOUNT),
            (None, false) => None,
        }
    }

    /// Checks every key; errors name it (`azure.container`, …).
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |msg: &str| Err(StorageError::new(ErrorKind::InvalidInput, msg.to_owned()));
        if self.container.trim().is_empty() {
            return bad("azure.container must not be empty");
        }
        if self.account_name().is_none_or(|a| a.trim().is_empty()) {
            return bad("azure.account is required (unless use_emulator = true)");
        }
        validate_prefix("azure", self.prefix.as_deref())?;
        validate_endpoint(
            "azure",
            self.endpoint.as_deref(),
            self.allow_http || self.use_emulator,
        )?;
        self.tuning.validate("azure")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_deserialise_flat_with_defaults() {
        let g: GcsConfig =
            serde_json::from_str(r#"{"bucket": "b", "anonymous": true, "part_size_mib": 16}"#)
                .unwrap();
        let mut want = GcsConfig::new("b");
        want.anonymous = true;
        want.tuning.part_size_mib = 16;
        assert_eq!(g, want);
        let a: AzureConfig =
            serde_json::from_str(r#"{"container": "c", "use_emulator": true}"#).unwrap();
        assert_eq!((a.container.as_str(), a.use_emulator), ("c", true));
        assert_eq!(a.tuning, Tuning::default());
        let e = serde_json::from_str::<GcsConfig>(r#"{"bucket": "b", "region": "x"}"#);
        assert!(e.unwrap_err().to_string().contains("region"));
        let e = serde_json::from_str::<AzureConfig>(r#"{"account": "a"}"#);
        assert!(e.unwrap_err().to_string().contains("container"));
    }

    #[test]
    fn defaults_validate_and_errors_name_keys() {
        assert!(GcsConfig::new("b").validate().is_ok());
        let e = GcsConfig::new(" ").validate().unwrap_err();
        assert!(e.message().contains("gcs.bucket"), "{e}");
        let mut g = GcsConfig::new("b");
        g.endpoint = Some("http://127.0.0.1:1".into());
        let e = g.validate().unwrap_err();
        assert!(e.message().contains("allow_http"), "{e}");
        g.allow_http = true;
        assert!(g.validate().is_ok());
        g.tuning.part_size_mib = 1;
        let e = g.validate().unwrap_err();
        assert!(e.message().contains("gcs.part_size_mib"), "{e}");

        let a = AzureConfig::new("c");
        let e = a.validate().unwrap_err();
        assert!(e.message().contains("azure.account"), "{e}");
        let mut a = AzureConfig::new("c");
        a.use_emulator = true;
        a.endpoint = Some("http://127.0.0.1:10000".into());
        assert!(a.validate().is_ok());
        assert_eq!(a.account_name(), Some(EMULATOR_ACCOUNT));
        a.prefix = Some("a/../b".into());
        let e = a.validate().unwrap_err();
        assert!(e.message().contains("azure.prefix"), "{e}");
    }
}
