//! The sandbox filesystem: contents over envd's plain HTTP `/files` endpoint (download as raw
//! bytes, upload as `application/octet-stream` with the destination in the `path` query) and
//! metadata over the `filesystem.Filesystem` RPC service.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;

use serde::{Deserialize, Serialize};
use warren_proto::connect::ErrorCode;
use warren_proto::envd::filesystem::{
    EntryInfo, EntryResponse, ListDirRequest, ListDirResponse, MoveRequest, PathRequest,
};
use warren_proto::envd::process::Empty;

use crate::client::{json_body, send_checked};
use crate::connect;
use crate::error::ClientError;
use crate::query::QueryBuilder;
use crate::sandbox::EnvdTarget;

/// One element of the `POST /files` answer: a file that was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteInfo {
    pub name: String,
    /// `file` for uploads.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub path: String,
}

/// Bytes read from a local reader per upload chunk.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The filesystem of one sandbox.
#[derive(Debug, Clone)]
pub struct Files {
    envd: EnvdTarget,
    user: Option<String>,
}

impl Files {
    pub(crate) fn new(envd: EnvdTarget) -> Files {
        Files { envd, user: None }
    }

    /// The same filesystem seen as Linux user `user` (ownership of written files, access).
    pub fn as_user(&self, user: &str) -> Files {
        Files {
            envd: self.envd.clone(),
            user: Some(user.to_owned()),
        }
    }

    fn files_path(&self, path: &str) -> String {
        let mut q = QueryBuilder::default();
        q.push("path", path);
        if let Some(user) = &self.user {
            q.push("username", user);
        }
        format!("/files?{}", q.finish())
    }

    fn rpc_target(&self) -> EnvdTarget {
        self.envd.with_user(self.user.as_deref())
    }

    /// Starts a download of `path`; the answer body is the file's bytes.
    async fn download(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let req = self.envd.request(Method::GET, &self.files_path(path));
        send_checked("GET /files", req).await
    }

    /// Reads a whole file.
    pub async fn read(&self, path: &str) -> Result<Bytes, ClientError> {
        let resp = self.download(path).await?;
        resp.bytes().await.map_err(|source| ClientError::Transport {
            step: "GET /files".to_owned(),
            source,
        })
    }

    /// Reads a file as a stream of chunks, for files too large to hold in memory.
    pub async fn read_stream(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static, ClientError> {
        let resp = self.download(path).await?;
        Ok(resp.bytes_stream().map(|chunk| {
            chunk.map_err(|source| ClientError::Transport {
                step: "GET /files".to_owned(),
                source,
            })
        }))
    }

    /// Copies file `path` into `writer` as it downloads; returns the number of bytes.
    pub async fn read_to<W>(&self, path: &str, writer: &mut W) -> Result<u64, ClientError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt as _;
        let local = |source| ClientError::LocalIo {
            step: "writing the downloaded file".to_owned(),
            source,
        };
        let mut chunks = std::pin::pin!(self.read_stream(path).await?);
        let mut total = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            writer.write_all(&chunk).await.map_err(local)?;
            total += chunk.len() as u64;
        }
        writer.flush().await.map_err(local)?;
        Ok(total)
    }

    /// Writes `data` to `path` (creating parent directories), replacing any existing file.
    /// `data` may be bytes or a streaming [`reqwest::Body`].
    pub async fn write(
        &self,
        path: &str,
        data: impl Into<reqwest::Body>,
    ) -> Result<Vec<WriteInfo>, ClientError> {
        let step = "POST /files";
        let req = self
            .envd
            .request(Method::POST, &self.files_path(path))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data);
        json_body(step, send_checked(step, req).await?).await
    }

    /// Writes everything `reader` yields to `path`, streaming it (chunked upload) rather
    /// than holding it in memory.
    pub async fn write_from<R>(&self, path: &str, reader: R) -> Result<Vec<WriteInfo>, ClientError>
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        let chunks = futures::stream::try_unfold(Box::pin(reader), |mut reader| async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = reader.read(&mut buf).await?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((n > 0).then(|| (Bytes::from(buf), reader)))
        });
        self.write(path, reqwest::Body::wrap_stream(chunks)).await
    }

    /// Entries under `path`, `depth` levels deep (1 = direct children).
    pub async fn list(&self, path: &str, depth: u32) -> Result<Vec<EntryInfo>, ClientError> {
        let request = ListDirRequest {
            path: path.to_owned(),
            depth,
        };
        let method = "filesystem.Filesystem/ListDir";
        let resp: ListDirResponse = connect::unary(&self.rpc_target(), method, &request).await?;
        Ok(resp.entries)
    }

    /// Information about one entry.
    pub async fn stat(&self, path: &str) -> Result<EntryInfo, ClientError> {
        let method = "filesystem.Filesystem/Stat";
        let resp: EntryResponse =
            connect::unary(&self.rpc_target(), method, &path_req(path)).await?;
        entry(method, resp)
    }

    /// Whether `path` exists.
    pub async fn exists(&self, path: &str) -> Result<bool, ClientError> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.rpc_code() == Some(ErrorCode::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates a directory and its parents; `Ok(false)` if it already existed.
    pub async fn make_dir(&self, path: &str) -> Result<bool, ClientError> {
        let method = "filesystem.Filesystem/MakeDir";
        let target = self.rpc_target();
        let request = path_req(path);
        match connect::unary::<_, EntryResponse>(&target, method, &request).await {
            Ok(_) => Ok(true),
            Err(e) if e.rpc_code() == Some(ErrorCode::AlreadyExists) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves `source` to `destination`.
    pub async fn rename(&self, source: &str, destination: &str) -> Result<EntryInfo, ClientError> {
        let request = MoveRequest {
            source: source.to_owned(),
            destination: destination.to_owned(),
        };
        let method = "filesystem.Filesystem/Move";
        let resp: EntryResponse = connect::unary(&self.rpc_target(), method, &request).await?;
        entry(method, resp)
    }

    /// Removes a file or a directory tree.
    pub async fn remove(&self, path: &str) -> Result<(), ClientError> {
        let method = "filesystem.Filesystem/Remove";
        let _: Empty = connect::unary(&self.rpc_target(), method, &path_req(path)).await?;
        Ok(())
    }
}

fn path_req(path: &str) -> PathRequest {
    PathRequest {
        path: path.to_owned(),
    }
}

/// The entry of an answer that must carry one.
fn entry(method: &str, resp: EntryResponse) -> Result<EntryInfo, ClientError> {
    resp.entry.ok_or_else(|| ClientError::Protocol {
        step: format!("RPC {method}"),
        detail: "answer without an entry".to_owned(),
    })
}
