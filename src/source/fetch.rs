//! Fetching a polled source's document: HTTP(S) with conditional GET,
//! timeouts, a size limit enforced while streaming, at most five
//! redirects and gzip/deflate; or a local file (`file://`), where the
//! file's length and modification time stand in for an ETag.

use std::time::Duration;

use crate::config::{Location, Poll};

/// What the server said about the version we hold: sent back as
/// `If-None-Match` / `If-Modified-Since`; kept in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum Fetched {
    /// 304, or a file that has not changed: nothing to parse.
    NotModified,
    Body {
        bytes: Vec<u8>,
        content_type: Option<String>,
        validators: Validators,
        /// The HTTP status (none for a file).
        status: Option<u16>,
    },
}

pub struct Fetcher {
    client: Option<reqwest::Client>,
    location: Location,
    max_body: u64,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(poll: &Poll) -> Result<Fetcher, String> {
        let client = match &poll.url {
            Location::Http(_) => {
                crate::tls::install_crypto();
                Some(
                    reqwest::Client::builder()
                        .connect_timeout(poll.connect_timeout)
                        .timeout(poll.timeout)
                        .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION")))
                        .default_headers(crate::secret::header_map(&poll.headers)?)
                        .redirect(same_origin_redirects())
                        .build()
                        .map_err(|e| format!("cannot make an HTTP client: {e}"))?,
                )
            }
            Location::File(_) => None,
        };
        Ok(Fetcher {
            client,
            location: poll.url.clone(),
            max_body: poll.max_body,
            timeout: poll.timeout,
        })
    }

    /// Fetches the document unless it is the version `held` describes.
    pub async fn fetch(&self, held: &Validators) -> Result<Fetched, String> {
        match (&self.location, &self.client) {
            (Location::Http(url), Some(client)) => self.fetch_http(client, url, held).await,
            (Location::File(path), _) => self.fetch_file(path, held).await,
            (Location::Http(_), None) => Err("no HTTP client".into()),
        }
    }

    async fn fetch_http(
        &self,
        client: &reqwest::Client,
        url: &url::Url,
        held: &Validators,
    ) -> Result<Fetched, String> {
        let mut req = client.get(url.as_str());
        if let Some(e) = &held.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, e);
        }
        if let Some(lm) = &held.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
        let mut resp = req.send().await.map_err(|e| self.describe(&e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let validators = Validators {
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        };
        if let Some(len) = resp.content_length()
            && len > self.max_body
        {
            return Err(self.too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.describe(&e))? {
            if (bytes.len() + chunk.len()) as u64 > self.max_body {
                return Err(self.too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body {
            bytes,
            content_type,
            validators,
            status: Some(status.as_u16()),
        })
    }

    async fn fetch_file(
        &self,
        path: &std::path::Path,
        held: &Validators,
    ) -> Result<Fetched, String> {
        use std::os::unix::fs::MetadataExt;
        let io = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let meta = tokio::fs::metadata(path).await.map_err(io)?;
        let tag = format!(
            "{}-{}-{}",
            meta.ino(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        );
        if held.etag.as_deref() == Some(tag.as_str()) {
            return Ok(Fetched::NotModified);
        }
        if meta.len() > self.max_body {
            return Err(self.too_big());
        }
        let bytes = tokio::fs::read(path).await.map_err(io)?;
        Ok(Fetched::Body {
            bytes,
            status: None,
            content_type: None,
            validators: Validators {
                etag: Some(tag),
                last_modified: None,
            },
        })
    }

    fn too_big(&self) -> String {
        format!(
            "the document is larger than the limit of {} bytes and was cut off; raise `max_body` if it is expected",
            self.max_body
        )
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        let chain = crate::channel::error_chain(e);
        if e.is_timeout() {
            format!(
                "no complete answer within {}s (timeout): {chain}",
                self.timeout.as_secs_f64()
            )
        } else if e.is_redirect() {
            format!("stopped following redirects: {chain}")
        } else {
            chain
        }
    }
}

/// Redirects are followed at most five times, and only within the same
/// scheme, host and port: a source's headers (credentials among them) are
/// never sent to another host, nor over plain HTTP.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        let (to, from) = (attempt.url(), first);
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects, or a loop")
        } else if to.scheme() != from.scheme()
            || to.host_str() != from.host_str()
            || to.port_or_known_default() != from.port_or_known_default()
        {
            let msg = format!(
                "the server redirects to another host or scheme ({}); only redirects within {}://{} are followed: set `url` to where it redirects",
                crate::secret::mask_url(to.as_str()),
                from.scheme(),
                from.host_str().unwrap_or_default()
            );
            attempt.error(msg)
        } else {
            attempt.follow()
        }
    })
}
