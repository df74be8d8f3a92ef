//! Readiness of the guest agent: `GET /health` must answer 204. slirp accepts TCP connections
//! on the forwarded port before anything listens in the guest (and then drops them), so a
//! TCP connect proves nothing; only an HTTP answer does. A minimal HTTP/1.1 exchange is
//! enough here and keeps an HTTP client out of this crate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One `GET /health`; returns the status code, or `None` on any failure.
pub(crate) async fn health_status(addr: SocketAddr, timeout: Duration) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut len = 0;
        while len < 12 {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
        }
        parse_status(&buf[..len])
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// "HTTP/1.1 204 No Content" → 204.
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 404 x"), Some(404));
        assert_eq!(parse_status(b"HTTP/1.1"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
    }
}
