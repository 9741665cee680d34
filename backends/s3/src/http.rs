//! The one HTTP transport under every S3 request: object_store's requests (through
//! [`Connector`]) and the few typed requests object_store cannot send (`requests`).
//!
//! # Bounded time without cutting slow transfers
//! There is no whole-request timeout (a multi-GiB download to a slow FTP client may
//! take hours). Instead each request has three bounds that only fire when nothing
//! moves:
//! - **request body stall**: while the request body is being sent, no new body bytes
//!   taken by the connection for `stall_timeout` (S3 frozen: its socket buffers fill);
//! - **response timeout**: the response headers do not arrive within
//!   `response_timeout` after the last request body byte was taken;
//! - **response body stall**: the response body yields no bytes for `stall_timeout`
//!   *while the reader waits for it*. A slow reader (an FTP client reading slowly) does
//!   not poll, so its pauses never count: a slow but moving transfer is never cut.
//!
//! Each bound ends the request with an [`HttpErrorKind::Timeout`] error, which
//! object_store's retry policy handles like any other timeout.
//!
//! # Errors by type
//! object_store types 401, 403, 404, 409 and 412 itself; every other error status
//! would reach the gateway only as text. Such responses are turned into an
//! [`HttpError`] here whose source is an [`S3Status`] (HTTP status plus the `<Code>`
//! of S3's error document), so `errors` classifies by value. Retryable statuses (5xx,
//! 429, 408, `RequestTimeout`, `SlowDown`) become [`HttpErrorKind::Request`], which
//! object_store retries exactly as it retries those statuses; others become
//! [`HttpErrorKind::Unknown`] (not retried, as before). A 404 whose code is
//! `NoSuchBucket` is converted too, so a missing bucket is told apart from a missing
//! key.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use object_store::ClientOptions;
use tokio::time::{Instant, Sleep};

/// Request body frames are handed to the connection in pieces of at most this size,
/// so its progress is seen at this granularity.
const BODY_PIECE: usize = 256 * 1024;
/// The most of an error response body read to find its `<Code>`.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// A status S3 answered with, and the `<Code>`/`<Message>` of its error document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Status {
    /// The HTTP status.
    pub(crate) status: u16,
    /// S3's error code (`NoSuchBucket`, `SlowDown` …), empty when the body had none.
    pub(crate) code: String,
    /// S3's message, shortened.
    pub(crate) message: String,
}

impl S3Status {
    /// Reads the `<Code>` and `<Message>` of an S3 error document.
    pub(crate) fn parse(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default)]
        struct ErrorDoc {
            code: String,
            message: String,
        }
        let doc: ErrorDoc = std::str::from_utf8(body)
            .ok()
            .and_then(|text| quick_xml::de::from_str(text).ok())
            .unwrap_or_default();
        Self {
            status,
            code: doc.code,
            message: doc.message.chars().take(200).collect(),
        }
    }

    /// Whether a 404 is about the bucket, not the key: S3's (and GCS's XML API's)
    /// `NoSuchBucket`, Azure Blob's `ContainerNotFound`.
    pub(crate) fn names_a_missing_bucket(&self) -> bool {
        matches!(self.code.as_str(), "NoSuchBucket" | "ContainerNotFound")
    }

    /// Whether S3 asks for the request to be sent again (5xx, throttling, timeouts).
    pub(crate) fn retryable(&self) -> bool {
        // 501 Not Implemented is a lasting answer (a feature the server lacks).
        (matches!(self.status, 408 | 429 | 500..=599) && self.status != 501)
            || matches!(
                self.code.as_str(),
                "RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable"
            )
    }
}

impl fmt::Display for S3Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3 answered HTTP {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for S3Status {}

/// Which bound ended a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// No request body bytes taken for the stall timeout.
    Upload(Duration),
    /// No response headers within the response timeout.
    Response(Duration),
    /// No response body bytes for the stall timeout.
    Download(Duration),
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stalled::Upload(d) => write!(
                f,
                "the storage service took no request data for {} s",
                d.as_secs()
            ),
            Stalled::Response(d) => write!(
                f,
                "no response from the storage service within {} s",
                d.as_secs()
            ),
            Stalled::Download(d) => {
                write!(f, "no data from the storage service for {} s", d.as_secs())
            }
        }
    }
}

impl std::error::Error for Stalled {}

/// The progress of one request body, shared with the transport's timer.
struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last body piece taken.
    last_ms: AtomicU64,
    /// The whole body was taken.
    done: AtomicBool,
}

impl Progress {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the request times out if nothing moves until then, and which bound.
    fn deadline(&self, response: Duration, stall: Duration) -> (Instant, Stalled) {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        if self.done.load(Ordering::Relaxed) {
            (last + response, Stalled::Response(response))
        } else {
            (last + stall, Stalled::Upload(stall))
        }
    }
}

/// A request body that records its progress and hands out pieces of at most
/// [`BODY_PIECE`] bytes.
struct TrackedBody {
    inner: HttpRequestBody,
    pending: Bytes,
    progress: Arc<Progress>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    this.progress.done.store(true, Ordering::Relaxed);
                    this.progress.touch();
                    return Poll::Ready(None);
                }
                other => return other,
            }
        }
        let piece = if this.pending.len() > BODY_PIECE {
            this.pending.split_to(BODY_PIECE)
        } else {
            std::mem::take(&mut this.pending)
        };
        this.progress.touch();
        if this.pending.is_empty() && this.inner.is_end_stream() {
            this.progress.done.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let extra = self.pending.len() as u64;
        match inner.exact() {
            Some(n) => SizeHint::with_exact(n + extra),
            None => {
                let mut hint = SizeHint::new();
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint.set_lower(inner.lower() + extra);
                hint
            }
        }
    }
}

/// A response body that fails when no bytes come for `stall` while it is polled.
struct StallBody {
    inner: reqwest::Body,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Body for StallBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(item) => {
                this.timer = None;
                Poll::Ready(item.map(|r| r.map_err(reqwest_error)))
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(HttpError::new(
                            HttpErrorKind::Timeout,
                            Stalled::Download(stall),
                        ))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The kind of a reqwest failure, as object_store's own reqwest service classifies
/// it (its classification is not public).
fn reqwest_error(e: reqwest::Error) -> HttpError {
    let mut kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else {
        HttpErrorKind::Unknown
    };
    let mut source = std::error::Error::source(&e);
    while kind == HttpErrorKind::Unknown {
        let Some(err) = source else { break };
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_closed() || h.is_incomplete_message() || h.is_body_write_aborted() {
                kind = HttpErrorKind::Request;
            } else if h.is_timeout() {
                kind = HttpErrorKind::Timeout;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::TimedOut => kind = HttpErrorKind::Timeout,
                K::ConnectionAborted | K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof => {
                    kind = HttpErrorKind::Interrupted
                }
                _ => {}
            }
        }
        source = err.source();
    }
    HttpError::new(kind, e.without_url())
}

/// Reads at most [`ERROR_BODY_LIMIT`] bytes of a (small) error body.
async fn read_error_body(mut body: StallBody) -> Bytes {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    while out.len() < ERROR_BODY_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    out.truncate(ERROR_BODY_LIMIT);
    Bytes::from(out)
}

/// The HTTP client of the backend, with the bounds described in the module docs.
#[derive(Debug)]
pub struct Transport {
    client: reqwest::Client,
    response_timeout: Duration,
    stall_timeout: Duration,
}

impl Transport {
    /// A client for `http://` endpoints only when `allow_http`.
    pub fn new(
        allow_http: bool,
        connect_timeout: Duration,
        pool_idle_timeout: Duration,
        response_timeout: Duration,
        stall_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("ftpgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(pool_idle_timeout)
            .http1_only()
            // Content-Length must stay the object's size: no transparent decoding.
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .https_only(!allow_http)
            .build()?;
        Ok(Self {
            client,
            response_timeout,
            stall_timeout,
        })
    }
}

#[async_trait]
impl HttpService for Transport {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let url: reqwest::Url = parts
            .uri
            .to_string()
            .parse()
            .map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        let progress = Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            // Not `is_empty()`: object_store 0.14.2 answers it inverted for PutPayload.
            done: AtomicBool::new(body.content_length() == 0),
        });
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        if body.content_length() > 0 {
            *request.body_mut() = Some(reqwest::Body::wrap(TrackedBody {
                inner: body,
                pending: Bytes::new(),
                progress: Arc::clone(&progress),
            }));
        }
        let send = self.client.execute(request);
        tokio::pin!(send);
        let response = loop {
            let (deadline, bound) = progress.deadline(self.response_timeout, self.stall_timeout);
            tokio::select! {
                r = &mut send => break r.map_err(reqwest_error)?,
                () = tokio::time::sleep_until(deadline) => {
                    // Progress made meanwhile moves the deadline.
                    if progress.deadline(self.response_timeout, self.stall_timeout).0 <= Instant::now() {
                        return Err(HttpError::new(HttpErrorKind::Timeout, bound));
                    }
                }
            }
        };
        let response: http::Response<reqwest::Body> = response.into();
        let (parts, body) = response.into_parts();
        let body = StallBody {
            inner: body,
            stall: self.stall_timeout,
            timer: None,
        };
        let status = parts.status.as_u16();
        if status < 400 {
            return Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)));
        }
        let bytes = read_error_body(body).await;
        let s3 = S3Status::parse(status, &bytes);
        let typed_by_object_store = matches!(status, 401 | 403 | 409 | 412)
            || (status == 404 && !s3.names_a_missing_bucket());
        if typed_by_object_store {
            return Ok(HttpResponse::from_parts(parts, bytes.into()));
        }
        let kind = if s3.retryable() {
            HttpErrorKind::Request
        } else {
            HttpErrorKind::Unknown
        };
        Err(HttpError::new(kind, s3))
    }
}

/// Hands object_store the shared [`Transport`].
#[derive(Debug, Clone)]
pub struct Connector(pub Arc<Transport>);

/// Lets an `Arc<Transport>` serve as an [`HttpService`] (the typed requests share it).
#[derive(Debug, Clone)]
pub(crate) struct Shared(pub(crate) Arc<Transport>);

#[async_trait]
impl HttpService for Shared {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.0.call(req).await
    }
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Shared(Arc::clone(&self.0))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_are_read() {
        let s = S3Status::parse(
            404,
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>x</BucketName></Error>",
        );
        assert_eq!(s.code, "NoSuchBucket");
        assert!(!s.retryable());
        assert_eq!(
            s.to_string(),
            "S3 answered HTTP 404 NoSuchBucket: The specified bucket does not exist"
        );
        let s = S3Status::parse(503, b"");
        assert_eq!((s.code.as_str(), s.retryable()), ("", true));
        assert!(S3Status::parse(400, b"<Error><Code>RequestTimeout</Code></Error>").retryable());
        assert!(!S3Status::parse(416, b"<html>").retryable());
        assert!(!S3Status::parse(501, b"<Error><Code>NotImplemented</Code></Error>").retryable());
    }

    #[test]
    fn deadlines_follow_progress() {
        let p = Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(1000),
            done: AtomicBool::new(false),
        };
        let (at, bound) = p.deadline(Duration::from_secs(30), Duration::from_secs(5));
        assert_eq!(bound, Stalled::Upload(Duration::from_secs(5)));
        assert_eq!(at, p.start + Duration::from_secs(6));
        p.done.store(true, Ordering::Relaxed);
        let (at, bound) = p.deadline(Duration::from_secs(30), Duration::from_secs(5));
        assert_eq!(bound, Stalled::Response(Duration::from_secs(30)));
        assert_eq!(at, p.start + Duration::from_secs(31));
    }
}
