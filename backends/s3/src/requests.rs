//! The few S3 requests object_store cannot send, as one small typed layer over the
//! same [`HttpClient`] (so the same transport bounds, see `http`) with the same retry
//! policy as object_store (`max_retries`, `retry_timeout_secs`, exponential backoff):
//!
//! - ListObjectsV2, keeping keys as raw strings, so a key the
//!   gateway cannot represent (`a//b`, `.`/`..` segments, control characters) is
//!   skipped instead of failing the whole listing (object_store parses every key
//!   into a `Path` and fails the page);
//! - CopyObject onto itself with replaced metadata, conditional on the ETag (MFMT);
//! - ListMultipartUploads and AbortMultipartUpload (clean-up of uploads a killed
//!   process left behind).
//!
//! Requests are signed with object_store's own SigV4 signer ([`AwsAuthorizer`]) and
//! credentials.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpError, HttpErrorKind, HttpRequestBody};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectMeta};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use ftpgate_storage::{ErrorKind, StorageError};

use crate::errors::http_error_kind;

/// RFC 3986 unreserved characters stay; everything else is percent-encoded, except
/// `/` between key segments (S3's URI encoding for object keys).
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// Query values: only unreserved characters stay.
const QUERY_ENCODE: &AsciiSet = &KEY_ENCODE.add(b'/');

/// The retry policy shared with object_store's client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) max_retries: usize,
    pub(crate) retry_timeout: Duration,
    pub(crate) init_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// A response with a status below 400 (or one object_store types itself: 401, 403,
/// 404, 409, 412; see `http`).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// Signed S3 requests for one bucket.
pub(crate) struct Requests {
    client: HttpClient,
    /// `https://bucket.s3.region.amazonaws.com` or `http://host:port/bucket`.
    bucket_url: String,
    bucket: String,
    region: String,
    credentials: AwsCredentialProvider,
    retry: Retry,
}

/// One page of a listing: objects and common prefixes whose keys object_store can
/// hold, and how many were skipped.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub(crate) objects: Vec<ObjectMeta>,
    pub(crate) prefixes: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) skipped: usize,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingUpload {
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) initiated: Option<DateTime<Utc>>,
}

/// The new version's ETag and LastModified (CopyObjectResult).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct CopyResult {
    pub(crate) e_tag: Option<String>,
    pub(crate) last_modified: Option<DateTime<Utc>>,
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

/// S3 `Key`s as sent with `encoding-type=url` (`+` is a space, `%XX` a byte) when the
/// answer says so; verbatim otherwise.
fn decode_key(raw: &str, url_encoded: bool) -> Option<String> {
    if !url_encoded {
        return Some(raw.to_owned());
    }
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListBucketResult {
    contents: Vec<ListContents>,
    common_prefixes: Vec<ListPrefix>,
    next_continuation_token: Option<String>,
    encoding_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListContents {
    key: String,
    size: u64,
    last_modified: String,
    #[serde(rename = "ETag")]
    e_tag: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListPrefix {
    prefix: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListMultipartUploadsResult {
    #[serde(rename = "Upload")]
    uploads: Vec<UploadEntry>,
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    encoding_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UploadEntry {
    key: String,
    upload_id: String,
    initiated: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
struct CopyObjectResult {
    last_modified: String,
    #[serde(rename = "ETag")]
    e_tag: Option<String>,
}

impl ListBucketResult {
    fn into_page(self) -> Page {
        let url = self.encoding_type.as_deref() == Some("url");
        let mut page = Page {
            token: self.next_continuation_token.filter(|t| !t.is_empty()),
            ..Page::default()
        };
        for c in self.contents {
            let key = decode_key(&c.key, url);
            match key.as_deref().map(Path::parse) {
                Some(Ok(location)) => page.objects.push(ObjectMeta {
                    location,
                    // S3 always sends it; a broken one must not fail the listing.
                    last_modified: parse_time(&c.last_modified).unwrap_or_else(Utc::now),
                    size: c.size,
                    e_tag: c.e_tag,
                    version: None,
                }),
                _ => {
                    tracing::debug!(key = ?key.unwrap_or(c.key), "listing: skipped a key the gateway cannot represent");
                    page.skipped += 1;
                }
            }
        }
        for p in self.common_prefixes {
            let prefix = decode_key(&p.prefix, url);
            match prefix {
                Some(prefix) if Path::parse(&prefix).is_ok() => page.prefixes.push(prefix),
                other => {
                    tracing::debug!(prefix = ?other.unwrap_or(p.prefix), "listing: skipped a prefix the gateway cannot represent");
                    page.skipped += 1;
                }
            }
        }
        page
    }
}

impl Requests {
    /// Requests for `bucket` at `bucket_url` (path or virtual-hosted style, as
    /// object_store addresses it), sent through `client`.
    pub(crate) fn new(
        client: HttpClient,
        bucket_url: String,
        bucket: String,
        region: String,
        credentials: AwsCredentialProvider,
        retry: Retry,
    ) -> Self {
        Self {
            client,
            bucket_url: bucket_url.trim_end_matches('/').to_owned(),
            bucket,
            region,
            credentials,
            retry,
        }
    }

    fn url(&self, key: Option<&str>, query: &[(&str, &str)]) -> String {
        let mut url = self.bucket_url.clone();
        if let Some(key) = key {
            url.push('/');
            url.extend(utf8_percent_encode(key, KEY_ENCODE));
        }
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.extend(utf8_percent_encode(v, QUERY_ENCODE));
        }
        url
    }

    /// One attempt: sign and send.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Reply, HttpError> {
        let unknown = |e: Box<dyn std::error::Error + Send + Sync>| {
            HttpError::new_boxed(HttpErrorKind::Unknown, e)
        };
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .body(HttpRequestBody::empty())
            .map_err(|e| unknown(Box::new(e)))?;
        for (k, v) in headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| unknown(Box::new(e)))?;
        let response = self.client.execute(request).await?;
        let status = response.status();
        let body = response.into_body().bytes().await?;
        Ok(Reply { status, body })
    }

    /// Sends a request, retried like object_store retries: transport failures before
    /// the request was sent and retryable S3 statuses always, timeouts and
    /// interrupted requests only when `idempotent`; at most `max_retries` times and
    /// not after `retry_timeout`.
    pub(crate) async fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(HeaderName, HeaderValue)],
        idempotent: bool,
    ) -> Result<Reply, HttpError> {
        let url = self.url(key, query);
        let start = Instant::now();
        let mut backoff = self.retry.init_backoff;
        let mut retries = 0;
        loop {
            let err = match self.attempt(&method, &url, headers).await {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let retry = match err.kind() {
                HttpErrorKind::Connect | HttpErrorKind::Request => true,
                HttpErrorKind::Timeout | HttpErrorKind::Interrupted => idempotent,
                _ => false,
            };
            if !retry
                || retries >= self.retry.max_retries
                || start.elapsed() >= self.retry.retry_timeout
            {
                return Err(err);
            }
            retries += 1;
            tracing::info!(%method, error = %err, retry = retries, "S3 request failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }

    /// One ListObjectsV2 page under the raw key `prefix`.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        max_keys: Option<usize>,
        token: Option<&str>,
    ) -> Result<Page, HttpError> {
        let max = max_keys.map(|n| n.to_string());
        // No `encoding-type=url`: s3s-fs answers it without encoding the keys, and
        // AWS encodes spaces as `+`. Control characters arrive as XML references.
        let mut query = vec![("list-type", "2")];
        if !prefix.is_empty() {
            query.push(("prefix", prefix));
        }
        if delimiter {
            query.push(("delimiter", "/"));
        }
        if let Some(max) = &max {
            query.push(("max-keys", max));
        }
        if let Some(token) = token {
            query.push(("continuation-token", token));
        }
        let reply = self.send(Method::GET, None, &query, &[], true).await?;
        let doc: ListBucketResult = expect_ok(&reply).and_then(|()| parse_xml(&reply.body))?;
        Ok(doc.into_page())
    }

    /// Every multipart upload in progress under the raw key `prefix`.
    pub(crate) async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, HttpError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let mut query = vec![("uploads", "")];
            if !prefix.is_empty() {
                query.push(("prefix", prefix));
            }
            if let Some(k) = &key_marker {
                query.push(("key-marker", k));
            }
            if let Some(u) = &id_marker {
                query.push(("upload-id-marker", u));
            }
            let reply = self.send(Method::GET, None, &query, &[], true).await?;
            let root = root_element(std::str::from_utf8(&reply.body).unwrap_or_default());
            if reply.status.is_success() && root != "ListMultipartUploadsResult" {
                // A server without ListMultipartUploads may answer another listing.
                return Err(HttpError::new(
                    HttpErrorKind::Unknown,
                    crate::http::S3Status {
                        status: 501,
                        code: "NotImplemented".into(),
                        message: format!("ListMultipartUploads answered with <{root}>"),
                    },
                ));
            }
            let doc: ListMultipartUploadsResult =
                expect_ok(&reply).and_then(|()| parse_xml(&reply.body))?;
            let url = doc.encoding_type.as_deref() == Some("url");
            for u in doc.uploads {
                out.push(PendingUpload {
                    key: decode_key(&u.key, url).unwrap_or(u.key),
                    upload_id: u.upload_id,
                    initiated: parse_time(&u.initiated),
                });
            }
            if !doc.is_truncated || doc.next_key_marker.is_none() {
                return Ok(out);
            }
            key_marker = doc.next_key_marker;
            id_marker = doc.next_upload_id_marker;
        }
    }

    /// AbortMultipartUpload.
    pub(crate) async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), HttpError> {
        let reply = self
            .send(
                Method::DELETE,
                Some(key),
                &[("uploadId", upload_id)],
                &[],
                true,
            )
            .await?;
        // Already gone: done as well.
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        expect_ok(&reply)
    }

    /// Replaces the metadata of `key` with `attributes` (user metadata and the
    /// standard headers object_store models): CopyObject onto itself with
    /// `x-amz-metadata-directive: REPLACE`, only if its ETag is still `e_tag`. The
    /// copy happens inside S3. A changed object answers [`CopyError::Changed`].
    pub(crate) async fn replace_metadata(
        &self,
        key: &str,
        attributes: &Attributes,
        e_tag: Option<&str>,
    ) -> Result<CopyResult, CopyError> {
        let context = format!("set metadata of {key}");
        let bad =
            |e: http::Error| StorageError::new(ErrorKind::InvalidInput, format!("{context}: {e}"));
        let source = format!("/{}/{}", self.bucket, utf8_percent_encode(key, KEY_ENCODE));
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
            (
                HeaderName::from_static("x-amz-copy-source"),
                HeaderValue::from_str(&source).map_err(|e| bad(e.into()))?,
            ),
            (
                HeaderName::from_static("x-amz-metadata-directive"),
                HeaderValue::from_static("REPLACE"),
            ),
        ];
        if let Some(tag) = e_tag {
            headers.push((
                HeaderName::from_static("x-amz-copy-source-if-match"),
                HeaderValue::from_str(tag).map_err(|e| bad(e.into()))?,
            ));
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
            let name = HeaderName::try_from(name).map_err(|e| bad(e.into()))?;
            let value = HeaderValue::from_str(value.as_ref()).map_err(|e| bad(e.into()))?;
            headers.push((name, value));
        }
        // Not idempotent: a retry after a lost answer would meet a new ETag (412).
        let reply = self
            .send(Method::PUT, Some(key), &[], &headers, false)
            .await
            .map_err(|e| storage_error(&context, e))?;
        if reply.status == StatusCode::PRECONDITION_FAILED {
            return Err(CopyError::Changed);
        }
        expect_ok(&reply).map_err(|e| storage_error(&context, e))?;
        let doc: CopyObjectResult =
            parse_xml(&reply.body).map_err(|e| storage_error(&context, e))?;
        Ok(CopyResult {
            e_tag: doc.e_tag,
            last_modified: parse_time(&doc.last_modified),
        })
    }
}

/// A pass-through status (401, 403, 404, 409, 412) as a typed error.
fn expect_ok(reply: &Reply) -> Result<(), HttpError> {
    if reply.status.is_success() {
        return Ok(());
    }
    let status = crate::http::S3Status::parse(reply.status.as_u16(), &reply.body);
    Err(HttpError::new(HttpErrorKind::Unknown, status))
}

/// Parses an XML answer. S3 can answer 200 with an `<Error>` document (CopyObject):
/// that is an error, retryable when S3 says so.
fn parse_xml<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    let text = std::str::from_utf8(body).map_err(|e| HttpError::new(HttpErrorKind::Decode, e))?;
    if root_element(text) == "Error" {
        let status = crate::http::S3Status::parse(200, body);
        let kind = if status.code.is_empty() || status.retryable() {
            HttpErrorKind::Request
        } else {
            HttpErrorKind::Unknown
        };
        return Err(HttpError::new(kind, status));
    }
    quick_xml::de::from_str(text).map_err(|e| HttpError::new(HttpErrorKind::Decode, e))
}

/// The name of the document's root element (after the declaration and comments).
fn root_element(text: &str) -> &str {
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let end = rest
            .find(|c: char| c == '>' || c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        return &rest[..end];
    }
    ""
}

/// A failed request as a [`StorageError`] of the kind its type says.
pub(crate) fn storage_error(context: &str, e: HttpError) -> StorageError {
    StorageError::new(http_error_kind(&e), format!("{context}: {}", describe(&e)))
}

/// The innermost useful text of a failed request (object_store's wrappers add none).
pub(crate) fn describe(e: &HttpError) -> String {
    match std::error::Error::source(e) {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_keys_are_skipped_not_fatal() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult><Name>b</Name><Prefix>ftp/</Prefix><KeyCount>5</KeyCount>
<EncodingType>url</EncodingType>
<Contents><Key>ftp/ok+file%25.txt</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>"e"</ETag><Size>3</Size></Contents>
<Contents><Key>ftp/ctl%01x</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified><Size>1</Size></Contents>
<Contents><Key>ftp/bad-time</Key><LastModified>never</LastModified><Size>1</Size></Contents>
<CommonPrefixes><Prefix>ftp//</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix>ftp/../</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix>ftp/dir/</Prefix></CommonPrefixes>
<NextContinuationToken>tok</NextContinuationToken>
</ListBucketResult>"#;
        let doc: ListBucketResult = parse_xml(xml.as_bytes()).unwrap();
        let page = doc.into_page();
        let keys: Vec<&str> = page.objects.iter().map(|o| o.location.as_ref()).collect();
        assert_eq!(keys, ["ftp/ok file%.txt", "ftp/bad-time"]);
        assert_eq!(page.objects[0].size, 3);
        assert_eq!(page.objects[0].e_tag.as_deref(), Some("\"e\""));
        assert_eq!(page.prefixes, ["ftp/dir/"]);
        assert_eq!(page.skipped, 3);
        assert_eq!(page.token.as_deref(), Some("tok"));
    }

    #[test]
    fn copy_results_and_errors_in_200_bodies() {
        let r: CopyObjectResult = parse_xml(
            b"<?xml version=\"1.0\"?><CopyObjectResult><LastModified>2026-11-25T19:00:01.000Z</LastModified><ETag>&quot;9b2c&quot;</ETag></CopyObjectResult>",
        )
        .unwrap();
        assert_eq!(r.e_tag.as_deref(), Some("\"9b2c\""));
        assert_eq!(
            parse_time(&r.last_modified).map(|d| d.timestamp()),
            Some(1_795_633_201)
        );
        let err = parse_xml::<CopyObjectResult>(
            b"<Error><Code>InternalError</Code><Message>try again</Message></Error>",
        )
        .unwrap_err();
        assert_eq!(err.kind(), HttpErrorKind::Request);
        assert_eq!(
            root_element("<?xml version=\"1.0\"?>\n<!-- x --><Error>"),
            "Error"
        );
        assert_eq!(
            root_element("<CopyObjectResult><Error>"),
            "CopyObjectResult"
        );
    }

    #[test]
    fn uploads_are_listed() {
        let doc: ListMultipartUploadsResult = parse_xml(
            b"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated>\
              <Upload><Key>ftp/a%20b</Key><UploadId>u1</UploadId><Initiated>2026-01-01T00:00:00Z</Initiated></Upload>\
              <Upload><Key>ftp/c</Key><UploadId>u2</UploadId><Initiated>2026-01-02T00:00:00Z</Initiated></Upload>\
              <EncodingType>url</EncodingType></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert_eq!(doc.uploads.len(), 2);
        assert_eq!(
            decode_key(&doc.uploads[0].key, true).as_deref(),
            Some("ftp/a b")
        );
        assert!(!doc.is_truncated);
    }

    #[test]
    fn keys_are_encoded_like_s3_expects() {
        let k = utf8_percent_encode("ftp/a b/%x#1+ü~.txt", KEY_ENCODE).to_string();
        assert_eq!(k, "ftp/a%20b/%25x%231%2B%C3%BC~.txt");
    }
}
