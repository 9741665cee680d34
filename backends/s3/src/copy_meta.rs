//! Replacing an object's user metadata in place: S3 `CopyObject` of the object
//! onto itself with `x-amz-metadata-directive: REPLACE`, conditional on its ETag
//! (`x-amz-copy-source-if-match`). object_store can neither send that header nor
//! set metadata on a copy, so the request is built here and signed with AWS's own
//! SigV4 implementation (`aws-sigv4`), with the credentials object_store uses.
//! The copy happens inside S3: no object bytes pass through the gateway (the
//! alternative, GET + PUT, moves the whole object twice for one MFMT).

use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use ftpgate_storage::{ErrorKind, Result, StorageError};
use object_store::aws::AwsCredentialProvider;
use object_store::{Attribute, Attributes};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// RFC 3986 unreserved characters stay; everything else is percent-encoded, except
/// `/` between key segments (S3's URI encoding for object keys).
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Sends metadata-replacing CopyObject requests for one bucket.
pub(crate) struct MetadataCopier {
    client: reqwest::Client,
    /// `https://bucket.s3.region.amazonaws.com` or `http://host:port/bucket`.
    bucket_url: String,
    bucket: String,
    region: String,
    credentials: AwsCredentialProvider,
}

impl MetadataCopier {
    /// `bucket_url` addresses the bucket the way object_store does (path or
    /// virtual-hosted style).
    pub(crate) fn new(
        bucket_url: String,
        bucket: String,
        region: String,
        credentials: AwsCredentialProvider,
        allow_http: bool,
        connect_timeout: std::time::Duration,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .https_only(!allow_http)
            .connect_timeout(connect_timeout)
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| {
                StorageError::new(ErrorKind::InvalidInput, format!("s3: HTTP client: {e}"))
            })?;
        Ok(Self {
            client,
            bucket_url: bucket_url.trim_end_matches('/').to_owned(),
            bucket,
            region,
            credentials,
        })
    }

    /// Replaces the metadata of `key` with `attributes` (user metadata and the
    /// standard headers object_store models), only if its ETag is still `e_tag`.
    /// A changed object answers [`Changed`]. Returns the new version's ETag and
    /// LastModified from the CopyObjectResult, when S3 sent them.
    pub(crate) async fn replace(
        &self,
        key: &str,
        attributes: &Attributes,
        e_tag: Option<&str>,
    ) -> std::result::Result<CopyResult, CopyError> {
        let encoded = utf8_percent_encode(key, KEY_ENCODE).to_string();
        let url = format!("{}/{encoded}", self.bucket_url);
        let mut headers: Vec<(String, String)> = vec![
            (
                "x-amz-copy-source".into(),
                format!("/{}/{encoded}", self.bucket),
            ),
            ("x-amz-metadata-directive".into(), "REPLACE".into()),
        ];
        if let Some(tag) = e_tag {
            headers.push(("x-amz-copy-source-if-match".into(), tag.to_owned()));
        }
        for (attribute, value) in attributes {
            let name = match attribute {
                Attribute::Metadata(k) => format!("x-amz-meta-{k}"),
                Attribute::ContentType => "content-type".into(),
                Attribute::ContentEncoding => "content-encoding".into(),
                Attribute::ContentDisposition => "content-disposition".into(),
                Attribute::ContentLanguage => "content-language".into(),
                Attribute::CacheControl => "cache-control".into(),
                _ => continue,
            };
            headers.push((name, value.as_ref().to_owned()));
        }
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
            .unwrap_or_default()
            .to_owned();
        headers.push(("host".into(), host));
        let credential = self.credentials.get_credential().await.map_err(|e| {
            StorageError::new(ErrorKind::PermissionDenied, format!("s3: credentials: {e}"))
        })?;
        let identity = aws_credential_types::Credentials::new(
            credential.key_id.clone(),
            credential.secret_key.clone(),
            credential.token.clone(),
            None,
            "ftpgate",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| StorageError::new(ErrorKind::Other, format!("s3: signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "PUT",
            &url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| StorageError::new(ErrorKind::Other, format!("s3: signing: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| StorageError::new(ErrorKind::Other, format!("s3: signing: {e}")))?
            .into_parts();
        let mut request = self.client.put(&url).body(Vec::new());
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            request = request.header(k, v);
        }
        for (k, v) in instructions.headers() {
            request = request.header(k, v);
        }
        let context = format!("s3: set metadata of {key}");
        let response = request.send().await.map_err(|e| {
            StorageError::new(ErrorKind::Transient, format!("{context}: {e}")).with_source(e)
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // CopyObject can fail after a 200 with an <Error> body.
        if status.is_success() && !body.contains("<Error>") {
            return Ok(CopyResult::parse(&body));
        }
        let kind = match status.as_u16() {
            412 => return Err(CopyError::Changed),
            404 => ErrorKind::NotFound,
            403 => ErrorKind::PermissionDenied,
            _ => ErrorKind::Transient,
        };
        Err(StorageError::new(
            kind,
            format!(
                "{context}: HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            ),
        )
        .into())
    }
}

/// Why a metadata replacement did not happen.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// The object's ETag is no longer the one given (replaced meanwhile).
    Changed,
    /// Anything else.
    Storage(StorageError),
}

impl From<StorageError> for CopyError {
    fn from(e: StorageError) -> Self {
        CopyError::Storage(e)
    }
}

/// The new version's ETag and LastModified (CopyObjectResult).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct CopyResult {
    pub(crate) e_tag: Option<String>,
    pub(crate) last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl CopyResult {
    /// Reads `<ETag>` and `<LastModified>` out of the small XML S3 answers.
    fn parse(xml: &str) -> Self {
        let field = |name: &str| {
            let open = format!("<{name}>");
            let close = format!("</{name}>");
            let start = xml.find(&open)? + open.len();
            let len = xml[start..].find(&close)?;
            Some(
                xml[start..start + len]
                    .replace("&quot;", "\"")
                    .replace("&#34;", "\""),
            )
        };
        Self {
            e_tag: field("ETag"),
            last_modified: field("LastModified").and_then(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .ok()
                    .map(|d| d.with_timezone(&chrono::Utc))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_result_is_read() {
        let r = CopyResult::parse(
            "<?xml version=\"1.0\"?><CopyObjectResult><LastModified>2026-11-25T19:00:01.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>",
        );
        assert_eq!(
            r.e_tag.as_deref(),
            Some("\"9b2cf535f27731c974343645a3985328\"")
        );
        assert_eq!(r.last_modified.map(|d| d.timestamp()), Some(1_795_633_201));
        assert_eq!(CopyResult::parse("<x/>"), CopyResult::default());
    }

    #[test]
    fn keys_are_encoded_like_s3_expects() {
        let k = utf8_percent_encode("ftp/a b/%x#1+ü~.txt", KEY_ENCODE).to_string();
        assert_eq!(k, "ftp/a%20b/%25x%231%2B%C3%BC~.txt");
    }
}
