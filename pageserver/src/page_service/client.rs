//! A minimal pagestream client: connects, runs the startup phase and
//! `pagestream <tenant> <timeline>`, then sends requests and reads
//! responses. Requests can be queued and flushed together (pipelining);
//! responses come back in request order.

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::pq_proto::error_response_text;
use zenith_utils::pq_proto::{FeMessage, FeStartupPacket, StartupParams, PROTOCOL_VERSION_3_0};

use crate::pagestream::{PagestreamRequest, PagestreamResponse};

/// Largest backend message accepted (an SLRU segment is 256 KiB).
const MAX_BACKEND_MESSAGE: usize = 16 << 20;

/// A connection in pagestream mode.
pub struct PagestreamClient {
    sock: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl PagestreamClient {
    /// Connects to `addr` (host:port) and starts a pagestream.
    pub async fn connect(
        addr: &str,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> anyhow::Result<PagestreamClient> {
        let sock = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the page service at {addr}"))?;
        sock.set_nodelay(true)?;
        let mut c = PagestreamClient {
            sock,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::new(),
        };
        let params: StartupParams = [("user", "pagebench"), ("application_name", "pagebench")]
            .into_iter()
            .collect();
        FeStartupPacket::StartupMessage {
            major_version: (PROTOCOL_VERSION_3_0 >> 16) as u16,
            minor_version: 0,
            params,
        }
        .write(&mut c.wbuf)?;
        c.flush().await?;
        loop {
            match c.read_message().await? {
                (b'R', body) if body[..] != [0, 0, 0, 0] => {
                    bail!("the page service asks for authentication, which is not supported")
                }
                (b'E', body) => bail!("startup failed: {}", error_response_text(&body)),
                (b'Z', _) => break,
                _ => {}
            }
        }
        FeMessage::Query(format!("pagestream {tenant_id} {timeline_id}")).write(&mut c.wbuf)?;
        c.flush().await?;
        loop {
            match c.read_message().await? {
                (b'W', _) => return Ok(c),
                (b'E', body) => bail!("pagestream failed: {}", error_response_text(&body)),
                (b'N', _) | (b'S', _) => {}
                (tag, _) => bail!(
                    "unexpected message {:?} in reply to pagestream",
                    char::from(tag)
                ),
            }
        }
    }

    /// Queues a request; [`flush`](Self::flush) sends queued requests.
    pub fn queue(&mut self, req: &PagestreamRequest) -> anyhow::Result<()> {
        let mut payload = BytesMut::with_capacity(64);
        req.serialize(&mut payload)?;
        FeMessage::CopyData(payload.freeze()).write(&mut self.wbuf)?;
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.sock.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads the next response.
    pub async fn recv(&mut self) -> anyhow::Result<PagestreamResponse> {
        loop {
            match self.read_message().await? {
                (b'd', body) => return Ok(PagestreamResponse::parse(&body)?),
                (b'E', body) => bail!("page service error: {}", error_response_text(&body)),
                (b'N', _) => {}
                (tag, _) => bail!("unexpected message {:?} in a pagestream", char::from(tag)),
            }
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
    pub async fn close(mut self) -> anyhow::Result<()> {
        FeMessage::CopyDone.write(&mut self.wbuf)?;
        self.flush().await?;
        loop {
            match self.read_message().await? {
                (b'Z', _) => break,
                (b'E', body) => bail!("page service error: {}", error_response_text(&body)),
                _ => {}
            }
        }
        FeMessage::Terminate.write(&mut self.wbuf)?;
        self.flush().await
    }

    /// One backend message: tag and body.
    async fn read_message(&mut self) -> anyhow::Result<(u8, Bytes)> {
        loop {
            if self.rbuf.len() >= 5 {
                let len = i32::from_be_bytes(self.rbuf[1..5].try_into()?);
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| (4..=MAX_BACKEND_MESSAGE).contains(l))
                    .with_context(|| format!("invalid backend message length {len}"))?;
                if self.rbuf.len() > len {
                    let tag = self.rbuf[0];
                    self.rbuf.advance(5);
                    return Ok((tag, self.rbuf.split_to(len - 4).freeze()));
                }
            }
            if self.sock.read_buf(&mut self.rbuf).await? == 0 {
                bail!("the page service closed the connection");
            }
        }
    }
}
