//! Bridges the AWS credential chain of `aws-config` into object_store.
//!
//! object_store asks its `CredentialProvider` for a credential on every request, and
//! aws-config's providers do not cache at that level (their identity cache serves only
//! SDK clients), so a `credential_process` or STS call would run per request. This
//! bridge caches the credential until [`REFRESH_BEFORE_EXPIRY`] before it expires, and
//! credentials without an expiry for [`NO_EXPIRY_TTL`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::AwsCredential;
use object_store::CredentialProvider;
use tokio::sync::Mutex;

/// A cached credential is refreshed this long before it expires.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// A credential without an expiry (static keys from the environment or a profile) is
/// fetched again after this long, so rotated keys are picked up.
pub const NO_EXPIRY_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
struct Cached {
    credential: Arc<AwsCredential>,
    refresh_at: SystemTime,
}

/// An object_store [`CredentialProvider`] over any aws-config credential provider,
/// with a cache. Concurrent callers wait for one refresh instead of starting several.
#[derive(Debug)]
pub struct CachingAwsChain {
    inner: SharedCredentialsProvider,
    cache: Mutex<Option<Cached>>,
}

impl CachingAwsChain {
    /// Wraps an aws-config provider (normally the default chain).
    pub fn new(inner: impl ProvideCredentials + 'static) -> Self {
        Self {
            inner: SharedCredentialsProvider::new(inner),
            cache: Mutex::new(None),
        }
    }

    /// The standard AWS chain: environment, shared profile (incl. SSO and
    /// `credential_process`), web identity/IRSA, ECS, EKS Pod Identity, IMDS.
    pub async fn default_chain(region: &str) -> Self {
        let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build()
            .await;
        Self::new(chain)
    }
}

#[async_trait]
impl CredentialProvider for CachingAwsChain {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cache = self.cache.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = cache.as_ref() {
            if now < cached.refresh_at {
                return Ok(Arc::clone(&cached.credential));
            }
        }
        let creds =
            self.inner
                .provide_credentials()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: format!("no AWS credentials from the default chain: {e}").into(),
                })?;
        let credential = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_owned(),
            secret_key: creds.secret_access_key().to_owned(),
            token: creds.session_token().map(str::to_owned),
        });
        let refresh_at = match creds.expiry() {
            Some(expiry) => expiry.checked_sub(REFRESH_BEFORE_EXPIRY).unwrap_or(expiry),
            None => now + NO_EXPIRY_TTL,
        };
        // A credential that expires within the refresh window is used but not kept.
        *cache = (refresh_at > now).then(|| Cached {
            credential: Arc::clone(&credential),
            refresh_at,
        });
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::future;
    use aws_credential_types::Credentials;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Option<Duration>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let expiry = self.lifetime.map(|l| SystemTime::now() + l);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("key{n}"),
                "secret",
                Some("token".into()),
                expiry,
                "test",
            )))
        }
    }

    async fn run(lifetime: Option<Duration>, requests: usize) -> (usize, String) {
        let calls = Arc::new(AtomicUsize::new(0));
        let chain = CachingAwsChain::new(Counting {
            calls: Arc::clone(&calls),
            lifetime,
        });
        let mut last = String::new();
        for _ in 0..requests {
            last = chain.get_credential().await.unwrap().key_id.clone();
        }
        (calls.load(Ordering::SeqCst), last)
    }

    #[tokio::test]
    async fn caches_until_shortly_before_expiry() {
        let (calls, key) = run(Some(Duration::from_secs(3600)), 5).await;
        assert_eq!((calls, key.as_str()), (1, "key0"));
    }

    #[tokio::test]
    async fn caches_credentials_without_expiry() {
        assert_eq!(run(None, 5).await.0, 1);
    }

    #[tokio::test]
    async fn refetches_credentials_about_to_expire() {
        let (calls, key) = run(Some(Duration::from_secs(60)), 3).await;
        assert_eq!((calls, key.as_str()), (3, "key2"));
    }
}
