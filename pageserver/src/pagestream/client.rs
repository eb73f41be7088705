//! The pagestream client: a [`zenith_utils::postgres_client`] connection
//! that ran `pagestream <tenant> <timeline>`, sending requests and reading
//! responses. Requests can be queued and flushed together (pipelining);
//! responses come back in request order. `pagebench` and the tests use it.

use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use zenith_utils::auth::PAGESERVER_TOKEN_ENV;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::postgres_client::{Config, Connection, CopyBoth};

use super::{PagestreamRequest, PagestreamResponse};

/// Largest backend message accepted (an SLRU segment is 256 KiB).
const MAX_BACKEND_MESSAGE: usize = 16 << 20;

/// A connection in pagestream mode.
pub struct PagestreamClient {
    stream: CopyBoth,
    payload: BytesMut,
}

impl PagestreamClient {
    /// Connects to `addr` (host:port) and starts a pagestream.
    pub async fn connect(
        addr: &str,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> anyhow::Result<PagestreamClient> {
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("page service address {addr:?} is not host:port"))?;
        let port = port
            .parse()
            .with_context(|| format!("invalid port in page service address {addr:?}"))?;
        let mut config = Config::new(host, port, "pagebench").application_name("pagebench");
        config.max_message_size = MAX_BACKEND_MESSAGE;
        // With auth on: the token a compute would present, from the same
        // environment variable.
        if let Some(token) = std::env::var(PAGESERVER_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
        {
            config = config.password(token);
        }
        let conn = Connection::connect(&config)
            .await
            .map_err(|e| anyhow!("connecting to the page service at {addr}: {e}"))?;
        let stream = conn
            .copy_both(&format!("pagestream {tenant_id} {timeline_id}"))
            .await
            .map_err(|e| anyhow!("pagestream failed: {e}"))?;
        Ok(PagestreamClient {
            stream,
            payload: BytesMut::with_capacity(64),
        })
    }

    /// Queues a request; [`flush`](Self::flush) sends queued requests.
    pub fn queue(&mut self, req: &PagestreamRequest) -> anyhow::Result<()> {
        req.serialize(&mut self.payload)?;
        let payload = self.payload.split().freeze();
        self.stream.queue(payload)?;
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.stream.flush().await?)
    }

    /// Reads the next response.
    pub async fn recv(&mut self) -> anyhow::Result<PagestreamResponse> {
        match self.stream.recv().await? {
            Some(data) => Ok(PagestreamResponse::parse(&data)?),
            None => bail!("the page service ended the pagestream"),
        }
    }

    /// Sends one request and reads its response.
    pub async fn request(&mut self, req: &PagestreamRequest) -> anyhow::Result<PagestreamResponse> {
        self.queue(req)?;
        self.flush().await?;
        let resp = self.recv().await?;
        if resp.reqid != req.reqid {
            bail!("response for reqid {} to request {}", resp.reqid, req.reqid);
        }
        Ok(resp)
    }

    /// Ends the stream with CopyDone and the session with Terminate.
    pub async fn close(self) -> anyhow::Result<()> {
        let conn = self.stream.finish().await?;
        conn.terminate().await?;
        Ok(())
    }
}
